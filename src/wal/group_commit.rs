//! Group commit: batches are written by one writer at a time but made
//! durable together. Whoever needs durability while no sync runs becomes the
//! syncer and covers everything written so far; everyone who arrives while
//! that sync runs waits and is covered by the next one, which the first of
//! them performs.
//!
//! Syncing as soon as possible splits many writers into two groups that
//! alternate (those covered by the running sync write again while the others
//! wait for the next), so each sync covers only half of them. So when a sync
//! releases waiters, the next syncer gives them a moment (at most half the
//! last sync's duration, never more than 1 ms) to append before it syncs. A
//! single writer is never delayed: it releases no one but itself.
//!
//! A failed sync poisons the log for good: it is never
//! retried, because after a failed fsync the kernel may have dropped the
//! dirty pages and a second, "successful" sync would prove nothing.

use super::file::FileLayer;
use super::segment::Segment;
use super::{WalError, WriteMethod};
use crate::metrics::{AtomicHistogram, WalMetrics};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound on how long a syncer waits for released writers to append.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// Identifies a written batch; [`crate::wal::Wal::wait_durable`] returns once
/// it is on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteTicket(pub(crate) u64);

struct SyncState {
    /// The segment being written; everything before it is durable.
    segment: Arc<Segment>,
    /// The last batch written, and where the written bytes end.
    written_seq: u64,
    written_end: usize,
    /// The last batch known durable, and where the durable bytes end.
    synced_seq: u64,
    synced_end: usize,
    sync_running: bool,
    /// Tickets of the threads blocked waiting for a sync.
    waiting: Vec<u64>,
    /// The next sync should wait (briefly) until this batch is written:
    /// the last sync released writers that will append again at once.
    gather_until: u64,
    /// How long the last sync took.
    last_sync: Duration,
    poison: Option<String>,
}

pub(crate) struct GroupCommit {
    state: Mutex<SyncState>,
    sync_done: Condvar,
    /// Wakes a syncer that waits for released writers to append.
    batch_written: Condvar,
    poisoned: AtomicBool,
    /// `synced_end` readable without the lock, for the durable mark the
    /// writer stamps into every record.
    durable_mark: AtomicU64,
    files: Arc<dyn FileLayer>,
    method: WriteMethod,
    sync_duration: AtomicHistogram,
    bytes_written: AtomicU64,
    batches_written: AtomicU64,
}

impl GroupCommit {
    /// Starts with `segment` active and durable up to `end`.
    pub(crate) fn new(
        files: Arc<dyn FileLayer>,
        method: WriteMethod,
        segment: Arc<Segment>,
        end: usize,
    ) -> Self {
        GroupCommit {
            state: Mutex::new(SyncState {
                segment,
                written_seq: 0,
                written_end: end,
                synced_seq: 0,
                synced_end: end,
                sync_running: false,
                waiting: Vec::new(),
                gather_until: 0,
                last_sync: Duration::ZERO,
                poison: None,
            }),
            sync_done: Condvar::new(),
            batch_written: Condvar::new(),
            poisoned: AtomicBool::new(false),
            durable_mark: AtomicU64::new(end as u64),
            files,
            method,
            sync_duration: AtomicHistogram::default(),
            bytes_written: AtomicU64::new(0),
            batches_written: AtomicU64::new(0),
        }
    }

    /// Counts a batch of `bytes` written.
    pub(crate) fn count_written(&self, bytes: usize) {
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.batches_written.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn metrics(&self) -> WalMetrics {
        WalMetrics {
            sync_duration: self.sync_duration.snapshot(),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            batches_written: self.batches_written.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Why the log is poisoned, if it is.
    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.state.lock().poison.clone()
    }

    /// Poisons the log because a write failed half-way.
    pub(crate) fn poison(&self, reason: String) {
        let mut s = self.state.lock();
        self.poison_locked(&mut s, reason);
        self.sync_done.notify_all();
    }

    /// Records the first reason the log became unusable; every call from
    /// now on fails.
    fn poison_locked(&self, s: &mut SyncState, reason: String) {
        s.poison.get_or_insert(reason);
        self.poisoned.store(true, Ordering::Release);
    }

    /// Offset up to which the active segment is known durable.
    pub(crate) fn durable_mark(&self) -> u64 {
        self.durable_mark.load(Ordering::Acquire)
    }

    /// Records that a batch ending at `end` of the active segment has been
    /// written; returns its ticket.
    pub(crate) fn published(&self, end: usize) -> WriteTicket {
        let mut s = self.state.lock();
        s.written_seq += 1;
        s.written_end = end;
        if s.gather_until != 0 {
            self.batch_written.notify_one();
        }
        WriteTicket(s.written_seq)
    }

    /// The ticket of the last batch written.
    pub(crate) fn last_written(&self) -> WriteTicket {
        WriteTicket(self.state.lock().written_seq)
    }

    /// Makes `segment` the active one, written (not yet durable) up to
    /// `end`. The caller has made the previous segment durable.
    pub(crate) fn switch_segment(&self, segment: Arc<Segment>, end: usize) {
        let mut s = self.state.lock();
        while s.sync_running {
            self.sync_done.wait(&mut s);
        }
        s.segment = segment;
        s.written_end = end;
        s.synced_end = 0;
        s.synced_seq = s.written_seq;
        self.durable_mark.store(0, Ordering::Release);
    }

    /// Returns once the batch of `ticket` is durable, syncing if nobody
    /// else is. `gather` allows waiting briefly for released writers first;
    /// a caller that keeps others from writing (rotation) must not.
    pub(crate) fn wait_durable(&self, ticket: WriteTicket, gather: bool) -> Result<(), WalError> {
        let mut s = self.state.lock();
        loop {
            if s.poison.is_some() {
                return Err(WalError::Poisoned);
            }
            if s.synced_seq >= ticket.0 {
                return Ok(());
            }
            if s.sync_running {
                s.waiting.push(ticket.0);
                self.sync_done.wait(&mut s);
                if let Some(at) = s.waiting.iter().position(|&t| t == ticket.0) {
                    s.waiting.swap_remove(at);
                }
                continue;
            }
            // Become the syncer for everything written so far.
            s.sync_running = true;
            if gather && s.gather_until > s.written_seq {
                let deadline = Instant::now() + (s.last_sync / 2).min(MAX_GATHER);
                while s.written_seq < s.gather_until && s.poison.is_none() {
                    if self.batch_written.wait_until(&mut s, deadline).timed_out() {
                        break;
                    }
                }
            }
            s.gather_until = 0;
            let (segment, from, to, target) = (
                s.segment.clone(),
                s.synced_end,
                s.written_end,
                s.written_seq,
            );
            drop(s);
            let started = Instant::now();
            let outcome = segment.sync(self.files.as_ref(), self.method, from, to);
            let took = started.elapsed();
            self.sync_duration.observe(took);
            s = self.state.lock();
            s.sync_running = false;
            s.last_sync = took;
            match outcome {
                Ok(()) => {
                    s.synced_seq = target;
                    s.synced_end = to;
                    self.durable_mark.store(to as u64, Ordering::Release);
                    let released = s.waiting.iter().filter(|&&t| t <= target).count() as u64;
                    if released > 0 {
                        s.gather_until = s.written_seq + released;
                    }
                }
                Err(e) => {
                    let reason = format!("sync of {} failed: {e}", segment.path.display());
                    self.poison_locked(&mut s, reason);
                }
            }
            self.sync_done.notify_all();
        }
    }
}
