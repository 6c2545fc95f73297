//! The checker's own model of an embraft membership: who votes, who learns,
//! what a change does, and what counts as a quorum.
//!
//! Written from the rules in docs/ARCHITECTURE.md ("Membership") rather than
//! taken from the core, so that the checker is an independent oracle: the
//! memberships it derives from the committed log must agree with the ones
//! the nodes report.

use embraft::core::{ConfChange, ConfState, NodeId};
use std::collections::BTreeSet;

/// A membership; outside a joint configuration `outgoing` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub incoming: BTreeSet<NodeId>,
    pub outgoing: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint phase ends.
    pub learners_next: BTreeSet<NodeId>,
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

impl Members {
    pub fn from_conf_state(cs: &ConfState) -> Members {
        Members {
            incoming: set(&cs.voters),
            outgoing: set(&cs.voters_outgoing),
            learners: set(&cs.learners),
            learners_next: set(&cs.learners_next),
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters of both halves, each once.
    pub fn voters(&self) -> Vec<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    /// Every member, voters and learners, each once.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: BTreeSet<NodeId> = self.incoming.union(&self.outgoing).copied().collect();
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all.into_iter().collect()
    }

    /// The membership after `change`, or why the core refuses it.
    pub fn after(&self, change: &ConfChange) -> Result<Members, &'static str> {
        let mut next = self.clone();
        match change {
            ConfChange::EnterJoint { voters, learners } => {
                if self.is_joint() {
                    return Err("a joint change while joint");
                }
                let (voters, learners) = (set(voters), set(learners));
                if voters.is_empty() {
                    return Err("a target without voters");
                }
                if !voters.is_disjoint(&learners) {
                    return Err("a node both voter and learner");
                }
                // From the empty membership (the founding entry) the target
                // is simply in force; otherwise the old voters stay on as the
                // outgoing half, and those of them that are to learn keep
                // voting there until the joint phase ends.
                next.outgoing = std::mem::take(&mut next.incoming);
                next.incoming = voters;
                next.learners_next = learners.intersection(&next.outgoing).copied().collect();
                next.learners = learners.difference(&next.outgoing).copied().collect();
            }
            ConfChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err("leaving a joint configuration that is not in force");
                }
                next.outgoing.clear();
                next.learners.append(&mut next.learners_next);
            }
            _ if self.is_joint() => return Err("a single-step change while joint"),
            &ConfChange::AddVoter(id) | &ConfChange::PromoteLearner(id) => {
                if matches!(change, ConfChange::PromoteLearner(_)) && !self.is_learner(id) {
                    return Err("promoting a node that is no learner");
                }
                next.learners.remove(&id);
                next.incoming.insert(id);
            }
            &ConfChange::AddLearner(id) => {
                if self.is_voter(id) {
                    return Err("a voter made a learner in a single step");
                }
                next.learners.insert(id);
            }
            &ConfChange::RemoveNode(id) => {
                if !self.contains(id) {
                    return Err("removing a non-member");
                }
                next.incoming.remove(&id);
                next.learners.remove(&id);
                if next.incoming.is_empty() {
                    return Err("removing the last voter");
                }
            }
        }
        if next.members().contains(&0) {
            return Err("node id 0");
        }
        Ok(next)
    }

    /// Whether the nodes for which `yes` holds decide: a majority of the
    /// incoming voters and, while joint, a majority of the outgoing ones.
    /// The empty membership (before the founding entry) decides nothing.
    pub fn is_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let majority = |voters: &BTreeSet<NodeId>| {
            voters.iter().filter(|&&id| yes(id)).count() > voters.len() / 2
        };
        !self.incoming.is_empty()
            && majority(&self.incoming)
            && (self.outgoing.is_empty() || majority(&self.outgoing))
    }

    /// Whether every quorum of this membership contains a node for which
    /// `holds` is true: then no election this membership runs can be won
    /// without one of them. Vacuous for the empty membership.
    pub fn is_blocked_by(&self, holds: impl Fn(NodeId) -> bool) -> bool {
        self.incoming.is_empty() || !self.is_quorum(|id| !holds(id))
    }

    pub fn matches(&self, cs: &ConfState) -> bool {
        *self == Members::from_conf_state(cs)
    }
}
