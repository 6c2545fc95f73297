//! The in-memory Raft log: every entry after the latest snapshot, with the
//! cursors that say how far it is persisted, committed and handed out for
//! applying.
//!
//! The whole log after the snapshot lives in memory; snapshots and
//! compaction keep it bounded. Persistence is tracked by the core, not by a
//! storage callback, which keeps the core free of I/O.

use super::types::{Entry, Index, Term};

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
    /// Index and term of the entry just before `entries[0]` (the snapshot's,
    /// or 0/0 for a log that starts at 1).
    offset_index: Index,
    offset_term: Term,
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
    /// A log recovered from durable storage: `entries` follow
    /// `(offset_index, offset_term)` and are all persisted.
    pub(crate) fn new(
        offset_index: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> RaftLog {
        let last = offset_index + entries.len() as Index;
        let committed = committed.clamp(offset_index, last);
        let applied = applied.clamp(offset_index, committed);
        RaftLog {
            offset_index,
            offset_term,
            entries,
            committed,
            persisted: last,
            applying: applied,
            applied,
            unstable_from: last + 1,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.offset_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// The term at `index`, or `None` when it is compacted away or beyond
    /// the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset_index {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset_index {
            return None;
        }
        self.entries.get((index - self.offset_index - 1) as usize)
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
        let keep = index.saturating_sub(self.offset_index + 1) as usize;
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
            if e.index <= self.offset_index {
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
    /// this one. Used on both sides of fast backtracking.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (self.offset_index, self.offset_term),
            }
        }
    }

    /// Entries in `[lo, hi)`, stopping once `max_bytes` is reached (at least
    /// one entry when the range is not empty). Caller guarantees the range
    /// is within the log.
    pub(crate) fn slice(&self, lo: Index, hi: Index, max_bytes: u64) -> Vec<Entry> {
        let start = (lo - self.offset_index - 1) as usize;
        let end = (hi - self.offset_index - 1) as usize;
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
    use crate::core::types::EntryKind;

    fn ents(terms: &[Term], start: Index) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                index: start + i as Index,
                term: *t,
                kind: EntryKind::Normal,
                data: vec![],
            })
            .collect()
    }

    #[test]
    fn maybe_append_keeps_matching_entries_and_replaces_conflicts() {
        let mut log = RaftLog::new(0, 0, ents(&[1, 1, 2, 2], 1), 0, 0);
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
        let log = RaftLog::new(0, 0, ents(&[1, 1, 2, 2, 2, 4, 4], 1), 0, 0);
        assert_eq!(log.find_conflict_by_term(7, 3), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(20, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = RaftLog::new(0, 0, vec![], 0, 0);
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
        let mut log = RaftLog::new(0, 0, ents(&[1], 1), 0, 0);
        log.append(ents(&[1, 1], 2));
        log.take_unstable();
        log.append(ents(&[2], 3));
        log.persisted_to(3, 1);
        assert_eq!(log.persisted, 1);
        log.take_unstable();
        log.persisted_to(3, 2);
        assert_eq!(log.persisted, 3);
    }
}
