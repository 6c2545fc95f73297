//! The simulated disk of one node: durable state changes only when a write
//! completes, writes complete in the order they were submitted, and a crash
//! loses every write still in progress.

use crate::rng::SplitMix64;
use embraft::core::{Entry, HardState, Index, InitialState, Message, NodeId, Term};
use std::collections::VecDeque;

/// How long a write takes, in virtual time units.
#[derive(Clone, Copy, Debug)]
pub struct DiskTiming {
    pub min_delay: u64,
    pub max_delay: u64,
}

/// The part of one ready batch that waits for durability.
pub struct Batch {
    pub ready_number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// Messages that may leave only once this batch is durable.
    pub persisted_messages: Vec<Message>,
}

struct PendingWrite {
    batch: Batch,
    done_at: u64,
}

/// What a completed write means for the host.
pub struct CompletedWrite {
    pub ready_number: u64,
    pub persisted_messages: Vec<Message>,
    /// The first durable index this write replaced, when it overwrote part
    /// of the durable log rather than only extending it.
    pub replaced_from: Option<Index>,
}

#[derive(Default)]
pub struct Disk {
    hard_state: HardState,
    /// The durable log; `log[i]` holds index `i + 1` (the simulator never
    /// compacts).
    log: Vec<Entry>,
    pending: VecDeque<PendingWrite>,
}

impl Disk {
    /// The disk of a founding member: the founding entry, which puts the
    /// voters `voters` in force, is durable and committed from the start.
    pub fn founding(voters: &[NodeId]) -> Disk {
        let founding = InitialState::bootstrap(voters);
        Disk {
            hard_state: founding.hard_state,
            log: founding.entries,
            pending: VecDeque::new(),
        }
    }

    /// Queues a batch. It completes after a random delay, but never before
    /// the batch queued ahead of it. A batch with nothing to write completes
    /// as soon as its predecessors have.
    pub fn submit(&mut self, now: u64, rng: &mut SplitMix64, timing: DiskTiming, batch: Batch) {
        let delay = if batch.hard_state.is_none() && batch.entries.is_empty() {
            0
        } else {
            rng.between(timing.min_delay, timing.max_delay)
        };
        let after_previous = self.pending.back().map_or(0, |w| w.done_at);
        self.pending.push_back(PendingWrite {
            batch,
            done_at: (now + delay).max(after_previous),
        });
    }

    pub fn next_completion_at(&self) -> Option<u64> {
        self.pending.front().map(|w| w.done_at)
    }

    /// Makes the oldest pending write durable.
    pub fn complete_next(&mut self) -> CompletedWrite {
        let write = self
            .pending
            .pop_front()
            .expect("complete_next is only called when a write is pending")
            .batch;
        if let Some(hs) = write.hard_state {
            self.hard_state = hs;
        }
        let mut replaced_from = None;
        if let Some(first) = write.entries.first() {
            let durable_last = self.log.len() as Index;
            assert!(
                first.index >= 1 && first.index <= durable_last + 1,
                "the core handed out entries starting at {} while the durable log ends at {}",
                first.index,
                durable_last
            );
            if first.index <= durable_last {
                replaced_from = Some(first.index);
                self.log.truncate(first.index as usize - 1);
            }
            for (offset, e) in write.entries.iter().enumerate() {
                assert_eq!(
                    e.index,
                    first.index + offset as Index,
                    "the core handed out a non-contiguous batch of entries"
                );
            }
            self.log.extend(write.entries);
        }
        CompletedWrite {
            ready_number: write.ready_number,
            persisted_messages: write.persisted_messages,
            replaced_from,
        }
    }

    /// Power loss: every write not yet durable is gone.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// The term of the durable entry at `index`, if there is one.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        let i = usize::try_from(index.checked_sub(1)?).ok()?;
        self.log.get(i).map(|e| e.term)
    }

    /// What a node restarting from this disk recovers. The simulated state
    /// machine is volatile, so nothing counts as applied yet; the membership
    /// comes from the log (an empty disk is a node joining the cluster).
    pub fn recover(&self) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            entries: self.log.clone(),
            ..InitialState::default()
        }
    }

    /// Deletes everything, as a host does with a removed node's data.
    pub fn wipe(&mut self) {
        *self = Disk::default();
    }

    pub fn is_blank(&self) -> bool {
        self.log.is_empty() && self.hard_state == HardState::default()
    }
}
