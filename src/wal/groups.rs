//! Many Raft groups in one WAL: each group's [`LogState`], which segments
//! hold its records, and how far it allows compaction. Live writes and
//! recovery apply group starts, batches and tombstones through the same
//! [`Groups`] methods, and compaction asks it which segments may go.
//!
//! Every segment a group writes into opens the group's records with a
//! group-start record restating its last index, hard state and snapshot
//! metadata (docs/DISK-FORMAT.md, "Groups"). Replay from any segment on
//! therefore knows where each group's log starts, as the single log knew
//! from a segment header before.

use super::log_state::{Batch, LogState};
use crate::core::{HardState, Index, SnapshotMeta};
use std::collections::BTreeMap;

/// What a group's start record in one segment says, and the lowest entry
/// index the group wrote there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegSpan {
    /// The group's last index when it started writing in the segment.
    pub offset: Index,
    /// The lowest entry index the group wrote in the segment (`u64::MAX`
    /// if none): a replay from the segment must never reach below
    /// `offset + 1`.
    pub min_entry: Index,
}

/// One group's state.
#[derive(Debug)]
pub(crate) struct GroupState<T> {
    pub log: LogState<T>,
    /// The segments holding the group's records, by sequence number.
    pub segs: BTreeMap<u64, SegSpan>,
    /// Entries up to here may be deleted with their segments.
    pub compacted: Index,
}

impl<T> GroupState<T> {
    /// Entries up to here are not needed: compacted, or never stored
    /// since a snapshot replaced the log.
    fn unneeded_upto(&self) -> Index {
        self.compacted.max(self.log.first_index() - 1)
    }

    /// Whether deleting every segment before `head` keeps this group's
    /// state: its first segment from `head` on restates everything before
    /// it that is still needed and is never written below its start, or
    /// (`None`) the group has nothing left that needs older segments but
    /// its state, which compaction then restates in the active segment.
    fn head_keeps_it(&self, head: u64) -> bool {
        let mut from_head = self.segs.range(head..);
        let Some((_, first)) = from_head.next() else {
            return self.log.last_index() <= self.unneeded_upto();
        };
        first.offset <= self.unneeded_upto()
            && first.min_entry > first.offset
            && from_head.all(|(_, s)| s.min_entry > first.offset)
    }

    /// The newest head (a segment sequence number in `oldest..=active`)
    /// such that this group allows deleting the segments before it and
    /// before every older head (deletion is not atomic).
    fn newest_head(&self, oldest: u64, active: u64) -> u64 {
        let mut head = oldest;
        for &seq in self.segs.keys().filter(|&&s| s > oldest) {
            if !self.head_keeps_it(seq) {
                return head;
            }
            head = seq;
        }
        // Heads after the group's last segment find none of its records.
        if head < active && self.head_keeps_it(active) {
            active
        } else {
            head
        }
    }
}

/// A group's state before its first batch in a segment: what its start
/// record restates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Restate {
    pub offset: Index,
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
}

/// Every live group.
#[derive(Debug)]
pub(crate) struct Groups<T> {
    pub map: BTreeMap<u64, GroupState<T>>,
}

impl<T> Default for Groups<T> {
    fn default() -> Self {
        Groups {
            map: BTreeMap::new(),
        }
    }
}

/// The log of a group never written (or removed): empty, starting at 1.
pub(crate) fn fresh_log<T>() -> LogState<T> {
    LogState::new(0)
}

impl<T> Groups<T> {
    /// What a start record for `group` restates now.
    pub(crate) fn restate(&self, group: u64) -> Restate {
        self.map
            .get(&group)
            .map_or_else(Restate::default, |g| Restate {
                offset: g.log.last_index(),
                hard_state: g.log.hard_state,
                snapshot: g.log.snapshot.clone(),
            })
    }

    /// Whether `group` has started writing in segment `seq`.
    pub(crate) fn started_in(&self, group: u64, seq: u64) -> bool {
        self.map
            .get(&group)
            .is_some_and(|g| g.segs.contains_key(&seq))
    }

    /// Applies a group-start record in segment `seq`. A group met for the
    /// first time begins with the restated state; a known one must continue
    /// exactly where its log ends.
    pub(crate) fn start(&mut self, group: u64, seq: u64, restate: Restate) -> Result<(), String> {
        let span = SegSpan {
            offset: restate.offset,
            min_entry: u64::MAX,
        };
        match self.map.get_mut(&group) {
            Some(g) => {
                if g.log.last_index() != restate.offset {
                    return Err(format!(
                        "group {group} starts after index {} in this segment but its log ends at {}",
                        restate.offset,
                        g.log.last_index()
                    ));
                }
                g.segs.insert(seq, span);
            }
            None => {
                let mut log = LogState::new(restate.offset);
                log.hard_state = restate.hard_state;
                log.snapshot = restate.snapshot;
                self.map.insert(
                    group,
                    GroupState {
                        log,
                        segs: BTreeMap::from([(seq, span)]),
                        compacted: restate.offset,
                    },
                );
            }
        }
        Ok(())
    }

    /// Why `batch` may not be applied to `group`, if it may not.
    pub(crate) fn check(&self, group: u64, batch: &Batch<impl Sized>) -> Result<(), String> {
        let checked = match self.map.get(&group) {
            Some(g) => g.log.check_batch(batch),
            None => fresh_log::<()>().check_batch(batch),
        };
        checked.map_err(|why| format!("group {group}: {why}"))
    }

    /// Applies a batch that passed [`Groups::check`] to a group that has
    /// started in segment `seq`.
    pub(crate) fn apply(&mut self, group: u64, seq: u64, batch: Batch<T>) -> Result<(), String> {
        let g = self
            .map
            .get_mut(&group)
            .ok_or_else(|| format!("group {group} writes before its start record"))?;
        let span = g
            .segs
            .get_mut(&seq)
            .ok_or_else(|| format!("group {group} writes in a segment it did not start in"))?;
        if let Some(first) = batch.entries.first() {
            span.min_entry = span.min_entry.min(first.0);
        }
        g.log.apply_batch(batch);
        Ok(())
    }

    /// Forgets a removed group.
    pub(crate) fn remove(&mut self, group: u64) {
        self.map.remove(&group);
    }

    /// The newest segment that may become the oldest one, given the
    /// segments `oldest..=active`, and the groups that then lose every
    /// segment they started in (their state must be restated first).
    pub(crate) fn purge_plan(&self, oldest: u64, active: u64) -> (u64, Vec<u64>) {
        let head = self
            .map
            .values()
            .map(|g| g.newest_head(oldest, active))
            .fold(active, u64::min);
        let restate = self
            .map
            .iter()
            .filter(|(_, g)| g.segs.range(head..).next().is_none())
            .map(|(&id, _)| id)
            .collect();
        (head, restate)
    }

    /// Groups that keep segments older than `active` from being deleted,
    /// oldest pinned segment first, with the first index each still needs.
    pub(crate) fn pinning(&self, oldest: u64, active: u64) -> Vec<(u64, Index)> {
        let mut pins: Vec<(u64, u64, Index)> = self
            .map
            .iter()
            .map(|(&id, g)| (g.newest_head(oldest, active), id, g.unneeded_upto() + 1))
            .filter(|&(head, _, _)| head < active)
            .collect();
        pins.sort_unstable();
        pins.into_iter().map(|(_, id, need)| (id, need)).collect()
    }

    /// Forgets the segments before `head` (deleted) and the entries that
    /// lived only there.
    pub(crate) fn drop_segments_before(&mut self, head: u64) {
        for g in self.map.values_mut() {
            g.segs = g.segs.split_off(&head);
            let start = g
                .segs
                .values()
                .next()
                .map_or(g.log.last_index(), |s| s.offset);
            g.log.drop_before(start + 1);
            g.compacted = g.compacted.max(start);
        }
    }

    /// The same groups with every entry's value transformed.
    pub(crate) fn map_entries<U>(self, mut f: impl FnMut(u64, Index, T) -> U) -> Groups<U> {
        Groups {
            map: self
                .map
                .into_iter()
                .map(|(id, g)| {
                    let mut index = g.log.first_index();
                    let log = g.log.map(|v| {
                        let u = f(id, index, v);
                        index += 1;
                        u
                    });
                    (
                        id,
                        GroupState {
                            log,
                            segs: g.segs,
                            compacted: g.compacted,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: Index, n: u64, term: u64) -> Batch<()> {
        Batch {
            entries: (first..first + n).map(|i| (i, term, ())).collect(),
            ..Batch::default()
        }
    }

    fn write(g: &mut Groups<()>, group: u64, seq: u64, batch: Batch<()>) {
        if !g.started_in(group, seq) {
            let r = g.restate(group);
            g.start(group, seq, r).unwrap();
        }
        g.check(group, &batch).unwrap();
        g.apply(group, seq, batch).unwrap();
    }

    #[test]
    fn heads_follow_every_group() {
        let mut g = Groups::default();
        write(&mut g, 1, 1, entries(1, 10, 1));
        write(&mut g, 2, 1, entries(1, 5, 1));
        write(&mut g, 1, 2, entries(11, 10, 1));
        write(&mut g, 1, 3, entries(21, 10, 1));
        // Nothing compacted: the oldest segment stays.
        assert_eq!(g.purge_plan(1, 3), (1, vec![]));
        assert_eq!(g.pinning(1, 3), vec![(1, 1), (2, 1)]);
        g.map.get_mut(&1).unwrap().compacted = 15;
        // Group 2 still needs its entries in segment 1.
        assert_eq!(g.purge_plan(1, 3).0, 1);
        assert_eq!(g.pinning(1, 3), vec![(2, 1), (1, 16)]);
        g.map.get_mut(&2).unwrap().compacted = 5;
        // Group 1 needs 16.. in segment 2; group 2 only its state.
        assert_eq!(g.purge_plan(1, 3), (2, vec![2]));
        g.map.get_mut(&1).unwrap().compacted = 30;
        assert_eq!(g.purge_plan(1, 3), (3, vec![2]));
    }

    #[test]
    fn a_rewrite_below_a_segment_start_pins_the_segment_before() {
        let mut g = Groups::default();
        write(&mut g, 7, 1, entries(1, 10, 1));
        write(&mut g, 7, 2, entries(11, 10, 1));
        write(&mut g, 7, 3, entries(15, 8, 2)); // replaces 15..20 of segment 2
        g.map.get_mut(&7).unwrap().compacted = 20;
        // Replay from segment 3 would meet entry 15 after a start at 20.
        assert_eq!(g.purge_plan(1, 3), (2, vec![]));
        g.drop_segments_before(2);
        assert_eq!(g.map[&7].log.first_index(), 11);
        // A known group must continue where its log ends.
        g.start(7, 4, Restate::default()).unwrap_err();
    }
}
