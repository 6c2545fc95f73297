//! `embraft_status_report`: a snapshot of a node's state, read field by
//! field with `EMBRAFT_FIELD_*` / `EMBRAFT_PEER_*` keys so that new fields
//! never change a struct layout.

use super::guard::{borrow_or_return, catch_panics, require_outputs, write_output};
use super::ready::role_code;
use super::*;
use crate::core::{NodeId, PeerStatus, Status};

/// An opaque status snapshot from `embraft_node_status`. Owned by the
/// caller; free with `embraft_status_report_free`.
pub struct embraft_status_report {
    status: Status,
}

impl embraft_status_report {
    pub(crate) fn new(status: Status) -> embraft_status_report {
        embraft_status_report { status }
    }
}

fn node_field(status: &Status, field: u32) -> Option<u64> {
    Some(match field {
        EMBRAFT_FIELD_ID => status.id,
        EMBRAFT_FIELD_ROLE => u64::from(role_code(status.role)),
        EMBRAFT_FIELD_TERM => status.term,
        EMBRAFT_FIELD_VOTE => status.vote,
        EMBRAFT_FIELD_LEADER => status.leader,
        EMBRAFT_FIELD_COMMIT => status.commit,
        EMBRAFT_FIELD_APPLIED => status.applied,
        EMBRAFT_FIELD_PERSISTED => status.persisted,
        EMBRAFT_FIELD_FIRST_INDEX => status.first_index,
        EMBRAFT_FIELD_LAST_INDEX => status.last_index,
        EMBRAFT_FIELD_SNAPSHOT_INDEX => status.snapshot_index,
        EMBRAFT_FIELD_LEAD_TRANSFEREE => status.lead_transferee,
        EMBRAFT_FIELD_QUIESCENT => u64::from(status.quiescent),
        _ => return None,
    })
}

fn member_list(status: &Status, list: u32) -> Option<&[NodeId]> {
    let members = &status.conf_state;
    Some(match list {
        EMBRAFT_MEMBERS_VOTERS => &members.voters,
        EMBRAFT_MEMBERS_LEARNERS => &members.learners,
        EMBRAFT_MEMBERS_VOTERS_OUTGOING => &members.voters_outgoing,
        EMBRAFT_MEMBERS_LEARNERS_NEXT => &members.learners_next,
        _ => return None,
    })
}

fn peer_field(peer: &PeerStatus, field: u32) -> Option<u64> {
    Some(match field {
        EMBRAFT_PEER_ID => peer.id,
        EMBRAFT_PEER_MATCH_INDEX => peer.match_index,
        EMBRAFT_PEER_NEXT_INDEX => peer.next_index,
        EMBRAFT_PEER_REPLICATING => u64::from(peer.replicating),
        EMBRAFT_PEER_INFLIGHT_MSGS => peer.inflight_msgs as u64,
        EMBRAFT_PEER_RECENT_ACTIVE => u64::from(peer.recent_active),
        _ => return None,
    })
}

/// Frees a status report. NULL is a no-op.
///
/// Thread safety: must not run concurrently with any other call on the
/// same report; may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_free(report: *mut embraft_status_report) {
    catch_panics(|| {
        if !report.is_null() {
            // SAFETY: a non-NULL report came from embraft_node_status and is
            // freed once (the caller's contract).
            drop(unsafe { Box::from_raw(report) });
        }
        EMBRAFT_OK
    });
}

/// Writes one field of the report (`EMBRAFT_FIELD_*`) to `*value_out`;
/// an unknown field fails with `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same report (but not with `embraft_status_report_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_get(
    report: *const embraft_status_report,
    field: u32,
    value_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let report = borrow_or_return!(report);
        require_outputs!(value_out);
        match node_field(&report.status, field) {
            Some(value) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_output(value_out, value) };
                EMBRAFT_OK
            }
            None => EMBRAFT_ERR_INVALID_ARGUMENT,
        }
    })
}

/// Writes the number of peers whose progress the report holds (0 unless
/// the node is the leader).
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same report (but not with `embraft_status_report_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_peer_count(
    report: *const embraft_status_report,
    count_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let report = borrow_or_return!(report);
        require_outputs!(count_out);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_output(count_out, report.status.peers.len()) };
        EMBRAFT_OK
    })
}

/// Writes one field (`EMBRAFT_PEER_*`) of peer `index` (below the peer
/// count) to `*value_out`. Fails with `EMBRAFT_ERR_OUT_OF_RANGE` for an
/// index past the count and `EMBRAFT_ERR_INVALID_ARGUMENT` for an unknown
/// field.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same report (but not with `embraft_status_report_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_peer_get(
    report: *const embraft_status_report,
    index: usize,
    field: u32,
    value_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let report = borrow_or_return!(report);
        require_outputs!(value_out);
        let Some(peer) = report.status.peers.get(index) else {
            return EMBRAFT_ERR_OUT_OF_RANGE;
        };
        match peer_field(peer, field) {
            Some(value) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_output(value_out, value) };
                EMBRAFT_OK
            }
            None => EMBRAFT_ERR_INVALID_ARGUMENT,
        }
    })
}

/// Writes the number of node ids in one member list (`EMBRAFT_MEMBERS_*`)
/// of the membership in force; an unknown list fails with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same report (but not with `embraft_status_report_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_member_count(
    report: *const embraft_status_report,
    list: u32,
    count_out: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let report = borrow_or_return!(report);
        require_outputs!(count_out);
        match member_list(&report.status, list) {
            Some(members) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_output(count_out, members.len()) };
                EMBRAFT_OK
            }
            None => EMBRAFT_ERR_INVALID_ARGUMENT,
        }
    })
}

/// Writes node id `index` (below the list's count) of one member list
/// (`EMBRAFT_MEMBERS_*`). Fails with `EMBRAFT_ERR_INVALID_ARGUMENT` for an
/// unknown list and `EMBRAFT_ERR_OUT_OF_RANGE` past the count.
///
/// Thread safety: may be called from any thread, concurrently with other
/// getters on the same report (but not with `embraft_status_report_free`).
#[no_mangle]
pub unsafe extern "C" fn embraft_status_report_member(
    report: *const embraft_status_report,
    list: u32,
    index: usize,
    id_out: *mut u64,
) -> embraft_status {
    catch_panics(|| {
        let report = borrow_or_return!(report);
        require_outputs!(id_out);
        let Some(members) = member_list(&report.status, list) else {
            return EMBRAFT_ERR_INVALID_ARGUMENT;
        };
        match members.get(index) {
            Some(&id) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_output(id_out, id) };
                EMBRAFT_OK
            }
            None => EMBRAFT_ERR_OUT_OF_RANGE,
        }
    })
}
