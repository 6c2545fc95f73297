"""`Runtime`: many Raft groups in one process on the library's runtime
(docs/FFI.md "Many groups: the runtime"): one shared WAL, a small pool of
worker threads, and here one driver thread that polls every group's
output in one batch, sends it as one group frame per peer runtime, and
hands each group's committed entries to that group's state machine in
log order, then acknowledges them.

    with Runtime(Config(id=1, data_dir="/var/lib/app"), transport=...) as rt:
        group = rt.start_group(7, members=[1, 2, 3], state_machine=sm)
        group.propose(b"...").result(5)

A `Group` has the API of a `Node` (embraft.node.Replicated); member ids
are runtime ids.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
import weakref
from ctypes import byref, c_size_t, c_uint64, c_void_p
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from . import _ffi
from ._ffi import lib
from ._log import logger
from ._managed import Managed
from .config import Config, ConfigHandle
from .driver import DriverBase, shutdown_driver
from .errors import ClosedError, EmbraftError, UnknownGroupError, error_for_status
from .host import StateMachine, Transport
from .node import Replicated
from .ready import Entry, LogLine, Outcome, ReadResult, Ready, SnapshotToRestore, StateChange
from .replica import Replica, resolve

__all__ = ["FrameReport", "Group", "Runtime", "RuntimeStats"]

_Item = TypeVar("_Item", bound=ctypes.Structure)


class RuntimeHandle(Managed[_ffi.RuntimePtr]):
    """A C runtime (embraft_runtime*)."""

    _free = lib.embraft_runtime_free
    _what = "runtime"

    @classmethod
    def new(cls, config: Config, workers: int) -> "RuntimeHandle":
        with ConfigHandle.build(config) as config_handle:
            ptr = _ffi.RuntimePtr()
            config_handle.check(lib.embraft_runtime_new(config_handle.ptr(), workers,
                                                        byref(ptr)))
        return cls(ptr)

    def error(self, code: int) -> EmbraftError:
        return error_for_status(code, self.last_error())

    def last_error(self) -> str:
        return _ffi.last_error_text(lib.embraft_runtime_last_error, self.ptr())


class RuntimeReadyHandle(Managed[_ffi.RuntimeReadyPtr]):
    """A runtime batch (embraft_runtime_ready*); only the driver holds one."""

    _free = lib.embraft_runtime_ready_free
    _what = "runtime batch"

    def items(self, getter: Callable[..., int], item: Type[_Item]) -> "ctypes.Array[_Item]":
        """One of the batch's item arrays, read in place (valid while the
        handle is open)."""
        pointer = ctypes.POINTER(item)()
        count = c_size_t()
        code = getter(self.ptr(), byref(pointer), byref(count))
        if code != _ffi.OK:
            raise error_for_status(code, "reading a runtime batch")
        if not count.value:
            return (item * 0)()
        address = ctypes.cast(pointer, c_void_p).value
        return (item * count.value).from_address(address or 0)

    def frames(self) -> List[Tuple[int, bytes]]:
        """(peer, group frame bytes) for every peer the batch sends to."""
        peers = _ffi.ids_view()
        count = c_size_t()
        ready = self.ptr()
        code = lib.embraft_runtime_ready_peers(ready, byref(peers), byref(count))
        if code != _ffi.OK:
            raise error_for_status(code, "reading a runtime batch's peers")
        frames = []
        data, length = c_void_p(), c_size_t()
        for i in range(count.value):
            peer = peers[i]
            code = lib.embraft_runtime_ready_frame(ready, peer, byref(data), byref(length))
            if code != _ffi.OK:
                raise error_for_status(code, "reading a runtime batch's frame")
            frames.append((peer, _ffi.string_at(data, length.value)))
        return frames

    def per_group(self) -> Dict[int, Ready]:
        """Everything but the messages, as one `Ready` per group with output
        (copies, except restore paths, which name files the batch keeps)."""
        groups: Dict[int, Ready] = {}

        def of(group: int) -> Ready:
            ready = groups.get(group)
            if ready is None:
                ready = groups[group] = Ready([], None, [], None, [], [], [], None)
            return ready

        for log in self.items(lib.embraft_runtime_ready_logs, _ffi.RtLog):
            of(log.group).log_lines.append(
                LogLine(log.level, ctypes.string_at(log.text).decode("utf-8", "replace")))
        for state in self.items(lib.embraft_runtime_ready_states, _ffi.RtState):
            of(state.group).state = StateChange(state.role, state.leader, state.term)
        for restore in self.items(lib.embraft_runtime_ready_restores, _ffi.RtRestore):
            of(restore.group).restore = SnapshotToRestore(
                restore.index, restore.term, os.fsdecode(ctypes.string_at(restore.path)))
        for entry in self.items(lib.embraft_runtime_ready_entries, _ffi.RtEntry):
            of(entry.group).entries.append(Entry(
                entry.index, entry.term, entry.kind,
                ctypes.string_at(entry.data, entry.len) if entry.len else b"",
                entry.proposal_id))
        for outcome in self.items(lib.embraft_runtime_ready_outcomes, _ffi.RtOutcome):
            of(outcome.group).outcomes.append(
                Outcome(outcome.proposal_id, outcome.code, outcome.index))
        for read in self.items(lib.embraft_runtime_ready_reads, _ffi.RtRead):
            of(read.group).reads.append(ReadResult(read.context, read.code, read.index))
        for wanted in self.items(lib.embraft_runtime_ready_snapshots_wanted,
                                 _ffi.RtSnapshotWanted):
            of(wanted.group).snapshot_wanted = wanted.index
        return groups


@dataclasses.dataclass
class FrameReport:
    """What `Runtime.step_frame` did with a frame's messages."""

    stepped: int
    unknown_group: int
    busy: int
    refused: int


@dataclasses.dataclass
class RuntimeStats:
    """The runtime's work since it opened: worker rounds, group steps
    across them, and WAL syncs (one per round that wrote something a
    group waits on, however many groups it served)."""

    rounds: int
    group_steps: int
    syncs: int


def _id_list(getter: Callable[..., int], handle: RuntimeHandle) -> List[int]:
    """A list of group ids from a two-call getter (size, then the ids)."""
    count = c_size_t()
    code = getter(handle.ptr(), None, 0, byref(count))
    while code == _ffi.OK:
        capacity = count.value
        ids = (c_uint64 * max(capacity, 1))()
        code = getter(handle.ptr(), ids, capacity, byref(count))
        if code == _ffi.OK and count.value <= capacity:
            return list(ids[:count.value])
    raise handle.error(code)


class RuntimeDriver(DriverBase):
    """Owns the C runtime, its driver thread and its groups' replicas."""

    what = "runtime"

    def __init__(self, config: Config, transport: Optional[Transport], workers: int,
                 tick_interval: float):
        if workers < 0:
            raise ValueError("workers must be 0 (one per core) or more")
        super().__init__(transport, tick_interval, f"runtime-{config.id}")
        self.id = config.id
        self.handle = RuntimeHandle.new(config, workers)
        self._functions: Dict[str, Callable[..., int]] = {}
        # Group id -> replica; replaced, never mutated, so the driver
        # thread reads it without the lock.
        self.replicas: Dict[int, Replica] = {}
        try:
            self._open_wakeup(lib.embraft_runtime_readiness_fd)
        except BaseException:
            self.handle.close()
            raise
        if transport is not None:
            transport.start(self.deliver_with(self.step_frame_dropping),
                            self.peer_unreachable)
        self.thread.start()

    def invoke_locked(self, call: str, group: int, *args: Any) -> None:
        function = self._functions.get(call)
        if function is None:
            function = self._functions[call] = getattr(lib, f"embraft_runtime_{call}")
        self._check_open()
        code = function(self.handle.ptr(), group, *args)
        if code != _ffi.OK:
            raise self.handle.error(code)

    def _call(self, function: Callable[..., int], *args: Any) -> None:
        """A runtime-wide call (no group argument)."""
        with self.lock:
            self._check_open()
            code = function(self.handle.ptr(), *args)
            if code != _ffi.OK:
                raise self.handle.error(code)

    # ----- groups ----------------------------------------------------------------------

    def start_group(self, group: int, members: Sequence[int], state_machine: StateMachine,
                    applied: int) -> Replica:
        if not 0 < group < 1 << 64:
            raise ValueError(f"group ids are from 1 to 2^64-1, not {group}")
        replica = Replica(self, group, state_machine, applied,
                          f"runtime {self.id} group {group}")
        peers = (c_uint64 * len(members))(*members)
        with self.lock:
            self._check_open()
            if group in self.replicas:
                # The library would say so too, but the replica must not be
                # replaced meanwhile.
                raise error_for_status(_ffi.ERR_GROUP_EXISTS,
                                       f"group {group} already runs on this runtime")
            # Registered first: the group's first batch may be polled
            # before start_group returns.
            self.replicas = {**self.replicas, group: replica}
            code = lib.embraft_runtime_start_group(self.handle.ptr(), group, peers,
                                                   len(members), applied)
            if code != _ffi.OK:
                self.replicas = {g: r for g, r in self.replicas.items() if g != group}
                raise self.handle.error(code)
        return replica

    def _drop_group(self, group: int, call: Callable[..., int]) -> None:
        with self.lock:
            self._check_open()
            replica = self.replicas.get(group)
            code = call(self.handle.ptr(), group)
            if code != _ffi.OK:
                raise self.handle.error(code)
            self.replicas = {g: r for g, r in self.replicas.items() if g != group}
            pending = replica.pending() if replica is not None else []
        if replica is not None:
            replica.stop()
        for future in pending:
            resolve(future, error=ClosedError(f"group {group} was stopped"))

    def stop_group(self, group: int) -> None:
        self._drop_group(group, lib.embraft_runtime_stop_group)

    def remove_group(self, group: int) -> None:
        self._drop_group(group, lib.embraft_runtime_remove_group)

    def stored_groups(self) -> List[int]:
        with self.lock:
            self._check_open()
            return _id_list(lib.embraft_runtime_stored_groups, self.handle)

    def running_groups(self) -> List[int]:
        with self.lock:
            self._check_open()
            return _id_list(lib.embraft_runtime_running_groups, self.handle)

    def stats(self) -> RuntimeStats:
        rounds, steps, syncs = c_uint64(), c_uint64(), c_uint64()
        self._call(lib.embraft_runtime_stats, byref(rounds), byref(steps), byref(syncs))
        return RuntimeStats(rounds.value, steps.value, syncs.value)

    # ----- the transport's side ----------------------------------------------------

    def step_frame(self, data: bytes) -> FrameReport:
        report = _ffi.RtFrameReport()
        self._call(lib.embraft_runtime_step_frame, data, len(data), byref(report))
        return FrameReport(report.stepped, report.unknown_group, report.busy, report.refused)

    def step_frame_dropping(self, data: bytes) -> None:
        report = self.step_frame(data)
        if report.refused:
            logger.debug("%s: %d message(s) of a frame refused", self.name, report.refused)

    def report_unreachable(self, peer: int) -> None:
        self._call(lib.embraft_runtime_report_unreachable, peer)

    def peer_unreachable(self, peer: int) -> None:
        try:
            self.report_unreachable(peer)
        except EmbraftError:
            pass

    # ----- the driver thread -----------------------------------------------------

    def _replicas(self) -> List[Replica]:
        return list(self.replicas.values())

    def _tick(self) -> None:
        code = lib.embraft_runtime_tick(self.handle.ptr())
        if code != _ffi.OK:
            raise self.handle.error(code)

    def _poll(self) -> None:
        ready = _ffi.RuntimeReadyPtr()
        code = lib.embraft_runtime_poll(self.handle.ptr(), 0, byref(ready))
        if code != _ffi.OK:
            raise self.handle.error(code)
        # Open while handled: restores read the files the batch keeps.
        with RuntimeReadyHandle(ready) as batch:
            if self.transport is not None:
                for peer, frame in batch.frames():
                    self.send(peer, frame)
            replicas = self.replicas
            for group, output in sorted(batch.per_group().items()):
                replica = replicas.get(group)
                if replica is not None:
                    replica.process(output)


class Group(Replicated):
    """One Raft group running on a `Runtime`: the API of a `Node`
    (propose, read_index, membership changes, transfer_leadership,
    snapshots, status, metrics). Member ids are runtime ids."""

    def __init__(self, runtime: "Runtime", group_id: int, replica: Replica):
        # Keeps the runtime open while a group of it is in use.
        self.runtime = runtime
        self.id = group_id
        self._driver = runtime._driver
        self._replica = replica

    def stop(self) -> None:
        """Stops running the group here; its state stays stored."""
        self.runtime.stop_group(self.id)

    def __repr__(self) -> str:
        return f"<Group {self.id} of runtime {self.runtime.id}>"


class Runtime:
    """Many Raft groups in one process: one shared WAL in
    `config.data_dir`, `workers` worker threads of the library (0: one per
    core), one driver thread here.

    Of `config` the runtime uses the id (this runtime's id in its cluster,
    the member id of its replicas in every group), the data directory, the
    WAL, Raft, snapshot and logging options; the peers and applied index
    are per group (`start_group`). `tick_interval` (default the config's)
    paces every group's clock. `transport` carries group frames between
    runtimes (embraft.transport.GroupStreamTransport); the runtime owns it.
    Close with `close()` or use as a context manager.
    """

    def __init__(self, config: Config, transport: Optional[Transport] = None,
                 workers: int = 2, tick_interval: Optional[float] = None):
        driver = RuntimeDriver(config, transport, workers,
                               config.tick_interval if tick_interval is None
                               else tick_interval)
        self._driver = driver
        self._finalizer = weakref.finalize(self, shutdown_driver, driver)
        self._groups: Dict[int, Group] = {}
        self._groups_lock = threading.Lock()
        self.id = config.id

    def start_group(self, group_id: int, members: Sequence[int] = (),
                    state_machine: Optional[StateMachine] = None,
                    applied: int = 0) -> Group:
        """Runs group `group_id` here with `state_machine`. A group the WAL
        holds restarts from it (`members` is ignored); otherwise non-empty
        `members` (runtime ids, this one included) found it, and no members
        join a running group (a member then adds this runtime). Committed
        entries after `applied` (what the state machine already holds) are
        delivered. GroupExistsError when it runs already."""
        if state_machine is None:
            raise ValueError("start_group needs a state_machine")
        replica = self._driver.start_group(group_id, list(members), state_machine, applied)
        group = Group(self, group_id, replica)
        with self._groups_lock:
            self._groups[group_id] = group
        return group

    def group(self, group_id: int) -> Group:
        """The running group `group_id`; UnknownGroupError otherwise."""
        if self.closed:
            raise ClosedError("the runtime is closed")
        with self._groups_lock:
            group = self._groups.get(group_id)
        if group is None or group_id not in self._driver.replicas:
            raise UnknownGroupError(f"group {group_id} does not run on runtime {self.id}",
                                    _ffi.ERR_UNKNOWN_GROUP)
        return group

    @property
    def groups(self) -> List[Group]:
        """The running groups, by id."""
        with self._groups_lock:
            return [self._groups[g] for g in sorted(self._groups)
                    if g in self._driver.replicas]

    def stop_group(self, group_id: int) -> None:
        """Stops running a group; its state stays stored (start it again
        later). Its pending futures fail with ClosedError."""
        self._driver.stop_group(group_id)
        with self._groups_lock:
            self._groups.pop(group_id, None)

    def remove_group(self, group_id: int) -> None:
        """Stops a running group and deletes its state (a WAL tombstone, its
        snapshot files)."""
        self._driver.remove_group(group_id)
        with self._groups_lock:
            self._groups.pop(group_id, None)

    def stored_groups(self) -> List[int]:
        """The groups the WAL holds, running or not, ascending: those to
        start again after a restart."""
        return self._driver.stored_groups()

    def running_groups(self) -> List[int]:
        return self._driver.running_groups()

    def stats(self) -> RuntimeStats:
        """What the runtime's workers did since it opened."""
        return self._driver.stats()

    def step_frame(self, frame: bytes) -> FrameReport:
        """Hands the runtime a group frame from a peer (a transport normally
        does this). MalformedMessageError for bytes that are not a group
        frame, and then nothing of it is taken."""
        return self._driver.step_frame(bytes(frame))

    def report_unreachable(self, peer: int) -> None:
        """Runtime `peer` cannot be reached: every group hears of it."""
        self._driver.report_unreachable(peer)

    def close(self) -> None:
        """Stops every group and the driver; pending futures fail with
        ClosedError, the transport closes and the data directory is
        released. Closing twice is harmless."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
