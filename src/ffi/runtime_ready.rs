//! `embraft_runtime_ready`: the output of every group of a runtime taken by
//! one `embraft_runtime_poll`, laid out as arrays of `#[repr(C)]` items so
//! that a host crosses the boundary once per list, not once per item
//! (ctypes and cgo calls cost far more than reading a struct).
//!
//! Every pointer inside an item points into the batches the handle owns,
//! so the arrays and everything they point to stay valid, unchanged, until
//! `embraft_runtime_ready_free`.

use super::guard::{borrow_or_return, catch_panics, require_outputs, view_ptr, write_output};
use super::ready::{c_path, c_text, entry_kind_code, outcome_code, read_code, role_code};
use super::*;
use crate::codec::encode_group_frame;
use crate::runtime::{frames_per_peer, GroupReady};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::OnceLock;

/// A message for runtime `to`: hand `data` unchanged, with `group`, to
/// that runtime's `embraft_runtime_step`.
#[repr(C)]
pub struct embraft_rt_message {
    /// The destination runtime.
    pub to: u64,
    /// The group the message belongs to.
    pub group: u64,
    /// The encoded message (never NULL), owned by the batch.
    pub data: *const u8,
    pub len: usize,
}

/// A committed entry of `group` to apply.
#[repr(C)]
pub struct embraft_rt_entry {
    pub group: u64,
    /// The entry's log index in its group.
    pub index: u64,
    pub term: u64,
    /// `EMBRAFT_ENTRY_*`.
    pub kind: u32,
    /// The id `embraft_runtime_propose` returned when the entry was
    /// proposed on this runtime, 0 otherwise.
    pub proposal_id: u64,
    /// The entry's data (never NULL), owned by the batch.
    pub data: *const u8,
    pub len: usize,
}

/// The outcome of a proposal made on this runtime.
#[repr(C)]
pub struct embraft_rt_outcome {
    pub group: u64,
    pub proposal_id: u64,
    /// `EMBRAFT_PROPOSAL_*`.
    pub code: u32,
    /// The log index it committed at (`EMBRAFT_PROPOSAL_COMMITTED`) or was
    /// placed at (`EMBRAFT_PROPOSAL_UNKNOWN`); 0 when dropped.
    pub index: u64,
}

/// The result of an `embraft_runtime_read_index` call.
#[repr(C)]
pub struct embraft_rt_read {
    pub group: u64,
    /// The context the host gave `embraft_runtime_read_index`.
    pub context: u64,
    /// `EMBRAFT_READ_*`.
    pub code: u32,
    /// For `EMBRAFT_READ_OK`, the index through which the host must have
    /// applied the group before serving the read; 0 otherwise.
    pub index: u64,
}

/// The role, leader and term of a group whose state changed since its
/// previous batch.
#[repr(C)]
pub struct embraft_rt_state {
    pub group: u64,
    /// `EMBRAFT_ROLE_*` of this runtime's replica.
    pub role: u32,
    /// The runtime id of the group's leader, 0 if none is known.
    pub leader: u64,
    pub term: u64,
}

/// A snapshot the host must restore `group`'s state machine from before
/// applying the group's entries of the same batch.
#[repr(C)]
pub struct embraft_rt_restore {
    pub group: u64,
    pub index: u64,
    pub term: u64,
    /// The NUL-terminated path of the snapshot file, owned by the batch;
    /// the file stays in place until the batch is freed.
    pub path: *const c_char,
}

/// A group asks the host for a snapshot at an applied index.
#[repr(C)]
pub struct embraft_rt_snapshot_wanted {
    pub group: u64,
    /// Pass it to `embraft_runtime_snapshot_begin`.
    pub index: u64,
}

/// A log line of a group.
#[repr(C)]
pub struct embraft_rt_log {
    pub group: u64,
    /// `EMBRAFT_LOG_*`.
    pub level: u32,
    /// NUL-terminated text, owned by the batch.
    pub text: *const c_char,
}

/// The batch's messages as group frames (docs/WIRE.md, "Group frames"),
/// one per destination runtime.
struct Frames {
    /// The destinations, ascending.
    peers: Vec<u64>,
    by_peer: BTreeMap<u64, Vec<u8>>,
    /// What a runtime the batch sends nothing to gets: a frame of no
    /// message, so a host looping over its own peers needs no special case.
    empty: Vec<u8>,
}

impl Frames {
    fn new(batches: &[GroupReady]) -> Frames {
        let by_peer = frames_per_peer(batches);
        let mut empty = Vec::new();
        encode_group_frame(std::iter::empty(), &mut empty);
        Frames {
            peers: by_peer.keys().copied().collect(),
            by_peer,
            empty,
        }
    }

    fn frame(&self, peer: u64) -> &[u8] {
        self.by_peer.get(&peer).unwrap_or(&self.empty)
    }
}

/// An opaque batch of every group's output from `embraft_runtime_poll`.
/// Owned by the caller; free with `embraft_runtime_ready_free`.
pub struct embraft_runtime_ready {
    /// Own the bytes and strings the items point into: never changed
    /// after the items are built, so the pointers stay valid.
    batches: Vec<GroupReady>,
    _texts: Vec<CString>,
    messages: Vec<embraft_rt_message>,
    entries: Vec<embraft_rt_entry>,
    outcomes: Vec<embraft_rt_outcome>,
    reads: Vec<embraft_rt_read>,
    states: Vec<embraft_rt_state>,
    restores: Vec<embraft_rt_restore>,
    snapshots_wanted: Vec<embraft_rt_snapshot_wanted>,
    logs: Vec<embraft_rt_log>,
    /// Built on the first frame request, not at poll time: a host that
    /// sends the message array never pays for a copy of every message.
    /// Set once and never changed after, so the frames' pointers stay
    /// valid; getters racing on a fresh batch build it only once.
    frames: OnceLock<Frames>,
}

impl embraft_runtime_ready {
    pub(crate) fn new(mut batches: Vec<GroupReady>) -> embraft_runtime_ready {
        // Groups in id order, so that every list is too (the runtime hands
        // them out in no particular order).
        batches.sort_unstable_by_key(|ready| ready.group);
        let mut texts = Vec::new();
        let mut ready = embraft_runtime_ready {
            batches: Vec::new(),
            _texts: Vec::new(),
            messages: Vec::new(),
            entries: Vec::new(),
            outcomes: Vec::new(),
            reads: Vec::new(),
            states: Vec::new(),
            restores: Vec::new(),
            snapshots_wanted: Vec::new(),
            logs: Vec::new(),
            frames: OnceLock::new(),
        };
        for GroupReady { group, batch } in &batches {
            let group = *group;
            ready
                .messages
                .extend(batch.messages.iter().map(|msg| embraft_rt_message {
                    to: msg.to,
                    group,
                    data: view_ptr(&msg.bytes),
                    len: msg.bytes.len(),
                }));
            ready
                .entries
                .extend(batch.committed.iter().map(|committed| embraft_rt_entry {
                    group,
                    index: committed.entry.index,
                    term: committed.entry.term,
                    kind: entry_kind_code(committed.entry.kind),
                    proposal_id: committed.proposal_id,
                    data: view_ptr(&committed.entry.data),
                    len: committed.entry.data.len(),
                }));
            ready.outcomes.extend(batch.outcomes.iter().map(|outcome| {
                let (code, index) = outcome_code(&outcome.result);
                embraft_rt_outcome {
                    group,
                    proposal_id: outcome.proposal_id,
                    code,
                    index,
                }
            }));
            ready.reads.extend(batch.reads.iter().map(|read| {
                let (code, index) = read_code(&read.result);
                embraft_rt_read {
                    group,
                    context: read.context,
                    code,
                    index,
                }
            }));
            if batch.state_changed {
                ready.states.push(embraft_rt_state {
                    group,
                    role: role_code(batch.state.role),
                    leader: batch.state.leader,
                    term: batch.state.term,
                });
            }
            if let Some(restore) = &batch.restore {
                // A CString's bytes live on the heap: moving it into
                // `texts` keeps the pointer valid.
                let path = c_path(&restore.path);
                ready.restores.push(embraft_rt_restore {
                    group,
                    index: restore.meta.index,
                    term: restore.meta.term,
                    path: path.as_ptr(),
                });
                texts.push(path);
            }
            if let Some(index) = batch.snapshot_wanted {
                ready
                    .snapshots_wanted
                    .push(embraft_rt_snapshot_wanted { group, index });
            }
            for line in &batch.logs {
                let text = c_text(&line.text);
                ready.logs.push(embraft_rt_log {
                    group,
                    level: line.level as u32,
                    text: text.as_ptr(),
                });
                texts.push(text);
            }
        }
        // One frame per peer: a transport walks the messages once and cuts
        // them where `to` changes. The sort is stable, so a group's
        // messages to one peer keep the order the group produced them in.
        ready.messages.sort_by_key(|msg| (msg.to, msg.group));
        ready.batches = batches;
        ready._texts = texts;
        ready
    }

    fn frames(&self) -> &Frames {
        // `batches` is sorted by group, so each frame lists its messages in
        // the order of the message array.
        self.frames.get_or_init(|| Frames::new(&self.batches))
    }
}

/// The body of the list getters: writes the list `items` picks from the
/// batch and its length.
///
/// # Safety
/// `ready` is NULL or a live batch; the outputs are NULL or writable.
unsafe fn write_list<T>(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const T,
    count_out: *mut usize,
    items: impl FnOnce(&embraft_runtime_ready) -> &[T],
) -> embraft_status {
    catch_panics(|| {
        let ready = borrow_or_return!(ready);
        require_outputs!(items_out, count_out);
        let items = items(ready);
        // SAFETY: checked non-NULL above; writable by the caller's contract.
        // An empty Vec's pointer is dangling but non-NULL and aligned.
        unsafe {
            write_output(items_out, items.as_ptr());
            write_output(count_out, items.len());
        }
        EMBRAFT_OK
    })
}

/// Frees a runtime batch and everything its arrays point to. NULL is a
/// no-op.
///
/// Thread safety: must not run concurrently with any other call on the
/// same batch; may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_free(ready: *mut embraft_runtime_ready) {
    catch_panics(|| {
        if !ready.is_null() {
            // SAFETY: a non-NULL batch came from embraft_runtime_poll and is
            // freed once (the caller's contract).
            drop(unsafe { Box::from_raw(ready) });
        }
        EMBRAFT_OK
    });
}

/// Writes the batch's messages: `*items_out` receives an array of
/// `*count_out` items (never NULL, even when empty), owned by the batch
/// and valid until `embraft_runtime_ready_free`. Sorted by destination
/// runtime `to`, then group, so a transport sends one frame per peer; a
/// group's messages to one peer keep their order. Deliver each item's
/// bytes unchanged, with its group, to `embraft_runtime_step` of runtime
/// `to`, or send the batch's group frames instead
/// (`embraft_runtime_ready_peers`, `embraft_runtime_ready_frame`); lost
/// messages are recovered by Raft.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_messages(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_message,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.messages) }
}

/// Writes the distinct destination runtimes of the batch's messages, in
/// ascending order: `*peers_out` receives an array of `*count_out` ids
/// (never NULL, even when empty), owned by the batch and valid until
/// `embraft_runtime_ready_free`. Loop over them with
/// `embraft_runtime_ready_frame` to send one group frame per peer. The
/// first call of this or `embraft_runtime_ready_frame` on a batch encodes
/// every frame of the batch (copying its messages once); later calls only
/// look them up.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_peers(
    ready: *const embraft_runtime_ready,
    peers_out: *mut *const u64,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, peers_out, count_out, |r| &r.frames().peers) }
}

/// Writes the group frame (docs/WIRE.md, "Group frames") holding every
/// message of the batch for runtime `peer`: `*data_out` receives `*len_out`
/// bytes (never NULL), owned by the batch and valid until
/// `embraft_runtime_ready_free`. Its messages are those of
/// `embraft_runtime_ready_messages` with `to == peer`, in the same order.
/// Send the bytes unchanged to that runtime, whose host hands them to
/// `embraft_runtime_step_frame`. A runtime the batch sends nothing to (0
/// included) gets a frame of no message: the 4 bytes of a zero count.
/// Frames are encoded as `embraft_runtime_ready_peers` describes.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_frame(
    ready: *const embraft_runtime_ready,
    peer: u64,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, data_out, len_out, |r| r.frames().frame(peer)) }
}

/// Writes the batch's committed entries, as for
/// `embraft_runtime_ready_messages`: grouped by group (ascending ids),
/// in log order within a group. Apply each group's entries in order (after
/// its snapshot restore, if the batch has one), then report with
/// `embraft_runtime_ack_applied`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_entries(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_entry,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.entries) }
}

/// Writes the outcomes of proposals made on this runtime, as for
/// `embraft_runtime_ready_messages`, grouped by group. A committed
/// proposal's entry is among the same batch's entries.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_outcomes(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_outcome,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.outcomes) }
}

/// Writes the read results (answers to `embraft_runtime_read_index`), as
/// for `embraft_runtime_ready_messages`, grouped by group.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_reads(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_read,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.reads) }
}

/// Writes the role, leader and term of every group whose state changed
/// since its previous batch (one item per such group, ascending ids), as
/// for `embraft_runtime_ready_messages`. A group's first batch after
/// `embraft_runtime_start_group` always has one.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_states(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_state,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.states) }
}

/// Writes the snapshots to restore (at most one per group), as for
/// `embraft_runtime_ready_messages`: the group installed a snapshot sent
/// by its leader, or restarted from a compacted log beyond the applied
/// index given to `embraft_runtime_start_group`. Restore the group's state
/// machine from the file (read it before freeing the batch; never modify,
/// move or delete it) before applying the group's entries of this batch;
/// entries through the snapshot's index count as delivered.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_restores(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_restore,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.restores) }
}

/// Writes the groups that ask the host for a snapshot (the log grew past
/// `embraft_config_set_snapshot_entries` or `_bytes` since the last one,
/// or its entries keep the oldest segments of a shared WAL grown past
/// `embraft_config_set_wal_segments_soft_limit`), with the applied index
/// to take it at, as for `embraft_runtime_ready_messages`. Asked once
/// until the next snapshot is recorded, and again after ten election
/// timeouts without one (one that failed, say).
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_snapshots_wanted(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_snapshot_wanted,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.snapshots_wanted) }
}

/// Writes the batch's log lines, as for `embraft_runtime_ready_messages`,
/// grouped by group; their texts are owned by the batch too.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same batch (but not with `embraft_runtime_ready_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_runtime_ready_logs(
    ready: *const embraft_runtime_ready,
    items_out: *mut *const embraft_rt_log,
    count_out: *mut usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { write_list(ready, items_out, count_out, |r| &r.logs) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Role;
    use crate::node::{LogLevel, LogLine, NodeState, OutboundMessage, ReadyBatch};

    fn batch(messages: &[(u64, u8)], state_changed: bool) -> ReadyBatch {
        ReadyBatch {
            messages: messages
                .iter()
                .map(|&(to, byte)| OutboundMessage {
                    to,
                    bytes: vec![byte],
                })
                .collect(),
            committed: Vec::new(),
            outcomes: Vec::new(),
            reads: Vec::new(),
            restore: None,
            snapshot_wanted: Some(9),
            state_changed,
            state: NodeState {
                role: Role::Leader,
                leader: 1,
                term: 4,
            },
            logs: vec![LogLine {
                level: LogLevel::Info,
                text: "a\0b".into(),
            }],
        }
    }

    #[test]
    fn messages_sorted_by_destination_then_group_keeping_each_group_s_order() {
        let ready = embraft_runtime_ready::new(vec![
            GroupReady {
                group: 8,
                batch: batch(&[(3, 1), (2, 2), (3, 3)], false),
            },
            GroupReady {
                group: 5,
                batch: batch(&[(3, 4), (2, 5)], true),
            },
        ]);
        let order: Vec<(u64, u64, u8)> = ready
            .messages
            .iter()
            // SAFETY: every message's view is one byte owned by `ready`.
            .map(|m| (m.to, m.group, unsafe { *m.data }))
            .collect();
        assert_eq!(
            order,
            [(2, 5, 5), (2, 8, 2), (3, 5, 4), (3, 8, 1), (3, 8, 3)]
        );
        // Only the group whose state changed has a state item.
        assert_eq!(ready.states.len(), 1);
        assert_eq!(ready.states[0].group, 5);
        assert_eq!(ready.states[0].role, EMBRAFT_ROLE_LEADER);
        let wanted: Vec<u64> = ready.snapshots_wanted.iter().map(|s| s.group).collect();
        assert_eq!(wanted, [5, 8]);
        // SAFETY: the text is a NUL-terminated string owned by `ready`.
        let text = unsafe { std::ffi::CStr::from_ptr(ready.logs[0].text) };
        assert_eq!(text.to_bytes(), b"ab");
    }

    #[test]
    fn one_frame_per_peer_in_the_order_of_the_message_array() {
        use crate::codec::decode_group_frame;
        let ready = embraft_runtime_ready::new(vec![
            GroupReady {
                group: 8,
                batch: batch(&[(3, 1), (2, 2), (3, 3)], false),
            },
            GroupReady {
                group: 5,
                batch: batch(&[(3, 4)], true),
            },
        ]);
        assert_eq!(ready.frames().peers, [2, 3]);
        let three = decode_group_frame(ready.frames().frame(3)).unwrap();
        assert_eq!(three, [(5, &[4u8][..]), (8, &[1][..]), (8, &[3][..])]);
        assert_eq!(
            decode_group_frame(ready.frames().frame(2)).unwrap().len(),
            1
        );
        // Any runtime without messages gets a frame of none.
        assert_eq!(ready.frames().frame(0), [0, 0, 0, 0]);
        assert_eq!(ready.frames().frame(9), [0, 0, 0, 0]);
    }
}
