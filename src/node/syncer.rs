//! The sync thread of an inline node that syncs its WAL: an input call
//! writes its round's batch and returns; this thread waits until the write
//! is durable and then runs the round that releases what waited on it
//! (vote and append responses, a leader's own count toward the quorum).
//! So no caller blocks on the disk: a follower's `step` of an append
//! returns once the entries are written, and the next append is written
//! while the sync runs, as a threaded node's persistence thread pipelines
//! them.

use super::Inputs;
use crate::wal::{Wal, WriteTicket};
use crossbeam_channel::Receiver;
use std::sync::{Arc, Weak};

/// A round's write, to be waited for.
pub(crate) struct SyncWait {
    pub(crate) wal: Arc<Wal>,
    /// The driver's number for the round's last persist job.
    pub(crate) seq: u64,
    pub(crate) ticket: WriteTicket,
}

/// Runs until the node hangs up. Waits queued while a sync ran are taken
/// together: the last one's ticket covers the earlier writes, which were
/// queued in order under the node's lock. Each write is waited for even
/// once the node is gone, so a node stops with its writes durable.
pub(crate) fn run(inputs: Weak<Inputs>, waits: Receiver<SyncWait>) {
    while let Ok(first) = waits.recv() {
        let last = waits.try_iter().last().unwrap_or(first);
        let result = last.wal.wait_durable(last.ticket);
        if let Some(inputs) = inputs.upgrade() {
            inputs.durable(last.seq, result);
        }
    }
}
