//! The in-memory Raft log: the entries this node holds, the latest
//! snapshot point, and the cursors that say how far the log is persisted,
//! committed and handed out for applying.
//!
//! The log after the snapshot lives in memory, plus up to a configured
//! number of entries before it (kept so that slightly lagging followers can
//! catch up without a snapshot); compaction keeps it bounded. Persistence is
//! tracked by the core, not by a storage callback, which keeps the core free
//! of I/O.

use super::types::{Entry, EntryKind, Index, Term};

/// What [`RaftLog::maybe_append`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The log now matches the leader's through this index.
    Matched(Index),
    /// The entry before the new ones is missing or has another term.
    Mismatch,
    /// The entries contradict a committed entry: the sender is not a
    /// legitimate leader; nothing was changed.
    ConflictsWithCommitted,
}

pub(crate) struct RaftLog {
    /// The latest snapshot point: every entry through it is committed and
    /// covered by the host's snapshot.
    snapshot_index: Index,
    snapshot_term: Term,
    /// Index of `entries[0]`; at most `snapshot_index + 1`.
    first_held: Index,
    entries: Vec<Entry>,
    /// Highest index known committed cluster-wide.
    pub(crate) committed: Index,
    /// Highest index durable on this node.
    pub(crate) persisted: Index,
    /// Highest index handed to the host for applying.
    pub(crate) applying: Index,
    /// Highest index the host reported applied.
    pub(crate) applied: Index,
    /// First index not yet handed to the host for persisting.
    pub(crate) unstable_from: Index,
}

impl RaftLog {
    /// A log recovered from durable storage: the snapshot point and the
    /// entries held (contiguous, starting at or before the entry after the
    /// snapshot), all persisted.
    pub(crate) fn new(
        snapshot_index: Index,
        snapshot_term: Term,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> Result<RaftLog, &'static str> {
        let first_held = entries.first().map_or(snapshot_index + 1, |e| e.index);
        if first_held > snapshot_index + 1 {
            return Err("a gap between the snapshot and the first entry");
        }
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            first_held,
            entries,
            committed: 0,
            persisted: 0,
            applying: 0,
            applied: 0,
            unstable_from: 0,
        };
        if snapshot_index >= first_held && !log.matches(snapshot_index, snapshot_term) {
            return Err("the entry at the snapshot index has another term");
        }
        let last = log.last_index();
        log.committed = committed.clamp(snapshot_index, last);
        // A leader proposes a membership change only once every earlier one
        // in its log is applied (`pending_conf_index` in raft.rs): a change
        // that another follows here was committed, whatever the recovered
        // commit index says (docs/ARCHITECTURE.md, Restart).
        let mut changes = log
            .entries
            .iter()
            .rev()
            .filter(|e| e.kind == EntryKind::ConfChange);
        if let Some(followed) = changes.nth(1) {
            log.committed = log.committed.max(followed.index);
        }
        log.persisted = last;
        log.applied = applied.clamp(snapshot_index, log.committed);
        log.applying = log.applied;
        log.unstable_from = last + 1;
        Ok(log)
    }

    /// Index of the oldest entry held.
    pub(crate) fn first_index(&self) -> Index {
        self.first_held
    }

    pub(crate) fn last_index(&self) -> Index {
        self.first_held + self.entries.len() as Index - 1
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The term at `index`, or `None` when it is compacted away or beyond
    /// the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        match self.entry(index) {
            Some(e) => Some(e.term),
            None if index == self.snapshot_index => Some(self.snapshot_term),
            None => None,
        }
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.first_held {
            return None;
        }
        self.entries.get((index - self.first_held) as usize)
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// A candidate whose log ends at `(last_index, last_term)` is at least
    /// as up to date as this log (Raft §5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries that follow the leader's own log, or that replace a
    /// conflicting suffix of a follower's log. Returns the new last index.
    pub(crate) fn append(&mut self, new: Vec<Entry>) -> Index {
        let Some(first) = new.first() else {
            return self.last_index();
        };
        let first_index = first.index;
        debug_assert!(
            first_index > self.committed,
            "overwriting committed entries"
        );
        if first_index <= self.last_index() {
            self.truncate_from(first_index);
        }
        self.entries.extend(new);
        self.last_index()
    }

    /// Drops every entry at or after `index`.
    fn truncate_from(&mut self, index: Index) {
        let keep = index.saturating_sub(self.first_held) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// The follower side of AppendEntries: if `(prev_index, prev_term)`
    /// matches, keep the entries that already match and replace the suffix
    /// from the first conflict.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> AppendOutcome {
        if !self.matches(prev_index, prev_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new = prev_index + entries.len() as Index;
        let conflict = self.find_conflict(&entries);
        if conflict != 0 {
            if conflict <= self.committed {
                return AppendOutcome::ConflictsWithCommitted;
            }
            let skip = (conflict - prev_index - 1) as usize;
            self.append(entries.into_iter().skip(skip).collect());
        }
        AppendOutcome::Matched(last_new)
    }

    /// The index of the first entry of `entries` that is missing or has
    /// another term here, or 0 when all match. Entries already compacted
    /// away are committed, so they match by definition.
    fn find_conflict(&self, entries: &[Entry]) -> Index {
        for e in entries {
            if e.index < self.first_held {
                continue;
            }
            if !self.matches(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// The largest index `<= index` whose term is `<= term`, with that term:
    /// where a log that holds `term` at some point could first agree with
    /// this one. Used on both sides of fast backtracking. When the answer
    /// lies in the compacted prefix, the term is unknown and given as 0.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term && i > 0 => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Entries in `[lo, hi)`, stopping once `max_bytes` is reached (at least
    /// one entry when the range is not empty). Caller guarantees the range
    /// is within the log.
    pub(crate) fn slice(&self, lo: Index, hi: Index, max_bytes: u64) -> Vec<Entry> {
        let start = (lo - self.first_held) as usize;
        let end = (hi - self.first_held) as usize;
        let mut size = 0;
        let mut out = Vec::new();
        for e in &self.entries[start..end] {
            size += e.size();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Commits through `index` if it is beyond the commit point and carries
    /// `term` (the leader only commits entries of its own term by counting).
    pub(crate) fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.term(index) == Some(term) {
            self.committed = index;
            return true;
        }
        false
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            debug_assert!(index <= self.last_index());
            self.committed = index.min(self.last_index());
        }
    }

    /// Entries not yet handed out for persisting; marks them handed out.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        if self.unstable_from > self.last_index() {
            return Vec::new();
        }
        let out = self.slice(self.unstable_from, self.last_index() + 1, u64::MAX);
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// The durable, committed entries not yet handed out for applying,
    /// up to `max_bytes`; marks them handed out. Only durable entries are
    /// applied, so a node never applies what it could lose in a crash.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if self.applying >= hi {
            return Vec::new();
        }
        let out = self.slice(self.applying + 1, hi + 1, max_bytes);
        self.applying += out.len() as Index;
        out
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.applying < self.committed.min(self.persisted)
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Records that everything through `index` with `term` is durable,
    /// unless that entry has since been replaced.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        if index > self.persisted && index < self.unstable_from && self.matches(index, term) {
            self.persisted = index;
        }
    }

    /// Takes a snapshot point at `index` (committed and held) and drops
    /// entries before `keep_from` (at most `index + 1`).
    pub(crate) fn compact(&mut self, index: Index, keep_from: Index) {
        debug_assert!(index <= self.committed && keep_from <= index + 1);
        if let Some(term) = self.term(index) {
            self.snapshot_index = index;
            self.snapshot_term = term;
        }
        if keep_from > self.first_held {
            let drop = ((keep_from - self.first_held) as usize).min(self.entries.len());
            self.entries.drain(..drop);
            self.first_held = keep_from;
        }
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub(crate) fn restore(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.first_held = index + 1;
        self.committed = index;
        self.persisted = index;
        self.applying = index;
        self.applied = index;
        self.unstable_from = index + 1;
    }

    pub(crate) fn applied_to(&mut self, index: Index) {
        let index = index.min(self.applying);
        if index > self.applied {
            self.applied = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{EntryKind, Payload};

    fn ents(terms: &[Term], start: Index) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                index: start + i as Index,
                term: *t,
                kind: EntryKind::Normal,
                data: Payload::default(),
            })
            .collect()
    }

    #[test]
    fn maybe_append_keeps_matching_entries_and_replaces_conflicts() {
        let mut log = RaftLog::new(0, 0, ents(&[1, 1, 2, 2], 1), 0, 0).unwrap();
        // Matching prefix, nothing new: nothing truncated.
        assert_eq!(
            log.maybe_append(1, 1, ents(&[1, 2], 2)),
            AppendOutcome::Matched(3)
        );
        assert_eq!(log.last_index(), 4);
        // Conflict at 3: replaced.
        assert_eq!(
            log.maybe_append(2, 1, ents(&[3], 3)),
            AppendOutcome::Matched(3)
        );
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.persisted, 2);
        assert_eq!(log.unstable_from, 3);
        // Mismatch of the previous entry: refused.
        assert_eq!(
            log.maybe_append(3, 2, ents(&[3], 4)),
            AppendOutcome::Mismatch
        );
        // Contradicting a committed entry: refused, log untouched.
        log.commit_to(2);
        assert_eq!(
            log.maybe_append(0, 0, ents(&[5, 5], 1)),
            AppendOutcome::ConflictsWithCommitted
        );
        assert_eq!(log.term(1), Some(1));
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = RaftLog::new(0, 0, ents(&[1, 1, 2, 2, 2, 4, 4], 1), 0, 0).unwrap();
        assert_eq!(log.find_conflict_by_term(7, 3), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(20, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = RaftLog::new(0, 0, vec![], 0, 0).unwrap();
        log.append(ents(&[1, 1, 1], 1));
        log.commit_to(3);
        assert!(log.take_committed(u64::MAX).is_empty());
        assert_eq!(log.take_unstable().len(), 3);
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed(u64::MAX).len(), 2);
        log.persisted_to(3, 1);
        assert_eq!(log.take_committed(u64::MAX)[0].index, 3);
    }

    #[test]
    fn stale_persist_reports_are_ignored() {
        let mut log = RaftLog::new(0, 0, ents(&[1], 1), 0, 0).unwrap();
        log.append(ents(&[1, 1], 2));
        log.take_unstable();
        log.append(ents(&[2], 3));
        log.persisted_to(3, 1);
        assert_eq!(log.persisted, 1);
        log.take_unstable();
        log.persisted_to(3, 2);
        assert_eq!(log.persisted, 3);
    }

    #[test]
    fn compaction_keeps_trailing_entries_and_the_snapshot_term() {
        let mut log = RaftLog::new(0, 0, ents(&[1, 1, 2, 2, 3, 3], 1), 6, 6).unwrap();
        log.compact(5, 4);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), None);
        assert_eq!(log.term(5), Some(3));
        assert_eq!(log.last_index(), 6);
        // Restart from that state: entries from 4, snapshot at 5.
        let held = log.entries().to_vec();
        let again = RaftLog::new(5, 3, held, 6, 5).unwrap();
        assert_eq!((again.first_index(), again.last_index()), (4, 6));
        assert!(RaftLog::new(5, 2, ents(&[2, 3, 3], 4), 6, 5).is_err());
        assert!(RaftLog::new(5, 3, ents(&[3], 8), 8, 5).is_err());
        log.restore(9, 4);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (10, 9, 4)
        );
        assert_eq!(log.term(9), Some(4));
        assert_eq!(log.find_conflict_by_term(9, 2), (8, 0));
    }

    /// The log a crash can leave when entries went to disk before the hard
    /// state that goes with them: the founding membership {1, 2, 3}, then
    /// a leader of term 2 adding node 4 and, once that was applied, node
    /// 5; the hard state still of term 1, commit 1.
    fn restarted_after_two_changes() -> crate::core::InitialState {
        use crate::core::ConfChange;
        let mut state = crate::core::InitialState::bootstrap(&[1, 2, 3]);
        for (index, id) in [(2, 4), (3, 5)] {
            state.entries.push(Entry {
                index,
                term: 2,
                kind: EntryKind::ConfChange,
                data: ConfChange::AddVoter(id).encode().into(),
            });
        }
        state.hard_state.vote = 3;
        state
    }

    #[test]
    fn a_change_another_follows_counts_as_committed() {
        let state = restarted_after_two_changes();
        let log = RaftLog::new(0, 0, state.entries.clone(), 1, 0).unwrap();
        assert_eq!(log.committed, 2);
        // The last change may not have committed.
        let log = RaftLog::new(0, 0, state.entries[..2].to_vec(), 1, 0).unwrap();
        assert_eq!(log.committed, 1);
    }

    #[test]
    fn a_log_beyond_its_hard_state_raises_the_term_without_a_vote() {
        use crate::core::{Config, Raft, NO_NODE};
        let config = Config {
            id: 2,
            seed: 1,
            ..Config::default()
        };
        let raft = Raft::new(config, restarted_after_two_changes())
            .expect("a node restarts from entries durable before their term");
        let hs = raft.hard_state();
        assert_eq!((hs.term, hs.vote, hs.commit), (2, NO_NODE, 2));
        // Node 4 was added by a committed change; node 5 may not have been.
        assert_eq!(raft.status().conf_state.voters, vec![1, 2, 3, 4]);
    }
}
