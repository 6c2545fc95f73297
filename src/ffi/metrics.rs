//! What a node or a runtime's group measured, as one `#[repr(C)]` struct
//! the host passes in and the call fills (no allocation, one call per
//! scrape), with the names of its per-kind counters.

use super::*;
use crate::metrics::{
    Histogram, Metrics, DROP_REASONS, HISTOGRAM_BUCKETS, HISTOGRAM_FIRST_BOUND_MICROS,
    MESSAGE_KINDS,
};
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

// The header's sizes are the library's.
const _: () = assert!(
    EMBRAFT_HISTOGRAM_BUCKETS == HISTOGRAM_BUCKETS
        && EMBRAFT_HISTOGRAM_FIRST_BOUND_US == HISTOGRAM_FIRST_BOUND_MICROS
        && EMBRAFT_MESSAGE_KINDS == MESSAGE_KINDS.len()
        && EMBRAFT_DROP_REASONS == DROP_REASONS.len()
);

/// A latency histogram: observations per bucket (not cumulative), their
/// number and their sum.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct embraft_histogram {
    pub buckets: [u64; EMBRAFT_HISTOGRAM_BUCKETS],
    pub count: u64,
    pub sum_us: u64,
}

/// What a node (or one group of a runtime) and its WAL measured since
/// they started. Counters only grow; a host exports them as they are.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct embraft_metrics {
    /// Duration of each WAL sync (fdatasync or msync). For a runtime, the
    /// shared WAL's: the same in every group.
    pub wal_sync_duration: embraft_histogram,
    pub wal_bytes_written: u64,
    /// Batches written to the WAL (one per append, however many groups).
    pub wal_batches_written: u64,
    /// Proposals made here that committed.
    pub proposals_committed: u64,
    /// Proposals made here that were dropped, per reason; the last reason
    /// counts proposals whose fate this node will never learn.
    pub proposals_dropped: [u64; EMBRAFT_DROP_REASONS],
    /// From a proposal's append on this node, as leader, to its commit.
    pub proposal_commit_latency: embraft_histogram,
    /// Times the known leader changed to another node.
    pub leader_changes: u64,
    /// Elections this node started (it became a candidate).
    pub elections_started: u64,
    pub pre_votes_started: u64,
    /// Messages sent and received, per kind.
    pub messages_sent: [u64; EMBRAFT_MESSAGE_KINDS],
    pub messages_received: [u64; EMBRAFT_MESSAGE_KINDS],
    /// Snapshot transfers completed to followers, and chunk bytes sent.
    pub snapshots_sent: u64,
    pub snapshot_bytes_sent: u64,
    /// Snapshots received and installed, and chunk bytes received.
    pub snapshots_received: u64,
    pub snapshot_bytes_received: u64,
    /// Entries read from the entry cache, and read back from the WAL.
    pub cache_hit_entries: u64,
    pub cache_miss_entries: u64,
    /// Bytes of entries in the cache now.
    pub cached_entry_bytes: u64,
    /// Committed entries not yet acknowledged applied.
    pub apply_lag: u64,
}

impl From<Histogram> for embraft_histogram {
    fn from(h: Histogram) -> Self {
        embraft_histogram {
            buckets: h.buckets,
            count: h.count,
            sum_us: h.sum_micros,
        }
    }
}

impl From<Metrics> for embraft_metrics {
    fn from(m: Metrics) -> Self {
        let g = m.group;
        embraft_metrics {
            wal_sync_duration: m.wal.sync_duration.into(),
            wal_bytes_written: m.wal.bytes_written,
            wal_batches_written: m.wal.batches_written,
            proposals_committed: g.proposals_committed,
            proposals_dropped: g.proposals_dropped,
            proposal_commit_latency: g.proposal_commit_latency.into(),
            leader_changes: g.leader_changes,
            elections_started: g.elections_started,
            pre_votes_started: g.pre_votes_started,
            messages_sent: g.messages_sent,
            messages_received: g.messages_received,
            snapshots_sent: g.snapshots_sent,
            snapshot_bytes_sent: g.snapshot_bytes_sent,
            snapshots_received: g.snapshots_received,
            snapshot_bytes_received: g.snapshot_bytes_received,
            cache_hit_entries: g.cache_hit_entries,
            cache_miss_entries: g.cache_miss_entries,
            cached_entry_bytes: m.cached_entry_bytes,
            apply_lag: m.apply_lag,
        }
    }
}

/// The names as C strings, made once.
fn c_names(cell: &'static OnceLock<Vec<CString>>, names: &[&str]) -> &'static [CString] {
    cell.get_or_init(|| {
        names
            .iter()
            .map(|name| CString::new(*name).unwrap_or_default())
            .collect()
    })
}

/// The name of message kind `index` (`PreVote`, `Append`, ...; the
/// positions of `messages_sent` and `messages_received`), or NULL when
/// `index >= EMBRAFT_MESSAGE_KINDS`. The string is static.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn embraft_metrics_message_kind(index: usize) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    c_names(&NAMES, &MESSAGE_KINDS)
        .get(index)
        .map_or(std::ptr::null(), |name| name.as_ptr())
}

/// The name of drop reason `index` (`not_leader`, `superseded`, ...; the
/// positions of `proposals_dropped`), or NULL when `index >=
/// EMBRAFT_DROP_REASONS`. The string is static.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn embraft_metrics_drop_reason(index: usize) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    c_names(&NAMES, &DROP_REASONS)
        .get(index)
        .map_or(std::ptr::null(), |name| name.as_ptr())
}
