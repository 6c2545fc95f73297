//! Who votes, who learns, and what counts as a quorum.
//!
//! A membership may be joint (an incoming and an outgoing voter set); every
//! decision then needs a majority of both sets.

use super::config::ConfigError;
use super::types::{ConfChange, ConfState, Index, NodeId, NO_NODE};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// A joint change while joint, or leaving a joint configuration that is
    /// not in force, or a single-step change while joint.
    WrongPhase(&'static str),
    /// The change names node 0, or would leave no voter, or names a node in
    /// a way that contradicts its current role.
    Invalid(&'static str),
}

impl fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfChangeError::WrongPhase(why) => write!(f, "membership change refused: {why}"),
            ConfChangeError::Invalid(why) => write!(f, "invalid membership change: {why}"),
        }
    }
}

impl std::error::Error for ConfChangeError {}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    incoming: Vec<NodeId>,
    outgoing: Vec<NodeId>,
    learners: Vec<NodeId>,
    /// Outgoing voters that become learners when the joint phase ends.
    learners_next: Vec<NodeId>,
    auto_leave: bool,
}

fn sorted(ids: &[NodeId]) -> Vec<NodeId> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn contains(ids: &[NodeId], id: NodeId) -> bool {
    ids.binary_search(&id).is_ok()
}

fn insert(ids: &mut Vec<NodeId>, id: NodeId) {
    if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}

fn remove(ids: &mut Vec<NodeId>, id: NodeId) {
    if let Ok(at) = ids.binary_search(&id) {
        ids.remove(at);
    }
}

impl Membership {
    pub(crate) fn from_conf_state(cs: &ConfState) -> Result<Membership, ConfigError> {
        let m = Membership {
            incoming: sorted(&cs.voters),
            outgoing: sorted(&cs.voters_outgoing),
            learners: sorted(&cs.learners),
            learners_next: sorted(&cs.learners_next),
            auto_leave: cs.auto_leave,
        };
        m.check().map_err(ConfigError::InvalidMembership)?;
        Ok(m)
    }

    /// The invariants every membership keeps.
    fn check(&self) -> Result<(), &'static str> {
        if self.members().any(|id| id == NO_NODE) {
            return Err("node id 0 is reserved");
        }
        let is_voter = |id: &NodeId| self.is_voter(*id);
        if self.learners.iter().any(is_voter) {
            return Err("a node is both voter and learner");
        }
        if self
            .learners_next
            .iter()
            .any(|id| !contains(&self.outgoing, *id))
        {
            return Err("a pending learner is not an outgoing voter");
        }
        // Only a node that knows no membership yet (one being added) has no
        // voter: a membership of learners alone could never elect or
        // commit, and would count an election as won with no vote at all.
        if self.incoming.is_empty() && !self.is_empty() {
            return Err("a membership without voters");
        }
        Ok(())
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        let mut conf_state = ConfState::default();
        self.fill_conf_state(&mut conf_state);
        conf_state
    }

    /// [`Membership::conf_state`] into `out`, reusing its vectors.
    pub(crate) fn fill_conf_state(&self, out: &mut ConfState) {
        out.voters.clone_from(&self.incoming);
        out.learners.clone_from(&self.learners);
        out.voters_outgoing.clone_from(&self.outgoing);
        out.learners_next.clone_from(&self.learners_next);
        out.auto_leave = self.auto_leave;
    }

    pub(crate) fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub(crate) fn auto_leave(&self) -> bool {
        self.auto_leave
    }

    pub(crate) fn is_learner(&self, id: NodeId) -> bool {
        contains(&self.learners, id) || contains(&self.learners_next, id)
    }

    /// The membership after `change`, or why it cannot be made.
    pub(crate) fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
        match change {
            ConfChange::EnterJoint { voters, learners } => {
                if self.is_joint() {
                    return Err(ConfChangeError::WrongPhase(
                        "already in a joint configuration",
                    ));
                }
                let (voters, learners) = (sorted(voters), sorted(learners));
                if voters.is_empty() {
                    return Err(ConfChangeError::Invalid("the target has no voter"));
                }
                if voters.iter().any(|id| contains(&learners, *id)) {
                    return Err(ConfChangeError::Invalid("a node is both voter and learner"));
                }
                next.outgoing = self.incoming.clone();
                next.incoming = voters;
                // A voter that is to become a learner keeps voting in the
                // outgoing half until the joint phase ends.
                next.learners_next = learners
                    .iter()
                    .copied()
                    .filter(|id| contains(&next.outgoing, *id))
                    .collect();
                next.learners = learners
                    .into_iter()
                    .filter(|id| !contains(&next.outgoing, *id))
                    .collect();
                // From an empty membership (bootstrap) there is nothing to
                // be joint with: the target is simply in force.
                next.auto_leave = next.is_joint();
            }
            ConfChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err(ConfChangeError::WrongPhase("not in a joint configuration"));
                }
                next.outgoing.clear();
                for id in std::mem::take(&mut next.learners_next) {
                    insert(&mut next.learners, id);
                }
                next.auto_leave = false;
            }
            single => {
                if self.is_joint() {
                    return Err(ConfChangeError::WrongPhase(
                        "a single-step change during a joint configuration",
                    ));
                }
                next.apply_single(single)?;
            }
        }
        next.check().map_err(ConfChangeError::Invalid)?;
        Ok(next)
    }

    fn apply_single(&mut self, change: &ConfChange) -> Result<(), ConfChangeError> {
        match *change {
            ConfChange::AddVoter(id) | ConfChange::PromoteLearner(id) => {
                if id == NO_NODE {
                    return Err(ConfChangeError::Invalid("node id 0 is reserved"));
                }
                if matches!(change, ConfChange::PromoteLearner(_)) && !self.is_learner(id) {
                    return Err(ConfChangeError::Invalid("only a learner can be promoted"));
                }
                remove(&mut self.learners, id);
                insert(&mut self.incoming, id);
            }
            ConfChange::AddLearner(id) => {
                if id == NO_NODE {
                    return Err(ConfChangeError::Invalid("node id 0 is reserved"));
                }
                if self.is_voter(id) {
                    return Err(ConfChangeError::Invalid(
                        "demoting a voter needs a joint change",
                    ));
                }
                insert(&mut self.learners, id);
            }
            ConfChange::RemoveNode(id) => {
                if !self.contains(id) {
                    return Err(ConfChangeError::Invalid("not a member"));
                }
                remove(&mut self.incoming, id);
                remove(&mut self.learners, id);
                if self.incoming.is_empty() {
                    return Err(ConfChangeError::Invalid("would remove the last voter"));
                }
            }
            ConfChange::EnterJoint { .. } | ConfChange::LeaveJoint => {
                unreachable!("joint changes are handled by apply")
            }
        }
        Ok(())
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        contains(&self.incoming, id) || contains(&self.outgoing, id)
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
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
            .chain(&self.learners_next)
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
        if self.incoming.is_empty() {
            // No voter (no membership known yet): nothing can be decided.
            return VoteResult::Lost;
        }
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

    fn simple(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership::from_conf_state(&ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..ConfState::default()
        })
        .unwrap()
    }

    #[test]
    fn memberships_without_voters_are_refused() {
        for cs in [
            ConfState {
                learners: vec![1, 2],
                ..ConfState::default()
            },
            ConfState {
                voters_outgoing: vec![1, 2],
                ..ConfState::default()
            },
        ] {
            assert_eq!(
                Membership::from_conf_state(&cs),
                Err(ConfigError::InvalidMembership(
                    "a membership without voters"
                ))
            );
        }
        let empty = Membership::from_conf_state(&ConfState::default()).unwrap();
        assert!(empty.apply(&ConfChange::AddLearner(4)).is_err());
        let everyone = [(1, true), (2, true)].into_iter().collect();
        assert_eq!(empty.vote_result(&everyone), VoteResult::Lost);
        assert!(!empty.has_quorum(|_| true));
    }

    #[test]
    fn joint_change_passes_through_both_voter_sets() {
        let m = simple(&[1, 2, 3], &[4]);
        let joint = m
            .apply(&ConfChange::EnterJoint {
                voters: vec![2, 3, 4],
                learners: vec![1, 5],
            })
            .unwrap();
        let cs = joint.conf_state();
        assert_eq!(cs.voters, vec![2, 3, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(cs.learners, vec![5]);
        assert_eq!(cs.learners_next, vec![1]);
        assert!(joint.is_voter(1) && joint.is_voter(4));
        assert!(matches!(
            joint.apply(&ConfChange::AddVoter(9)),
            Err(ConfChangeError::WrongPhase(_))
        ));
        let left = joint.apply(&ConfChange::LeaveJoint).unwrap();
        assert_eq!(left, simple(&[2, 3, 4], &[1, 5]));
    }

    #[test]
    fn single_step_changes_keep_the_invariants() {
        let m = simple(&[1, 2, 3], &[]);
        let m = m.apply(&ConfChange::AddLearner(4)).unwrap();
        assert!(m.is_learner(4) && !m.is_voter(4));
        assert!(m.apply(&ConfChange::PromoteLearner(5)).is_err());
        let m = m.apply(&ConfChange::PromoteLearner(4)).unwrap();
        assert_eq!(m, simple(&[1, 2, 3, 4], &[]));
        assert!(m.apply(&ConfChange::AddLearner(2)).is_err());
        let m = m.apply(&ConfChange::RemoveNode(1)).unwrap();
        assert_eq!(m, simple(&[2, 3, 4], &[]));
        assert!(m.apply(&ConfChange::RemoveNode(7)).is_err());
        let one = simple(&[1], &[]);
        assert!(one.apply(&ConfChange::RemoveNode(1)).is_err());
        assert!(one.apply(&ConfChange::AddVoter(0)).is_err());
        assert!(one.apply(&ConfChange::LeaveJoint).is_err());
    }

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
