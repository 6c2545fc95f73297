//! Follower side of snapshot transfers: chunks into a partial file, in
//! order; the complete file verified off the driver thread; the verified
//! file installed.
//!
//! A transfer is identified by the snapshot's index, term, length and
//! checksum. A chunk of another transfer with a snapshot at least as new
//! replaces the one under way (a new leader may have serialized the same
//! log position differently; a newer snapshot makes the older useless); a
//! chunk of an older snapshot is ignored. The partial file survives
//! dropped connections and leader changes, so a resumed transfer continues
//! where it stopped.

use crate::core::{NodeId, SnapshotChunk, SnapshotMeta};
use crate::snapshot::{ChunkOutcome, PartialSnapshot, SnapshotId, SnapshotStore};

/// What to do after a chunk.
pub(crate) enum ChunkAction {
    /// Answer the leader with the offset expected next; `started` when the
    /// chunk began a new transfer.
    Answer {
        to: NodeId,
        next_offset: u64,
        started: bool,
    },
    /// Refuse the snapshot (answer `reject`), for the reason given.
    Reject { to: NodeId, why: String },
    /// The file is complete: verify and publish it off the driver thread,
    /// then report with [`SnapshotReceiver::on_verified`]. No answer yet:
    /// the last chunk is answered once the snapshot is installed.
    Verify(PartialSnapshot),
    /// Nothing to say (a chunk of an older snapshot, or one arriving while
    /// the complete file is being verified).
    Ignore,
}

enum State {
    Idle,
    Receiving {
        meta: SnapshotMeta,
        partial: PartialSnapshot,
    },
    Verifying {
        meta: SnapshotMeta,
        id: SnapshotId,
    },
}

pub(crate) struct SnapshotReceiver {
    store: SnapshotStore,
    state: State,
    /// The leader the last chunk came from: the one to answer.
    leader: NodeId,
}

/// The transfer a chunk belongs to.
pub(crate) fn chunk_id(chunk: &SnapshotChunk) -> SnapshotId {
    SnapshotId {
        index: chunk.meta.index,
        term: chunk.meta.term,
        len: chunk.total_len,
        crc: chunk.checksum,
    }
}

impl SnapshotReceiver {
    pub(crate) fn new(store: SnapshotStore) -> SnapshotReceiver {
        SnapshotReceiver {
            store,
            state: State::Idle,
            leader: 0,
        }
    }

    /// The leader the last chunk came from.
    pub(crate) fn leader(&self) -> NodeId {
        self.leader
    }

    /// Takes one chunk the core accepted (its term and self-consistency are
    /// checked, and the snapshot is beyond this node's commit index).
    pub(crate) fn on_chunk(&mut self, chunk: &SnapshotChunk) -> ChunkAction {
        let id = chunk_id(chunk);
        self.leader = chunk.from;
        let to = chunk.from;
        match &self.state {
            State::Verifying { id: current, .. } if id == *current || id.index < current.index => {
                return ChunkAction::Ignore;
            }
            State::Receiving { partial, meta } if partial.id() == id && *meta != chunk.meta => {
                let why =
                    format!("a chunk of the {id} names another membership than the earlier chunks");
                self.abort();
                return ChunkAction::Reject { to, why };
            }
            State::Receiving { partial, .. } if id.index < partial.id().index => {
                return ChunkAction::Ignore;
            }
            _ => {}
        }
        let started =
            !matches!(&self.state, State::Receiving { partial, .. } if partial.id() == id);
        if started {
            // A new transfer: it replaces whatever was under way.
            self.abort();
            match self.store.receive(id) {
                Ok(partial) => {
                    self.state = State::Receiving {
                        meta: chunk.meta.clone(),
                        partial,
                    }
                }
                Err(err) => {
                    return ChunkAction::Reject {
                        to,
                        why: format!("cannot receive the {id}: {err}"),
                    }
                }
            }
        }
        let State::Receiving { partial, .. } = &mut self.state else {
            unreachable!("a transfer is under way");
        };
        match partial.write_chunk(chunk.offset, &chunk.data) {
            Ok(ChunkOutcome::Written | ChunkOutcome::Duplicate | ChunkOutcome::Gap) => {}
            Err(err) => {
                let why = format!("cannot store a chunk of the {id}: {err}");
                self.abort();
                return ChunkAction::Reject { to, why };
            }
        }
        if !partial.is_complete() {
            return ChunkAction::Answer {
                to,
                next_offset: partial.written(),
                started,
            };
        }
        let State::Receiving { meta, partial } = std::mem::replace(&mut self.state, State::Idle)
        else {
            unreachable!("a transfer is under way");
        };
        self.state = State::Verifying { meta, id };
        ChunkAction::Verify(partial)
    }

    /// The verification of `id` ended. Returns the snapshot's metadata when
    /// it is still the transfer under way (the caller installs or refuses
    /// it); `None` when a newer transfer replaced it meanwhile.
    pub(crate) fn on_verified(&mut self, id: SnapshotId) -> Option<SnapshotMeta> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Verifying { meta, id: current } if current == id => Some(meta),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Drops the transfer under way (this node became leader, or the
    /// transfer failed), deleting its partial file.
    pub(crate) fn abort(&mut self) {
        if let State::Receiving { partial, .. } = std::mem::replace(&mut self.state, State::Idle) {
            partial.abort();
        }
    }
}
