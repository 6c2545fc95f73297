//! What the library measures about itself: counters and latency
//! histograms, cheap enough to keep on every round and to read every
//! second. A group keeps its own in plain fields (one thread steps it at
//! a time); the WAL, written by many threads, keeps atomic ones. Hosts
//! read copies ([`crate::runtime::Runtime::metrics`], `embraft_*_metrics`)
//! and export them (every raftd serves them on `/metrics`; docs/RAFTD.md
//! lists the names).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of every latency histogram, the last one unbounded.
pub const HISTOGRAM_BUCKETS: usize = 20;

/// The upper bound of the first bucket; each next bucket's is twice the
/// one before, so the last bounded one ends at 32 µs × 2^18 ≈ 8.4 s.
pub const HISTOGRAM_FIRST_BOUND_MICROS: u64 = 32;

/// The upper bound of bucket `i` in microseconds (inclusive); `None` for
/// the last bucket, which holds everything beyond.
pub fn bucket_bound_micros(i: usize) -> Option<u64> {
    (i + 1 < HISTOGRAM_BUCKETS).then(|| HISTOGRAM_FIRST_BOUND_MICROS << i)
}

fn bucket_of(micros: u64) -> usize {
    // The first bucket whose bound holds `micros`: bounds double, so the
    // bucket is the bit length of (micros - 1) / first bound.
    let scaled = micros.saturating_sub(1) / HISTOGRAM_FIRST_BOUND_MICROS;
    let bits = (u64::BITS - scaled.leading_zeros()) as usize;
    bits.min(HISTOGRAM_BUCKETS - 1)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A latency histogram: observations per bucket (not cumulative), their
/// number and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    pub count: u64,
    pub sum_micros: u64,
}

impl Histogram {
    pub fn observe(&mut self, duration: Duration) {
        let us = micros(duration);
        self.buckets[bucket_of(us)] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(us);
    }
}

/// A [`Histogram`] many threads observe into without a lock.
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn observe(&self, duration: Duration) {
        let us = micros(duration);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy; taken while observations go on, its count may differ from
    /// the sum of its buckets by those in flight.
    pub(crate) fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// What a WAL measured since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalMetrics {
    /// How long each sync (fdatasync or msync) took.
    pub sync_duration: Histogram,
    /// Bytes of records written.
    pub bytes_written: u64,
    /// Batches written (one per append, whatever the number of groups in
    /// it).
    pub batches_written: u64,
}

/// The kinds of Raft messages, for counts per kind; `index` is the
/// position in [`GroupMetrics::messages_sent`] and `_received`.
pub const MESSAGE_KINDS: [&str; 15] = [
    "PreVote",
    "PreVoteResponse",
    "Vote",
    "VoteResponse",
    "Append",
    "AppendResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "TimeoutNow",
    "ReadIndex",
    "ReadIndexResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Quiesce",
    "WakeUp",
];

/// The reasons a proposal is dropped, for counts per reason; the position
/// in [`GroupMetrics::proposals_dropped`].
pub const DROP_REASONS: [&str; 8] = [
    "not_leader",
    "transfer_in_progress",
    "too_large",
    "superseded",
    "conf_change_pending",
    "conf_change_invalid",
    "learner_behind",
    "unknown",
];

/// The position in [`GroupMetrics::proposals_dropped`] of proposals whose
/// fate this node will never learn (`ProposalResult::Unknown`).
pub const UNKNOWN_OUTCOME: usize = DROP_REASONS.len() - 1;

/// What a group measured since it started on this runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupMetrics {
    /// Proposals made here that committed.
    pub proposals_committed: u64,
    /// Proposals made here that were dropped, per reason ([`DROP_REASONS`]).
    pub proposals_dropped: [u64; DROP_REASONS.len()],
    /// From a proposal's append on this node, as leader, to its commit.
    pub proposal_commit_latency: Histogram,
    /// Times the group's known leader changed to another node.
    pub leader_changes: u64,
    /// Elections this node started (it became a candidate).
    pub elections_started: u64,
    /// Pre-vote rounds this node started.
    pub pre_votes_started: u64,
    /// Messages sent and received, per kind ([`MESSAGE_KINDS`]).
    pub messages_sent: [u64; MESSAGE_KINDS.len()],
    pub messages_received: [u64; MESSAGE_KINDS.len()],
    /// Snapshot transfers this node, as leader, completed to a follower,
    /// and the chunk bytes it sent (resends included).
    pub snapshots_sent: u64,
    pub snapshot_bytes_sent: u64,
    /// Snapshots this node received and installed, and the chunk bytes it
    /// received.
    pub snapshots_received: u64,
    pub snapshot_bytes_received: u64,
    /// Entries the core read from its cache, and those it read back from
    /// the WAL because they had left the cache.
    pub cache_hit_entries: u64,
    pub cache_miss_entries: u64,
}

/// A group's measures and its runtime's WAL's, as a host reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub wal: WalMetrics,
    pub group: GroupMetrics,
    /// Committed entries the host has not yet acknowledged applying
    /// (commit index − applied index, as of the group's last round).
    pub apply_lag: u64,
    /// Bytes of the group's entries in the entry cache.
    pub cached_entry_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_bound_holds_them() {
        let mut h = Histogram::default();
        for us in [0, 1, 32, 33, 64, 65, 1_000, 8_388_608, 8_388_609, u64::MAX] {
            h.observe(Duration::from_micros(us));
        }
        assert_eq!(h.buckets[0], 3, "0, 1 and 32 µs");
        assert_eq!(h.buckets[1], 2, "33 and 64 µs");
        assert_eq!(h.buckets[2], 1, "65 µs");
        assert_eq!(h.buckets[5], 1, "1 ms is within 1,024 µs");
        assert_eq!(bucket_bound_micros(18), Some(8_388_608));
        assert_eq!(h.buckets[18], 1, "8.4 s exactly");
        assert_eq!(h.buckets[19], 2, "beyond the last bound");
        assert_eq!(bucket_bound_micros(19), None);
        assert_eq!(h.count, 10);
        assert_eq!(h.sum_micros, u64::MAX, "the sum saturates");
        let shared = AtomicHistogram::default();
        shared.observe(Duration::from_micros(40));
        let copy = shared.snapshot();
        assert_eq!((copy.buckets[1], copy.count, copy.sum_micros), (1, 1, 40));
    }
}
