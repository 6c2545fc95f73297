"""The Pythonic node: configuration, the state machine protocol, the driver
thread that runs a node's ready loop, and the `Node` handle users hold.

Lifetimes (after wasmtime-py's _managed.py): `Node` is a thin facade over a
`_Driver` that owns the C handle, the driver thread and the pending futures.
The driver thread references only the `_Driver`, never the `Node`, so a
`Node` the user forgot to close becomes garbage and its finalizer stops the
thread and frees the handle.
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
import itertools
import logging
import os
import select
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from ctypes import byref, c_bool, c_int, c_size_t, c_uint32, c_uint64, c_void_p
from typing import (
    Any,
    BinaryIO,
    Callable,
    Deque,
    Dict,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    runtime_checkable,
)

from . import _ffi
from ._ffi import lib
from .errors import (
    BusyError,
    ClosedError,
    EmbraftError,
    NodeFailedError,
    ResourceError,
    StaleSnapshotError,
    error_for_outcome,
    error_for_read,
    error_for_status,
)
from .snapshot import SnapshotWriter

logger = logging.getLogger("embraft")
_core_logger = logging.getLogger("embraft.core")

# Python logging has no TRACE; embraft's trace lines go one step below DEBUG.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_LIBRARY_TO_PYTHON_LEVEL = {_ffi.LOG_INFO: logging.INFO, _ffi.LOG_DEBUG: logging.DEBUG,
                            _ffi.LOG_TRACE: TRACE}

ROLE_NAMES = {
    _ffi.ROLE_FOLLOWER: "follower",
    _ffi.ROLE_PRE_CANDIDATE: "pre-candidate",
    _ffi.ROLE_CANDIDATE: "candidate",
    _ffi.ROLE_LEADER: "leader",
}

# An automatic snapshot that failed is tried again after this many seconds,
# doubling up to the maximum while it keeps failing.
AUTO_SNAPSHOT_RETRY = 1.0
AUTO_SNAPSHOT_RETRY_MAX = 60.0


@runtime_checkable
class StateMachine(Protocol):
    """What the host implements. Every method runs on the node's driver
    thread, one call at a time, in log order."""

    def apply(self, index: int, data: bytes) -> None:
        """Apply the committed entry at `index`."""

    def snapshot(self, out: BinaryIO) -> None:
        """Write the state as of the last applied entry to `out`, a
        buffered binary stream into the snapshot's file (write-only, not
        seekable). Do not close it; the node finishes the snapshot."""

    def restore(self, src: BinaryIO) -> None:
        """Replace the state with a snapshot's, read from `src` (the file
        `snapshot` wrote, on this node or on the leader, opened for
        reading and verified against its checksum). Read it within the
        call: the file may be deleted afterwards."""


class Transport(Protocol):
    """Carries encoded messages between nodes (embraft.transport has the
    TCP stream transport of WIRE.md). A node owns the transport it is given:
    it starts it and closes it."""

    def start(self, deliver: Callable[[bytes], None],
              unreachable: Callable[[int], None]) -> None:
        """Begin; hand received messages to `deliver` (which raises
        embraft.MessageError for bytes that are not a message for this node)
        and report peers that cannot be reached to `unreachable`."""

    def send(self, to: int, data: bytes) -> None:
        """Queue `data` for node `to`; never blocks for long."""

    def close(self) -> None:
        """Stop and release every connection and thread."""


@dataclasses.dataclass
class Config:
    """A node's configuration. Ticks are counted in `tick_interval`
    seconds, which the driver thread keeps."""

    id: int
    data_dir: str
    peers: Sequence[int] = ()
    tick_interval: float = 0.05
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    sync: bool = True
    # Run the node inline: each call does the node's work (WAL write
    # included) on the calling thread; the library's one thread waits for
    # the WAL syncs.
    inline: bool = False
    # Write the WAL with pwrite instead of through its mapping: equally
    # durable, same files, less kernel work per sync (docs/DISK-FORMAT.md).
    wal_pwrite: bool = False
    max_entry_bytes: Optional[int] = None
    max_msg_bytes: Optional[int] = None
    max_inflight_msgs: Optional[int] = None
    max_inflight_bytes: Optional[int] = None
    max_apply_bytes: Optional[int] = None
    segment_size: Optional[int] = None
    applied_index: int = 0
    input_queue_capacity: Optional[int] = None
    lease_reads: bool = False
    compact_keep_entries: Optional[int] = None
    # Take a snapshot automatically (on the driver thread) once this many
    # entries, or this many bytes of log, were applied since the last one;
    # None (the default) never does on that account.
    snapshot_entries: Optional[int] = None
    snapshot_bytes: Optional[int] = None
    snapshot_chunk_size: Optional[int] = None
    random_seed: int = 0
    # None follows the "embraft.core" logger's effective level.
    log_level: Optional[int] = None


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
    voters: List[int]
    learners: List[int]
    voters_outgoing: List[int]
    learners_next: List[int]
    peers: List[PeerProgress]


def _library_log_level(config: Config) -> int:
    if config.log_level is not None:
        return config.log_level
    effective = _core_logger.getEffectiveLevel()
    if effective <= TRACE:
        return _ffi.LOG_TRACE
    if effective <= logging.DEBUG:
        return _ffi.LOG_DEBUG
    if effective <= logging.INFO:
        return _ffi.LOG_INFO
    return _ffi.LOG_OFF


def _check(code: int, detail: Callable[[], str] = lambda: "") -> None:
    if code != _ffi.OK:
        raise error_for_status(code, detail())


def _config_handle(config: Config) -> c_void_p:
    """A C configuration built from `config`; the caller frees it."""
    handle = c_void_p()
    _check(lib.embraft_config_new(byref(handle)))
    try:
        def call(function, *args):
            _check(function(handle, *args),
                   lambda: _ffi.last_error_text(lib.embraft_config_last_error, handle))

        call(lib.embraft_config_set_id, config.id)
        peers = list(config.peers)
        call(lib.embraft_config_set_peers, (c_uint64 * len(peers))(*peers), len(peers))
        call(lib.embraft_config_set_data_dir, os.fsencode(config.data_dir))
        call(lib.embraft_config_set_election_ticks, config.election_ticks)
        call(lib.embraft_config_set_heartbeat_ticks, config.heartbeat_ticks)
        call(lib.embraft_config_set_pre_vote, config.pre_vote)
        call(lib.embraft_config_set_check_quorum, config.check_quorum)
        call(lib.embraft_config_set_sync_mode,
             _ffi.SYNC_ALWAYS if config.sync else _ffi.SYNC_NEVER)
        call(lib.embraft_config_set_threading,
             _ffi.THREADING_INLINE if config.inline else _ffi.THREADING_NODE)
        call(lib.embraft_config_set_wal_write_method,
             _ffi.WAL_WRITE_PWRITE if config.wal_pwrite else _ffi.WAL_WRITE_MMAP)
        call(lib.embraft_config_set_applied_index, config.applied_index)
        call(lib.embraft_config_set_lease_reads, config.lease_reads)
        call(lib.embraft_config_set_random_seed, config.random_seed)
        call(lib.embraft_config_set_log_level, _library_log_level(config))
        optional = {
            "max_entry_bytes": lib.embraft_config_set_max_entry_bytes,
            "max_msg_bytes": lib.embraft_config_set_max_msg_bytes,
            "max_inflight_msgs": lib.embraft_config_set_max_inflight_msgs,
            "max_inflight_bytes": lib.embraft_config_set_max_inflight_bytes,
            "max_apply_bytes": lib.embraft_config_set_max_apply_bytes,
            "segment_size": lib.embraft_config_set_segment_size,
            "input_queue_capacity": lib.embraft_config_set_input_queue_capacity,
            "compact_keep_entries": lib.embraft_config_set_compact_keep_entries,
            "snapshot_entries": lib.embraft_config_set_snapshot_entries,
            "snapshot_bytes": lib.embraft_config_set_snapshot_bytes,
            "snapshot_chunk_size": lib.embraft_config_set_snapshot_chunk_size,
        }
        for field, setter in optional.items():
            value = getattr(config, field)
            if value is not None:
                call(setter, value)
    except BaseException:
        lib.embraft_config_free(handle)
        raise
    return handle


def _resolve(future: Future, result: Any = None, error: Optional[BaseException] = None) -> None:
    """Completes a future unless its owner cancelled it meanwhile."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except Exception:  # cancelled between the check and the call
        pass


class _Driver:
    """Owns the C node, runs its ready loop on a thread, and completes the
    futures of proposals and reads. Holds no reference to the Node facade."""

    def __init__(self, config: Config, state_machine: StateMachine,
                 transport: Optional[Transport]):
        self.config = config
        self.state_machine = state_machine
        self.transport = transport
        config_handle = _config_handle(config)
        handle = c_void_p()
        try:
            code = lib.embraft_node_new(config_handle, byref(handle))
            _check(code, lambda: _ffi.last_error_text(lib.embraft_config_last_error,
                                                       config_handle))
        finally:
            lib.embraft_config_free(config_handle)
        self.handle: Optional[c_void_p] = handle
        try:
            fd = c_int()
            _check(lib.embraft_node_readiness_fd(handle, byref(fd)))
            self.readiness_fd = fd.value
            try:
                # Lets close() and submit() interrupt the driver's select().
                self._wake_read, self._wake_write = os.pipe()
            except OSError as exc:
                raise ResourceError(f"cannot create a pipe: {exc}", _ffi.ERR_RESOURCE) from exc
        except BaseException:
            lib.embraft_node_free(handle)
            raise

        # Guards the handle against being freed during a call from a user
        # thread, and the maps of pending futures: a proposal's id is
        # registered before the driver can look its outcome up.
        self.lock = threading.Lock()
        self.closing = False
        self._release_on_exit = False
        self.failure: Optional[EmbraftError] = None
        self.proposals: Dict[int, Future] = {}
        self.reads: Dict[int, Future] = {}
        self._read_contexts = itertools.count(1)
        self._reads_waiting_apply: List[Tuple[int, int, Future]] = []
        # Work for the driver thread, each with the future it completes.
        self._requests: Deque[Tuple[Callable[[], None], Future]] = deque()

        self.role = _ffi.ROLE_FOLLOWER
        self.leader = 0
        self.term = 0
        self.applied = config.applied_index
        # The highest index the node was told is applied (acks may be
        # deferred when its input queue is full).
        self.acked = config.applied_index
        # Threads finishing snapshots off the driver thread.
        self._finishers: List[threading.Thread] = []
        # Automatic snapshots (Config.snapshot_entries/_bytes): asked for by
        # the node, taken on the driver thread, retried after a failure.
        self._auto_snapshot_due = False
        self._auto_snapshot_running = False
        self._auto_snapshot_at = 0.0
        self._auto_snapshot_backoff = AUTO_SNAPSHOT_RETRY
        self.state_changed = threading.Condition()
        self.listeners: List[Callable[[str, int, int], None]] = []

        if transport is not None:
            transport.start(self.deliver, self.report_unreachable)
        self.thread = threading.Thread(target=self._run, name=f"embraft-node-{config.id}",
                                       daemon=True)
        self.thread.start()

    # ----- calls from any thread -------------------------------------------------

    def call(self, function, *args) -> None:
        """Calls a node function with the handle, raising on failure."""
        with self.lock:
            self._call_locked(function, *args)

    def _call_locked(self, function, *args) -> None:
        if self.handle is None or self.closing:
            raise ClosedError("the node is closed")
        if self.failure is not None:
            # The driver stopped: nothing would ever complete a new future.
            raise self.failure
        code = function(self.handle, *args)
        if code != _ffi.OK:
            raise error_for_status(code, _ffi.last_error_text(lib.embraft_node_last_error,
                                                              self.handle))

    def propose_with(self, function, *args) -> Future:
        future: Future = Future()
        proposal_id = c_uint64()
        with self.lock:
            self._call_locked(function, *args, byref(proposal_id))
            self.proposals[proposal_id.value] = future
        return future

    def read_index(self) -> Future:
        future: Future = Future()
        with self.lock:
            context = next(self._read_contexts)
            self._call_locked(lib.embraft_node_read_index, context)
            self.reads[context] = future
        return future

    def deliver(self, data: bytes) -> None:
        """A message from the transport. Busy means the node is behind:
        drop the message, Raft retransmits."""
        try:
            self.call(lib.embraft_node_step, data, len(data))
        except (BusyError, ClosedError):
            pass

    def report_unreachable(self, peer: int) -> None:
        try:
            self.call(lib.embraft_node_report_unreachable, peer)
        except (BusyError, ClosedError):
            pass

    def submit(self, request: Callable[[], None], future: Future) -> None:
        """Runs `request` on the driver thread (where the state machine
        lives) at its next iteration; `request` completes `future`, which
        fails with ClosedError if the node closes first."""
        with self.lock:
            if self.handle is None or self.closing:
                raise ClosedError("the node is closed")
            self._requests.append((request, future))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass

    # ----- shutdown --------------------------------------------------------------

    def shutdown(self) -> None:
        """Stops the thread, fails what is pending and frees the node. Safe
        to call several times, from the finalizer, and from the driver
        thread itself (a state machine closing its node, or a garbage
        collection that happens to run there): the loop then finishes the
        job when it unwinds, since the handle must outlive its last use."""
        with self.lock:
            if self.handle is None or self.closing:
                return
            self.closing = True
        if threading.current_thread() is self.thread:
            self._release_on_exit = True
            return
        self._wake()
        self.thread.join()
        self._release()

    def _release(self) -> None:
        if self.transport is not None:
            self.transport.close()
        # Snapshots being finished complete first: the node records them
        # without the host's help, so this wait is bounded by their I/O.
        # (A future's callback may close the node from a finisher thread.)
        with self.lock:
            finishers = list(self._finishers)
        for thread in finishers:
            if thread is not threading.current_thread():
                thread.join()
        with self.lock:
            handle, self.handle = self.handle, None
            lib.embraft_node_free(handle)
            os.close(self._wake_read)
            os.close(self._wake_write)
        self._fail_pending(self.failure or ClosedError("the node was closed"))

    def _fail_pending(self, error: EmbraftError) -> None:
        with self.lock:
            pending = list(self.proposals.values()) + list(self.reads.values())
            pending += [future for _, _, future in self._reads_waiting_apply]
            pending += [future for _, future in self._requests]
            self._requests.clear()
            self.proposals.clear()
            self.reads.clear()
            self._reads_waiting_apply.clear()
        for future in pending:
            _resolve(future, error=error)

    # ----- the driver thread -----------------------------------------------------

    def _run(self) -> None:
        interval = self.config.tick_interval
        next_tick = time.monotonic() + interval
        watched = [self.readiness_fd, self._wake_read]
        ready = c_void_p()
        handle = self.handle
        try:
            while not self.closing:
                timeout = max(0.0, next_tick - time.monotonic())
                readable, _, _ = select.select(watched, [], [], timeout)
                if self._wake_read in readable:
                    os.read(self._wake_read, 4096)
                while self._requests:
                    request, _ = self._requests.popleft()
                    request()
                if self._auto_snapshot_due:
                    self._auto_snapshot()
                now = time.monotonic()
                if now >= next_tick:
                    # Busy means the queue is full of work; a lost tick only
                    # stretches a timeout a little.
                    lib.embraft_node_tick(handle)
                    next_tick = max(next_tick + interval, now)
                if self.readiness_fd in readable:
                    code = lib.embraft_node_poll_ready(handle, 0, byref(ready))
                    if code == _ffi.OK:
                        try:
                            self._process(ready)
                        finally:
                            lib.embraft_ready_free(ready)
                    elif code != _ffi.TIMED_OUT:
                        raise error_for_status(code, _ffi.last_error_text(
                            lib.embraft_node_last_error, handle))
        except BaseException as exc:  # the loop cannot continue: say why to every waiter
            if isinstance(exc, EmbraftError):
                self.failure = exc
            else:
                logger.exception("node %d stopped: its driver failed", self.config.id)
                self.failure = NodeFailedError(f"the driver thread failed: {exc!r}")
            self._fail_pending(self.failure)
        finally:
            if self._release_on_exit:
                self._release()

    def _process(self, ready: c_void_p) -> None:
        count = c_size_t()
        self._log_lines(ready, count)
        self._update_state(ready)
        self._send_messages(ready, count)
        self._restore_if_asked(ready)
        self._apply_entries(ready, count)
        self._acknowledge()
        self._serve_reads_applied()
        self._complete_outcomes(ready, count)
        self._complete_reads(ready, count)
        self._note_snapshot_wanted(ready)

    def _log_lines(self, ready, count) -> None:
        lib.embraft_ready_log_count(ready, byref(count))
        level = c_uint32()
        text = c_void_p()
        for i in range(count.value):
            lib.embraft_ready_log(ready, i, byref(level), byref(text))
            _core_logger.log(_LIBRARY_TO_PYTHON_LEVEL.get(level.value, logging.INFO),
                             "%s", ctypes.string_at(text.value).decode("utf-8", "replace"))

    def _update_state(self, ready) -> None:
        changed = c_bool()
        lib.embraft_ready_state_changed(ready, byref(changed))
        if not changed.value:
            return
        role, leader, term = c_uint32(), c_uint64(), c_uint64()
        lib.embraft_ready_state(ready, byref(role), byref(leader), byref(term))
        with self.state_changed:
            self.role, self.leader, self.term = role.value, leader.value, term.value
            self.state_changed.notify_all()
        logger.info("node %d: %s in term %d, leader %d", self.config.id,
                    ROLE_NAMES.get(self.role, self.role), self.term, self.leader)
        for listener in list(self.listeners):
            listener(ROLE_NAMES.get(self.role, str(self.role)), self.leader, self.term)

    def _restore_if_asked(self, ready) -> None:
        """Restores the state machine from the batch's snapshot file, if it
        asks for it, before its entries are applied. The file stays valid
        until the batch is freed, after this returns."""
        present, index, term = c_bool(), c_uint64(), c_uint64()
        lib.embraft_ready_snapshot_to_restore(ready, byref(present), byref(index), byref(term))
        if not present.value:
            return
        path = c_void_p()
        _check(lib.embraft_ready_snapshot_path(ready, byref(path)))
        name = os.fsdecode(ctypes.string_at(path.value))
        logger.info("node %d: restoring the snapshot at index %d (term %d) from %s",
                    self.config.id, index.value, term.value, name)
        with open(name, "rb") as source:
            self.state_machine.restore(source)
        self.applied = index.value

    def _send_messages(self, ready, count) -> None:
        lib.embraft_ready_message_count(ready, byref(count))
        if self.transport is None:
            return
        to, data, length = c_uint64(), c_void_p(), c_size_t()
        send, string_at, message = self.transport.send, ctypes.string_at, lib.embraft_ready_message
        to_ref, data_ref, length_ref = byref(to), byref(data), byref(length)
        for i in range(count.value):
            message(ready, i, to_ref, data_ref, length_ref)
            send(to.value, string_at(data.value, length.value))

    def _apply_entries(self, ready, count) -> None:
        lib.embraft_ready_entry_count(ready, byref(count))
        if count.value == 0:
            return
        index, term, kind = c_uint64(), c_uint64(), c_uint32()
        data, length, proposal = c_void_p(), c_size_t(), c_uint64()
        refs = (byref(index), byref(term), byref(kind), byref(data), byref(length),
                byref(proposal))
        entry, string_at = lib.embraft_ready_entry, ctypes.string_at
        apply = self.state_machine.apply
        normal = _ffi.ENTRY_NORMAL
        for i in range(count.value):
            entry(ready, i, *refs)
            if kind.value == normal:
                apply(index.value, string_at(data.value, length.value))
        self.applied = index.value

    def _acknowledge(self) -> None:
        """Tells the node what was applied (entries, or a restored
        snapshot), unless it already knows."""
        if self.acked >= self.applied:
            return
        code = lib.embraft_node_ack_applied(self.handle, self.applied)
        if code == _ffi.OK:
            self.acked = self.applied
        elif code == _ffi.ERR_BUSY:
            # Acknowledgements may lag; the next batch's ack covers this one.
            logger.debug("node %d: ack deferred, input queue full", self.config.id)
        else:
            logger.warning("node %d: ack of index %d failed: %s", self.config.id,
                           self.applied, _ffi.status_text(code))

    def _complete_outcomes(self, ready, count) -> None:
        lib.embraft_ready_outcome_count(ready, byref(count))
        if count.value == 0:
            return
        proposal, outcome, index = c_uint64(), c_uint32(), c_uint64()
        refs = (byref(proposal), byref(outcome), byref(index))
        get = lib.embraft_ready_outcome
        finished = []
        with self.lock:
            pop = self.proposals.pop
            for i in range(count.value):
                get(ready, i, *refs)
                future = pop(proposal.value, None)
                if future is not None:
                    finished.append((future, outcome.value, index.value))
        for future, result, log_index in finished:
            if result == _ffi.PROPOSAL_COMMITTED:
                _resolve(future, log_index)
            else:
                _resolve(future, error=error_for_outcome(result, log_index, self.leader))

    def _complete_reads(self, ready, count) -> None:
        lib.embraft_ready_read_count(ready, byref(count))
        if count.value == 0:
            return
        context, result, index = c_uint64(), c_uint32(), c_uint64()
        for i in range(count.value):
            lib.embraft_ready_read(ready, i, byref(context), byref(result), byref(index))
            with self.lock:
                future = self.reads.pop(context.value, None)
            if future is None:
                continue
            if result.value != _ffi.READ_OK:
                _resolve(future, error=error_for_read(result.value))
            else:
                heapq.heappush(self._reads_waiting_apply,
                               (index.value, context.value, future))
        self._serve_reads_applied()

    def _serve_reads_applied(self) -> None:
        waiting = self._reads_waiting_apply
        while waiting and waiting[0][0] <= self.applied:
            index, _, future = heapq.heappop(waiting)
            _resolve(future, index)

    # ----- snapshots ---------------------------------------------------------------

    def snapshot_error(self, code: int) -> EmbraftError:
        """The exception for a snapshot writer's failed call: the reason is
        the node's last error, while the node is open."""
        with self.lock:
            detail = ("" if self.handle is None else
                      _ffi.last_error_text(lib.embraft_node_last_error, self.handle))
        return error_for_status(code, detail)

    def begin_snapshot(self, index: int) -> SnapshotWriter:
        """Any thread: a writer for a snapshot at `index`."""
        writer = c_void_p()
        self.call(lib.embraft_node_snapshot_begin, index, byref(writer))
        try:
            return SnapshotWriter(writer, index, self.snapshot_error)
        except BaseException:
            lib.embraft_snapshot_writer_abort(writer)
            raise

    def write_snapshot(self) -> SnapshotWriter:
        """Driver thread: begins a snapshot at the applied index and has
        the state machine write itself into it; the caller finishes it."""
        index = self.applied
        self._acknowledge()
        if self.acked < index:
            raise BusyError(f"the node's input queue is full: index {index} cannot be "
                            "acknowledged as applied yet; retry", _ffi.ERR_BUSY)
        writer = self.begin_snapshot(index)
        try:
            self.state_machine.snapshot(writer)
        except BaseException:
            writer.abort()
            raise
        return writer

    def finish_snapshot(self, writer: SnapshotWriter,
                        done: Callable[[Optional[int], Optional[BaseException]], None]) -> None:
        """Finishes `writer` on a thread of its own (it syncs the file and
        reads it back), then calls `done(index, None)` or `done(None,
        error)` there."""
        def run() -> None:
            try:
                index = writer.finish()
            except BaseException as exc:
                done(None, exc)
            else:
                done(index, None)
            finally:
                with self.lock:
                    self._finishers.remove(thread)

        thread = threading.Thread(target=run, daemon=True,
                                  name=f"embraft-snapshot-{self.config.id}-{writer.index}")
        with self.lock:
            self._finishers.append(thread)
        try:
            thread.start()
        except BaseException:
            with self.lock:
                self._finishers.remove(thread)
            writer.abort()
            raise

    def take_snapshot(self, future: Future) -> None:
        """Driver thread: a snapshot of the state machine at the applied
        index; `future` resolves to the index once it is durable and handed
        to the node (which then compacts its log)."""
        try:
            writer = self.write_snapshot()
            self.finish_snapshot(
                writer, lambda index, error: _resolve(future, index, error))
        except BaseException as exc:
            _resolve(future, error=exc)

    def _note_snapshot_wanted(self, ready) -> None:
        wanted, index = c_bool(), c_uint64()
        lib.embraft_ready_snapshot_wanted(ready, byref(wanted), byref(index))
        if wanted.value:
            logger.info("node %d: snapshot wanted at index %d", self.config.id, index.value)
            self._auto_snapshot_due = True

    def _auto_snapshot(self) -> None:
        """Driver thread: takes the snapshot the node asked for, unless one
        is being finished or a failed one waits to be retried."""
        if self._auto_snapshot_running or time.monotonic() < self._auto_snapshot_at:
            return
        self._auto_snapshot_due = False
        try:
            writer = self.write_snapshot()
        except Exception as exc:
            self._auto_snapshot_done(None, exc)
            return
        self._auto_snapshot_running = True
        try:
            self.finish_snapshot(writer, self._auto_snapshot_done)
        except Exception as exc:
            self._auto_snapshot_done(None, exc)

    def _auto_snapshot_done(self, index: Optional[int], error: Optional[BaseException]) -> None:
        # On a finisher thread or the driver thread; the driver reads these
        # flags at its next iteration.
        self._auto_snapshot_running = False
        if error is None:
            logger.info("node %d: snapshot taken at index %s", self.config.id, index)
            self._auto_snapshot_backoff = AUTO_SNAPSHOT_RETRY
            return
        if isinstance(error, StaleSnapshotError):
            # A snapshot at least as recent exists: nothing to retry.
            logger.info("node %d: snapshot not needed: %s", self.config.id, error)
            return
        if isinstance(error, ClosedError) or self.closing:
            return
        delay = self._auto_snapshot_backoff
        self._auto_snapshot_backoff = min(delay * 2, AUTO_SNAPSHOT_RETRY_MAX)
        logger.warning("node %d: snapshot failed (retrying in %.0f s): %s", self.config.id,
                       delay, error)
        self._auto_snapshot_due = True
        self._auto_snapshot_at = time.monotonic() + delay
        self._wake()


def _shutdown_driver(driver: _Driver) -> None:
    driver.shutdown()


class Node:
    """A running embraft node.

    Create it with a `Config`, a `StateMachine` and, for more than one node,
    a transport (embraft.transport.StreamTransport). Close it with
    `close()` or use it as a context manager; a node that is garbage
    collected unclosed is closed by its finalizer.

    Every method may be called from any thread. The state machine's methods
    run on the node's own driver thread.
    """

    def __init__(self, config: Config, state_machine: StateMachine,
                 transport: Optional[Transport] = None):
        self._driver = _Driver(config, state_machine, transport)
        self._finalizer = weakref.finalize(self, _shutdown_driver, self._driver)
        self.id = config.id

    def close(self) -> None:
        """Stops the node: its thread ends, its pending futures fail with
        ClosedError, its transport closes and the data directory is
        released. Closing twice is harmless."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ----- proposals and reads ---------------------------------------------------

    def propose(self, data: bytes) -> "Future[int]":
        """Proposes `data` for the replicated log. The future resolves to
        the entry's index once it is committed and applied on this node, or
        fails with a ProposalDroppedError subclass (NotLeaderError,
        ProposalTooLargeError, ...). Raises TooLargeError at once above the
        configured maximum entry size and BusyError when the node's input
        queue is full."""
        payload = bytes(data)
        return self._driver.propose_with(lib.embraft_node_propose, payload, len(payload))

    def read_index(self) -> "Future[int]":
        """Asks for a linearizable read point. The future resolves to the
        read index once this node has applied through it, so the state
        machine can be read right away; it fails with ReadIndexError when
        no leader confirmed the read (retry)."""
        return self._driver.read_index()

    # ----- membership and leadership ---------------------------------------------

    def _conf_change(self, change: int, node_id: int) -> "Future[int]":
        return self._driver.propose_with(lib.embraft_node_propose_conf_change, change, node_id)

    def add_voter(self, node_id: int) -> "Future[int]":
        """Adds a voter (or promotes a learner). Resolves to the change's
        index once it is in force here."""
        return self._conf_change(_ffi.CONF_ADD_VOTER, node_id)

    def add_learner(self, node_id: int) -> "Future[int]":
        return self._conf_change(_ffi.CONF_ADD_LEARNER, node_id)

    def promote_learner(self, node_id: int) -> "Future[int]":
        return self._conf_change(_ffi.CONF_PROMOTE_LEARNER, node_id)

    def remove_node(self, node_id: int) -> "Future[int]":
        return self._conf_change(_ffi.CONF_REMOVE_NODE, node_id)

    def change_membership(self, voters: Sequence[int],
                          learners: Sequence[int] = ()) -> "Future[int]":
        """Moves to exactly these voters and learners through a joint
        configuration."""
        voter_ids = (c_uint64 * len(voters))(*voters)
        learner_ids = (c_uint64 * len(learners))(*learners)
        return self._driver.propose_with(lib.embraft_node_propose_membership,
                                         voter_ids, len(voters), learner_ids, len(learners))

    def transfer_leadership(self, to: int) -> None:
        """Asks this node, if it leads, to hand leadership to voter `to`;
        watch `wait_for_leader` for the result."""
        self._driver.call(lib.embraft_node_transfer_leader, to)

    def wait_for_leader(self, timeout: float, leader: Optional[int] = None) -> int:
        """Waits until a leader is known (or the given one leads) and
        returns its id; raises TimeoutError otherwise."""
        driver = self._driver
        deadline = time.monotonic() + timeout
        with driver.state_changed:
            while (driver.leader == 0 if leader is None else driver.leader != leader):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or driver.closing:
                    raise TimeoutError(f"no leader within {timeout} s")
                driver.state_changed.wait(remaining)
            return driver.leader

    def on_state_change(self, listener: Callable[[str, int, int], None]) -> None:
        """Calls `listener(role, leader, term)` on the driver thread at each
        change of role, leader or term."""
        self._driver.listeners.append(listener)

    # ----- snapshots ---------------------------------------------------------------

    def snapshot(self) -> "Future[int]":
        """Takes a snapshot of the state machine at the applied index: on
        the driver thread, `state_machine.snapshot(out)` writes it into a
        file of the node's `snapshots/` folder; another thread makes it
        durable and hands it to the node, which compacts its log up to it,
        sends it to followers that lag behind the log, and restores from
        it after a restart. Resolves to the snapshot's index; fails with
        StaleSnapshotError when the node already has a snapshot at or
        beyond the applied index (nothing new was applied since)."""
        future: Future = Future()
        driver = self._driver
        driver.submit(lambda: driver.take_snapshot(future), future)
        return future

    def begin_snapshot(self, index: int) -> SnapshotWriter:
        """A writer for a snapshot at `index`, for hosts that serialize
        their state as of an index on a thread of their own (a
        copy-on-write or versioned store): write the state as of `index`,
        then `finish()` (or use it as a context manager). `index` must be
        applied on this node (NotAppliedError otherwise) and newer than its
        latest snapshot (StaleSnapshotError otherwise)."""
        return self._driver.begin_snapshot(index)

    # ----- the transport's side ----------------------------------------------------

    def step(self, data: bytes) -> None:
        """Hands the node a message received from a peer (a transport
        normally does this). Raises MessageError for bytes that are not a
        message for this node, BusyError when the input queue is full."""
        payload = bytes(data)
        self._driver.call(lib.embraft_node_step, payload, len(payload))

    def report_unreachable(self, peer: int) -> None:
        self._driver.call(lib.embraft_node_report_unreachable, peer)

    # ----- observation ---------------------------------------------------------------

    @property
    def role(self) -> str:
        return ROLE_NAMES.get(self._driver.role, str(self._driver.role))

    @property
    def is_leader(self) -> bool:
        return self._driver.role == _ffi.ROLE_LEADER

    @property
    def leader(self) -> int:
        """The leader this node knows of, or 0."""
        return self._driver.leader

    @property
    def term(self) -> int:
        return self._driver.term

    @property
    def applied_index(self) -> int:
        return self._driver.applied

    def set_log_level(self, level: int) -> None:
        """Sets the level (embraft.LOG_*) of the lines the library logs to
        the "embraft.core" logger."""
        self._driver.call(lib.embraft_node_set_log_level, level)

    def status(self) -> Status:
        report = c_void_p()
        self._driver.call(lib.embraft_node_status, byref(report))
        try:
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
                voters=members(_ffi.MEMBERS_VOTERS), learners=members(_ffi.MEMBERS_LEARNERS),
                voters_outgoing=members(_ffi.MEMBERS_VOTERS_OUTGOING),
                learners_next=members(_ffi.MEMBERS_LEARNERS_NEXT),
                peers=peers)
        finally:
            lib.embraft_status_report_free(report)
