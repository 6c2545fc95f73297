"""The drivers: each owns a C handle (a node, or a runtime of many groups),
runs its ready loop on a thread of its own, and has the replicas'
bookkeeping (embraft.replica) complete the futures of proposals, reads
and snapshots.

A driver references no facade (`Node`, `Runtime`, `Group`) users hold, so
that one its user forgot becomes garbage and its finalizer can stop the
driver.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from concurrent.futures import Future
from ctypes import byref, c_int
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from . import _ffi
from ._ffi import lib
from ._log import logger
from ._managed import Managed
from .config import Config, ConfigHandle
from .errors import (
    BusyError,
    ClosedError,
    EmbraftError,
    NodeFailedError,
    ResourceError,
    error_for_status,
)
from .host import StateMachine, Transport
from .ready import ReadyHandle
from .replica import Replica, resolve

__all__ = ["Driver", "DriverBase", "NodeHandle", "resolve", "shutdown_driver"]


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


class DriverBase:
    """What every driver does around its handle: the lock that keeps the
    handle alive during calls, the thread that waits on the handle's
    readiness descriptor and ticks it, requests run on that thread,
    shutdown, and failing what is pending when it stops.

    Subclasses provide the handle (`handle`, a Managed with `error(code)`
    and `last_error()`), `invoke_locked`, `_tick`, `_poll`, `_replicas`."""

    handle: Any
    what: str

    def __init__(self, transport: Optional[Transport], tick_interval: float, name: str):
        self.transport = transport
        self.tick_interval = tick_interval
        self.name = name
        self.lock = threading.Lock()
        self.closing = False
        self._release_on_exit = False
        self.failure: Optional[EmbraftError] = None
        # Work for the driver thread, each with the future it completes.
        self._requests: Deque[Tuple[Callable[[], None], Future]] = deque()
        self.readiness_fd = -1
        self.thread = threading.Thread(target=self._run, name=f"embraft-{name}", daemon=True)

    def _open_wakeup(self, readiness: Callable[..., int]) -> None:
        """Reads the handle's readiness descriptor and opens the pipe that
        lets close() and submit() interrupt the driver's select()."""
        fd = c_int()
        code = readiness(self.handle.ptr(), byref(fd))
        if code != _ffi.OK:
            raise self.handle.error(code)
        self.readiness_fd = fd.value
        try:
            self._wake_read, self._wake_write = os.pipe()
        except OSError as exc:
            raise ResourceError(f"cannot create a pipe: {exc}", _ffi.ERR_RESOURCE) from exc

    def _check_open(self) -> None:
        if self.closing:
            raise ClosedError(f"the {self.what} is closed")
        if self.failure is not None:
            # The driver stopped: nothing would ever complete a new future.
            raise self.failure

    def error_detail(self) -> str:
        return "" if self.handle.closed else self.handle.last_error()

    def submit(self, request: Callable[[], None], future: Future) -> None:
        """Runs `request` on the driver thread (where the state machines
        live) at its next iteration; `request` completes `future`, which
        fails with ClosedError if the driver closes first."""
        with self.lock:
            if self.handle.closed or self.closing:
                raise ClosedError(f"the {self.what} is closed")
            self._requests.append((request, future))
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass

    # ----- to override -------------------------------------------------------------

    def invoke_locked(self, call: str, group: int, *args: Any) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        raise NotImplementedError

    def _poll(self) -> None:
        """Takes and handles the output waiting on the handle."""
        raise NotImplementedError

    def _replicas(self) -> Iterable[Replica]:
        raise NotImplementedError

    # ----- shutdown --------------------------------------------------------------

    def shutdown(self) -> None:
        """Stops the thread, fails what is pending and frees the handle.
        Safe to call several times, from a finalizer, and from the driver
        thread itself (a state machine closing its node, or a garbage
        collection that happens to run there): the loop then finishes the
        job when it unwinds, since the handle must outlive its last use."""
        with self.lock:
            if self.handle.closed or self.closing:
                return
            self.closing = True
        if threading.current_thread() is self.thread:
            self._release_on_exit = True
            return
        self.wake()
        self.thread.join()
        self._release()

    def _release(self) -> None:
        if self.transport is not None:
            self.transport.close()
        # Snapshots being finished complete first: the library records them
        # without the host's help, so this wait is bounded by their I/O.
        # (A future's callback may close the node from a finisher thread.)
        with self.lock:
            finishers = [thread for replica in self._replicas() for thread in replica.finishers]
        for thread in finishers:
            if thread is not threading.current_thread():
                thread.join()
        with self.lock:
            self.handle.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
        self._fail_pending(self.failure or ClosedError(f"the {self.what} was closed"))

    def _fail_pending(self, error: EmbraftError) -> None:
        with self.lock:
            pending = [future for replica in self._replicas() for future in replica.pending()]
            pending += [future for _, future in self._requests]
            self._requests.clear()
        for replica in self._replicas():
            replica.stop()
        for future in pending:
            resolve(future, error=error)

    # ----- the driver thread -----------------------------------------------------

    def _run(self) -> None:
        interval = self.tick_interval
        next_tick = time.monotonic() + interval
        watched = [self.readiness_fd, self._wake_read]
        try:
            while not self.closing:
                timeout = max(0.0, next_tick - time.monotonic())
                readable, _, _ = select.select(watched, [], [], timeout)
                if self._wake_read in readable:
                    os.read(self._wake_read, 4096)
                while self._requests:
                    request, _ = self._requests.popleft()
                    request()
                for replica in self._replicas():
                    if replica.auto_snapshot_due:
                        replica.auto_snapshot()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick = max(next_tick + interval, now)
                if self.readiness_fd in readable:
                    self._poll()
        except BaseException as exc:  # the loop cannot continue: say why to every waiter
            if isinstance(exc, EmbraftError):
                self.failure = exc
            else:
                logger.exception("%s stopped: its driver failed", self.name)
                self.failure = NodeFailedError(f"the driver thread failed: {exc!r}")
            self._fail_pending(self.failure)
        finally:
            if self._release_on_exit:
                self._release()

    def send(self, to: int, data: bytes) -> None:
        """Driver thread: hands the transport one payload for peer `to`."""
        if self.transport is not None:
            self.transport.send(to, data)

    def deliver_with(self, step: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """The transport's `deliver`: a busy or closed handle drops the
        payload (Raft retransmits); malformed bytes raise to the transport."""
        def deliver(data: bytes) -> None:
            try:
                step(data)
            except (BusyError, ClosedError):
                pass
        return deliver


class Driver(DriverBase):
    """The driver of a one-group node: one C node, one replica."""

    what = "node"

    def __init__(self, config: Config, state_machine: StateMachine,
                 transport: Optional[Transport]):
        super().__init__(transport, config.tick_interval, f"node-{config.id}")
        self.config = config
        self.handle = self.node = NodeHandle.new(config)
        self._functions: Dict[str, Callable[..., int]] = {}
        try:
            self._open_wakeup(lib.embraft_node_readiness_fd)
        except BaseException:
            self.node.close()
            raise
        self.replica = Replica(self, 0, state_machine, config.applied_index,
                               f"node {config.id}")
        if transport is not None:
            transport.start(self.deliver_with(self.step), self.peer_unreachable)
        self.thread.start()

    def invoke_locked(self, call: str, group: int, *args: Any) -> None:
        function = self._functions.get(call)
        if function is None:
            function = self._functions[call] = getattr(lib, f"embraft_node_{call}")
        self._check_open()
        # ptr() raises ClosedError once the handle is freed.
        code = function(self.node.ptr(), *args)
        if code != _ffi.OK:
            raise self.node.error(code)

    def call(self, name: str, *args: Any) -> None:
        with self.lock:
            self.invoke_locked(name, 0, *args)

    def step(self, data: bytes) -> None:
        self.call("step", data, len(data))

    def report_unreachable(self, peer: int) -> None:
        self.call("report_unreachable", peer)

    def set_log_level(self, level: int) -> None:
        self.call("set_log_level", level)

    def peer_unreachable(self, peer: int) -> None:
        """The transport's report; dropped like a message when busy."""
        try:
            self.report_unreachable(peer)
        except (BusyError, ClosedError):
            pass

    def _replicas(self) -> List[Replica]:
        return [self.replica]

    def _tick(self) -> None:
        # Only this thread and _release (after this thread ended, or on it)
        # free the handle: no lock is needed here.
        code = lib.embraft_node_tick(self.node.ptr())
        # Busy means the queue is full of work; a lost tick only stretches
        # a timeout a little.
        if code not in (_ffi.OK, _ffi.ERR_BUSY):
            raise self.node.error(code)

    def _poll(self) -> None:
        ready = _ffi.ReadyPtr()
        code = lib.embraft_node_poll_ready(self.node.ptr(), 0, byref(ready))
        if code == _ffi.OK:
            # The batch stays open while it is handled: a snapshot to
            # restore is read from its file.
            with ReadyHandle(ready) as handle:
                batch = handle.decode()
                for message in batch.messages:
                    self.send(message.to, message.data)
                self.replica.process(batch)
        elif code != _ffi.TIMED_OUT:
            raise self.node.error(code)


def shutdown_driver(driver: DriverBase) -> None:
    """A facade's finalizer: a function of the driver alone."""
    driver.shutdown()
