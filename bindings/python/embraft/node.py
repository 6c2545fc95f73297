"""`Node`, the handle users hold: a thin facade over the driver
(embraft.driver), which owns the C node and its thread, and over the
replica's bookkeeping (embraft.replica), which holds the pending futures.
`Replicated` is the API a `Node` shares with a runtime's `Group`.

The driver thread references only the `Driver`, never the `Node`, so a
`Node` the user forgot to close becomes garbage and its finalizer stops the
thread and frees the handle.
"""

from __future__ import annotations

import weakref
from concurrent.futures import Future
from typing import Any, Callable, Optional, Sequence

from . import _ffi
from ._log import TRACE
from .config import Config
from .driver import Driver, DriverBase, shutdown_driver
from .host import StateMachine, Transport
from .metrics import Histogram, Metrics
from .replica import Replica
from .snapshot import SnapshotWriter
from .status import ROLE_NAMES, PeerProgress, Status

# Imported from here before the split; still offered here.
__all__ = ["TRACE", "Config", "Histogram", "Metrics", "Node", "PeerProgress", "Replicated",
           "StateMachine", "Status", "Transport"]


class Replicated:
    """What a replica of a Raft group offers its host: proposals and reads,
    membership and leadership, snapshots, status and metrics. A `Node` is
    one; so is each `Group` of a `Runtime` (embraft.runtime), where member
    ids are runtime ids.

    Every method may be called from any thread. The state machine's methods
    run on the driver thread."""

    _replica: Replica
    _driver: DriverBase

    # ----- proposals and reads ---------------------------------------------------

    def propose(self, data: bytes) -> "Future[int]":
        """Proposes `data` for the replicated log. The future resolves to
        the entry's index once it is committed and applied here, or fails
        with a ProposalDroppedError subclass (NotLeaderError,
        ProposalTooLargeError, ...). Raises TooLargeError at once above the
        configured maximum entry size and BusyError when the input queue
        is full."""
        return self._replica.propose(bytes(data))

    def read_index(self) -> "Future[int]":
        """Asks for a linearizable read point. The future resolves to the
        read index once this replica has applied through it, so the state
        machine can be read right away; it fails with ReadIndexError when
        no leader confirmed the read (retry)."""
        return self._replica.read_index()

    # ----- membership and leadership ---------------------------------------------

    def _conf_change(self, change: int, node_id: int) -> "Future[int]":
        return self._replica.propose_conf_change(change, node_id)

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
        return self._replica.propose_membership(voters, learners)

    def transfer_leadership(self, to: int) -> None:
        """Asks this replica, if it leads, to hand leadership to voter
        `to`; watch `wait_for_leader` for the result."""
        self._replica.transfer_leader(to)

    def wait_for_leader(self, timeout: float, leader: Optional[int] = None) -> int:
        """Waits until a leader is known (or the given one leads) and
        returns its id; raises TimeoutError otherwise."""
        return self._replica.wait_for_leader(timeout, leader)

    def on_state_change(self, listener: Callable[[str, int, int], None]) -> None:
        """Calls `listener(role, leader, term)` on the driver thread at each
        change of role, leader or term."""
        self._replica.listeners.append(listener)

    # ----- snapshots ---------------------------------------------------------------

    def snapshot(self) -> "Future[int]":
        """Takes a snapshot of the state machine at the applied index: on
        the driver thread, `state_machine.snapshot(out)` writes it into a
        file of the replica's `snapshots/` folder; another thread makes it
        durable and hands it to the library, which compacts the log up to
        it, sends it to followers that lag behind the log, and restores
        from it after a restart. Resolves to the snapshot's index; fails
        with StaleSnapshotError when a snapshot at or beyond the applied
        index exists (nothing new was applied since)."""
        future: Future = Future()
        replica = self._replica
        self._driver.submit(lambda: replica.take_snapshot(future), future)
        return future

    def begin_snapshot(self, index: int) -> SnapshotWriter:
        """A writer for a snapshot at `index`, for hosts that serialize
        their state as of an index on a thread of their own (a
        copy-on-write or versioned store): write the state as of `index`,
        then `finish()` (or use it as a context manager). `index` must be
        applied here (NotAppliedError otherwise) and newer than the latest
        snapshot (StaleSnapshotError otherwise)."""
        return self._replica.begin_snapshot(index)

    # ----- observation ---------------------------------------------------------------

    @property
    def role(self) -> str:
        return ROLE_NAMES.get(self._replica.role, str(self._replica.role))

    @property
    def is_leader(self) -> bool:
        return self._replica.role == _ffi.ROLE_LEADER

    @property
    def leader(self) -> int:
        """The leader this replica knows of, or 0."""
        return self._replica.leader

    @property
    def term(self) -> int:
        return self._replica.term

    @property
    def applied_index(self) -> int:
        return self._replica.applied

    def status(self) -> Status:
        """A snapshot of the replica's Raft state and its view of its peers."""
        return self._replica.status()

    def metrics(self) -> Metrics:
        """What the replica and its WAL measured since it started
        (counters, latency histograms, the entry cache): one cheap copy,
        fine to call every second."""
        return self._replica.metrics()


class Node(Replicated):
    """A running embraft node: one Raft group with a WAL of its own.

    Create it with a `Config`, a `StateMachine` and, for more than one node,
    a transport (embraft.transport.StreamTransport). Close it with
    `close()` or use it as a context manager; a node that is garbage
    collected unclosed is closed by its finalizer.

    Every method may be called from any thread. The state machine's methods
    run on the node's own driver thread.
    """

    def __init__(self, config: Config, state_machine: StateMachine,
                 transport: Optional[Transport] = None):
        driver = Driver(config, state_machine, transport)
        self._driver = self._node_driver = driver
        self._replica = driver.replica
        self._finalizer = weakref.finalize(self, shutdown_driver, driver)
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

    # ----- the transport's side ----------------------------------------------------

    def step(self, data: bytes) -> None:
        """Hands the node a message received from a peer (a transport
        normally does this). Raises MessageError for bytes that are not a
        message for this node, BusyError when the input queue is full."""
        self._node_driver.step(bytes(data))

    def report_unreachable(self, peer: int) -> None:
        self._node_driver.report_unreachable(peer)

    def set_log_level(self, level: int) -> None:
        """Sets the level (embraft.LOG_*) of the lines the library logs to
        the "embraft.core" logger."""
        self._node_driver.set_log_level(level)
