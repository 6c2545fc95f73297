//! `embraft_ready`: one batch of work, read through counts and indexed
//! getters whose pointers are views into the batch, valid until
//! `embraft_ready_free`.

use super::guard::{borrow_or_return, catch_panics, require_outputs, view_ptr, write_output};
use super::*;
use crate::core::{EntryKind, Index, ReadError, Role};
use crate::node::{DropReason, ProposalResult, ReadyBatch};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An opaque batch of work from `embraft_node_poll_ready`. Owned by the
/// caller; free with `embraft_ready_free`.
pub struct embraft_ready {
    batch: ReadyBatch,
    /// The batch's log lines as C strings, built once so the views handed
    /// out stay valid for the batch's lifetime.
    log_texts: Vec<CString>,
    /// The path of the snapshot to restore, as a C string (same reason).
    restore_path: Option<CString>,
}

impl embraft_ready {
    pub(crate) fn new(batch: ReadyBatch) -> embraft_ready {
        let log_texts = batch.logs.iter().map(|line| c_text(&line.text)).collect();
        let restore_path = batch.restore.as_ref().map(|r| c_path(&r.path));
        embraft_ready {
            batch,
            log_texts,
            restore_path,
        }
    }
}

/// A log line's text as a C string: interior NULs (from peer data) are
/// dropped rather than cutting the line short.
pub(crate) fn c_text(text: &str) -> CString {
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != 0).collect();
    CString::new(bytes).unwrap_or_default()
}

/// A path as a C string; a path on Unix never holds a NUL byte.
pub(crate) fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

pub(crate) fn role_code(role: Role) -> u32 {
    match role {
        Role::Follower => EMBRAFT_ROLE_FOLLOWER,
        Role::PreCandidate => EMBRAFT_ROLE_PRE_CANDIDATE,
        Role::Candidate => EMBRAFT_ROLE_CANDIDATE,
        Role::Leader => EMBRAFT_ROLE_LEADER,
    }
}

pub(crate) fn entry_kind_code(kind: EntryKind) -> u32 {
    match kind {
        EntryKind::Normal => EMBRAFT_ENTRY_NORMAL,
        EntryKind::Noop => EMBRAFT_ENTRY_NOOP,
        EntryKind::ConfChange => EMBRAFT_ENTRY_CONF_CHANGE,
    }
}

/// A proposal's outcome as its `EMBRAFT_PROPOSAL_*` code and the log
/// index that goes with it (0 when dropped).
pub(crate) fn outcome_code(result: &ProposalResult) -> (u32, u64) {
    match *result {
        ProposalResult::Committed { index } => (EMBRAFT_PROPOSAL_COMMITTED, index),
        ProposalResult::Unknown { index } => (EMBRAFT_PROPOSAL_UNKNOWN, index),
        ProposalResult::Dropped(reason) => (
            match reason {
                DropReason::NotLeader { .. } => EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER,
                DropReason::TransferInProgress => EMBRAFT_PROPOSAL_DROPPED_TRANSFER,
                DropReason::TooLarge => EMBRAFT_PROPOSAL_DROPPED_TOO_LARGE,
                DropReason::Superseded => EMBRAFT_PROPOSAL_DROPPED_SUPERSEDED,
                DropReason::ConfChangePending => EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING,
                DropReason::ConfChangeInvalid => EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID,
                DropReason::LearnerBehind => EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND,
            },
            0,
        ),
    }
}

/// A read's result as its `EMBRAFT_READ_*` code and the read index (0
/// unless `EMBRAFT_READ_OK`).
pub(crate) fn read_code(result: &Result<Index, ReadError>) -> (u32, u64) {
    match *result {
        Ok(read_index) => (EMBRAFT_READ_OK, read_index),
        Err(ReadError::NoLeader) => (EMBRAFT_READ_NO_LEADER, 0),
        Err(ReadError::LeadershipLost) => (EMBRAFT_READ_LEADERSHIP_LOST, 0),
        Err(ReadError::Refused) => (EMBRAFT_READ_REFUSED, 0),
        Err(ReadError::Busy) => (EMBRAFT_READ_BUSY, 0),
    }
}

/// The body of the `*_count` getters: writes what `count` finds in the
/// batch.
///
/// # Safety
/// `ready` is NULL or a live batch; `count_out` is NULL or writable.
unsafe fn write_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
    count: impl FnOnce(&embraft_ready) -> usize,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by the caller's contract.
        unsafe { write_output(count_out, count(ready)) };
        EMBRAFT_OK
    })
}

/// Writes the item at `index` of one of the batch's lists through `write`,
/// or fails with `EMBRAFT_ERR_OUT_OF_RANGE`: the shared body of the
/// indexed getters.
fn item<T>(items: &[T], index: usize, write: impl FnOnce(&T)) -> embraft_status {
    match items.get(index) {
        Some(item) => {
            write(item);
            EMBRAFT_OK
        }
        None => EMBRAFT_ERR_OUT_OF_RANGE,
    }
}

/// Frees a batch and every view taken from it. NULL is a no-op.
///
/// Thread safety: must not run concurrently with any other call on the
/// same batch; may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_free(ready: *mut embraft_ready) {
    catch_panics(|| {
        if !ready.is_null() {
            // SAFETY: a non-NULL batch came from embraft_node_poll_ready and
            // is freed once (the caller's contract).
            drop(unsafe { Box::from_raw(ready) });
        }
        EMBRAFT_OK
    });
}

/// Writes to `*changed_out` whether the role, leader or term changed since
/// the previous batch of the same node.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_state_changed(
    ready: *const embraft_ready,
    changed_out: *mut bool,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(changed_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(changed_out, ready.batch.state_changed) };
        EMBRAFT_OK
    })
}

/// Writes the node's role (`EMBRAFT_ROLE_*`), known leader (0 if none) and
/// term as of this batch, whether or not they changed.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_state(
    ready: *const embraft_ready,
    role_out: *mut u32,
    leader_out: *mut u64,
    term_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(role_out, leader_out, term_out);
        let state = ready.batch.state;
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe {
            write_output(role_out, role_code(state.role));
            write_output(leader_out, state.leader);
            write_output(term_out, state.term);
        }
        EMBRAFT_OK
    })
}

/// Writes the number of messages to send.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_message_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_count(ready, count_out, |ready| ready.batch.messages.len()) }
}

/// Writes message `index` (below the message count): the destination node
/// and a view of its encoded bytes (never NULL), valid until the batch is
/// freed. Deliver the bytes unchanged to that node's
/// `embraft_node_step`; messages may be sent in any order and lost
/// messages are recovered by Raft.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_message(
    ready: *const embraft_ready,
    index: usize,
    to_out: *mut u64,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(to_out, data_out, len_out);
        item(&ready.batch.messages, index, |msg| {
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(to_out, msg.to);
                write_output(data_out, view_ptr(&msg.bytes));
                write_output(len_out, msg.bytes.len());
            }
        })
    })
}

/// Writes the number of committed entries to apply.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_entry_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_count(ready, count_out, |ready| ready.batch.committed.len()) }
}

/// Writes committed entry `index` (below the entry count; entries come in
/// log order): its log index, term, kind (`EMBRAFT_ENTRY_*`), a view of its
/// data (never NULL) valid until the batch is freed, and the proposal id
/// when it was proposed on this node (0 otherwise). Apply entries in order,
/// then report with `embraft_node_ack_applied`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_entry(
    ready: *const embraft_ready,
    index: usize,
    log_index_out: *mut u64,
    term_out: *mut u64,
    kind_out: *mut u32,
    data_out: *mut *const u8,
    len_out: *mut usize,
    proposal_id_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(
            log_index_out,
            term_out,
            kind_out,
            data_out,
            len_out,
            proposal_id_out
        );
        item(&ready.batch.committed, index, |committed| {
            let entry = &committed.entry;
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(log_index_out, entry.index);
                write_output(term_out, entry.term);
                write_output(kind_out, entry_kind_code(entry.kind));
                write_output(data_out, view_ptr(&entry.data));
                write_output(len_out, entry.data.len());
                write_output(proposal_id_out, committed.proposal_id);
            }
        })
    })
}

/// Writes the number of proposal outcomes.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_outcome_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_count(ready, count_out, |ready| ready.batch.outcomes.len()) }
}

/// Writes outcome `index` (below the outcome count): the proposal id, the
/// outcome (`EMBRAFT_PROPOSAL_*`) and the log index it committed at
/// (`EMBRAFT_PROPOSAL_COMMITTED`) or was placed at
/// (`EMBRAFT_PROPOSAL_UNKNOWN`); 0 when dropped. A committed proposal's entry is among
/// the same batch's committed entries.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_outcome(
    ready: *const embraft_ready,
    index: usize,
    proposal_id_out: *mut u64,
    outcome_out: *mut u32,
    log_index_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(proposal_id_out, outcome_out, log_index_out);
        item(&ready.batch.outcomes, index, |outcome| {
            let (code, log_index) = outcome_code(&outcome.result);
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(proposal_id_out, outcome.proposal_id);
                write_output(outcome_out, code);
                write_output(log_index_out, log_index);
            }
        })
    })
}

/// Writes the number of read results (answers to `embraft_node_read_index`).
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_read_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_count(ready, count_out, |ready| ready.batch.reads.len()) }
}

/// Writes read result `index` (below the read count): the context the host
/// gave `embraft_node_read_index`, the result (`EMBRAFT_READ_*`) and, for
/// `EMBRAFT_READ_OK`, the log index through which the host must have
/// applied before serving the read (0 otherwise).
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_read(
    ready: *const embraft_ready,
    index: usize,
    context_out: *mut u64,
    result_out: *mut u32,
    read_index_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(context_out, result_out, read_index_out);
        item(&ready.batch.reads, index, |read| {
            let (code, read_index) = read_code(&read.result);
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(context_out, read.context);
                write_output(result_out, code);
                write_output(read_index_out, read_index);
            }
        })
    })
}

/// Writes whether the host must restore its state machine from a snapshot
/// before applying this batch's entries and, if so, the snapshot's index
/// and term (`*index_out` and `*term_out` are written only then); its file
/// is named by `embraft_ready_snapshot_path`. This happens when the node
/// installed a snapshot sent by the leader, or restarted from a compacted
/// log beyond the configured applied index. Entries through the snapshot's
/// index count as delivered.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_to_restore(
    ready: *const embraft_ready,
    present_out: *mut bool,
    index_out: *mut u64,
    term_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(present_out, index_out, term_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe {
            write_output(present_out, ready.batch.restore.is_some());
            if let Some(restore) = &ready.batch.restore {
                write_output(index_out, restore.meta.index);
                write_output(term_out, restore.meta.term);
            }
        }
        EMBRAFT_OK
    })
}

/// Writes to `*path_out` the NUL-terminated path of the snapshot file to
/// restore from (see `embraft_ready_snapshot_to_restore`): the bytes a
/// host wrote with an `embraft_snapshot_writer`, on this node or on the
/// leader, verified against their CRC-32. The string is owned by the batch
/// and, like the file, stays valid until `embraft_ready_free`: open the
/// file and read it before freeing the batch (or copy it). Do not modify,
/// move or delete the file. Fails with `EMBRAFT_ERR_OUT_OF_RANGE` when the
/// batch asks for no restore.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_path(
    ready: *const embraft_ready,
    path_out: *mut *const c_char,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(path_out);
        match &ready.restore_path {
            Some(path) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_output(path_out, path.as_ptr()) };
                EMBRAFT_OK
            }
            None => EMBRAFT_ERR_OUT_OF_RANGE,
        }
    })
}

/// Writes whether the node asks the host for a snapshot (the log grew past
/// `embraft_config_set_snapshot_entries` or `_bytes` since the last one)
/// and, if so, the applied index to take it at (`*index_out` is written
/// only then): pass it to `embraft_node_snapshot_begin`. Asked once per
/// crossing of a threshold, and again after ten election timeouts without
/// a snapshot recorded (one that failed, say); a host may also snapshot at
/// any other time.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_wanted(
    ready: *const embraft_ready,
    wanted_out: *mut bool,
    index_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(wanted_out, index_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe {
            write_output(wanted_out, ready.batch.snapshot_wanted.is_some());
            if let Some(index) = ready.batch.snapshot_wanted {
                write_output(index_out, index);
            }
        }
        EMBRAFT_OK
    })
}

/// Writes the number of log lines in the batch.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_log_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_count(ready, count_out, |ready| ready.log_texts.len()) }
}

/// Writes log line `index` (below the log count): its level
/// (`EMBRAFT_LOG_*`) and a view of its NUL-terminated text, valid until the
/// batch is freed.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_log(
    ready: *const embraft_ready,
    index: usize,
    level_out: *mut u32,
    text_out: *mut *const c_char,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(level_out, text_out);
        item(&ready.log_texts, index, |text| {
            let level = ready.batch.logs[index].level as u32;
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(level_out, level);
                write_output(text_out, text.as_ptr());
            }
        })
    })
}
