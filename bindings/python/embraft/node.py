"""`Node`, the handle users hold: a thin facade over the driver
(embraft.driver), which owns the C node, its thread and the pending
futures.

The driver thread references only the `Driver`, never the `Node`, so a
`Node` the user forgot to close becomes garbage and its finalizer stops the
thread and frees the handle.
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Optional, Sequence

from . import _ffi
from ._log import TRACE
from .config import Config
from .driver import Driver, shutdown_driver
from .host import StateMachine, Transport
from .metrics import Histogram, Metrics
from .snapshot import SnapshotWriter
from .status import ROLE_NAMES, PeerProgress, Status

# Imported from here before the split; still offered here.
__all__ = ["TRACE", "Config", "Histogram", "Metrics", "Node", "PeerProgress", "StateMachine",
           "Status", "Transport"]


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
        self._driver = Driver(config, state_machine, transport)
        self._finalizer = weakref.finalize(self, shutdown_driver, self._driver)
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
        return self._driver.propose(bytes(data))

    def read_index(self) -> "Future[int]":
        """Asks for a linearizable read point. The future resolves to the
        read index once this node has applied through it, so the state
        machine can be read right away; it fails with ReadIndexError when
        no leader confirmed the read (retry)."""
        return self._driver.read_index()

    # ----- membership and leadership ---------------------------------------------

    def _conf_change(self, change: int, node_id: int) -> "Future[int]":
        return self._driver.propose_conf_change(change, node_id)

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
        return self._driver.propose_membership(voters, learners)

    def transfer_leadership(self, to: int) -> None:
        """Asks this node, if it leads, to hand leadership to voter `to`;
        watch `wait_for_leader` for the result."""
        self._driver.transfer_leader(to)

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
        self._driver.step(bytes(data))

    def report_unreachable(self, peer: int) -> None:
        self._driver.report_unreachable(peer)

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
        self._driver.set_log_level(level)

    def status(self) -> Status:
        """A snapshot of the node's Raft state and its view of its peers."""
        return self._driver.status()

    def metrics(self) -> Metrics:
        """What the node and its WAL measured since it started (counters,
        latency histograms, the entry cache): one cheap copy, fine to call
        every second."""
        return self._driver.metrics()
