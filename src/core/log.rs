//! The Raft log as the core sees it: the entries this node holds, the
//! latest snapshot point, and the cursors that say how far the log is
//! persisted, committed and handed out for applying.
//!
//! The log after the snapshot is held, plus up to a configured number of
//! entries before it (kept so that slightly lagging followers can catch up
//! without a snapshot); compaction keeps it bounded. Held entries are in
//! memory (the cache), except a prefix that left it once durable and
//! handed out for applying (or, at a restart, once committed): those are
//! read back through the host's [`LogStorage`] when a follower or the
//! host needs them, and only their terms
//! stay, as runs, so that matching and commit checks never wait for a read.
//! Persistence is tracked by the core, not by a storage callback, which
//! keeps the core free of I/O.

use super::types::{Entry, EntryKind, Index, Term};
use std::cell::Cell;
use std::fmt;

/// A read-only view of the host's durable log, through which the core
/// reads entries it evicted from its cache.
///
/// The core asks only for entries that were durable when it evicted them
/// and that are committed, so no later write changes them; a read must be
/// a pure function of durable state, which keeps the core deterministic.
pub trait LogStorage: Send {
    /// The durable entries in `[lo, hi)`, in order from `lo`, stopping
    /// before their total [`Entry::size`] would exceed `max_bytes` but
    /// holding at least one. The core checks the answer (indexes and terms)
    /// and trims it to `max_bytes` itself.
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, LogReadError>;

    /// [`LogStorage::entries`] where only the terms, kinds and the data of
    /// membership changes are needed: the data of other entries may come
    /// back empty. A restart scans the committed entries this way (to
    /// check their terms and replay memberships), so a storage that can
    /// answer without reading payloads spares reading the log.
    fn entry_headers(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        self.entries(lo, hi, max_bytes)
    }
}

/// Why entries could not be read back through the [`LogStorage`]. The core
/// retries later: a follower waits for its entries, applying waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogReadError {
    /// Storage does not hold this index (any more).
    Unavailable(Index),
    /// Storage failed to read; the host's reason.
    Failed(String),
    /// Storage answered with entries that are not the ones asked for (a
    /// wrong index, a term that differs from the one the core recorded).
    Inconsistent(&'static str),
}

impl fmt::Display for LogReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogReadError::Unavailable(index) => {
                write!(f, "log storage does not hold index {index}")
            }
            LogReadError::Failed(why) => write!(f, "log storage read failed: {why}"),
            LogReadError::Inconsistent(why) => write!(f, "log storage answered wrongly: {why}"),
        }
    }
}

impl std::error::Error for LogReadError {}

/// Why [`RaftLog::recover`] failed.
#[derive(Debug)]
pub(crate) enum RecoverError {
    Invalid(&'static str),
    Read(LogReadError),
}

impl From<LogReadError> for RecoverError {
    fn from(error: LogReadError) -> RecoverError {
        RecoverError::Read(error)
    }
}

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
    /// Index of the oldest entry held, cached or evicted; at most
    /// `snapshot_index + 1`.
    first_held: Index,
    /// Index of `entries[0]`: entries in `[first_held, cached_from)` are
    /// evicted.
    cached_from: Index,
    entries: Vec<Entry>,
    /// The terms of the evicted entries, as `(first index, term)` runs
    /// covering `[first_held, cached_from)`. A run per term, not an entry
    /// per index: terms change only with leaders.
    evicted_terms: Vec<(Index, Term)>,
    /// Sum of [`Entry::size`] over `entries`.
    cached_bytes: u64,
    /// Where evicted entries are read back from; nothing is evicted
    /// without one.
    storage: Option<Box<dyn LogStorage>>,
    /// Entries [`RaftLog::slice`] served from memory, and those it read
    /// back from storage: the entry cache's hits and misses. Cells, as
    /// reads take the log by shared reference.
    cache_hits: Cell<u64>,
    cache_misses: Cell<u64>,
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

/// Adds `e` to `out` unless that takes `out` beyond `max_bytes` (an empty
/// `out` takes it anyway). Returns false once the budget is spent.
fn push_within(out: &mut Vec<Entry>, size: &mut u64, e: &Entry, max_bytes: u64) -> bool {
    *size += e.size();
    if !out.is_empty() && *size > max_bytes {
        return false;
    }
    out.push(e.clone());
    true
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
            cached_from: first_held,
            cached_bytes: entries.iter().map(Entry::size).sum(),
            entries,
            evicted_terms: Vec::new(),
            storage: None,
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
            committed: 0,
            persisted: 0,
            applying: 0,
            applied: 0,
            unstable_from: 0,
        };
        if snapshot_index >= first_held && !log.matches(snapshot_index, snapshot_term) {
            return Err("the entry at the snapshot index has another term");
        }
        let changes: Vec<Index> = log
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| e.index)
            .collect();
        log.set_recovered_cursors(committed, applied, &changes);
        Ok(log)
    }

    /// A log recovered from durable storage of which the host hands over
    /// only `tail`, the newest entries (none when the log ends at the
    /// snapshot): the entries from the snapshot on up to it are read
    /// through `storage`, `read_bytes` at a time. Those committed (applied
    /// or not) are read by their headers and leave the cache at once: a
    /// restart holds in memory only what is not known committed, whatever
    /// backlog the host has yet to apply, which is read back from storage
    /// as it is handed out. `visit` sees every entry read, in order,
    /// before it is taken; an error from it stops the recovery.
    pub(crate) fn recover(
        (snapshot_index, snapshot_term): (Index, Term),
        tail: Vec<Entry>,
        committed: Index,
        applied: Index,
        storage: Box<dyn LogStorage>,
        read_bytes: u64,
        mut visit: impl FnMut(&[Entry]) -> Result<(), &'static str>,
    ) -> Result<RaftLog, RecoverError> {
        let end = tail.first().map_or(snapshot_index + 1, |e| e.index);
        if end <= snapshot_index + 1 {
            // Nothing to read: the tail is the whole log.
            visit(&tail).map_err(RecoverError::Invalid)?;
            let mut log = RaftLog::new(snapshot_index, snapshot_term, tail, committed, applied)
                .map_err(RecoverError::Invalid)?;
            log.storage = Some(storage);
            log.evict(log.applying);
            return Ok(log);
        }
        let mut log = RaftLog::new(snapshot_index, snapshot_term, Vec::new(), 0, 0)
            .map_err(RecoverError::Invalid)?;
        log.storage = Some(storage);
        let mut changes = Vec::new();
        let mut next = log.first_held;
        let mut tail = Some(tail);
        // What is handed out for applying once recovered is at least this
        // much (the commit index only rises below).
        let applying = applied.min(committed);
        loop {
            // Committed entries leave the cache as they pass: of those,
            // only terms and membership changes are needed now; the rest
            // is read back when handed out.
            let headers_only = next <= committed && next < end;
            let chunk = if next < end {
                let storage = log.storage.as_ref().expect("installed above");
                let hi = if headers_only {
                    end.min(committed + 1)
                } else {
                    end
                };
                let chunk = if headers_only {
                    storage.entry_headers(next, hi, read_bytes)?
                } else {
                    storage.entries(next, hi, read_bytes)?
                };
                let contiguous = chunk.iter().zip(next..hi).all(|(e, i)| e.index == i);
                if chunk.is_empty() || !contiguous || chunk.len() as Index > hi - next {
                    return Err(LogReadError::Inconsistent("not the range asked for").into());
                }
                chunk
            } else if let Some(tail) = tail.take() {
                tail
            } else {
                break;
            };
            visit(&chunk).map_err(RecoverError::Invalid)?;
            next += chunk.len() as Index;
            changes.extend(
                chunk
                    .iter()
                    .filter(|e| e.kind == EntryKind::ConfChange)
                    .map(|e| e.index),
            );
            log.cached_bytes += chunk.iter().map(Entry::size).sum::<u64>();
            log.entries.extend(chunk);
            // Applied entries leave as they pass, so recovery holds at
            // most a read's worth beyond what is still to apply.
            log.persisted = log.last_index();
            log.applying = applying.min(log.persisted);
            log.evict_committed(committed);
            // An entry read without its data must never stay: it would be
            // sent to a follower or handed out as it is.
            if headers_only && log.cached_from < next {
                return Err(RecoverError::Invalid(
                    "an entry read without its data was kept in the cache",
                ));
            }
        }
        if snapshot_index >= log.first_held && !log.matches(snapshot_index, snapshot_term) {
            return Err(RecoverError::Invalid(
                "the entry at the snapshot index has another term",
            ));
        }
        log.set_recovered_cursors(committed, applied, &changes);
        Ok(log)
    }

    /// Sets the cursors of a log just recovered, every entry durable;
    /// `changes` are the indexes of its membership changes.
    fn set_recovered_cursors(&mut self, committed: Index, applied: Index, changes: &[Index]) {
        let last = self.last_index();
        self.committed = committed.clamp(self.snapshot_index, last);
        // A leader proposes a membership change only once every earlier one
        // in its log is applied (`pending_conf_index` in raft.rs): a change
        // that another follows here was committed, whatever the recovered
        // commit index says (docs/ARCHITECTURE.md, Restart).
        if let Some(&followed) = changes.iter().rev().nth(1) {
            self.committed = self.committed.max(followed);
        }
        self.persisted = last;
        self.applied = applied.clamp(self.snapshot_index, self.committed);
        self.applying = self.applied;
        self.unstable_from = last + 1;
    }

    /// Index of the oldest entry held.
    pub(crate) fn first_index(&self) -> Index {
        self.first_held
    }

    pub(crate) fn last_index(&self) -> Index {
        self.cached_from + self.entries.len() as Index - 1
    }

    pub(crate) fn last_term(&self) -> Term {
        match (self.entries.last(), self.evicted_terms.last()) {
            (Some(e), _) => e.term,
            (None, Some(&(_, term))) => term,
            (None, None) => self.snapshot_term,
        }
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The term at `index`, or `None` when it is compacted away or beyond
    /// the end. Never reads storage: evicted entries left their terms.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if let Some(e) = self.entry(index) {
            return Some(e.term);
        }
        if index >= self.first_held && index < self.cached_from {
            let run = self
                .evicted_terms
                .partition_point(|&(from, _)| from <= index);
            return Some(self.evicted_terms[run - 1].1);
        }
        (index == self.snapshot_index).then_some(self.snapshot_term)
    }

    /// The entry at `index` if it is cached. Entries leave the cache once
    /// handed out for applying, or at a restart once committed (every
    /// committed change is in force from a restart on), so any entry whose
    /// membership change is not in force yet is cached.
    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.cached_from {
            return None;
        }
        self.entries.get((index - self.cached_from) as usize)
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// The cached entries, oldest first.
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
        self.cached_bytes += new.iter().map(Entry::size).sum::<u64>();
        self.entries.extend(new);
        self.last_index()
    }

    /// Drops every entry at or after `index`, which is beyond the commit
    /// point and so cached.
    fn truncate_from(&mut self, index: Index) {
        debug_assert!(index >= self.cached_from, "truncating evicted entries");
        let keep = index.saturating_sub(self.cached_from) as usize;
        let dropped: u64 = self.entries[keep.min(self.entries.len())..]
            .iter()
            .map(Entry::size)
            .sum();
        self.cached_bytes -= dropped;
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
    /// one entry when the range is not empty); evicted ones are read from
    /// storage. Caller guarantees the range is within the log.
    pub(crate) fn slice(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        let mut out = Vec::new();
        let mut size = 0;
        if lo < self.cached_from {
            let evicted_hi = hi.min(self.cached_from);
            let read = self.read_evicted(lo, evicted_hi, max_bytes)?;
            self.cache_misses
                .set(self.cache_misses.get() + read.len() as u64);
            for e in &read {
                if !push_within(&mut out, &mut size, e, max_bytes) {
                    return Ok(out);
                }
            }
            if out.len() as Index != evicted_hi - lo {
                return Ok(out);
            }
        }
        let start = (lo.max(self.cached_from) - self.cached_from) as usize;
        let end = (hi.max(self.cached_from) - self.cached_from) as usize;
        let before = out.len();
        for e in &self.entries[start..end] {
            if !push_within(&mut out, &mut size, e, max_bytes) {
                break;
            }
        }
        self.cache_hits
            .set(self.cache_hits.get() + (out.len() - before) as u64);
        Ok(out)
    }

    /// Entries served from memory and entries read back from storage, so
    /// far.
    pub(crate) fn cache_read_counts(&self) -> (u64, u64) {
        (self.cache_hits.get(), self.cache_misses.get())
    }

    /// Evicted entries from `lo` (before `hi`), as storage has them, after
    /// checking that they are the ones evicted. A prefix of the range comes
    /// back when storage stopped at `max_bytes`.
    fn read_evicted(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        let storage = self.storage.as_ref().ok_or(LogReadError::Unavailable(lo))?;
        let read = storage.entries(lo, hi, max_bytes)?;
        if read.is_empty() {
            return Err(LogReadError::Unavailable(lo));
        }
        for (e, index) in read.iter().zip(lo..) {
            if e.index != index || index >= hi {
                return Err(LogReadError::Inconsistent("not the range asked for"));
            }
            if self.term(index) != Some(e.term) {
                return Err(LogReadError::Inconsistent("a term differs from the log's"));
            }
        }
        Ok(read)
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
    /// They are not durable, so they are cached.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        if self.unstable_from > self.last_index() {
            return Vec::new();
        }
        let start = (self.unstable_from - self.cached_from) as usize;
        let out = self.entries[start..].to_vec();
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// The durable, committed entries not yet handed out for applying,
    /// up to `max_bytes`; marks them handed out. Only durable entries are
    /// applied, so a node never applies what it could lose in a crash.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> Result<Vec<Entry>, LogReadError> {
        let hi = self.committed.min(self.persisted);
        if self.applying >= hi {
            return Ok(Vec::new());
        }
        let out = self.slice(self.applying + 1, hi + 1, max_bytes)?;
        self.applying += out.len() as Index;
        Ok(out)
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
        if keep_from <= self.first_held {
            return;
        }
        if keep_from >= self.cached_from {
            self.evicted_terms.clear();
            let drop = ((keep_from - self.cached_from) as usize).min(self.entries.len());
            let dropped: u64 = self.entries.drain(..drop).map(|e| e.size()).sum();
            self.cached_bytes -= dropped;
            self.cached_from = keep_from;
        } else {
            // The run holding `keep_from` now starts there.
            let run = self
                .evicted_terms
                .partition_point(|&(from, _)| from <= keep_from);
            self.evicted_terms.drain(..run - 1);
            self.evicted_terms[0].0 = keep_from;
        }
        self.first_held = keep_from;
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub(crate) fn restore(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.evicted_terms.clear();
        self.cached_bytes = 0;
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.first_held = index + 1;
        self.cached_from = index + 1;
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

    pub(crate) fn set_storage(&mut self, storage: Box<dyn LogStorage>) {
        self.storage = Some(storage);
    }

    pub(crate) fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    /// The last index that may leave the cache: storage holds it (it is
    /// durable) and the host already has it (it is handed out for
    /// applying, so applying never waits for storage). Nothing may leave
    /// without storage to read it back from.
    fn evictable_through(&self) -> Index {
        if self.storage.is_none() {
            return self.cached_from - 1;
        }
        self.persisted
            .min(self.applying)
            .min(self.last_index())
            .max(self.cached_from - 1)
    }

    /// Drops cached entries through `through` (as far as they may leave);
    /// returns the bytes freed.
    pub(crate) fn evict(&mut self, through: Index) -> u64 {
        let through = through.min(self.evictable_through());
        self.drop_cached_through(through)
    }

    /// Recovery: drops the entries through `through`, which are durable
    /// and committed, whether handed out for applying or not. Their
    /// membership changes are in force from the restart on (see
    /// `Raft::recover`), so none is looked up again.
    fn evict_committed(&mut self, through: Index) {
        let through = through.min(self.persisted);
        if self.storage.is_some() {
            self.drop_cached_through(through);
        }
    }

    fn drop_cached_through(&mut self, through: Index) -> u64 {
        if through < self.cached_from {
            return 0;
        }
        let count = (through - self.cached_from + 1) as usize;
        let mut freed = 0;
        for e in self.entries.drain(..count) {
            freed += e.size();
            if self.evicted_terms.last().map(|&(_, t)| t) != Some(e.term) {
                self.evicted_terms.push((e.index, e.term));
            }
        }
        self.cached_from = through + 1;
        self.cached_bytes -= freed;
        freed
    }

    /// Evicts the oldest entries that may leave until the cache holds at
    /// most `max_bytes`, or none may leave; returns the bytes freed.
    pub(crate) fn evict_beyond(&mut self, max_bytes: u64) -> u64 {
        let bound = self.evictable_through();
        let mut excess = self.cached_bytes.saturating_sub(max_bytes);
        let mut through = self.cached_from - 1;
        for e in &self.entries {
            if excess == 0 || e.index > bound {
                break;
            }
            excess = excess.saturating_sub(e.size());
            through = e.index;
        }
        self.evict(through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{EntryKind, Payload, ENTRY_OVERHEAD_BYTES};

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
        assert!(log.take_committed(u64::MAX).unwrap().is_empty());
        assert_eq!(log.take_unstable().len(), 3);
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed(u64::MAX).unwrap().len(), 2);
        log.persisted_to(3, 1);
        assert_eq!(log.take_committed(u64::MAX).unwrap()[0].index, 3);
    }

    /// A durable log that answers reads from a copy of its entries.
    struct Durable(Vec<Entry>);

    impl LogStorage for Durable {
        fn entries(
            &self,
            lo: Index,
            hi: Index,
            max_bytes: u64,
        ) -> Result<Vec<Entry>, LogReadError> {
            let mut out = Vec::new();
            let mut size = 0;
            for e in self.0.iter().filter(|e| e.index >= lo && e.index < hi) {
                if !push_within(&mut out, &mut size, e, max_bytes) {
                    break;
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn evicted_entries_keep_their_terms_and_are_read_back() {
        let terms = [1, 1, 2, 2, 2, 3, 3, 4];
        let mut log = RaftLog::new(0, 0, ents(&terms, 1), 8, 8).unwrap();
        let all: Vec<Option<Term>> = (0..=9).map(|i| log.term(i)).collect();
        // Nothing leaves without storage to read it back from.
        assert_eq!(log.evict(8), 0);
        log.set_storage(Box::new(Durable(ents(&terms, 1))));
        assert_eq!(log.evict(7), 7 * ENTRY_OVERHEAD_BYTES);
        assert_eq!(log.evicted_terms, vec![(1, 1), (3, 2), (6, 3)]);
        assert_eq!(log.evict(8), ENTRY_OVERHEAD_BYTES);
        assert_eq!((log.cached_bytes(), log.entries().len()), (0, 0));
        assert_eq!(log.evicted_terms, vec![(1, 1), (3, 2), (6, 3), (8, 4)]);
        assert_eq!((0..=9).map(|i| log.term(i)).collect::<Vec<_>>(), all);
        assert_eq!((log.last_index(), log.last_term()), (8, 4));
        assert!(log.is_up_to_date(8, 4) && !log.is_up_to_date(9, 3));
        assert_eq!(log.find_conflict_by_term(8, 3), (7, 3));
        assert_eq!(log.find_conflict_by_term(8, 1), (2, 1));
        let read = log.slice(2, 9, u64::MAX).unwrap();
        assert_eq!(read, ents(&terms, 1)[1..]);
        // At least one entry, then as many as fit.
        assert_eq!(log.slice(2, 9, 1).unwrap().len(), 1);
        assert_eq!(log.slice(2, 9, 3 * ENTRY_OVERHEAD_BYTES).unwrap().len(), 3);

        // New entries follow the evicted ones; a read spans both.
        log.append(ents(&[5, 5], 9));
        assert_eq!((log.last_index(), log.last_term()), (10, 5));
        assert_eq!(log.take_unstable().len(), 2);
        let spanning = log.slice(7, 11, u64::MAX).unwrap();
        assert_eq!(
            spanning.iter().map(|e| e.index).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );

        // Compaction into the evicted runs, then past them.
        log.compact(6, 4);
        assert_eq!(
            (log.first_index(), log.term(3), log.term(4)),
            (4, None, Some(2))
        );
        assert_eq!(log.evicted_terms, vec![(4, 2), (6, 3), (8, 4)]);
        assert_eq!(log.slice(4, 6, u64::MAX).unwrap(), ents(&[2, 2], 4));
        log.compact(8, 9);
        assert!(log.evicted_terms.is_empty());
        assert_eq!(
            (log.first_index(), log.term(8), log.term(9)),
            (9, Some(4), Some(5))
        );
        assert_eq!(log.cached_bytes(), 2 * ENTRY_OVERHEAD_BYTES);

        log.restore(20, 6);
        assert_eq!(
            (log.cached_bytes(), log.last_index(), log.last_term()),
            (0, 20, 6)
        );
        assert!(log.evicted_terms.is_empty());
    }

    #[test]
    fn storage_answers_that_differ_from_the_log_are_refused() {
        let mut log = RaftLog::new(0, 0, ents(&[1, 1, 2], 1), 3, 3).unwrap();
        log.set_storage(Box::new(Durable(ents(&[1, 2, 2], 1))));
        log.evict(3);
        assert_eq!(log.slice(1, 2, u64::MAX).unwrap(), ents(&[1], 1));
        assert_eq!(
            log.slice(1, 4, u64::MAX),
            Err(LogReadError::Inconsistent("a term differs from the log's"))
        );
        log.set_storage(Box::new(Durable(ents(&[1, 2], 2))));
        assert_eq!(
            log.slice(1, 3, u64::MAX),
            Err(LogReadError::Inconsistent("not the range asked for"))
        );
        log.set_storage(Box::new(Durable(Vec::new())));
        assert_eq!(log.slice(2, 3, u64::MAX), Err(LogReadError::Unavailable(2)));
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
    fn a_change_another_follows_counts_as_committed_when_read_from_storage() {
        use crate::core::{Config, Raft, NO_NODE};
        let mut state = restarted_after_two_changes();
        let storage = Durable(state.entries.clone());
        state.entries.drain(..2);
        let config = Config {
            id: 2,
            ..Config::default()
        };
        let raft = Raft::with_log_storage(config, state, Box::new(storage)).unwrap();
        let hs = raft.hard_state();
        assert_eq!((hs.term, hs.vote, hs.commit), (2, NO_NODE, 2));
        assert_eq!(raft.status().conf_state.voters, vec![1, 2, 3, 4]);
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
