//! `embraft_node`: create, drive and free a node.

use super::config::{embraft_config, log_level};
use super::guard::{
    borrow_bytes, borrow_ids, borrow_or_return, catch_panics, record_failures, require_node_id,
    require_output, with_handle, with_output, write_output, Failure, KeepsErrors,
};
use super::last_error::LastError;
use super::metrics::embraft_metrics;
use super::ready::embraft_ready;
use super::snapshot_writer::embraft_snapshot_writer;
use super::status_report::embraft_status_report;
use super::*;
use crate::core::ConfChange;
use crate::node::{Node, NodeError};
use crate::snapshot::SnapshotError;
use crate::wal::WalError;
use std::ffi::c_int;
use std::sync::Arc;
use std::time::Duration;

/// An opaque running node. Create with `embraft_node_new`, free with
/// `embraft_node_free`.
pub struct embraft_node {
    node: Node,
    /// Shared with the node's snapshot writers, which record their
    /// failures here (a finished writer is gone, its error must not be).
    errors: Arc<LastError>,
}

/// The status code for a node error.
pub(crate) fn status_of(err: &NodeError) -> embraft_status {
    match err {
        NodeError::InvalidConfig(_) => EMBRAFT_ERR_INVALID_CONFIG,
        NodeError::DirectoryLocked(_) => EMBRAFT_ERR_DIRECTORY_LOCKED,
        NodeError::Storage(WalError::Corrupt { .. }) => EMBRAFT_ERR_CORRUPT,
        NodeError::Storage(_) => EMBRAFT_ERR_STORAGE,
        NodeError::Snapshot(SnapshotError::Corrupt { .. }) => EMBRAFT_ERR_CORRUPT,
        NodeError::Snapshot(_) => EMBRAFT_ERR_STORAGE,
        NodeError::NotApplied { .. } => EMBRAFT_ERR_NOT_APPLIED,
        NodeError::StaleSnapshot { .. } => EMBRAFT_ERR_STALE_SNAPSHOT,
        NodeError::Resource(_) => EMBRAFT_ERR_RESOURCE,
        NodeError::Busy => EMBRAFT_ERR_BUSY,
        NodeError::MalformedMessage(_) | NodeError::InvalidMessage(_) => {
            EMBRAFT_ERR_MALFORMED_MESSAGE
        }
        NodeError::WrongRecipient { .. } => EMBRAFT_ERR_WRONG_RECIPIENT,
        NodeError::ProposalTooLarge { .. } => EMBRAFT_ERR_TOO_LARGE,
        NodeError::NotDelivered { .. } => EMBRAFT_ERR_NOT_DELIVERED,
        NodeError::Failed(_) => EMBRAFT_ERR_NODE_FAILED,
        NodeError::UnknownGroup(_) => EMBRAFT_ERR_UNKNOWN_GROUP,
        NodeError::GroupExists(_) => EMBRAFT_ERR_GROUP_EXISTS,
    }
}

impl From<NodeError> for Failure {
    fn from(err: NodeError) -> Failure {
        Failure::new(status_of(&err), err)
    }
}

/// The membership change `EMBRAFT_CONF_*` `change` of node `node_id`, as
/// `embraft_node_propose_conf_change` and its runtime twin take them.
pub(crate) fn conf_change(change: u32, node_id: u64) -> Result<ConfChange, Failure> {
    let id = require_node_id(node_id, "node_id")?;
    Ok(match change {
        EMBRAFT_CONF_ADD_VOTER => ConfChange::AddVoter(id),
        EMBRAFT_CONF_PROMOTE_LEARNER => ConfChange::PromoteLearner(id),
        EMBRAFT_CONF_ADD_LEARNER => ConfChange::AddLearner(id),
        EMBRAFT_CONF_REMOVE_NODE => ConfChange::RemoveNode(id),
        other => {
            return Err(Failure::invalid(format!(
                "unknown membership change {other}"
            )))
        }
    })
}

/// The move to exactly the given voters and learners, as
/// `embraft_node_propose_membership` and its runtime twin take them.
///
/// # Safety
/// Unless NULL, each array holds its count of readable ids.
pub(crate) unsafe fn membership_change(
    voters: *const u64,
    voter_count: usize,
    learners: *const u64,
    learner_count: usize,
) -> Result<ConfChange, Failure> {
    // SAFETY: the arrays' validity is the caller's contract.
    unsafe {
        Ok(ConfChange::EnterJoint {
            voters: borrow_ids(voters, voter_count, "voters")?.to_vec(),
            learners: borrow_ids(learners, learner_count, "learners")?.to_vec(),
        })
    }
}

impl KeepsErrors for embraft_node {
    fn errors(&self) -> &LastError {
        &self.errors
    }
}

/// The shared body of every call on a node (see [`with_handle`]).
///
/// # Safety
/// `node` is NULL or a live handle from `embraft_node_new`.
unsafe fn with_node(
    node: *const embraft_node,
    body: impl FnOnce(&embraft_node) -> Result<(), Failure>,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_handle(node, body) }
}

/// The shared tail of the propose calls: checks the output, runs
/// `propose` on the node and writes the proposal id it returns.
///
/// # Safety
/// As for [`with_node`]; `proposal_id_out` is NULL or writable.
unsafe fn propose_with(
    node: *const embraft_node,
    proposal_id_out: *mut u64,
    propose: impl FnOnce(&Node) -> Result<u64, Failure>,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(node, proposal_id_out, "proposal_id_out", |h| {
            propose(&h.node)
        })
    }
}

/// Creates a node from `config` (copied: the config may be freed or
/// reused afterwards) and starts its threads. A data directory with no
/// state bootstraps a new cluster from the configured peers; one with
/// state restarts the node from it (term, vote, log and membership) and
/// delivers committed entries after the configured applied index. On
/// success `*node_out` receives a handle owned by the caller, to be
/// released with `embraft_node_free`; on failure the reason is the
/// config's last error.
///
/// Thread safety: may be called from any thread, but not concurrently with
/// other calls on the same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_new(
    config: *const embraft_config,
    node_out: *mut *mut embraft_node,
) -> embraft_status {
    catch_panics(|| {
        let config = borrow_or_return!(config);
        record_failures(&config.errors, || {
            require_output(node_out, "node_out")?;
            let handle = Box::new(embraft_node {
                node: Node::new(config.checked()?.clone())?,
                errors: Arc::default(),
            });
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe { write_output(node_out, Box::into_raw(handle)) };
            Ok(())
        })
    })
}

/// Stops the node and frees it: queued inputs are handled, every write
/// already queued is synced, the threads are joined and the data directory
/// is released (a new node may open it right after). Ready batches and
/// status reports taken from the node stay valid and must still be freed.
/// NULL is a no-op.
///
/// Thread safety: must not run concurrently with any other call on the
/// same node; may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_free(node: *mut embraft_node) {
    catch_panics(|| {
        if !node.is_null() {
            // SAFETY: a non-NULL handle came from embraft_node_new and is
            // freed once, with no call running on it (caller's contract).
            drop(unsafe { Box::from_raw(node) });
        }
        EMBRAFT_OK
    });
}

/// Advances the node's logical clock by one tick. The host calls it at a
/// steady pace (for example every 100 ms); election and heartbeat
/// intervals are counted in ticks. Never blocks, and never refused as
/// busy: ticks the node has not taken yet are merged, and taken together.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_tick(node: *const embraft_node) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_node(node, |handle| Ok(handle.node.tick()?)) }
}

/// Hands the node a message received from a peer: `len` bytes at `data`,
/// exactly as the peer's node produced them (borrowed for the call).
/// Fails with `EMBRAFT_ERR_MALFORMED_MESSAGE` for bytes that are not a
/// message (including a zero length) or name a term or log index past the
/// largest a cluster can reach (2^62), `EMBRAFT_ERR_WRONG_RECIPIENT` for a
/// message addressed to another node, `EMBRAFT_ERR_BUSY` when the input
/// queue is full. Messages the Raft core refuses (an unknown sender, a
/// stale term) are dropped and logged at debug level. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_step(
    node: *const embraft_node,
    data: *const u8,
    len: usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            // SAFETY: buffer validity is the caller's contract.
            let bytes = borrow_bytes(data, len, "data")?;
            Ok(handle.node.step(bytes)?)
        })
    }
}

/// Proposes `len` bytes at `data` (copied; `data` may be NULL when `len`
/// is 0) for the replicated log. On success `*proposal_id_out` receives
/// the proposal's id (never 0, unique on this node, not necessarily
/// consecutive); its outcome arrives in a later ready batch
/// (`embraft_ready_outcome`): committed at an index, or dropped with a
/// reason (this node is not the leader, or another leader's entry took its
/// index). Fails with `EMBRAFT_ERR_TOO_LARGE` above the configured maximum
/// entry size and `EMBRAFT_ERR_BUSY` when the input queue is full. Never
/// blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_propose(
    node: *const embraft_node,
    data: *const u8,
    len: usize,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        propose_with(node, proposal_id_out, |n| {
            // SAFETY: buffer validity is the caller's contract.
            let bytes = borrow_bytes(data, len, "data")?;
            Ok(n.propose(bytes)?)
        })
    }
}

/// Proposes a membership change: `change` is one of `EMBRAFT_CONF_*` and
/// `node_id` the node it concerns (non-zero). On success
/// `*proposal_id_out` receives the proposal's id; the outcome arrives like
/// a proposal's (`embraft_ready_outcome`, including the
/// `EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_*` reasons), and the change is in
/// force on each node once its entry (kind `EMBRAFT_ENTRY_CONF_CHANGE`) is
/// delivered there. One change at a time. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_propose_conf_change(
    node: *const embraft_node,
    change: u32,
    node_id: u64,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        propose_with(node, proposal_id_out, |n| {
            let change = conf_change(change, node_id)?;
            Ok(n.propose_conf_change(change)?)
        })
    }
}

/// Proposes moving to exactly the given membership: `voter_count` voters
/// at `voters` and `learner_count` learners at `learners` (copied; NULL
/// allowed for a zero count; an id 0 fails with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`). The move goes through a joint configuration
/// that the node leaves by itself once it commits. On success
/// `*proposal_id_out` receives the proposal's id; the outcome arrives as
/// for `embraft_node_propose_conf_change`. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_propose_membership(
    node: *const embraft_node,
    voters: *const u64,
    voter_count: usize,
    learners: *const u64,
    learner_count: usize,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        propose_with(node, proposal_id_out, |n| {
            // SAFETY: the arrays' validity is the caller's contract.
            let change = membership_change(voters, voter_count, learners, learner_count)?;
            Ok(n.propose_conf_change(change)?)
        })
    }
}

/// Asks for a linearizable read point. `context` is chosen by the host and
/// should be unique among its outstanding reads; the result arrives in a
/// later batch (`embraft_ready_read`) tagged with it. A follower forwards
/// the request to its leader. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_read_index(
    node: *const embraft_node,
    context: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_node(node, |handle| Ok(handle.node.read_index(context)?)) }
}

/// Asks this node, if it leads, to hand leadership to voter `to` (0 fails
/// with `EMBRAFT_ERR_INVALID_ARGUMENT`):
/// proposals are refused meanwhile and the transfer is abandoned after an
/// election timeout. A refusal (not the leader, not a voter) is logged at
/// info level; watch the batches' state for the new leader. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_transfer_leader(
    node: *const embraft_node,
    to: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            let to = require_node_id(to, "to")?;
            Ok(handle.node.transfer_leader(to)?)
        })
    }
}

/// Tells the node that the host's transport could not deliver to `peer`: a
/// leader then probes that peer instead of streaming to it. Never blocks.
/// `peer` 0 fails with `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_report_unreachable(
    node: *const embraft_node,
    peer: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            let peer = require_node_id(peer, "peer")?;
            Ok(handle.node.report_unreachable(peer)?)
        })
    }
}

/// Starts a snapshot of the host's state machine at log index `index`.
/// `index` must be applied and acknowledged (`embraft_node_ack_applied`:
/// `EMBRAFT_ERR_NOT_APPLIED` otherwise) and later than the node's latest
/// snapshot (`EMBRAFT_ERR_STALE_SNAPSHOT` otherwise). On success
/// `*writer_out` receives a writer owned by the caller, with a new empty
/// file in the node's `snapshots/` folder: the host writes its state
/// machine as of `index` into it (`embraft_snapshot_writer_write`, or
/// through the file's path, `embraft_snapshot_writer_path`), then calls
/// `embraft_snapshot_writer_finish` (or `embraft_snapshot_writer_abort`).
/// The node then records the snapshot and compacts its log; it sends the
/// file to followers that need it and hands it back to the host to restore
/// after a restart. Waits briefly for the node's thread; never for I/O of
/// the snapshot's size.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). The writer may be
/// used from another thread than the one that created it.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_snapshot_begin(
    node: *const embraft_node,
    index: u64,
    writer_out: *mut *mut embraft_snapshot_writer,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            require_output(writer_out, "writer_out")?;
            let writer = handle.node.begin_snapshot(index)?;
            let writer = embraft_snapshot_writer::new(writer, handle.errors.clone());
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(writer_out, Box::into_raw(Box::new(writer)));
            Ok(())
        })
    }
}

/// Waits up to `timeout_ms` milliseconds (0: do not wait) for the next
/// batch of work. On success `*ready_out` receives a batch owned by the
/// caller, to be released with `embraft_ready_free`; its views stay valid
/// until then, even after the node is freed. Returns `EMBRAFT_TIMED_OUT`
/// (and writes nothing) when no batch came in time, and
/// `EMBRAFT_ERR_NODE_FAILED` once the node has stopped after a storage
/// failure (the batch pending at that moment is still handed out first).
///
/// On an inline node (`EMBRAFT_THREADING_INLINE`) the input calls prepare
/// the batches: poll with timeout 0 right after them; a longer timeout
/// waits for another thread's call.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`); when several
/// threads poll one node, each batch goes to one of them.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_poll_ready(
    node: *const embraft_node,
    timeout_ms: u32,
    ready_out: *mut *mut embraft_ready,
) -> embraft_status {
    catch_panics(|| {
        let mut timed_out = false;
        // SAFETY: forwarded from this function's contract.
        let status = unsafe {
            with_node(node, |handle| {
                require_output(ready_out, "ready_out")?;
                let timeout = Duration::from_millis(u64::from(timeout_ms));
                match handle.node.poll_ready(timeout)? {
                    Some(batch) => {
                        let ready = Box::new(embraft_ready::new(batch));
                        // SAFETY: checked non-NULL above; writable by contract.
                        write_output(ready_out, Box::into_raw(ready));
                    }
                    None => timed_out = true,
                }
                Ok(())
            })
        };
        if timed_out {
            EMBRAFT_TIMED_OUT
        } else {
            status
        }
    })
}

/// Tells the node that the host's state machine applied every delivered
/// committed entry through `index`. Acknowledgements may lag behind
/// delivery and may repeat; an index beyond the last delivered entry fails
/// with `EMBRAFT_ERR_NOT_DELIVERED`. Never blocks (`EMBRAFT_ERR_BUSY` when
/// the input queue is full).
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`). On an inline node
/// (`EMBRAFT_THREADING_INLINE`) the call does the node's work itself,
/// taking turns with other calls on the node, and may take as long as a
/// WAL write.
#[no_mangle]
pub unsafe extern "C" fn embraft_node_ack_applied(
    node: *const embraft_node,
    index: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_node(node, |handle| Ok(handle.node.ack_applied(index)?)) }
}

/// Takes a snapshot of the node's status (id, role, term, leader, commit,
/// applied, log bounds, and per-peer progress when leader). On success
/// `*report_out` receives a report owned by the caller, to be released
/// with `embraft_status_report_free`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_node_status(
    node: *const embraft_node,
    report_out: *mut *mut embraft_status_report,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            require_output(report_out, "report_out")?;
            let report = Box::new(embraft_status_report::new(handle.node.status()));
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(report_out, Box::into_raw(report));
            Ok(())
        })
    }
}

/// Writes to `*fd_out` a file descriptor that is readable while a batch
/// (or a failure) waits for `embraft_node_poll_ready`: add it to poll,
/// epoll or an event loop. The descriptor is owned by the node and closed
/// by `embraft_node_free`: never read, write or close it. The node keeps
/// the descriptor up to date from the first call of this function on (a
/// batch already waiting makes it readable at once); a host that never
/// asks for it does not pay two system calls per batch to keep it.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_node_readiness_fd(
    node: *const embraft_node,
    fd_out: *mut c_int,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            require_output(fd_out, "fd_out")?;
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(fd_out, handle.node.readiness_fd());
            Ok(())
        })
    }
}

/// Sets the level of the log lines the node puts in its ready batches, one
/// of `EMBRAFT_LOG_*`; other values fail with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_node_set_log_level(
    node: *const embraft_node,
    level: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_node(node, |handle| {
            let level = log_level(level)
                .ok_or_else(|| Failure::invalid(format!("unknown log level {level}")))?;
            handle.node.set_log_level(level);
            Ok(())
        })
    }
}

/// Copies the message of the most recent failed call on `node` into
/// `buf`, truncated to `buf_len - 1` bytes and NUL-terminated; an empty
/// string if no call failed. `buf` may be NULL only when `buf_len` is 0.
/// If `message_len` is not NULL it receives the full message length
/// (without the NUL). The caller owns `buf`. With several threads calling
/// one node, the message may belong to another thread's failed call.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_node_last_error(
    node: *const embraft_node,
    buf: *mut c_char,
    buf_len: usize,
    message_len: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let handle = borrow_or_return!(node);
        // SAFETY: buffer validity is the caller's contract (see above).
        unsafe { handle.errors.copy_out(buf, buf_len, message_len) }
    })
}

/// Fills `*metrics_out` with what the node measured since it started
/// (docs/FFI.md, "Metrics"). Cheap (a copy): fine to call every second.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same node (except `embraft_node_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_node_metrics(
    node: *const embraft_node,
    metrics_out: *mut embraft_metrics,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(node, metrics_out, "metrics_out", |handle| {
            Ok(handle.node.metrics().into())
        })
    }
}
