//! `embraft_ready`: one batch of work, read through counts and indexed
//! getters whose pointers are views into the batch, valid until
//! `embraft_ready_free`.

use super::guard::{borrow_or_return, catch_panics, require_outputs, view_ptr, write_output};
use super::*;
use crate::core::{EntryKind, ReadError, Role};
use crate::node::{DropReason, ProposalResult, ReadyBatch};
use std::ffi::CString;

/// An opaque batch of work from `embraft_node_poll_ready`. Owned by the
/// caller; free with `embraft_ready_free`.
pub struct embraft_ready {
    batch: ReadyBatch,
    /// The batch's log lines as C strings, built once so the views handed
    /// out stay valid for the batch's lifetime.
    log_texts: Vec<CString>,
}

impl embraft_ready {
    pub(crate) fn new(batch: ReadyBatch) -> embraft_ready {
        let log_texts = batch
            .logs
            .iter()
            .map(|line| {
                let bytes: Vec<u8> = line.text.bytes().filter(|&b| b != 0).collect();
                CString::new(bytes).unwrap_or_default()
            })
            .collect();
        embraft_ready { batch, log_texts }
    }
}

pub(crate) fn role_code(role: Role) -> u32 {
    match role {
        Role::Follower => EMBRAFT_ROLE_FOLLOWER,
        Role::PreCandidate => EMBRAFT_ROLE_PRE_CANDIDATE,
        Role::Candidate => EMBRAFT_ROLE_CANDIDATE,
        Role::Leader => EMBRAFT_ROLE_LEADER,
    }
}

fn entry_kind_code(kind: EntryKind) -> u32 {
    match kind {
        EntryKind::Normal => EMBRAFT_ENTRY_NORMAL,
        EntryKind::Noop => EMBRAFT_ENTRY_NOOP,
        EntryKind::ConfChange => EMBRAFT_ENTRY_CONF_CHANGE,
    }
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
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.messages.len()) };
        EMBRAFT_OK
    })
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
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.committed.len()) };
        EMBRAFT_OK
    })
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
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.outcomes.len()) };
        EMBRAFT_OK
    })
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
            let (code, log_index) = match outcome.result {
                ProposalResult::Committed { index } => (EMBRAFT_PROPOSAL_COMMITTED, index),
                ProposalResult::Unknown { index } => (EMBRAFT_PROPOSAL_UNKNOWN, index),
                ProposalResult::Dropped(reason) => (
                    match reason {
                        DropReason::NotLeader { .. } => EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER,
                        DropReason::TransferInProgress => EMBRAFT_PROPOSAL_DROPPED_TRANSFER,
                        DropReason::TooLarge => EMBRAFT_PROPOSAL_DROPPED_TOO_LARGE,
                        DropReason::Superseded => EMBRAFT_PROPOSAL_DROPPED_SUPERSEDED,
                        DropReason::ConfChangePending => {
                            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING
                        }
                        DropReason::ConfChangeInvalid => {
                            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID
                        }
                        DropReason::LearnerBehind => EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND,
                    },
                    0,
                ),
            };
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
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.reads.len()) };
        EMBRAFT_OK
    })
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
            let (code, read_index) = match read.result {
                Ok(read_index) => (EMBRAFT_READ_OK, read_index),
                Err(ReadError::NoLeader) => (EMBRAFT_READ_NO_LEADER, 0),
                Err(ReadError::LeadershipLost) => (EMBRAFT_READ_LEADERSHIP_LOST, 0),
                Err(ReadError::Refused) => (EMBRAFT_READ_REFUSED, 0),
            };
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
/// and term (`*index_out` and `*term_out` are written only then). This
/// happens when the node installed a snapshot streamed by the leader (the
/// host stored it from `embraft_ready_snapshot_chunk`), or restarted from a
/// compacted log beyond the configured applied index (the host restores
/// the snapshot it saved before `embraft_node_compact`). Entries through
/// the snapshot's index count as delivered.
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
            if let Some(meta) = &ready.batch.restore {
                write_output(index_out, meta.index);
                write_output(term_out, meta.term);
            }
        }
        EMBRAFT_OK
    })
}

/// Writes the number of snapshots the leader must stream to peers.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_send_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.snapshots_to_send.len()) };
        EMBRAFT_OK
    })
}

/// Writes snapshot request `index` (below its count): the peer that needs
/// a snapshot, and the index and term of the host's latest snapshot (the
/// one it saved before `embraft_node_compact`), which the host streams
/// with `embraft_node_send_snapshot_chunk`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_send(
    ready: *const embraft_ready,
    index: usize,
    peer_out: *mut u64,
    snapshot_index_out: *mut u64,
    snapshot_term_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(peer_out, snapshot_index_out, snapshot_term_out);
        item(&ready.batch.snapshots_to_send, index, |(peer, meta)| {
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(peer_out, *peer);
                write_output(snapshot_index_out, meta.index);
                write_output(snapshot_term_out, meta.term);
            }
        })
    })
}

/// Writes the number of snapshot chunks received from the leader.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_chunk_count(
    ready: *const embraft_ready,
    count_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.batch.snapshot_chunks.len()) };
        EMBRAFT_OK
    })
}

/// Writes snapshot chunk `index` (below its count): the snapshot's index,
/// the chunk's offset, the snapshot's total length and CRC-32 (IEEE), and
/// a view of the chunk's bytes (never NULL) valid until the batch is
/// freed. The host stores the chunk; once it holds all `total_len` bytes
/// durably and their checksum matches, it calls
/// `embraft_node_restore_snapshot`. A chunk of a newer snapshot replaces a
/// partial older one.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_ready_snapshot_chunk(
    ready: *const embraft_ready,
    index: usize,
    snapshot_index_out: *mut u64,
    offset_out: *mut u64,
    total_len_out: *mut u64,
    checksum_out: *mut u32,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(
            snapshot_index_out,
            offset_out,
            total_len_out,
            checksum_out,
            data_out,
            len_out
        );
        item(&ready.batch.snapshot_chunks, index, |chunk| {
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe {
                write_output(snapshot_index_out, chunk.meta.index);
                write_output(offset_out, chunk.offset);
                write_output(total_len_out, chunk.total_len);
                write_output(checksum_out, chunk.checksum);
                write_output(data_out, view_ptr(&chunk.data));
                write_output(len_out, chunk.data.len());
            }
        })
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
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, ready.log_texts.len()) };
        EMBRAFT_OK
    })
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
