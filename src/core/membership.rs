//! Who votes, who learns, and what counts as a quorum.
//!
//! A membership may be joint (an incoming and an outgoing voter set); every
//! decision then needs a majority of both sets.

use super::config::ConfigError;
use super::types::{ConfState, Index, NodeId, NO_NODE};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Membership {
    incoming: Vec<NodeId>,
    outgoing: Vec<NodeId>,
    learners: Vec<NodeId>,
}

impl Membership {
    pub(crate) fn from_conf_state(cs: &ConfState) -> Result<Membership, ConfigError> {
        let sorted = |ids: &[NodeId]| {
            let mut v = ids.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        let m = Membership {
            incoming: sorted(&cs.voters),
            outgoing: sorted(&cs.voters_outgoing),
            learners: sorted(&[cs.learners.as_slice(), cs.learners_next.as_slice()].concat()),
        };
        if m.members().any(|id| id == NO_NODE) {
            return Err(ConfigError::InvalidMembership("node id 0 is reserved"));
        }
        if m.learners
            .iter()
            .any(|id| m.incoming.binary_search(id).is_ok())
        {
            return Err(ConfigError::InvalidMembership(
                "a node is both voter and learner",
            ));
        }
        Ok(m)
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.incoming.binary_search(&id).is_ok() || self.outgoing.binary_search(&id).is_ok()
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.binary_search(&id).is_ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.incoming.is_empty() && self.outgoing.is_empty() && self.learners.is_empty()
    }

    /// Every member (voters of both sets and learners), each once, sorted.
    pub(crate) fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut all: Vec<NodeId> = self
            .incoming
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// The highest index a quorum has reached, given each voter's match.
    pub(crate) fn committed_index(&self, matched: impl Fn(NodeId) -> Index) -> Index {
        majority_index(&self.incoming, &matched).min(majority_index(&self.outgoing, &matched))
    }

    pub(crate) fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        match (
            majority_vote(&self.incoming, votes),
            majority_vote(&self.outgoing, votes),
        ) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// True when the nodes for which `active` holds form a quorum.
    pub(crate) fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        let votes: BTreeMap<NodeId, bool> = self.members().map(|id| (id, active(id))).collect();
        self.vote_result(&votes) == VoteResult::Won
    }
}

/// An empty voter set agrees to everything, so that the outgoing half of a
/// non-joint membership never holds a decision back.
fn majority_index(voters: &[NodeId], matched: &impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    let mut indexes: Vec<Index> = voters.iter().map(|&id| matched(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

fn majority_vote(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joint(incoming: &[NodeId], outgoing: &[NodeId]) -> Membership {
        Membership::from_conf_state(&ConfState {
            voters: incoming.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            ..ConfState::default()
        })
        .unwrap()
    }

    #[test]
    fn commit_index_is_the_majority_match() {
        let m = joint(&[1, 2, 3], &[]);
        let matched = |id: NodeId| [0, 5, 9, 7][id as usize];
        assert_eq!(m.committed_index(matched), 7);
        let m = joint(&[1, 2, 3, 4], &[]);
        let matched = |id: NodeId| [0, 5, 9, 7, 1][id as usize];
        assert_eq!(m.committed_index(matched), 5);
    }

    #[test]
    fn joint_decisions_need_both_majorities() {
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        let matched = |id: NodeId| [0, 9, 9, 2, 8, 8][id as usize];
        assert_eq!(m.committed_index(matched), 8);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true)].into();
        assert_eq!(m.vote_result(&votes), VoteResult::Pending);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(m.vote_result(&votes), VoteResult::Lost);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (3, true), (4, true)].into();
        assert_eq!(m.vote_result(&votes), VoteResult::Won);
    }
}
