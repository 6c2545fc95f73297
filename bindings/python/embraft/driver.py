"""The driver: owns a C node, runs its ready loop on a thread of its own,
and completes the futures of proposals, reads and snapshots.

It references no `Node` (the facade users hold), so that a node its user
forgot becomes garbage and its finalizer can stop the driver.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import threading
import time
from collections import deque
from concurrent.futures import Future
from ctypes import byref, c_int, c_uint64
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from . import _ffi
from ._ffi import lib
from ._log import core_logger, logger, python_level
from ._managed import Managed
from .config import Config, ConfigHandle
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
from .host import StateMachine, Transport
from .metrics import Metrics, decode_metrics
from .ready import Entry, Outcome, ReadResult, Ready, ReadyHandle, StateChange
from .snapshot import SnapshotWriter, SnapshotWriterHandle
from .status import ROLE_NAMES, Status, StatusReportHandle

# An automatic snapshot that failed is tried again after this many seconds,
# doubling up to the maximum while it keeps failing.
AUTO_SNAPSHOT_RETRY = 1.0
AUTO_SNAPSHOT_RETRY_MAX = 60.0


class NodeHandle(Managed[_ffi.NodePtr]):
    """A C node (embraft_node*)."""

    _free = lib.embraft_node_free
    _what = "node"

    @classmethod
    def new(cls, config: Config) -> "NodeHandle":
        with ConfigHandle.build(config) as config_handle:
            ptr = _ffi.NodePtr()
            # The node copies what it keeps: the configuration goes at once.
            config_handle.check(lib.embraft_node_new(config_handle.ptr(), byref(ptr)))
        return cls(ptr)

    def error(self, code: int) -> EmbraftError:
        """The exception for a failed call, with the node's last error."""
        return error_for_status(code, self.last_error())

    def last_error(self) -> str:
        return _ffi.last_error_text(lib.embraft_node_last_error, self.ptr())


def resolve(future: Future, result: Any = None, error: Optional[BaseException] = None) -> None:
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


class Driver:
    """Owns the C node, runs its ready loop on a thread, and completes the
    futures of proposals and reads. Holds no reference to the Node facade."""

    def __init__(self, config: Config, state_machine: StateMachine,
                 transport: Optional[Transport]):
        self.config = config
        self.state_machine = state_machine
        self.transport = transport
        self.node = NodeHandle.new(config)
        try:
            fd = c_int()
            code = lib.embraft_node_readiness_fd(self.node.ptr(), byref(fd))
            if code != _ffi.OK:
                raise self.node.error(code)
            self.readiness_fd = fd.value
            try:
                # Lets close() and submit() interrupt the driver's select().
                self._wake_read, self._wake_write = os.pipe()
            except OSError as exc:
                raise ResourceError(f"cannot create a pipe: {exc}", _ffi.ERR_RESOURCE) from exc
        except BaseException:
            self.node.close()
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
        # Reads whose index is not applied yet: (index, context, future), a
        # heap by index.
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
            transport.start(self.deliver, self.peer_unreachable)
        self.thread = threading.Thread(target=self._run, name=f"embraft-node-{config.id}",
                                       daemon=True)
        self.thread.start()

    # ----- calls from any thread -------------------------------------------------

    def call(self, function: Callable[..., int], *args: Any) -> None:
        """Calls a node function with the handle, raising on failure."""
        with self.lock:
            self._call_locked(function, *args)

    def _call_locked(self, function: Callable[..., int], *args: Any) -> None:
        if self.closing:
            raise ClosedError("the node is closed")
        if self.failure is not None:
            # The driver stopped: nothing would ever complete a new future.
            raise self.failure
        # ptr() raises ClosedError once the handle is freed.
        code = function(self.node.ptr(), *args)
        if code != _ffi.OK:
            raise self.node.error(code)

    def _propose_with(self, function: Callable[..., int], *args: Any) -> "Future[int]":
        future: Future = Future()
        proposal_id = c_uint64()
        with self.lock:
            self._call_locked(function, *args, byref(proposal_id))
            self.proposals[proposal_id.value] = future
        return future

    def propose(self, data: bytes) -> "Future[int]":
        return self._propose_with(lib.embraft_node_propose, data, len(data))

    def propose_conf_change(self, change: int, node_id: int) -> "Future[int]":
        return self._propose_with(lib.embraft_node_propose_conf_change, change, node_id)

    def propose_membership(self, voters: Sequence[int],
                           learners: Sequence[int]) -> "Future[int]":
        voter_ids = (c_uint64 * len(voters))(*voters)
        learner_ids = (c_uint64 * len(learners))(*learners)
        return self._propose_with(lib.embraft_node_propose_membership,
                                  voter_ids, len(voters), learner_ids, len(learners))

    def read_index(self) -> "Future[int]":
        future: Future = Future()
        with self.lock:
            context = next(self._read_contexts)
            self._call_locked(lib.embraft_node_read_index, context)
            self.reads[context] = future
        return future

    def step(self, data: bytes) -> None:
        self.call(lib.embraft_node_step, data, len(data))

    def report_unreachable(self, peer: int) -> None:
        self.call(lib.embraft_node_report_unreachable, peer)

    def transfer_leader(self, to: int) -> None:
        self.call(lib.embraft_node_transfer_leader, to)

    def set_log_level(self, level: int) -> None:
        self.call(lib.embraft_node_set_log_level, level)

    def status(self) -> Status:
        report = _ffi.StatusReportPtr()
        self.call(lib.embraft_node_status, byref(report))
        with StatusReportHandle(report) as handle:
            return handle.decode()

    def metrics(self) -> Metrics:
        raw = _ffi.Metrics()
        self.call(lib.embraft_node_metrics, byref(raw))
        return decode_metrics(raw)

    def deliver(self, data: bytes) -> None:
        """A message from the transport. Busy means the node is behind:
        drop the message, Raft retransmits."""
        try:
            self.step(data)
        except (BusyError, ClosedError):
            pass

    def peer_unreachable(self, peer: int) -> None:
        """The transport's report; dropped like a message when busy."""
        try:
            self.report_unreachable(peer)
        except (BusyError, ClosedError):
            pass

    def submit(self, request: Callable[[], None], future: Future) -> None:
        """Runs `request` on the driver thread (where the state machine
        lives) at its next iteration; `request` completes `future`, which
        fails with ClosedError if the node closes first."""
        with self.lock:
            if self.node.closed or self.closing:
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
            if self.node.closed or self.closing:
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
            self.node.close()
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
            resolve(future, error=error)

    # ----- the driver thread -----------------------------------------------------

    def _run(self) -> None:
        interval = self.config.tick_interval
        next_tick = time.monotonic() + interval
        watched = [self.readiness_fd, self._wake_read]
        # Only this thread and _release (after this thread ended, or on it)
        # free the handle: no lock is needed here.
        node = self.node.ptr()
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
                    code = lib.embraft_node_tick(node)
                    # Busy means the queue is full of work; a lost tick only
                    # stretches a timeout a little.
                    if code not in (_ffi.OK, _ffi.ERR_BUSY):
                        raise self.node.error(code)
                    next_tick = max(next_tick + interval, now)
                if self.readiness_fd in readable:
                    ready = _ffi.ReadyPtr()
                    code = lib.embraft_node_poll_ready(node, 0, byref(ready))
                    if code == _ffi.OK:
                        # The batch stays open while it is handled: a
                        # snapshot to restore is read from its file.
                        with ReadyHandle(ready) as handle:
                            self._process(handle.decode())
                    elif code != _ffi.TIMED_OUT:
                        raise self.node.error(code)
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

    def _process(self, ready: Ready) -> None:
        for line in ready.log_lines:
            core_logger.log(python_level(line.level), "%s", line.text)
        if ready.state is not None:
            self._update_state(ready.state)
        if ready.messages and self.transport is not None:
            send = self.transport.send
            for message in ready.messages:
                send(message.to, message.data)
        if ready.restore is not None:
            self._restore(ready.restore.index, ready.restore.term, ready.restore.path)
        if ready.entries:
            self._apply(ready.entries)
        self._acknowledge()
        self._serve_reads_applied()
        if ready.outcomes:
            self._complete_outcomes(ready.outcomes)
        if ready.reads:
            self._complete_reads(ready.reads)
        if ready.snapshot_wanted is not None:
            logger.info("node %d: snapshot wanted at index %d", self.config.id,
                        ready.snapshot_wanted)
            self._auto_snapshot_due = True

    def _update_state(self, state: StateChange) -> None:
        with self.state_changed:
            self.role, self.leader, self.term = state.role, state.leader, state.term
            self.state_changed.notify_all()
        logger.info("node %d: %s in term %d, leader %d", self.config.id,
                    ROLE_NAMES.get(self.role, self.role), self.term, self.leader)
        for listener in list(self.listeners):
            listener(ROLE_NAMES.get(self.role, str(self.role)), self.leader, self.term)

    def _restore(self, index: int, term: int, path: str) -> None:
        """Restores the state machine from the batch's snapshot file before
        its entries are applied."""
        logger.info("node %d: restoring the snapshot at index %d (term %d) from %s",
                    self.config.id, index, term, path)
        with open(path, "rb") as source:
            self.state_machine.restore(source)
        self.applied = index

    def _apply(self, entries: List[Entry]) -> None:
        apply = self.state_machine.apply
        normal = _ffi.ENTRY_NORMAL
        for entry in entries:
            if entry.kind == normal:
                apply(entry.index, entry.data)
        self.applied = entries[-1].index

    def _acknowledge(self) -> None:
        """Tells the node what was applied (entries, or a restored
        snapshot), unless it already knows."""
        if self.acked >= self.applied:
            return
        code = lib.embraft_node_ack_applied(self.node.ptr(), self.applied)
        if code == _ffi.OK:
            self.acked = self.applied
        elif code == _ffi.ERR_BUSY:
            # Acknowledgements may lag; the next batch's ack covers this one.
            logger.debug("node %d: ack deferred, input queue full", self.config.id)
        else:
            logger.warning("node %d: ack of index %d failed: %s", self.config.id,
                           self.applied, _ffi.status_text(code))

    def _complete_outcomes(self, outcomes: List[Outcome]) -> None:
        finished = []
        with self.lock:
            pop = self.proposals.pop
            for outcome in outcomes:
                future = pop(outcome.proposal, None)
                if future is not None:
                    finished.append((future, outcome.outcome, outcome.index))
        for future, result, log_index in finished:
            if result == _ffi.PROPOSAL_COMMITTED:
                resolve(future, log_index)
            else:
                resolve(future, error=error_for_outcome(result, log_index, self.leader))

    def _complete_reads(self, reads: List[ReadResult]) -> None:
        for read in reads:
            with self.lock:
                future = self.reads.pop(read.context, None)
            if future is None:
                continue
            if read.result != _ffi.READ_OK:
                resolve(future, error=error_for_read(read.result))
            else:
                heapq.heappush(self._reads_waiting_apply, (read.index, read.context, future))
        self._serve_reads_applied()

    def _serve_reads_applied(self) -> None:
        waiting = self._reads_waiting_apply
        while waiting and waiting[0][0] <= self.applied:
            index, _, future = heapq.heappop(waiting)
            resolve(future, index)

    # ----- snapshots ---------------------------------------------------------------

    def snapshot_error(self, code: int) -> EmbraftError:
        """The exception for a snapshot writer's failed call: the reason is
        the node's last error, while the node is open."""
        with self.lock:
            detail = "" if self.node.closed else self.node.last_error()
        return error_for_status(code, detail)

    def begin_snapshot(self, index: int) -> SnapshotWriter:
        """Any thread: a writer for a snapshot at `index`."""
        writer = _ffi.SnapshotWriterPtr()
        self.call(lib.embraft_node_snapshot_begin, index, byref(writer))
        handle = SnapshotWriterHandle(writer)
        try:
            return SnapshotWriter(handle, index, self.snapshot_error)
        except BaseException:
            handle.close()
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
                writer, lambda index, error: resolve(future, index, error))
        except BaseException as exc:
            resolve(future, error=exc)

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


def shutdown_driver(driver: Driver) -> None:
    """The Node's finalizer: a function of the driver alone."""
    driver.shutdown()
