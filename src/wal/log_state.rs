//! The logical state a WAL's records describe: which entries are live, the
//! hard state and the snapshot metadata. Live appends and recovery both go
//! through [`LogState::check_batch`] and [`LogState::apply_batch`], so a log
//! replayed from disk ends up exactly where the writer left it.

use crate::core::{HardState, Index, SnapshotMeta, Term};
use std::collections::VecDeque;

/// One batch, as written by a single append or snapshot save: the unit
/// recovery accepts or rejects as a whole. `T` is what the state keeps per
/// entry (its location on disk; during recovery also its data).
#[derive(Debug)]
pub(crate) struct Batch<T> {
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<(Index, Term, T)>,
    pub hard_state: Option<HardState>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            snapshot: None,
            entries: Vec::new(),
            hard_state: None,
        }
    }
}

/// The live entries (contiguous, `offset + 1 ..= offset + len`), the last
/// hard state and the last snapshot metadata.
#[derive(Debug)]
pub(crate) struct LogState<T> {
    /// Index just before the first live entry.
    offset: Index,
    /// Term and payload of each live entry, oldest first.
    entries: VecDeque<(Term, T)>,
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
}

impl<T> LogState<T> {
    /// An empty log whose next entry will get `offset + 1`.
    pub(crate) fn new(offset: Index) -> LogState<T> {
        LogState {
            offset,
            entries: VecDeque::new(),
            hard_state: HardState::default(),
            snapshot: None,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// The entry at `index`, if live.
    pub(crate) fn get(&self, index: Index) -> Option<&(Term, T)> {
        let pos = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(pos).ok()?)
    }

    /// The term at `index`: a live entry's, the snapshot's at its index, or
    /// 0 for index 0 of a log that never lost its beginning.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if let Some((term, _)) = self.get(index) {
            return Some(*term);
        }
        match &self.snapshot {
            Some(s) if s.index == index => Some(s.term),
            _ if index == 0 && self.offset == 0 => Some(0),
            _ => None,
        }
    }

    /// Why `batch` may not be applied to this state, if it may not.
    pub(crate) fn check_batch<U>(&self, batch: &Batch<U>) -> Result<(), String> {
        if let Some(meta) = &batch.snapshot {
            if !batch.entries.is_empty() {
                return Err("a batch may not carry both a snapshot and entries".into());
            }
            if meta.index < self.snapshot_index() {
                return Err(format!(
                    "snapshot at index {} is older than the saved one at {}",
                    meta.index,
                    self.snapshot_index()
                ));
            }
        }
        let Some(&(first, first_term, _)) = batch.entries.first() else {
            return Ok(());
        };
        if first <= self.snapshot_index() {
            return Err(format!(
                "entry {first} is covered by the snapshot at {}",
                self.snapshot_index()
            ));
        }
        if first < self.first_index() || first > self.last_index() + 1 {
            return Err(format!(
                "entry {first} does not attach to the log [{}, {}]",
                self.first_index(),
                self.last_index()
            ));
        }
        if let Some(prev_term) = self.term(first - 1) {
            if first_term < prev_term {
                return Err(format!(
                    "entry {first} has term {first_term}, below the previous entry's {prev_term}"
                ));
            }
        }
        for pair in batch.entries.windows(2) {
            let ((a, a_term, _), (b, b_term, _)) = (&pair[0], &pair[1]);
            if *b != a + 1 {
                return Err(format!("batch is not contiguous: entry {b} follows {a}"));
            }
            if b_term < a_term {
                return Err(format!(
                    "term goes down from {a_term} to {b_term} at entry {b}"
                ));
            }
        }
        Ok(())
    }

    /// Applies a batch that passed [`LogState::check_batch`]: a snapshot
    /// that the log does not contain replaces the whole log; entries replace
    /// the suffix from their first index.
    pub(crate) fn apply_batch(&mut self, batch: Batch<T>) {
        if let Some(meta) = batch.snapshot {
            let log_has_it = meta.index <= self.offset
                || (meta.index <= self.last_index() && self.term(meta.index) == Some(meta.term));
            if !log_has_it {
                self.entries.clear();
                self.offset = meta.index;
            }
            self.snapshot = Some(meta);
        }
        if let Some(&(first, _, _)) = batch.entries.first() {
            self.entries.truncate((first - self.first_index()) as usize);
            self.entries.extend(
                batch
                    .entries
                    .into_iter()
                    .map(|(_, term, value)| (term, value)),
            );
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
    }

    /// Forgets the entries before `index` (their segments were deleted).
    pub(crate) fn drop_before(&mut self, index: Index) {
        while self.offset + 1 < index && self.entries.pop_front().is_some() {
            self.offset += 1;
        }
    }

    /// Live entries from `from` on, with their indexes.
    pub(crate) fn iter_from(&self, from: Index) -> impl Iterator<Item = (Index, &(Term, T))> {
        let skip = from.saturating_sub(self.first_index()) as usize;
        let offset = self.offset;
        self.entries
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, e)| (offset + 1 + i as Index, e))
    }

    /// The same state with every entry's value transformed.
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> LogState<U> {
        LogState {
            offset: self.offset,
            entries: self.entries.into_iter().map(|(t, v)| (t, f(v))).collect(),
            hard_state: self.hard_state,
            snapshot: self.snapshot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: Index, terms: &[Term]) -> Batch<()> {
        Batch {
            entries: terms
                .iter()
                .enumerate()
                .map(|(i, &t)| (first + i as Index, t, ()))
                .collect(),
            ..Batch::default()
        }
    }

    #[test]
    fn append_truncate_and_snapshot_reset() {
        let mut s: LogState<()> = LogState::new(0);
        assert_eq!(s.term(0), Some(0));
        let b = entries(1, &[1, 1, 2]);
        s.check_batch(&b).unwrap();
        s.apply_batch(b);
        assert_eq!((s.first_index(), s.last_index()), (1, 3));
        assert!(s.check_batch(&entries(5, &[2])).is_err());
        assert!(s.check_batch(&entries(2, &[0])).is_err());
        let b = entries(2, &[3, 3]);
        s.check_batch(&b).unwrap();
        s.apply_batch(b);
        assert_eq!(s.last_index(), 3);
        assert_eq!(s.term(3), Some(3));
        let snap = SnapshotMeta {
            index: 10,
            term: 4,
            ..Default::default()
        };
        let b = Batch {
            snapshot: Some(snap),
            ..Batch::default()
        };
        s.check_batch(&b).unwrap();
        s.apply_batch(b);
        assert_eq!((s.first_index(), s.last_index()), (11, 10));
        assert_eq!(s.term(10), Some(4));
        assert!(s.check_batch(&entries(10, &[4])).is_err());
    }
}
