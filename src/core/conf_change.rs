//! The byte form of a membership change, stored as the data of a
//! [`EntryKind::ConfChange`](super::types::EntryKind) entry.
//!
//! The core owns this format (rather than the codec) because it must read
//! committed changes to put them into force, and the core sits below the
//! codec. Layout (little-endian), documented in docs/WIRE.md:
//!
//! - leave joint: the empty byte string;
//! - otherwise: version `1`, a tag, then for tags 1-4 the node id (u64),
//!   for tag 5 the voters and the learners, each a u32 count and u64 ids.

use super::types::{ConfChange, NodeId};

const VERSION: u8 = 1;
const ADD_VOTER: u8 = 1;
const PROMOTE_LEARNER: u8 = 2;
const ADD_LEARNER: u8 = 3;
const REMOVE_NODE: u8 = 4;
const ENTER_JOINT: u8 = 5;

impl ConfChange {
    /// The entry data for this change.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (tag, node) = match self {
            ConfChange::LeaveJoint => return out,
            ConfChange::EnterJoint { voters, learners } => {
                out.extend_from_slice(&[VERSION, ENTER_JOINT]);
                put_ids(&mut out, voters);
                put_ids(&mut out, learners);
                return out;
            }
            ConfChange::AddVoter(id) => (ADD_VOTER, id),
            ConfChange::PromoteLearner(id) => (PROMOTE_LEARNER, id),
            ConfChange::AddLearner(id) => (ADD_LEARNER, id),
            ConfChange::RemoveNode(id) => (REMOVE_NODE, id),
        };
        out.extend_from_slice(&[VERSION, tag]);
        out.extend_from_slice(&node.to_le_bytes());
        out
    }

    /// Reads entry data back; `None` for anything that is not exactly one
    /// encoded change.
    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        let Some((&[VERSION, tag], mut rest)) = data.split_first_chunk::<2>() else {
            return data.is_empty().then_some(ConfChange::LeaveJoint);
        };
        let change = match tag {
            ENTER_JOINT => ConfChange::EnterJoint {
                voters: take_ids(&mut rest)?,
                learners: take_ids(&mut rest)?,
            },
            _ => {
                let node = take_u64(&mut rest)?;
                match tag {
                    ADD_VOTER => ConfChange::AddVoter(node),
                    PROMOTE_LEARNER => ConfChange::PromoteLearner(node),
                    ADD_LEARNER => ConfChange::AddLearner(node),
                    REMOVE_NODE => ConfChange::RemoveNode(node),
                    _ => return None,
                }
            }
        };
        rest.is_empty().then_some(change)
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[NodeId]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (bytes, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_le_bytes(*bytes))
}

fn take_ids(rest: &mut &[u8]) -> Option<Vec<NodeId>> {
    let (count, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    let count = u32::from_le_bytes(*count) as usize;
    if count > rest.len() / 8 {
        return None;
    }
    (0..count).map(|_| take_u64(rest)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::Rng;

    fn all_kinds() -> Vec<ConfChange> {
        vec![
            ConfChange::AddVoter(1),
            ConfChange::PromoteLearner(u64::MAX),
            ConfChange::AddLearner(7),
            ConfChange::RemoveNode(3),
            ConfChange::EnterJoint {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
            ConfChange::EnterJoint {
                voters: vec![],
                learners: vec![9, 10],
            },
            ConfChange::LeaveJoint,
        ]
    }

    #[test]
    fn every_change_round_trips() {
        for change in all_kinds() {
            assert_eq!(ConfChange::decode(&change.encode()), Some(change));
        }
        assert!(ConfChange::LeaveJoint.encode().is_empty());
    }

    #[test]
    fn malformed_data_is_refused_without_panicking() {
        let mut rng = Rng::new(42);
        let mut decoded = 0;
        for round in 0..200_000u64 {
            let seed = &all_kinds()[(round % 7) as usize];
            let mut bytes = seed.encode();
            match rng.range(0, 4) {
                0 if !bytes.is_empty() => {
                    let cut = rng.range(0, bytes.len() as u64) as usize;
                    bytes.truncate(cut);
                    if cut > 0 {
                        assert_eq!(ConfChange::decode(&bytes), None, "truncated {seed:?}");
                        continue;
                    }
                }
                1 if !bytes.is_empty() => {
                    let at = rng.range(0, bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.range(0, 8);
                }
                2 => {
                    let len = rng.range(0, 40) as usize;
                    bytes = (0..len).map(|_| rng.next_u64() as u8).collect();
                }
                _ => bytes.push(rng.next_u64() as u8),
            }
            if let Some(change) = ConfChange::decode(&bytes) {
                decoded += 1;
                assert_eq!(change.encode(), bytes, "the encoding is canonical");
            }
        }
        assert!(decoded > 0);
    }
}
