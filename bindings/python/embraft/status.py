"""A node's status: the C report (embraft_status_report*) decoded into the
`Status` and `PeerProgress` dataclasses."""

from __future__ import annotations

import dataclasses
from ctypes import byref, c_size_t, c_uint64
from typing import List

from . import _ffi
from ._ffi import lib
from ._managed import Managed
from .errors import error_for_status

ROLE_NAMES = {
    _ffi.ROLE_FOLLOWER: "follower",
    _ffi.ROLE_PRE_CANDIDATE: "pre-candidate",
    _ffi.ROLE_CANDIDATE: "candidate",
    _ffi.ROLE_LEADER: "leader",
}


@dataclasses.dataclass
class PeerProgress:
    id: int
    match_index: int
    next_index: int
    replicating: bool
    inflight_msgs: int
    recent_active: bool


@dataclasses.dataclass
class Status:
    id: int
    role: str
    term: int
    vote: int
    leader: int
    commit: int
    applied: int
    persisted: int
    first_index: int
    last_index: int
    snapshot_index: int
    lead_transferee: int
    quiescent: bool
    voters: List[int]
    learners: List[int]
    voters_outgoing: List[int]
    learners_next: List[int]
    peers: List[PeerProgress]


def _check(code: int) -> None:
    if code != _ffi.OK:
        raise error_for_status(code, "reading a status report")


class StatusReportHandle(Managed[_ffi.StatusReportPtr]):
    """A status report (embraft_status_report*)."""

    _free = lib.embraft_status_report_free
    _what = "status report"

    def decode(self) -> Status:
        report = self.ptr()
        value = c_uint64()
        count = c_size_t()

        def field(key: int) -> int:
            _check(lib.embraft_status_report_get(report, key, byref(value)))
            return value.value

        def members(which: int) -> List[int]:
            _check(lib.embraft_status_report_member_count(report, which, byref(count)))
            ids = []
            for i in range(count.value):
                _check(lib.embraft_status_report_member(report, which, i, byref(value)))
                ids.append(value.value)
            return ids

        def peer_field(index: int, key: int) -> int:
            _check(lib.embraft_status_report_peer_get(report, index, key, byref(value)))
            return value.value

        _check(lib.embraft_status_report_peer_count(report, byref(count)))
        peers = [PeerProgress(peer_field(i, _ffi.PEER_ID),
                              peer_field(i, _ffi.PEER_MATCH_INDEX),
                              peer_field(i, _ffi.PEER_NEXT_INDEX),
                              bool(peer_field(i, _ffi.PEER_REPLICATING)),
                              peer_field(i, _ffi.PEER_INFLIGHT_MSGS),
                              bool(peer_field(i, _ffi.PEER_RECENT_ACTIVE)))
                 for i in range(count.value)]
        return Status(
            id=field(_ffi.FIELD_ID),
            role=ROLE_NAMES.get(field(_ffi.FIELD_ROLE), "unknown"),
            term=field(_ffi.FIELD_TERM), vote=field(_ffi.FIELD_VOTE),
            leader=field(_ffi.FIELD_LEADER), commit=field(_ffi.FIELD_COMMIT),
            applied=field(_ffi.FIELD_APPLIED), persisted=field(_ffi.FIELD_PERSISTED),
            first_index=field(_ffi.FIELD_FIRST_INDEX),
            last_index=field(_ffi.FIELD_LAST_INDEX),
            snapshot_index=field(_ffi.FIELD_SNAPSHOT_INDEX),
            lead_transferee=field(_ffi.FIELD_LEAD_TRANSFEREE),
            quiescent=bool(field(_ffi.FIELD_QUIESCENT)),
            voters=members(_ffi.MEMBERS_VOTERS), learners=members(_ffi.MEMBERS_LEARNERS),
            voters_outgoing=members(_ffi.MEMBERS_VOTERS_OUTGOING),
            learners_next=members(_ffi.MEMBERS_LEARNERS_NEXT),
            peers=peers)
