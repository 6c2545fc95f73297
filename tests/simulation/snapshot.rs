//! The host's side of snapshots, which the simulator plays as the node layer
//! does in the product: the simulated state machine and its snapshot bytes,
//! the leader's transfer in chunks, and the follower's assembly of them.
//!
//! The state machine is a digest of every entry applied, in order, with the
//! index applied through; its snapshot is those two numbers padded with
//! bytes derived from them, long enough to travel in several chunks, so
//! that bytes of two different snapshots mixed up never decode.

use crate::checker::fingerprint;
use crate::disk::SnapshotFile;
use crate::fnv::Fnv;
use crate::network::Network;
use crate::rng::SplitMix64;
use embraft::core::{
    Entry, Index, Message, MessageBody, NodeId, Raft, SnapshotChunk, SnapshotMeta,
};

/// A node's simulated state machine: volatile, rebuilt at restart from the
/// recorded snapshot and the log after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub applied: Index,
    pub digest: u64,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine {
            applied: 0,
            digest: Fnv::new().finish(),
        }
    }
}

impl Machine {
    pub fn apply(&mut self, e: &Entry) {
        assert_eq!(e.index, self.applied + 1, "the host applied out of order");
        self.applied = e.index;
        self.digest = Fnv::new()
            .u64(self.digest)
            .u64(e.index)
            .u64(e.term)
            .u64(fingerprint(e))
            .finish();
    }

    /// The snapshot's bytes: applied index and digest, then padding.
    pub fn snapshot_data(&self) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&self.applied.to_le_bytes());
        data.extend_from_slice(&self.digest.to_le_bytes());
        data.extend(padding(self.applied, self.digest));
        data
    }

    /// The state machine a snapshot holds; panics on bytes that are not
    /// exactly one snapshot's.
    pub fn from_snapshot(data: &[u8]) -> Machine {
        let number =
            |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("eight bytes"));
        assert!(data.len() >= 16, "a snapshot of {} bytes", data.len());
        let machine = Machine {
            applied: number(0),
            digest: number(8),
        };
        assert!(
            data[16..] == padding(machine.applied, machine.digest)[..],
            "the snapshot's bytes are not those of one snapshot"
        );
        machine
    }
}

/// 40 to 103 bytes derived from the state, so that snapshots differ in
/// length and content.
fn padding(applied: Index, digest: u64) -> Vec<u8> {
    let mut h = Fnv::new();
    h.u64(applied).u64(digest);
    let len = 40 + (h.finish() % 64) as usize;
    (0..len)
        .map(|i| {
            h.u64(i as u64);
            h.finish() as u8
        })
        .collect()
}

/// The checksum the chunks of a snapshot carry.
pub fn checksum(data: &[u8]) -> u32 {
    Fnv::new().bytes(data).finish() as u32
}

/// Leader: streams `file` to `peer` in chunks of random sizes through the
/// network (which may lose, duplicate, delay or reorder them), then reports
/// the transfer done; a peer it cannot reach is reported at once. Either
/// way the core probes the peer afterwards and asks again if needed.
pub fn send(
    raft: &mut Raft,
    net: &mut Network,
    rng: &mut SplitMix64,
    now: u64,
    file: &SnapshotFile,
    peer: NodeId,
) {
    let from = raft.id();
    if !net.connected(from, peer) {
        raft.report_snapshot(peer, false);
        return;
    }
    let checksum = checksum(&file.data);
    let total_len = file.data.len() as u64;
    let mut offset = 0;
    while offset < file.data.len() {
        let end = (offset + rng.between(8, 32) as usize).min(file.data.len());
        let msg = Message {
            from,
            to: peer,
            term: raft.term(),
            body: MessageBody::InstallSnapshot {
                meta: file.meta.clone(),
                offset: offset as u64,
                total_len,
                checksum,
                data: file.data[offset..end].to_vec(),
            },
        };
        net.send(now, rng, &msg);
        offset = end;
    }
    raft.report_snapshot(peer, true);
}

/// Follower: where the snapshot the leader streams stands.
#[derive(Clone, Debug, Default)]
pub enum Receiving {
    #[default]
    Idle,
    /// Chunks arrive; held in memory only.
    Assembling(Assembly),
    /// Complete and verified; its file is being written.
    WritingFile,
    /// The file is on disk and the core took it (`restore`): its record
    /// in the log is being written.
    Recording(SnapshotMeta),
}

impl Receiving {
    /// Takes one chunk the core handed out. Returns the snapshot once all
    /// its bytes are in and verified. Chunks of a snapshot already complete
    /// are ignored, as are chunks of another one meanwhile (the leader
    /// sends it again if still needed).
    pub fn take(&mut self, chunk: SnapshotChunk) -> Option<SnapshotFile> {
        if let Receiving::WritingFile | Receiving::Recording(_) = self {
            return None;
        }
        let same = matches!(self, Receiving::Assembling(a)
            if a.meta == chunk.meta && a.checksum == chunk.checksum
                && a.data.len() as u64 == chunk.total_len);
        if !same {
            *self = Receiving::Assembling(Assembly {
                meta: chunk.meta.clone(),
                checksum: chunk.checksum,
                data: vec![0; chunk.total_len as usize],
                have: vec![false; chunk.total_len as usize],
                missing: chunk.total_len as usize,
            });
        }
        let Receiving::Assembling(a) = self else {
            unreachable!("set above")
        };
        let at = chunk.offset as usize;
        for (i, &byte) in chunk.data.iter().enumerate() {
            if !a.have[at + i] {
                a.have[at + i] = true;
                a.missing -= 1;
                a.data[at + i] = byte;
            }
        }
        if a.missing > 0 {
            return None;
        }
        assert_eq!(
            checksum(&a.data),
            a.checksum,
            "an assembled snapshot fails its checksum"
        );
        let file = SnapshotFile {
            meta: a.meta.clone(),
            data: std::mem::take(&mut a.data),
        };
        *self = Receiving::WritingFile;
        Some(file)
    }
}

/// The chunks of one snapshot received so far.
#[derive(Clone, Debug)]
pub struct Assembly {
    meta: SnapshotMeta,
    checksum: u32,
    data: Vec<u8>,
    have: Vec<bool>,
    missing: usize,
}
