"""The bookkeeping of one Raft replica on its host's side, shared by a
one-group node (embraft.driver) and each group of a runtime
(embraft.runtime): the futures of proposals and reads, what was applied
and acknowledged, the role, leader and term, restores, and snapshots
(asked for, automatic, and finished off the driver thread).

A `Replica` calls the library through its `ReplicaHost`, which knows the
handle (a node, or a runtime and a group id), the lock that keeps it
alive and the driver thread that runs the state machine.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from concurrent.futures import Future
from ctypes import byref, c_uint64
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from . import _ffi
from ._log import core_logger, logger, python_level
from .errors import (
    BusyError,
    ClosedError,
    EmbraftError,
    StaleSnapshotError,
    error_for_outcome,
    error_for_read,
    error_for_status,
)
from .host import StateMachine
from .metrics import Metrics, decode_metrics
from .ready import Entry, Outcome, ReadResult, Ready, StateChange
from .snapshot import SnapshotWriter, SnapshotWriterHandle
from .status import ROLE_NAMES, Status, StatusReportHandle

# An automatic snapshot that failed is tried again after this many seconds,
# doubling up to the maximum while it keeps failing.
AUTO_SNAPSHOT_RETRY = 1.0
AUTO_SNAPSHOT_RETRY_MAX = 60.0


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


class ReplicaHost(Protocol):
    """What a replica needs from the driver that owns its handle."""

    # Guards the handle against being freed during a call, and the
    # replicas' maps of pending futures.
    lock: threading.Lock
    closing: bool

    def invoke_locked(self, call: str, group: int, *args: Any) -> None:
        """Calls `embraft_node_<call>(node, *args)` or
        `embraft_runtime_<call>(runtime, group, *args)` under `lock`,
        raising the binding's exception on failure (ClosedError once
        closed, the driver's failure once it stopped)."""

    def error_detail(self) -> str:
        """The handle's last error message ("" once freed)."""

    def wake(self) -> None:
        """Interrupts the driver thread's wait."""


class Replica:
    """One replica's host-side state. Calls marked "driver thread" run
    on the thread that owns the state machine; the others on any."""

    def __init__(self, host: ReplicaHost, group: int, state_machine: StateMachine,
                 applied: int, name: str):
        self.host = host
        self.group = group
        self.state_machine = state_machine
        # For log lines: "node 3" or "runtime 3 group 7".
        self.name = name
        self.proposals: Dict[int, Future] = {}
        self.reads: Dict[int, Future] = {}
        self._read_contexts = itertools.count(1)
        # Reads whose index is not applied yet: (index, context, future), a
        # heap by index.
        self._reads_waiting_apply: List[Tuple[int, int, Future]] = []
        self.role = _ffi.ROLE_FOLLOWER
        self.leader = 0
        self.term = 0
        self.applied = applied
        # The highest index the library was told is applied (acks may be
        # deferred when its input queue is full).
        self.acked = applied
        # Threads finishing snapshots off the driver thread.
        self.finishers: List[threading.Thread] = []
        # Automatic snapshots: asked for by the library, taken on the
        # driver thread, retried after a failure.
        self.auto_snapshot_due = False
        self._auto_snapshot_running = False
        self._auto_snapshot_at = 0.0
        self._auto_snapshot_backoff = AUTO_SNAPSHOT_RETRY
        self.state_changed = threading.Condition()
        self.listeners: List[Callable[[str, int, int], None]] = []
        # Set when the replica stops for good (its group stopped, or the
        # driver closed): wait_for_leader gives up.
        self.stopped = False

    # ----- calls from any thread -------------------------------------------------

    def call(self, name: str, *args: Any) -> None:
        with self.host.lock:
            self.host.invoke_locked(name, self.group, *args)

    def _propose_with(self, name: str, *args: Any) -> "Future[int]":
        future: Future = Future()
        proposal_id = c_uint64()
        with self.host.lock:
            self.host.invoke_locked(name, self.group, *args, byref(proposal_id))
            self.proposals[proposal_id.value] = future
        return future

    def propose(self, data: bytes) -> "Future[int]":
        return self._propose_with("propose", data, len(data))

    def propose_conf_change(self, change: int, node_id: int) -> "Future[int]":
        return self._propose_with("propose_conf_change", change, node_id)

    def propose_membership(self, voters: Sequence[int],
                           learners: Sequence[int]) -> "Future[int]":
        voter_ids = (c_uint64 * len(voters))(*voters)
        learner_ids = (c_uint64 * len(learners))(*learners)
        return self._propose_with("propose_membership", voter_ids, len(voters),
                                  learner_ids, len(learners))

    def read_index(self) -> "Future[int]":
        future: Future = Future()
        with self.host.lock:
            context = next(self._read_contexts)
            self.host.invoke_locked("read_index", self.group, context)
            self.reads[context] = future
        return future

    def transfer_leader(self, to: int) -> None:
        self.call("transfer_leader", to)

    def status(self) -> Status:
        report = _ffi.StatusReportPtr()
        self.call("status", byref(report))
        with StatusReportHandle(report) as handle:
            return handle.decode()

    def metrics(self) -> Metrics:
        raw = _ffi.Metrics()
        self.call("metrics", byref(raw))
        return decode_metrics(raw)

    def wait_for_leader(self, timeout: float, leader: Optional[int] = None) -> int:
        deadline = time.monotonic() + timeout
        with self.state_changed:
            while (self.leader == 0 if leader is None else self.leader != leader):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopped or self.host.closing:
                    raise TimeoutError(f"no leader within {timeout} s")
                self.state_changed.wait(remaining)
            return self.leader

    def pending(self) -> List[Future]:
        """Takes every pending future away (the caller holds the lock)."""
        pending = list(self.proposals.values()) + list(self.reads.values())
        pending += [future for _, _, future in self._reads_waiting_apply]
        self.proposals.clear()
        self.reads.clear()
        self._reads_waiting_apply.clear()
        return pending

    def stop(self) -> None:
        with self.state_changed:
            self.stopped = True
            self.state_changed.notify_all()

    # ----- the driver thread: one batch -----------------------------------------------

    def process(self, ready: Ready) -> None:
        """Driver thread: everything of the replica's batch but its
        messages, which the driver sent first, in the order FFI.md asks:
        restore, apply, acknowledge, then complete what waited on them."""
        for line in ready.log_lines:
            core_logger.log(python_level(line.level), "%s", line.text)
        if ready.state is not None:
            self._update_state(ready.state)
        if ready.restore is not None:
            self._restore(ready.restore.index, ready.restore.term, ready.restore.path)
        if ready.entries:
            self._apply(ready.entries)
        self.acknowledge()
        self._serve_reads_applied()
        if ready.outcomes:
            self._complete_outcomes(ready.outcomes)
        if ready.reads:
            self._complete_reads(ready.reads)
        if ready.snapshot_wanted is not None:
            logger.info("%s: snapshot wanted at index %d", self.name, ready.snapshot_wanted)
            self.auto_snapshot_due = True

    def _update_state(self, state: StateChange) -> None:
        with self.state_changed:
            self.role, self.leader, self.term = state.role, state.leader, state.term
            self.state_changed.notify_all()
        logger.info("%s: %s in term %d, leader %d", self.name,
                    ROLE_NAMES.get(self.role, self.role), self.term, self.leader)
        for listener in list(self.listeners):
            listener(ROLE_NAMES.get(self.role, str(self.role)), self.leader, self.term)

    def _restore(self, index: int, term: int, path: str) -> None:
        """Restores the state machine from the batch's snapshot file before
        its entries are applied."""
        logger.info("%s: restoring the snapshot at index %d (term %d) from %s",
                    self.name, index, term, path)
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

    def acknowledge(self) -> None:
        """Tells the library what was applied (entries, or a restored
        snapshot), unless it already knows."""
        if self.acked >= self.applied:
            return
        try:
            with self.host.lock:
                self.host.invoke_locked("ack_applied", self.group, self.applied)
        except BusyError:
            # Acknowledgements may lag; the next batch's ack covers this one.
            logger.debug("%s: ack deferred, input queue full", self.name)
        except ClosedError:
            pass
        except EmbraftError as exc:
            logger.warning("%s: ack of index %d failed: %s", self.name, self.applied, exc)
        else:
            self.acked = self.applied

    def _complete_outcomes(self, outcomes: List[Outcome]) -> None:
        finished = []
        with self.host.lock:
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
            with self.host.lock:
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
        the handle's last error, while it is open."""
        with self.host.lock:
            detail = self.host.error_detail()
        return error_for_status(code, detail)

    def begin_snapshot(self, index: int) -> SnapshotWriter:
        """Any thread: a writer for a snapshot at `index`."""
        writer = _ffi.SnapshotWriterPtr()
        self.call("snapshot_begin", index, byref(writer))
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
        self.acknowledge()
        if self.acked < index:
            raise BusyError(f"the input queue is full: index {index} cannot be "
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
                with self.host.lock:
                    self.finishers.remove(thread)

        thread = threading.Thread(target=run, daemon=True,
                                  name=f"embraft-snapshot-{self.name}-{writer.index}")
        with self.host.lock:
            self.finishers.append(thread)
        try:
            thread.start()
        except BaseException:
            with self.host.lock:
                self.finishers.remove(thread)
            writer.abort()
            raise

    def take_snapshot(self, future: Future) -> None:
        """Driver thread: a snapshot of the state machine at the applied
        index; `future` resolves to the index once it is durable and handed
        to the library (which then compacts the log)."""
        try:
            writer = self.write_snapshot()
            self.finish_snapshot(
                writer, lambda index, error: resolve(future, index, error))
        except BaseException as exc:
            resolve(future, error=exc)

    def auto_snapshot(self) -> None:
        """Driver thread: takes the snapshot the library asked for, unless
        one is being finished or a failed one waits to be retried."""
        if self._auto_snapshot_running or time.monotonic() < self._auto_snapshot_at:
            return
        self.auto_snapshot_due = False
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
            logger.info("%s: snapshot taken at index %s", self.name, index)
            self._auto_snapshot_backoff = AUTO_SNAPSHOT_RETRY
            return
        if isinstance(error, StaleSnapshotError):
            # A snapshot at least as recent exists: nothing to retry.
            logger.info("%s: snapshot not needed: %s", self.name, error)
            return
        if isinstance(error, ClosedError) or self.host.closing or self.stopped:
            return
        delay = self._auto_snapshot_backoff
        self._auto_snapshot_backoff = min(delay * 2, AUTO_SNAPSHOT_RETRY_MAX)
        logger.warning("%s: snapshot failed (retrying in %.0f s): %s", self.name, delay, error)
        self.auto_snapshot_due = True
        self._auto_snapshot_at = time.monotonic() + delay
        self.host.wake()
