//! Which log index each local proposal landed at, so that the committed
//! entry at that index can be matched to its proposal: the same term means
//! it committed; another term means a new leader overwrote it.

use super::batch::{DropReason, ProposalOutcome, ProposalResult};
use crate::core::{Entry, Index, Term};
use crate::metrics::Histogram;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Default)]
pub(crate) struct ProposalTracker {
    by_index: BTreeMap<Index, Tracked>,
    /// From each append to its commit.
    pub(crate) commit_latency: Histogram,
}

/// A proposal appended at an index.
struct Tracked {
    id: u64,
    term: Term,
    appended_at: Instant,
}

impl ProposalTracker {
    /// Records that proposal `id` was appended at `(index, term)`. A proposal
    /// already tracked at that index was overwritten in this node's own log
    /// (it lost leadership and regained it), so it is dropped now.
    pub(crate) fn appended(
        &mut self,
        id: u64,
        index: Index,
        term: Term,
    ) -> Option<ProposalOutcome> {
        let tracked = Tracked {
            id,
            term,
            appended_at: Instant::now(),
        };
        self.by_index
            .insert(index, tracked)
            .map(|old| ProposalOutcome {
                proposal_id: old.id,
                result: ProposalResult::Dropped(DropReason::Superseded),
            })
    }

    /// Settles the proposal tracked at the index of `entry`, which is being
    /// handed to the host for applying. Returns the proposal id to attach to
    /// the entry (0 when it is not this node's) and the outcome to report.
    pub(crate) fn committed(&mut self, entry: &Entry) -> (u64, Option<ProposalOutcome>) {
        match self.by_index.remove(&entry.index) {
            Some(tracked) if tracked.term == entry.term => {
                self.commit_latency.observe(tracked.appended_at.elapsed());
                (
                    tracked.id,
                    Some(ProposalOutcome {
                        proposal_id: tracked.id,
                        result: ProposalResult::Committed { index: entry.index },
                    }),
                )
            }
            Some(tracked) => (
                0,
                Some(ProposalOutcome {
                    proposal_id: tracked.id,
                    result: ProposalResult::Dropped(DropReason::Superseded),
                }),
            ),
            None => (0, None),
        }
    }
}

impl ProposalTracker {
    /// Settles every proposal at or below `index`, which a snapshot
    /// installed from the leader now covers: their entries will never be
    /// handed out, so their fate is unknown here.
    pub(crate) fn covered_by_snapshot(&mut self, index: Index) -> Vec<ProposalOutcome> {
        let later = self.by_index.split_off(&(index + 1));
        Self::unknown(std::mem::replace(&mut self.by_index, later))
    }

    /// Settles every proposal above `committed`: this node was removed from
    /// the cluster, so nobody will tell it how far the log commits beyond
    /// what it knows, while the remaining members may still commit those
    /// entries. Proposals at or below `committed` are settled as usual when
    /// their entries are handed out.
    pub(crate) fn beyond_removal(&mut self, committed: Index) -> Vec<ProposalOutcome> {
        Self::unknown(self.by_index.split_off(&(committed + 1)))
    }

    fn unknown(settled: BTreeMap<Index, Tracked>) -> Vec<ProposalOutcome> {
        settled
            .into_iter()
            .map(|(at, tracked)| ProposalOutcome {
                proposal_id: tracked.id,
                result: ProposalResult::Unknown { index: at },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{EntryKind, Payload};

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Payload::default(),
        }
    }

    #[test]
    fn same_term_commits_other_term_drops() {
        let mut tracker = ProposalTracker::default();
        assert!(tracker.appended(7, 3, 2).is_none());
        assert!(tracker.appended(8, 4, 2).is_none());
        let (id, outcome) = tracker.committed(&entry(3, 2));
        assert_eq!(id, 7);
        assert_eq!(
            outcome.unwrap().result,
            ProposalResult::Committed { index: 3 }
        );
        let (id, outcome) = tracker.committed(&entry(4, 3));
        assert_eq!(id, 0);
        assert_eq!(
            outcome.unwrap().result,
            ProposalResult::Dropped(DropReason::Superseded)
        );
        assert_eq!(tracker.committed(&entry(5, 3)), (0, None));
    }

    #[test]
    fn a_snapshot_settles_the_proposals_it_covers() {
        let mut tracker = ProposalTracker::default();
        tracker.appended(1, 5, 1);
        tracker.appended(2, 6, 1);
        tracker.appended(3, 9, 1);
        let settled = tracker.covered_by_snapshot(6);
        assert_eq!(
            settled.iter().map(|o| o.proposal_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(settled[1].result, ProposalResult::Unknown { index: 6 });
        assert_eq!(tracker.committed(&entry(9, 1)).0, 3);
    }

    #[test]
    fn removal_settles_only_what_lies_beyond_the_commit_index() {
        let mut tracker = ProposalTracker::default();
        tracker.appended(1, 5, 1);
        tracker.appended(2, 6, 1);
        let settled = tracker.beyond_removal(5);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].proposal_id, 2);
        assert_eq!(settled[0].result, ProposalResult::Unknown { index: 6 });
        assert_eq!(tracker.committed(&entry(5, 1)).0, 1);
    }

    #[test]
    fn reappending_at_an_index_drops_the_older_proposal() {
        let mut tracker = ProposalTracker::default();
        tracker.appended(1, 5, 1);
        let outcome = tracker.appended(2, 5, 3).unwrap();
        assert_eq!(outcome.proposal_id, 1);
        assert_eq!(tracker.committed(&entry(5, 3)).0, 2);
    }
}
