//! The C ABI: the only `extern "C"` code of the crate.
//!
//! Rules every exported function follows (docs/FFI.md explains them to
//! hosts):
//! - the body runs inside [`guard::catch_panics`], so a panic becomes
//!   `EMBRAFT_ERR_PANIC` and never unwinds into C;
//! - every pointer is checked for NULL before use, and output pointers are
//!   written only when the call succeeds;
//! - inputs are borrowed for the duration of the call and copied if kept;
//!   outputs owned by the library are views valid until their handle is
//!   freed;
//! - error messages are kept per handle (never thread-local, since Go moves
//!   goroutines between OS threads).
//!
//! The header include/embraft.h is generated from these files by cbindgen
//! (see cbindgen.toml and tests/header.rs).

#![allow(non_camel_case_types)]

mod config;
mod guard;
mod last_error;
mod metrics;
mod node;
mod ready;
mod runtime;
mod runtime_ready;
mod snapshot_writer;
mod status_report;

use std::ffi::c_char;

/// A status code: `EMBRAFT_OK` (0) or one of the `EMBRAFT_ERR_*` codes.
/// Codes are never reused or renumbered; new ones are only added.
pub type embraft_status = i32;

/// Success.
pub const EMBRAFT_OK: embraft_status = 0;
/// A required pointer argument was NULL.
pub const EMBRAFT_ERR_NULL_ARGUMENT: embraft_status = 1;
/// An argument is out of its documented range (unknown enum value, zero
/// id, empty path...).
pub const EMBRAFT_ERR_INVALID_ARGUMENT: embraft_status = 2;
/// The configuration, or its combination with the state found in the data
/// directory, cannot start a node.
pub const EMBRAFT_ERR_INVALID_CONFIG: embraft_status = 3;
/// The node's input queue (a runtime group's mailbox) is full: poll, then
/// retry.
pub const EMBRAFT_ERR_BUSY: embraft_status = 4;
/// `embraft_node_poll_ready` found no batch within its timeout. Not an
/// error: poll again later.
pub const EMBRAFT_TIMED_OUT: embraft_status = 5;
/// The bytes given to `embraft_node_step` are not a message.
pub const EMBRAFT_ERR_MALFORMED_MESSAGE: embraft_status = 6;
/// The message given to `embraft_node_step` is addressed to another node.
pub const EMBRAFT_ERR_WRONG_RECIPIENT: embraft_status = 7;
/// The proposal exceeds the configured maximum entry size.
pub const EMBRAFT_ERR_TOO_LARGE: embraft_status = 8;
/// `embraft_node_ack_applied` named an index not yet delivered.
pub const EMBRAFT_ERR_NOT_DELIVERED: embraft_status = 9;
/// An accessor's index is not below the corresponding count.
pub const EMBRAFT_ERR_OUT_OF_RANGE: embraft_status = 10;
/// Another node, in this process or another, holds the data directory.
pub const EMBRAFT_ERR_DIRECTORY_LOCKED: embraft_status = 11;
/// Reading or writing the data directory failed.
pub const EMBRAFT_ERR_STORAGE: embraft_status = 12;
/// The node (or runtime) stopped after a storage failure or an internal
/// error: free it and create it again from its data directory.
pub const EMBRAFT_ERR_NODE_FAILED: embraft_status = 13;
/// A system resource (thread, file descriptor, memory) was not available.
pub const EMBRAFT_ERR_RESOURCE: embraft_status = 14;
/// An internal error (a Rust panic, caught at the boundary). Please report
/// it with the handle's last error message.
pub const EMBRAFT_ERR_PANIC: embraft_status = 15;
/// `embraft_node_snapshot_begin` named an index the host has not
/// acknowledged as applied (`embraft_node_ack_applied`).
pub const EMBRAFT_ERR_NOT_APPLIED: embraft_status = 16;
/// A snapshot was begun or finished at an index at or below the node's
/// latest snapshot (one taken since, or installed from the leader).
pub const EMBRAFT_ERR_STALE_SNAPSHOT: embraft_status = 17;
/// The data directory holds damaged or missing data: a snapshot file the
/// WAL names is missing or fails its length or CRC check, or the WAL
/// itself is corrupt. The node cannot start from it as it is.
pub const EMBRAFT_ERR_CORRUPT: embraft_status = 18;
/// A runtime call named a group that does not run on the runtime (never
/// started, stopped or removed).
pub const EMBRAFT_ERR_UNKNOWN_GROUP: embraft_status = 19;
/// `embraft_runtime_start_group` named a group already running on the
/// runtime.
pub const EMBRAFT_ERR_GROUP_EXISTS: embraft_status = 20;

/// The version of the C ABI described by this header. A host must refuse a
/// library whose `embraft_abi_version()` differs. Version 3 added the
/// multi-group runtime (`embraft_runtime_*`, its `#[repr(C)]` batch items)
/// and the codes `EMBRAFT_ERR_UNKNOWN_GROUP` and `EMBRAFT_ERR_GROUP_EXISTS`.
pub const EMBRAFT_ABI_VERSION: u32 = 3;

/// The largest input queue capacity `embraft_node_new` accepts
/// (`embraft_config_set_input_queue_capacity`): 1,048,576 inputs.
pub const EMBRAFT_MAX_INPUT_QUEUE_CAPACITY: usize = 1 << 20;

/// Roles (`embraft_ready_state`, `EMBRAFT_FIELD_ROLE`).
pub const EMBRAFT_ROLE_FOLLOWER: u32 = 0;
pub const EMBRAFT_ROLE_PRE_CANDIDATE: u32 = 1;
pub const EMBRAFT_ROLE_CANDIDATE: u32 = 2;
pub const EMBRAFT_ROLE_LEADER: u32 = 3;

/// Kinds of committed entries (`embraft_ready_entry`).
pub const EMBRAFT_ENTRY_NORMAL: u32 = 0;
/// The empty entry a new leader appends; apply it as a no-op.
pub const EMBRAFT_ENTRY_NOOP: u32 = 1;
/// A membership change.
pub const EMBRAFT_ENTRY_CONF_CHANGE: u32 = 2;

/// Outcomes of proposals (`embraft_ready_outcome`).
pub const EMBRAFT_PROPOSAL_COMMITTED: u32 = 1;
/// Refused: this node was not the leader.
pub const EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER: u32 = 2;
/// Refused: a leadership transfer was under way.
pub const EMBRAFT_PROPOSAL_DROPPED_TRANSFER: u32 = 3;
/// Refused: larger than the core's entry limit.
pub const EMBRAFT_PROPOSAL_DROPPED_TOO_LARGE: u32 = 4;
/// Appended, but a new leader's entry was committed at its index instead.
pub const EMBRAFT_PROPOSAL_DROPPED_SUPERSEDED: u32 = 5;
/// Membership change refused: an earlier one is not applied yet.
pub const EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING: u32 = 6;
/// Membership change refused: not possible from the current membership
/// (adding a present node, removing an absent one...).
pub const EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID: u32 = 7;
/// Membership change refused: the learner to promote has not caught up.
pub const EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND: u32 = 8;
/// This node will never learn whether the proposal committed: a snapshot
/// it installed from the leader covers its index (the host can tell from
/// its restored state), or it was removed from the membership first. The
/// outcome's index is the proposal's index.
pub const EMBRAFT_PROPOSAL_UNKNOWN: u32 = 9;

/// Membership changes (`embraft_node_propose_conf_change`).
/// Add a voter (a learner is promoted).
pub const EMBRAFT_CONF_ADD_VOTER: u32 = 1;
/// Promote a learner to voter.
pub const EMBRAFT_CONF_PROMOTE_LEARNER: u32 = 2;
/// Add a learner: it receives the log but never votes.
pub const EMBRAFT_CONF_ADD_LEARNER: u32 = 3;
/// Remove a voter or a learner.
pub const EMBRAFT_CONF_REMOVE_NODE: u32 = 4;

/// Results of read requests (`embraft_ready_read`).
/// The read may be served once the host applied through the read's index.
pub const EMBRAFT_READ_OK: u32 = 1;
/// No leader is known to serve it; retry later.
pub const EMBRAFT_READ_NO_LEADER: u32 = 2;
/// Leadership changed before the read was confirmed; retry.
pub const EMBRAFT_READ_LEADERSHIP_LOST: u32 = 3;
/// The node asked was no longer the leader; retry.
pub const EMBRAFT_READ_REFUSED: u32 = 4;
/// Too many reads were in progress on the node asked (16,384: reads the
/// leader has not confirmed yet, or a follower's reads forwarded to it);
/// retry once some have completed.
pub const EMBRAFT_READ_BUSY: u32 = 5;

/// Log levels (`embraft_config_set_log_level`, `embraft_node_set_log_level`,
/// `embraft_ready_log`).
pub const EMBRAFT_LOG_OFF: u32 = 0;
/// Role changes, failures, lifecycle.
pub const EMBRAFT_LOG_INFO: u32 = 1;
/// Refused inputs and messages.
pub const EMBRAFT_LOG_DEBUG: u32 = 2;
/// Every message in and out.
pub const EMBRAFT_LOG_TRACE: u32 = 3;

/// Sync modes (`embraft_config_set_sync_mode`).
/// Every write is on stable storage before it is acted on (the default).
pub const EMBRAFT_SYNC_ALWAYS: u32 = 0;
/// Writes are never synced: for tests and benchmarks only; a crash can lose
/// acknowledged entries and break Raft's guarantees.
pub const EMBRAFT_SYNC_NEVER: u32 = 1;

/// WAL write methods (`embraft_config_set_wal_write_method`).
/// Batches are copied into the segment's shared mapping and made durable
/// with msync.
pub const EMBRAFT_WAL_WRITE_MMAP: u32 = 0;
/// Batches are written with pwrite and made durable with fdatasync (the
/// default); reads still go through the mapping.
pub const EMBRAFT_WAL_WRITE_PWRITE: u32 = 1;

/// Threading modes (`embraft_config_set_threading`).
/// Worker threads (a node: two of its own; a runtime: its pool) step the
/// groups; input calls only queue their input (the default).
pub const EMBRAFT_THREADING_NODE: u32 = 0;
/// No workers: each input call steps its group on the caller's thread,
/// WAL write included; with a synced WAL one thread of the node (or
/// runtime) waits for the syncs.
pub const EMBRAFT_THREADING_INLINE: u32 = 1;

/// Buckets of an `embraft_histogram`. Bucket `i` counts observations of
/// at most `EMBRAFT_HISTOGRAM_FIRST_BOUND_US << i` microseconds (and more
/// than the bucket before); the last bucket counts everything beyond.
pub const EMBRAFT_HISTOGRAM_BUCKETS: usize = 20;
/// The first bucket's upper bound in microseconds; bounds double.
pub const EMBRAFT_HISTOGRAM_FIRST_BOUND_US: u64 = 32;
/// Kinds of Raft messages counted in `embraft_metrics`; their names come
/// from `embraft_metrics_message_kind`.
pub const EMBRAFT_MESSAGE_KINDS: usize = 15;
/// Reasons a proposal is dropped, counted in `embraft_metrics`; their
/// names come from `embraft_metrics_drop_reason`.
pub const EMBRAFT_DROP_REASONS: usize = 8;

/// Fields of a status report (`embraft_status_report_get`).
pub const EMBRAFT_FIELD_ID: u32 = 0;
/// One of the `EMBRAFT_ROLE_*` values.
pub const EMBRAFT_FIELD_ROLE: u32 = 1;
pub const EMBRAFT_FIELD_TERM: u32 = 2;
/// The node voted for in the current term, or 0.
pub const EMBRAFT_FIELD_VOTE: u32 = 3;
/// The known leader, or 0.
pub const EMBRAFT_FIELD_LEADER: u32 = 4;
pub const EMBRAFT_FIELD_COMMIT: u32 = 5;
pub const EMBRAFT_FIELD_APPLIED: u32 = 6;
/// Last index durable in this node's WAL.
pub const EMBRAFT_FIELD_PERSISTED: u32 = 7;
pub const EMBRAFT_FIELD_FIRST_INDEX: u32 = 8;
pub const EMBRAFT_FIELD_LAST_INDEX: u32 = 9;
/// Index covered by the latest snapshot (0 if none).
pub const EMBRAFT_FIELD_SNAPSHOT_INDEX: u32 = 10;
/// The target of a leadership transfer under way, or 0.
pub const EMBRAFT_FIELD_LEAD_TRANSFEREE: u32 = 11;
/// 1 while the node is quiescent (`embraft_config_set_quiesce_ticks`): a
/// leader that stopped heartbeating, a follower that stopped its election
/// timer; else 0.
pub const EMBRAFT_FIELD_QUIESCENT: u32 = 12;

/// Member lists of a status report (`embraft_status_report_member_count`,
/// `embraft_status_report_member`): the membership in force.
pub const EMBRAFT_MEMBERS_VOTERS: u32 = 0;
pub const EMBRAFT_MEMBERS_LEARNERS: u32 = 1;
/// Voters of the outgoing configuration, during a joint configuration.
pub const EMBRAFT_MEMBERS_VOTERS_OUTGOING: u32 = 2;
/// Outgoing voters that become learners when the joint configuration ends.
pub const EMBRAFT_MEMBERS_LEARNERS_NEXT: u32 = 3;

/// Fields of a peer in a leader's status report
/// (`embraft_status_report_peer_get`).
pub const EMBRAFT_PEER_ID: u32 = 0;
pub const EMBRAFT_PEER_MATCH_INDEX: u32 = 1;
pub const EMBRAFT_PEER_NEXT_INDEX: u32 = 2;
/// 1 while the leader streams appends, 0 while it probes.
pub const EMBRAFT_PEER_REPLICATING: u32 = 3;
pub const EMBRAFT_PEER_INFLIGHT_MSGS: u32 = 4;
/// 1 if the peer was heard from within the last election timeout.
pub const EMBRAFT_PEER_RECENT_ACTIVE: u32 = 5;

/// Returns the library version as a static NUL-terminated string such as
/// "0.1.0". The string is owned by the library and never freed.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn embraft_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Returns the ABI version of the loaded library; compare it with
/// `EMBRAFT_ABI_VERSION` from the header the host was compiled against.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn embraft_abi_version() -> u32 {
    EMBRAFT_ABI_VERSION
}

/// Returns a static NUL-terminated description of `status`, or of an
/// unknown code. The string is owned by the library and never freed.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn embraft_status_str(status: embraft_status) -> *const c_char {
    let text: &'static str = match status {
        EMBRAFT_OK => "ok\0",
        EMBRAFT_ERR_NULL_ARGUMENT => "a required pointer argument was NULL\0",
        EMBRAFT_ERR_INVALID_ARGUMENT => "an argument is out of range\0",
        EMBRAFT_ERR_INVALID_CONFIG => "invalid configuration\0",
        EMBRAFT_ERR_BUSY => "input queue full; poll the node and retry\0",
        EMBRAFT_TIMED_OUT => "no batch became ready within the timeout\0",
        EMBRAFT_ERR_MALFORMED_MESSAGE => "malformed message\0",
        EMBRAFT_ERR_WRONG_RECIPIENT => "message addressed to another node\0",
        EMBRAFT_ERR_TOO_LARGE => "proposal exceeds the maximum entry size\0",
        EMBRAFT_ERR_NOT_DELIVERED => "index not yet delivered to the host\0",
        EMBRAFT_ERR_OUT_OF_RANGE => "index out of range\0",
        EMBRAFT_ERR_DIRECTORY_LOCKED => "data directory in use by another node\0",
        EMBRAFT_ERR_STORAGE => "storage error\0",
        EMBRAFT_ERR_NODE_FAILED => "node stopped; free it and restart it from its directory\0",
        EMBRAFT_ERR_RESOURCE => "system resource unavailable\0",
        EMBRAFT_ERR_PANIC => "internal error\0",
        EMBRAFT_ERR_NOT_APPLIED => "snapshot index not yet applied by the host\0",
        EMBRAFT_ERR_STALE_SNAPSHOT => "the node already has a snapshot at or beyond that index\0",
        EMBRAFT_ERR_CORRUPT => "damaged or missing data in the data directory\0",
        EMBRAFT_ERR_UNKNOWN_GROUP => "no such group runs on the runtime\0",
        EMBRAFT_ERR_GROUP_EXISTS => "the group already runs on the runtime\0",
        _ => "unknown status code\0",
    };
    text.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_status_has_its_own_description() {
        let mut seen = std::collections::HashSet::new();
        for code in EMBRAFT_OK..=EMBRAFT_ERR_GROUP_EXISTS {
            // SAFETY: embraft_status_str returns static NUL-terminated text.
            let text = unsafe { CStr::from_ptr(embraft_status_str(code)) };
            let text = text.to_str().unwrap();
            assert_ne!(text, "unknown status code", "code {code}");
            assert!(seen.insert(text), "code {code} shares its text");
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(embraft_status_str(-1)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status code");
    }

    #[test]
    fn the_queue_bound_is_the_node_s() {
        assert_eq!(
            EMBRAFT_MAX_INPUT_QUEUE_CAPACITY,
            crate::node::MAX_INPUT_CAPACITY
        );
    }

    #[test]
    fn versions() {
        assert_eq!(embraft_abi_version(), EMBRAFT_ABI_VERSION);
        // SAFETY: static NUL-terminated text.
        let version = unsafe { CStr::from_ptr(embraft_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
