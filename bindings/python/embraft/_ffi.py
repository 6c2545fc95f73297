"""The ctypes layer: loads libembraft and declares every function of
include/embraft.h with its argument and result types.

Nothing here is Pythonic on purpose: the rest of the package builds on these
raw declarations. tests/test_ffi.py parses the header and fails when a
function is missing here or declared differently, and when a constant
differs.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Callable, Dict, List, Optional, Tuple

# EMBRAFT_ABI_VERSION of the header this layer was written against. The
# library loaded at run time must report the same value.
ABI_VERSION = 3

# Constants of the header (#define EMBRAFT_*), same names without the prefix.
OK = 0
ERR_NULL_ARGUMENT = 1
ERR_INVALID_ARGUMENT = 2
ERR_INVALID_CONFIG = 3
ERR_BUSY = 4
TIMED_OUT = 5
ERR_MALFORMED_MESSAGE = 6
ERR_WRONG_RECIPIENT = 7
ERR_TOO_LARGE = 8
ERR_NOT_DELIVERED = 9
ERR_OUT_OF_RANGE = 10
ERR_DIRECTORY_LOCKED = 11
ERR_STORAGE = 12
ERR_NODE_FAILED = 13
ERR_RESOURCE = 14
ERR_PANIC = 15
ERR_NOT_APPLIED = 16
ERR_STALE_SNAPSHOT = 17
ERR_CORRUPT = 18
ERR_UNKNOWN_GROUP = 19
ERR_GROUP_EXISTS = 20

ROLE_FOLLOWER = 0
ROLE_PRE_CANDIDATE = 1
ROLE_CANDIDATE = 2
ROLE_LEADER = 3

ENTRY_NORMAL = 0
ENTRY_NOOP = 1
ENTRY_CONF_CHANGE = 2

PROPOSAL_COMMITTED = 1
PROPOSAL_DROPPED_NOT_LEADER = 2
PROPOSAL_DROPPED_TRANSFER = 3
PROPOSAL_DROPPED_TOO_LARGE = 4
PROPOSAL_DROPPED_SUPERSEDED = 5
PROPOSAL_DROPPED_CONF_CHANGE_PENDING = 6
PROPOSAL_DROPPED_CONF_CHANGE_INVALID = 7
PROPOSAL_DROPPED_LEARNER_BEHIND = 8
PROPOSAL_UNKNOWN = 9

CONF_ADD_VOTER = 1
CONF_PROMOTE_LEARNER = 2
CONF_ADD_LEARNER = 3
CONF_REMOVE_NODE = 4

READ_OK = 1
READ_NO_LEADER = 2
READ_LEADERSHIP_LOST = 3
READ_REFUSED = 4
READ_BUSY = 5

LOG_OFF = 0
LOG_INFO = 1
LOG_DEBUG = 2
LOG_TRACE = 3

SYNC_ALWAYS = 0
SYNC_NEVER = 1

WAL_WRITE_MMAP = 0
WAL_WRITE_PWRITE = 1

THREADING_NODE = 0
THREADING_INLINE = 1

# Sizes of the metrics struct's arrays (embraft_metrics).
HISTOGRAM_BUCKETS = 20
HISTOGRAM_FIRST_BOUND_US = 32
MESSAGE_KINDS = 15
DROP_REASONS = 8

FIELD_ID = 0
FIELD_ROLE = 1
FIELD_TERM = 2
FIELD_VOTE = 3
FIELD_LEADER = 4
FIELD_COMMIT = 5
FIELD_APPLIED = 6
FIELD_PERSISTED = 7
FIELD_FIRST_INDEX = 8
FIELD_LAST_INDEX = 9
FIELD_SNAPSHOT_INDEX = 10
FIELD_LEAD_TRANSFEREE = 11
FIELD_QUIESCENT = 12

MEMBERS_VOTERS = 0
MEMBERS_LEARNERS = 1
MEMBERS_VOTERS_OUTGOING = 2
MEMBERS_LEARNERS_NEXT = 3

PEER_ID = 0
PEER_MATCH_INDEX = 1
PEER_NEXT_INDEX = 2
PEER_REPLICATING = 3
PEER_INFLIGHT_MSGS = 4
PEER_RECENT_ACTIVE = 5



class _Handle(c_void_p):
    """An opaque handle of the header. Each C handle type is a subclass of
    its own that accepts only its own instances as an argument, so handing
    a function the wrong handle (or a bare address, or None) fails in
    ctypes with an ArgumentError naming the TypeError instead of reaching
    the library."""

    @classmethod
    def from_param(cls, obj: object) -> "_Handle":
        if isinstance(obj, cls):
            return obj
        raise TypeError(f"expected a {cls.__name__}, got {type(obj).__name__}")


class ConfigPtr(_Handle):
    """embraft_config*"""


class NodePtr(_Handle):
    """embraft_node*"""


class ReadyPtr(_Handle):
    """embraft_ready*"""


class SnapshotWriterPtr(_Handle):
    """embraft_snapshot_writer*"""


class StatusReportPtr(_Handle):
    """embraft_status_report*"""


class RuntimePtr(_Handle):
    """embraft_runtime*"""


class RuntimeReadyPtr(_Handle):
    """embraft_runtime_ready*"""


# The #[repr(C)] items of a runtime batch, field for field as the header
# declares them; the library hands out arrays of them (pointer and count),
# valid until the batch is freed. Pointers inside are read as addresses.
class RtMessage(Structure):
    _fields_ = [("to", c_uint64), ("group", c_uint64), ("data", c_void_p), ("len", c_size_t)]


class RtEntry(Structure):
    _fields_ = [("group", c_uint64), ("index", c_uint64), ("term", c_uint64),
                ("kind", c_uint32), ("proposal_id", c_uint64), ("data", c_void_p),
                ("len", c_size_t)]


class RtOutcome(Structure):
    _fields_ = [("group", c_uint64), ("proposal_id", c_uint64), ("code", c_uint32),
                ("index", c_uint64)]


class RtRead(Structure):
    _fields_ = [("group", c_uint64), ("context", c_uint64), ("code", c_uint32),
                ("index", c_uint64)]


class RtState(Structure):
    _fields_ = [("group", c_uint64), ("role", c_uint32), ("leader", c_uint64),
                ("term", c_uint64)]


class RtRestore(Structure):
    _fields_ = [("group", c_uint64), ("index", c_uint64), ("term", c_uint64),
                ("path", c_void_p)]


class RtSnapshotWanted(Structure):
    _fields_ = [("group", c_uint64), ("index", c_uint64)]


class RtLog(Structure):
    _fields_ = [("group", c_uint64), ("level", c_uint32), ("text", c_void_p)]


# Written by embraft_runtime_step_frame into the caller's struct.
class RtFrameReport(Structure):
    _fields_ = [("stepped", c_size_t), ("unknown_group", c_size_t), ("busy", c_size_t),
                ("refused", c_size_t)]


# Filled by embraft_node_metrics / embraft_runtime_metrics.
class Histogram(Structure):
    _fields_ = [("buckets", c_uint64 * HISTOGRAM_BUCKETS), ("count", c_uint64),
                ("sum_us", c_uint64)]


class Metrics(Structure):
    _fields_ = [("wal_sync_duration", Histogram), ("wal_bytes_written", c_uint64),
                ("wal_batches_written", c_uint64), ("proposals_committed", c_uint64),
                ("proposals_dropped", c_uint64 * DROP_REASONS),
                ("proposal_commit_latency", Histogram), ("leader_changes", c_uint64),
                ("elections_started", c_uint64), ("pre_votes_started", c_uint64),
                ("messages_sent", c_uint64 * MESSAGE_KINDS),
                ("messages_received", c_uint64 * MESSAGE_KINDS),
                ("snapshots_sent", c_uint64), ("snapshot_bytes_sent", c_uint64),
                ("snapshots_received", c_uint64), ("snapshot_bytes_received", c_uint64),
                ("cache_hit_entries", c_uint64), ("cache_miss_entries", c_uint64),
                ("cached_entry_bytes", c_uint64), ("apply_lag", c_uint64)]


# C types of the header, spelled as ctypes. Byte inputs are c_char_p so that
# Python bytes pass without a copy; views written by the library are read as
# addresses.
status = c_int32
config = ConfigPtr
node = NodePtr
ready = ReadyPtr
writer = SnapshotWriterPtr
report = StatusReportPtr
runtime = RuntimePtr
rt_ready = RuntimeReadyPtr
u32 = c_uint32
u64 = c_uint64
u32_out = POINTER(c_uint32)
u64_out = POINTER(c_uint64)
size_out = POINTER(c_size_t)
bool_out = POINTER(c_bool)
int_out = POINTER(c_int)
bytes_in = c_char_p
view_out = POINTER(c_void_p)
ids_in = POINTER(c_uint64)
ids_out = POINTER(c_uint64)
# An id array owned by the library, read in place.
ids_view = POINTER(c_uint64)


def items_out(item: type) -> type:
    """The `const item **` output of a runtime batch's list getter."""
    return POINTER(POINTER(item))

# name: (result type, argument types), in the header's order.
PROTOTYPES: Dict[str, Tuple[Optional[type], List[type]]] = {
    "embraft_version": (c_char_p, []),
    "embraft_abi_version": (u32, []),
    "embraft_status_str": (c_char_p, [status]),
    "embraft_config_new": (status, [POINTER(config)]),
    "embraft_config_free": (None, [config]),
    "embraft_config_last_error": (status, [config, c_char_p, c_size_t, size_out]),
    "embraft_config_set_id": (status, [config, u64]),
    "embraft_config_set_peers": (status, [config, ids_in, c_size_t]),
    "embraft_config_set_data_dir": (status, [config, c_char_p]),
    "embraft_config_set_election_ticks": (status, [config, u32]),
    "embraft_config_set_heartbeat_ticks": (status, [config, u32]),
    "embraft_config_set_pre_vote": (status, [config, c_bool]),
    "embraft_config_set_check_quorum": (status, [config, c_bool]),
    "embraft_config_set_max_inflight_msgs": (status, [config, c_size_t]),
    "embraft_config_set_max_inflight_bytes": (status, [config, u64]),
    "embraft_config_set_max_msg_bytes": (status, [config, u64]),
    "embraft_config_set_max_entry_bytes": (status, [config, u64]),
    "embraft_config_set_max_apply_bytes": (status, [config, u64]),
    "embraft_config_set_sync_mode": (status, [config, u32]),
    "embraft_config_set_threading": (status, [config, u32]),
    "embraft_config_set_wal_write_method": (status, [config, u32]),
    "embraft_config_set_segment_size": (status, [config, u64]),
    "embraft_config_set_applied_index": (status, [config, u64]),
    "embraft_config_set_input_queue_capacity": (status, [config, c_size_t]),
    "embraft_config_set_log_level": (status, [config, u32]),
    "embraft_config_set_lease_reads": (status, [config, c_bool]),
    "embraft_config_set_skip_commit_broadcast": (status, [config, c_bool]),
    "embraft_config_set_quiesce_ticks": (status, [config, u32]),
    "embraft_config_set_cache_bytes": (status, [config, u64]),
    "embraft_config_set_wal_segments_soft_limit": (status, [config, u32]),
    "embraft_config_set_compact_keep_entries": (status, [config, u64]),
    "embraft_config_set_snapshot_entries": (status, [config, u64]),
    "embraft_config_set_snapshot_bytes": (status, [config, u64]),
    "embraft_config_set_snapshot_chunk_size": (status, [config, u64]),
    "embraft_config_set_random_seed": (status, [config, u64]),
    "embraft_node_new": (status, [config, POINTER(node)]),
    "embraft_node_free": (None, [node]),
    "embraft_node_tick": (status, [node]),
    "embraft_node_step": (status, [node, bytes_in, c_size_t]),
    "embraft_node_propose": (status, [node, bytes_in, c_size_t, u64_out]),
    "embraft_node_propose_conf_change": (status, [node, u32, u64, u64_out]),
    "embraft_node_propose_membership": (
        status, [node, ids_in, c_size_t, ids_in, c_size_t, u64_out]),
    "embraft_node_read_index": (status, [node, u64]),
    "embraft_node_transfer_leader": (status, [node, u64]),
    "embraft_node_report_unreachable": (status, [node, u64]),
    "embraft_node_snapshot_begin": (status, [node, u64, POINTER(writer)]),
    "embraft_node_poll_ready": (status, [node, u32, POINTER(ready)]),
    "embraft_node_ack_applied": (status, [node, u64]),
    "embraft_node_status": (status, [node, POINTER(report)]),
    "embraft_node_readiness_fd": (status, [node, int_out]),
    "embraft_node_set_log_level": (status, [node, u32]),
    "embraft_node_last_error": (status, [node, c_char_p, c_size_t, size_out]),
    "embraft_ready_free": (None, [ready]),
    "embraft_ready_state_changed": (status, [ready, bool_out]),
    "embraft_ready_state": (status, [ready, u32_out, u64_out, u64_out]),
    "embraft_ready_message_count": (status, [ready, size_out]),
    "embraft_ready_message": (status, [ready, c_size_t, u64_out, view_out, size_out]),
    "embraft_ready_entry_count": (status, [ready, size_out]),
    "embraft_ready_entry": (
        status, [ready, c_size_t, u64_out, u64_out, u32_out, view_out, size_out, u64_out]),
    "embraft_ready_outcome_count": (status, [ready, size_out]),
    "embraft_ready_outcome": (status, [ready, c_size_t, u64_out, u32_out, u64_out]),
    "embraft_ready_read_count": (status, [ready, size_out]),
    "embraft_ready_read": (status, [ready, c_size_t, u64_out, u32_out, u64_out]),
    "embraft_ready_snapshot_to_restore": (status, [ready, bool_out, u64_out, u64_out]),
    "embraft_ready_snapshot_path": (status, [ready, view_out]),
    "embraft_ready_snapshot_wanted": (status, [ready, bool_out, u64_out]),
    "embraft_ready_log_count": (status, [ready, size_out]),
    "embraft_ready_log": (status, [ready, c_size_t, u32_out, view_out]),
    "embraft_runtime_new": (status, [config, u32, POINTER(runtime)]),
    "embraft_runtime_free": (None, [runtime]),
    "embraft_runtime_last_error": (status, [runtime, c_char_p, c_size_t, size_out]),
    "embraft_runtime_start_group": (status, [runtime, u64, ids_in, c_size_t, u64]),
    "embraft_runtime_stop_group": (status, [runtime, u64]),
    "embraft_runtime_remove_group": (status, [runtime, u64]),
    "embraft_runtime_stored_groups": (status, [runtime, ids_out, c_size_t, size_out]),
    "embraft_runtime_running_groups": (status, [runtime, ids_out, c_size_t, size_out]),
    "embraft_runtime_tick": (status, [runtime]),
    "embraft_runtime_step": (status, [runtime, u64, bytes_in, c_size_t]),
    "embraft_runtime_step_frame": (
        status, [runtime, bytes_in, c_size_t, POINTER(RtFrameReport)]),
    "embraft_runtime_propose": (status, [runtime, u64, bytes_in, c_size_t, u64_out]),
    "embraft_runtime_propose_conf_change": (status, [runtime, u64, u32, u64, u64_out]),
    "embraft_runtime_propose_membership": (
        status, [runtime, u64, ids_in, c_size_t, ids_in, c_size_t, u64_out]),
    "embraft_runtime_read_index": (status, [runtime, u64, u64]),
    "embraft_runtime_transfer_leader": (status, [runtime, u64, u64]),
    "embraft_runtime_report_unreachable": (status, [runtime, u64]),
    "embraft_runtime_ack_applied": (status, [runtime, u64, u64]),
    "embraft_runtime_snapshot_begin": (status, [runtime, u64, u64, POINTER(writer)]),
    "embraft_runtime_status": (status, [runtime, u64, POINTER(report)]),
    "embraft_runtime_poll": (status, [runtime, u32, POINTER(rt_ready)]),
    "embraft_runtime_stats": (status, [runtime, u64_out, u64_out, u64_out]),
    "embraft_runtime_readiness_fd": (status, [runtime, int_out]),
    "embraft_runtime_metrics": (status, [runtime, u64, POINTER(Metrics)]),
    "embraft_node_metrics": (status, [node, POINTER(Metrics)]),
    "embraft_metrics_message_kind": (c_char_p, [c_size_t]),
    "embraft_metrics_drop_reason": (c_char_p, [c_size_t]),
    "embraft_runtime_ready_free": (None, [rt_ready]),
    "embraft_runtime_ready_messages": (status, [rt_ready, items_out(RtMessage), size_out]),
    "embraft_runtime_ready_peers": (status, [rt_ready, POINTER(ids_view), size_out]),
    "embraft_runtime_ready_frame": (status, [rt_ready, u64, view_out, size_out]),
    "embraft_runtime_ready_entries": (status, [rt_ready, items_out(RtEntry), size_out]),
    "embraft_runtime_ready_outcomes": (status, [rt_ready, items_out(RtOutcome), size_out]),
    "embraft_runtime_ready_reads": (status, [rt_ready, items_out(RtRead), size_out]),
    "embraft_runtime_ready_states": (status, [rt_ready, items_out(RtState), size_out]),
    "embraft_runtime_ready_restores": (status, [rt_ready, items_out(RtRestore), size_out]),
    "embraft_runtime_ready_snapshots_wanted": (
        status, [rt_ready, items_out(RtSnapshotWanted), size_out]),
    "embraft_runtime_ready_logs": (status, [rt_ready, items_out(RtLog), size_out]),
    "embraft_snapshot_writer_path": (status, [writer, view_out]),
    "embraft_snapshot_writer_write": (status, [writer, bytes_in, c_size_t]),
    "embraft_snapshot_writer_finish": (status, [writer]),
    "embraft_snapshot_writer_abort": (None, [writer]),
    "embraft_status_report_free": (None, [report]),
    "embraft_status_report_get": (status, [report, u32, u64_out]),
    "embraft_status_report_peer_count": (status, [report, size_out]),
    "embraft_status_report_peer_get": (status, [report, c_size_t, u32, u64_out]),
    "embraft_status_report_member_count": (status, [report, u32, size_out]),
    "embraft_status_report_member": (status, [report, u32, c_size_t, u64_out]),
}

LIBRARY_ENV = "EMBRAFT_LIBRARY"
LIBRARY_FILE = "libembraft.so"


class LibraryError(ImportError):
    """libembraft could not be loaded or is not the expected ABI version."""


def library_path() -> str:
    """The library to load: $EMBRAFT_LIBRARY, else the copy the package
    installation placed next to this file."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_FILE)


def _load() -> ctypes.CDLL:
    path = library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise LibraryError(
            f"cannot load the embraft library {path!r} ({exc}); reinstall the "
            f"package or set {LIBRARY_ENV} to a libembraft.so") from exc
    # The ABI version first: a library of another version may lack functions
    # or declare them differently, and the version error is the useful one.
    try:
        abi_version = lib.embraft_abi_version
    except AttributeError as exc:
        raise LibraryError(f"{path!r} is not an embraft library") from exc
    abi_version.restype, abi_version.argtypes = c_uint32, []
    found = abi_version()
    if found != ABI_VERSION:
        raise LibraryError(
            f"{path!r} has embraft ABI version {found}, but this binding was "
            f"written for ABI version {ABI_VERSION}: install matching versions")
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            function = getattr(lib, name)
        except AttributeError as exc:
            raise LibraryError(f"{path!r} lacks {name}: not a matching embraft build") from exc
        function.restype = restype
        function.argtypes = argtypes
    return lib


lib = _load()


def status_text(code: int) -> str:
    return lib.embraft_status_str(code).decode("utf-8", "replace")


def string_at(address: c_void_p, length: Optional[int] = None) -> bytes:
    """A copy of the bytes at a view the library wrote (`length` of them,
    or up to a NUL); b"" for an empty view, which may be NULL."""
    if length == 0:
        return b""
    if not address.value:
        # Only a broken library returns NULL with OK: no status code fits.
        raise RuntimeError("embraft returned a NULL view")
    if length is None:
        return ctypes.string_at(address.value)
    return ctypes.string_at(address.value, length)


def last_error_text(getter: Callable[..., int], handle_value: _Handle) -> str:
    """Reads a handle's last error message with the given *_last_error
    function, growing the buffer when the message was truncated."""
    size = 256
    while True:
        buffer = ctypes.create_string_buffer(size)
        full_length = c_size_t()
        if getter(handle_value, buffer, size, ctypes.byref(full_length)) != OK:
            return ""
        if full_length.value < size:
            return buffer.value.decode("utf-8", "replace")
        size = full_length.value + 1
