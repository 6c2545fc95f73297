//! `embraft_runtime`: many Raft groups on one worker pool and one shared
//! WAL (src/runtime). Calls name their group by id; one poll hands out
//! every group's output (`runtime_ready.rs`).

use super::config::embraft_config;
use super::guard::{
    borrow_bytes, borrow_ids, borrow_or_return, catch_panics, record_failures, require_node_id,
    require_output, with_handle, with_output, write_output, Failure, KeepsErrors,
};
use super::last_error::LastError;
use super::metrics::embraft_metrics;
use super::node::{conf_change, membership_change};
use super::runtime_ready::embraft_runtime_ready;
use super::snapshot_writer::embraft_snapshot_writer;
use super::status_report::embraft_status_report;
use super::*;
use crate::runtime::{GroupId, GroupStart, Runtime};
use std::ffi::c_int;
use std::sync::Arc;
use std::time::Duration;

/// An opaque running runtime. Create with `embraft_runtime_new`, free with
/// `embraft_runtime_free`.
pub struct embraft_runtime {
    runtime: Runtime,
    /// Shared with the runtime's snapshot writers, which record their
    /// failures here (a finished writer is gone, its error must not be).
    errors: Arc<LastError>,
}

impl KeepsErrors for embraft_runtime {
    fn errors(&self) -> &LastError {
        &self.errors
    }
}

/// The shared body of every call on a runtime (see [`with_handle`]).
///
/// # Safety
/// `runtime` is NULL or a live handle from `embraft_runtime_new`.
unsafe fn with_runtime(
    runtime: *const embraft_runtime,
    body: impl FnOnce(&Runtime) -> Result<(), Failure>,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_handle(runtime, |handle| body(&handle.runtime)) }
}

/// Copies up to `capacity` of `ids` to `ids_out` and writes their full
/// number to `count_out`: the lists of groups.
///
/// # Safety
/// As for [`with_runtime`]; `ids_out` is NULL or holds `capacity`
/// writable ids; `count_out` is NULL or writable.
unsafe fn write_ids(
    runtime: *const embraft_runtime,
    ids_out: *mut u64,
    capacity: usize,
    count_out: *mut usize,
    ids: impl FnOnce(&Runtime) -> Vec<GroupId>,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            if ids_out.is_null() && capacity > 0 {
                return Err(Failure::new(
                    EMBRAFT_ERR_NULL_ARGUMENT,
                    format!("groups_out is NULL with a capacity of {capacity}"),
                ));
            }
            require_output(count_out, "count_out")?;
            let ids = ids(runtime);
            let copied = ids.len().min(capacity);
            if copied > 0 {
                // SAFETY: `ids_out` holds `capacity >= copied` writable ids
                // (the caller's contract) and cannot overlap a fresh Vec.
                std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_out, copied);
            }
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(count_out, ids.len());
            Ok(())
        })
    }
}

/// Creates a runtime from `config` (copied: the config may be freed or
/// reused afterwards) and starts `workers` worker threads (0: one per
/// core). Of the configuration, the runtime uses the id (the runtime's id
/// in its cluster, which its replicas of every group use as their node id;
/// non-zero), the data directory (the shared WAL, and each group's
/// snapshot files under `groups/<id>/`), the WAL options (sync mode, write
/// method, segment size), the Raft tunables (for every group; a random
/// seed of 0 picks one per group), the snapshot options, the log level,
/// the input queue capacity, which bounds each group's mailbox, the entry
/// cache budget and the WAL's segment soft limit, and the threading mode:
/// `EMBRAFT_THREADING_INLINE` starts no workers (each input call steps
/// its group on the caller's thread, as on an inline node). It ignores
/// the peers and the applied index (each group gets its own in
/// `embraft_runtime_start_group`). The WAL is recovered, but no group runs until it is
/// started: `embraft_runtime_stored_groups` lists those the WAL holds. On
/// success `*runtime_out` receives a handle owned by the caller, to be
/// released with `embraft_runtime_free`; on failure the reason is the
/// config's last error (`EMBRAFT_ERR_INVALID_CONFIG`,
/// `EMBRAFT_ERR_DIRECTORY_LOCKED`, `EMBRAFT_ERR_STORAGE`,
/// `EMBRAFT_ERR_CORRUPT`, `EMBRAFT_ERR_RESOURCE`).
///
/// Thread safety: may be called from any thread, but not concurrently with
/// other calls on the same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_new(
    config: *const embraft_config,
    workers: u32,
    runtime_out: *mut *mut embraft_runtime,
) -> embraft_status {
    catch_panics(|| {
        let config = borrow_or_return!(config);
        record_failures(&config.errors, || {
            require_output(runtime_out, "runtime_out")?;
            let runtime_config = config.checked()?.runtime_config(workers as usize);
            let handle = Box::new(embraft_runtime {
                runtime: Runtime::open(runtime_config)?,
                errors: Arc::default(),
            });
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe { write_output(runtime_out, Box::into_raw(handle)) };
            Ok(())
        })
    })
}

/// Stops the runtime and frees it: every group stops, the workers finish
/// the rounds queued, every write is made durable, the threads are joined
/// and the data directory is released (a new runtime may open it right
/// after). Batches and status reports taken from the runtime stay valid and
/// must still be freed; a snapshot writer still open must still be ended
/// (finishing it then fails with `EMBRAFT_ERR_NODE_FAILED`). NULL is a
/// no-op.
///
/// Thread safety: must not run concurrently with any other call on the
/// same runtime; may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_free(runtime: *mut embraft_runtime) {
    catch_panics(|| {
        if !runtime.is_null() {
            // SAFETY: a non-NULL handle came from embraft_runtime_new and is
            // freed once, with no call running on it (caller's contract).
            drop(unsafe { Box::from_raw(runtime) });
        }
        EMBRAFT_OK
    });
}

/// Copies the message of the most recent failed call on `runtime` (and on
/// the snapshot writers it created) into `buf`, truncated to
/// `buf_len - 1` bytes and NUL-terminated; an empty string if no call
/// failed. `buf` may be NULL only when `buf_len` is 0. If `message_len`
/// is not NULL it receives the full message length (without the NUL). The
/// caller owns `buf`. With several threads calling one runtime, the
/// message may belong to another thread's failed call.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_last_error(
    runtime: *const embraft_runtime,
    buf: *mut c_char,
    buf_len: usize,
    message_len: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let handle = borrow_or_return!(runtime);
        // SAFETY: buffer validity is the caller's contract (see above).
        unsafe { handle.errors.copy_out(buf, buf_len, message_len) }
    })
}

/// Starts running `group` on this runtime. When the WAL holds the group,
/// it restarts from there (term, vote, log, membership) and `peers` is
/// ignored; otherwise a non-empty `peers` (`peer_count` runtime ids at
/// `peers`, copied, this runtime's included; NULL allowed for a zero
/// count; an id 0 fails with `EMBRAFT_ERR_INVALID_ARGUMENT`) founds the
/// group with those voters, and an empty one joins a running group (it
/// learns the membership from the leader once a member proposes adding
/// this runtime). Committed entries after `applied` (what the host has
/// already applied of the group; 0 for none) are delivered in later
/// batches. Fails with `EMBRAFT_ERR_GROUP_EXISTS` when the group already
/// runs here, `EMBRAFT_ERR_INVALID_CONFIG` when `applied` is beyond the
/// group's stored log, `EMBRAFT_ERR_STORAGE` or `EMBRAFT_ERR_CORRUPT` when
/// its state cannot be read. Reads the group's state from the WAL on the
/// calling thread.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_start_group(
    runtime: *const embraft_runtime,
    group: u64,
    peers: *const u64,
    peer_count: usize,
    applied: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            // SAFETY: the array's validity is the caller's contract.
            let peers = borrow_ids(peers, peer_count, "peers")?.to_vec();
            Ok(runtime.start_group(group, GroupStart { peers, applied })?)
        })
    }
}

/// Stops running `group`; its state stays in the WAL and the group can be
/// started again. Output the group produced before and not yet polled may
/// still come in a batch. Fails with `EMBRAFT_ERR_UNKNOWN_GROUP` when the
/// group does not run here. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_stop_group(
    runtime: *const embraft_runtime,
    group: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_runtime(runtime, |runtime| Ok(runtime.stop_group(group)?)) }
}

/// Stops running `group` and deletes its state: a durable tombstone in the
/// WAL, and its snapshot files. Fails with `EMBRAFT_ERR_UNKNOWN_GROUP`
/// when the group does not run here (start a stored group first to remove
/// it). Waits for the WAL write and the deletion.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_remove_group(
    runtime: *const embraft_runtime,
    group: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_runtime(runtime, |runtime| Ok(runtime.remove_group(group)?)) }
}

/// Lists the groups the WAL holds state of, running or not, in ascending
/// order: the ones to start again after the runtime reopens. Copies up to
/// `capacity` ids to `groups_out` (NULL allowed when `capacity` is 0) and
/// writes their full number to `*count_out`; when that exceeds
/// `capacity`, call again with a larger array.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_stored_groups(
    runtime: *const embraft_runtime,
    groups_out: *mut u64,
    capacity: usize,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        write_ids(runtime, groups_out, capacity, count_out, |runtime| {
            let mut ids = runtime.stored_groups();
            ids.sort_unstable();
            ids
        })
    }
}

/// Lists the groups running, in ascending order, as
/// `embraft_runtime_stored_groups` does.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_running_groups(
    runtime: *const embraft_runtime,
    groups_out: *mut u64,
    capacity: usize,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        write_ids(
            runtime,
            groups_out,
            capacity,
            count_out,
            Runtime::running_groups,
        )
    }
}

/// Advances the logical clock of every running group by one tick; call it
/// at a steady pace (for example every 100 ms). A quiet group (see
/// `embraft_config_set_quiesce_ticks`) gets its ticks in bulk, every
/// election timeout, so idle groups cost next to nothing. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_tick(runtime: *const embraft_runtime) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_runtime(runtime, |runtime| Ok(runtime.tick()?)) }
}

/// Hands `group` a message received from a peer runtime: `len` bytes at
/// `data`, exactly as that runtime's batch held them (borrowed for the
/// call). Fails with `EMBRAFT_ERR_MALFORMED_MESSAGE` for bytes that are
/// not a message (a zero length included; checked first),
/// `EMBRAFT_ERR_WRONG_RECIPIENT` for a message addressed to another
/// runtime, `EMBRAFT_ERR_UNKNOWN_GROUP` when the group does not run here,
/// `EMBRAFT_ERR_BUSY` when the group's mailbox is full (drop the message:
/// Raft retransmits). Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_step(
    runtime: *const embraft_runtime,
    group: u64,
    data: *const u8,
    len: usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            // SAFETY: buffer validity is the caller's contract.
            let bytes = borrow_bytes(data, len, "data")?;
            Ok(runtime.step(group, bytes)?)
        })
    }
}

/// What `embraft_runtime_step_frame` did with the messages of a frame;
/// they add up to the frame's message count.
#[repr(C)]
pub struct embraft_rt_frame_report {
    /// Queued for their groups.
    pub stepped: usize,
    /// Left out: for groups not running here (they may start later than on
    /// the sending runtime; Raft retransmits).
    pub unknown_group: usize,
    /// Left out: refused by a full mailbox (Raft retransmits).
    pub busy: usize,
    /// Left out: malformed, or addressed to another runtime.
    pub refused: usize,
}

/// Hands the runtime a group frame received from a peer runtime (docs/
/// WIRE.md, "Group frames"): `len` bytes at `frame`, exactly as that
/// runtime's `embraft_runtime_ready_frame` produced them (borrowed for the
/// call). The whole frame is checked first: a malformed one (a zero length
/// included) fails with `EMBRAFT_ERR_MALFORMED_MESSAGE` and none of its
/// messages is stepped. Otherwise each message is queued for its group
/// under one lock, and those that cannot be are left out and counted
/// rather than failing the call; `*report_out` (required) receives the
/// counts. On failure `*report_out` is left unchanged. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_step_frame(
    runtime: *const embraft_runtime,
    frame: *const u8,
    len: usize,
    report_out: *mut embraft_rt_frame_report,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, report_out, "report_out", |handle| {
            // SAFETY: buffer validity is the caller's contract.
            let frame = borrow_bytes(frame, len, "frame")?;
            let report = handle.runtime.step_frame(frame)?;
            Ok(embraft_rt_frame_report {
                stepped: report.stepped,
                unknown_group: report.unknown_group,
                busy: report.busy,
                refused: report.refused,
            })
        })
    }
}

/// Proposes `len` bytes at `data` (copied; NULL allowed when `len` is 0)
/// to `group`'s log. On success `*proposal_id_out` receives the proposal's
/// id (never 0, unique within the group on this runtime); its outcome
/// arrives in a later batch (`embraft_runtime_ready_outcomes`). Fails with
/// `EMBRAFT_ERR_UNKNOWN_GROUP`, `EMBRAFT_ERR_TOO_LARGE` above the maximum
/// entry size, `EMBRAFT_ERR_BUSY` when the group's mailbox is full. Never
/// blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_propose(
    runtime: *const embraft_runtime,
    group: u64,
    data: *const u8,
    len: usize,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, proposal_id_out, "proposal_id_out", |handle| {
            // SAFETY: buffer validity is the caller's contract.
            let bytes = borrow_bytes(data, len, "data")?;
            Ok(handle.runtime.propose(group, bytes)?)
        })
    }
}

/// Proposes a membership change of `group`, as
/// `embraft_node_propose_conf_change` does for a node: `change` is one of
/// `EMBRAFT_CONF_*` and `node_id` the runtime it concerns (non-zero). On
/// success `*proposal_id_out` receives the proposal's id; the outcome
/// arrives like a proposal's. Fails with `EMBRAFT_ERR_UNKNOWN_GROUP` when
/// the group does not run here. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_propose_conf_change(
    runtime: *const embraft_runtime,
    group: u64,
    change: u32,
    node_id: u64,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, proposal_id_out, "proposal_id_out", |handle| {
            let change = conf_change(change, node_id)?;
            Ok(handle.runtime.propose_conf_change(group, change)?)
        })
    }
}

/// Proposes moving `group` to exactly the given membership, as
/// `embraft_node_propose_membership` does for a node: `voter_count`
/// runtime ids at `voters` and `learner_count` at `learners` (copied; NULL
/// allowed for a zero count; an id 0 fails with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`). On success `*proposal_id_out` receives
/// the proposal's id. Fails with `EMBRAFT_ERR_UNKNOWN_GROUP` when the
/// group does not run here. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_propose_membership(
    runtime: *const embraft_runtime,
    group: u64,
    voters: *const u64,
    voter_count: usize,
    learners: *const u64,
    learner_count: usize,
    proposal_id_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, proposal_id_out, "proposal_id_out", |handle| {
            // SAFETY: the arrays' validity is the caller's contract.
            let change = membership_change(voters, voter_count, learners, learner_count)?;
            Ok(handle.runtime.propose_conf_change(group, change)?)
        })
    }
}

/// Asks `group` for a linearizable read point; the result arrives in a
/// later batch (`embraft_runtime_ready_reads`) tagged with `group` and
/// `context` (chosen by the host, unique among its outstanding reads of
/// the group). Fails with `EMBRAFT_ERR_UNKNOWN_GROUP` when the group does
/// not run here. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_read_index(
    runtime: *const embraft_runtime,
    group: u64,
    context: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_runtime(runtime, |runtime| Ok(runtime.read_index(group, context)?)) }
}

/// Asks `group`'s replica here, if it leads, to hand leadership to the
/// replica on runtime `to` (0 fails with `EMBRAFT_ERR_INVALID_ARGUMENT`),
/// as `embraft_node_transfer_leader` does for a node. Fails with
/// `EMBRAFT_ERR_UNKNOWN_GROUP` when the group does not run here. Never
/// blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_transfer_leader(
    runtime: *const embraft_runtime,
    group: u64,
    to: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            let to = require_node_id(to, "to")?;
            Ok(runtime.transfer_leader(group, to)?)
        })
    }
}

/// Tells every running group that the host's transport could not deliver
/// to runtime `peer` (0 fails with `EMBRAFT_ERR_INVALID_ARGUMENT`): the
/// groups that lead a replica there probe it instead of streaming to it,
/// and quiescent followers of a leader there wake up. Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_report_unreachable(
    runtime: *const embraft_runtime,
    peer: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            let peer = require_node_id(peer, "peer")?;
            Ok(runtime.report_unreachable(peer)?)
        })
    }
}

/// Tells `group` that the host applied every delivered committed entry of
/// the group through `index`. Acknowledgements may lag behind delivery and
/// may repeat; an index beyond the group's last delivered entry fails with
/// `EMBRAFT_ERR_NOT_DELIVERED`, an unknown group with
/// `EMBRAFT_ERR_UNKNOWN_GROUP`, a full mailbox with `EMBRAFT_ERR_BUSY`.
/// Never blocks.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ack_applied(
    runtime: *const embraft_runtime,
    group: u64,
    index: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_runtime(runtime, |runtime| Ok(runtime.ack_applied(group, index)?)) }
}

/// Starts a snapshot of the host's state machine for `group` at log index
/// `index`, as `embraft_node_snapshot_begin` does for a node: `index` must
/// be applied and acknowledged (`EMBRAFT_ERR_NOT_APPLIED` otherwise) and
/// later than the group's latest snapshot (`EMBRAFT_ERR_STALE_SNAPSHOT`
/// otherwise). On success `*writer_out` receives a writer owned by the
/// caller, with a new empty file in the group's snapshot folder
/// (`<data_dir>/groups/<group>/snapshots/`); it is the same
/// `embraft_snapshot_writer` a node hands out, and its failures are
/// recorded as this runtime's last error. The group records the snapshot
/// once the writer is finished, then compacts its log. Waits briefly for a
/// worker stepping the group; never for I/O of the snapshot's size.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`). The writer
/// may be used from another thread than the one that created it.
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_snapshot_begin(
    runtime: *const embraft_runtime,
    group: u64,
    index: u64,
    writer_out: *mut *mut embraft_snapshot_writer,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, writer_out, "writer_out", |handle| {
            let writer = handle.runtime.begin_snapshot(group, index)?;
            let writer = embraft_snapshot_writer::new(writer, handle.errors.clone());
            Ok(Box::into_raw(Box::new(writer)))
        })
    }
}

/// Takes a snapshot of `group`'s status as of its last round, read with
/// the `embraft_status_report_*` getters (`EMBRAFT_FIELD_ID` is this
/// runtime's id). On success `*report_out` receives a report owned by the
/// caller, to be released with `embraft_status_report_free`. Fails with
/// `EMBRAFT_ERR_UNKNOWN_GROUP` when the group does not run here.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_status(
    runtime: *const embraft_runtime,
    group: u64,
    report_out: *mut *mut embraft_status_report,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, report_out, "report_out", |handle| {
            let report = embraft_status_report::new(handle.runtime.status(group)?);
            Ok(Box::into_raw(Box::new(report)))
        })
    }
}

/// Waits up to `timeout_ms` milliseconds (0: do not wait) for output of
/// any group, then takes the output of every group that has some, in one
/// batch. On success `*ready_out` always receives a batch owned by the
/// caller, to be released with `embraft_runtime_ready_free`; when nothing
/// came within the timeout its lists are all empty (there is no
/// `EMBRAFT_TIMED_OUT` here). Its arrays stay valid until then, even after
/// the runtime is freed. Returns `EMBRAFT_ERR_NODE_FAILED` once the
/// runtime has stopped after a storage failure or an internal error (the
/// output pending at that moment is still handed out first): free the
/// runtime and open it again from its data directory.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`); when several
/// threads poll one runtime, each group's output goes to one of them, but
/// two batches of one group may then be handled out of order: poll from
/// one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_poll(
    runtime: *const embraft_runtime,
    timeout_ms: u32,
    ready_out: *mut *mut embraft_runtime_ready,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, ready_out, "ready_out", |handle| {
            let timeout = Duration::from_millis(u64::from(timeout_ms));
            let batches = handle.runtime.poll(timeout)?;
            Ok(Box::into_raw(Box::new(embraft_runtime_ready::new(batches))))
        })
    }
}

/// Writes the runtime's work counts since it opened: worker rounds run,
/// group steps across them (a group stepped in two rounds counts twice)
/// and WAL syncs waited for (one per round that wrote something a group
/// waits on, however many groups it served).
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_stats(
    runtime: *const embraft_runtime,
    rounds_out: *mut u64,
    group_steps_out: *mut u64,
    syncs_out: *mut u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_runtime(runtime, |runtime| {
            require_output(rounds_out, "rounds_out")?;
            require_output(group_steps_out, "group_steps_out")?;
            require_output(syncs_out, "syncs_out")?;
            let stats = runtime.stats();
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(rounds_out, stats.rounds);
            write_output(group_steps_out, stats.group_steps);
            write_output(syncs_out, stats.syncs);
            Ok(())
        })
    }
}

/// Writes to `*fd_out` a file descriptor that is readable while output of
/// any group (or a failure) waits for `embraft_runtime_poll`: add it to
/// poll, epoll or an event loop. Owned by the runtime and closed by
/// `embraft_runtime_free`: never read, write or close it. Kept up to date
/// from the first call of this function on (output already waiting makes
/// it readable at once).
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_readiness_fd(
    runtime: *const embraft_runtime,
    fd_out: *mut c_int,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, fd_out, "fd_out", |handle| {
            Ok(handle.runtime.readiness_fd())
        })
    }
}

/// Fills `*metrics_out` with what `group` and the runtime's shared WAL
/// measured (docs/FFI.md, "Metrics"); `EMBRAFT_ERR_UNKNOWN_GROUP` when the
/// group does not run here.
///
/// Thread safety: may be called from any thread, concurrently with other
/// calls on the same runtime (except `embraft_runtime_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_metrics(
    runtime: *const embraft_runtime,
    group: u64,
    metrics_out: *mut embraft_metrics,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_output(runtime, metrics_out, "metrics_out", |handle| {
            Ok(handle.runtime.metrics(group)?.into())
        })
    }
}
