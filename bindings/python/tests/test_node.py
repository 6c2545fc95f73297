"""The Pythonic node: lifetimes, futures, error paths, membership,
snapshots."""

import gc
import struct
import threading
import time

import pytest
from conftest import TEST_SEGMENT_BYTES, MemoryStateMachine, single_node_config, wait_until

import embraft
from embraft import _ffi, errors
from embraft.config import _wal_write_method


def node_threads(node_id: int):
    return [t for t in threading.enumerate() if t.name == f"embraft-node-{node_id}"]


# ----- lifetimes ----------------------------------------------------------------

def test_propose_resolves_to_the_commit_index_after_apply(single_node):
    node, machine = single_node
    index = node.propose(b"hello").result(timeout=10)
    assert index > 0
    assert (index, b"hello") in machine.entries
    assert node.applied_index >= index


def test_an_inline_node_commits_and_restarts(tmp_path):
    machine = MemoryStateMachine()
    with embraft.Node(single_node_config(tmp_path, inline=True), machine) as node:
        node.wait_for_leader(10)
        indexes = [node.propose(b"v%d" % i).result(timeout=10) for i in range(20)]
        assert indexes == sorted(indexes)
        assert node.read_index().result(timeout=10) >= indexes[-1]
    again = MemoryStateMachine()
    with embraft.Node(single_node_config(tmp_path, inline=True), again) as node:
        node.wait_for_leader(10)
        assert wait_until(lambda: len(again.entries) >= len(machine.entries), 10)
    assert again.entries[:len(machine.entries)] == machine.entries


def test_read_index_resolves_once_applied(single_node):
    node, _ = single_node
    written = node.propose(b"x").result(timeout=10)
    assert node.read_index().result(timeout=10) >= written


def test_close_twice_is_harmless(tmp_path):
    node = embraft.Node(single_node_config(tmp_path), MemoryStateMachine())
    node.close()
    node.close()
    assert node.closed
    assert not node_threads(1)


def test_use_after_close_raises_closed_error(tmp_path):
    with embraft.Node(single_node_config(tmp_path), MemoryStateMachine()) as node:
        pass
    for call in (lambda: node.propose(b"x"), node.read_index, node.status,
                 lambda: node.step(b"x"), lambda: node.add_voter(2), node.snapshot,
                 lambda: node.begin_snapshot(1),
                 lambda: node.transfer_leadership(2)):
        with pytest.raises(embraft.ClosedError):
            call()


def test_context_manager_releases_the_directory(tmp_path):
    with embraft.Node(single_node_config(tmp_path), MemoryStateMachine()):
        pass
    with embraft.Node(single_node_config(tmp_path), MemoryStateMachine()):
        pass


def test_unclosed_node_is_finalized_by_garbage_collection(tmp_path):
    def forget():
        node = embraft.Node(single_node_config(tmp_path), MemoryStateMachine())
        node.wait_for_leader(10)
        node.propose(b"x").result(timeout=10)

    forget()
    gc.collect()
    assert wait_until(lambda: not node_threads(1), 10)
    # The data directory was released: a new node can open it.
    with embraft.Node(single_node_config(tmp_path), MemoryStateMachine()) as node:
        node.wait_for_leader(10)


@pytest.mark.parametrize("first, then", [("mmap", "pwrite"), ("pwrite", "mmap"),
                                         ("default", "mmap")])
def test_restart_replays_the_committed_log(tmp_path, first, then):
    # The WAL write method may change across restarts: one format.
    config = single_node_config(tmp_path, wal_write_method=first)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        for value in (b"a", b"b", b"c"):
            node.propose(value).result(timeout=10)
    machine = MemoryStateMachine()
    again = single_node_config(tmp_path, wal_write_method=then)
    with embraft.Node(again, machine):
        assert wait_until(lambda: machine.values() == [b"a", b"b", b"c"], 10)


# ----- error paths --------------------------------------------------------------

def test_invalid_config_raises_config_error(tmp_path):
    with pytest.raises(embraft.ConfigError, match="node id 0"):
        embraft.Node(embraft.Config(id=0, peers=[1], data_dir=str(tmp_path / "w")),
                     MemoryStateMachine())
    with pytest.raises(embraft.ConfigError):
        embraft.Node(single_node_config(tmp_path, election_ticks=1, heartbeat_ticks=1),
                     MemoryStateMachine())
    with pytest.raises(embraft.ConfigError, match="wal_write_method 'fast'"):
        embraft.Node(single_node_config(tmp_path, wal_write_method="fast"),
                     MemoryStateMachine())


def test_wal_pwrite_is_a_deprecated_alias(tmp_path):
    with pytest.warns(DeprecationWarning, match="wal_write_method"):
        config = single_node_config(tmp_path, wal_pwrite=False)
    assert _wal_write_method(config) == _ffi.WAL_WRITE_MMAP
    with pytest.warns(DeprecationWarning):
        config = single_node_config(tmp_path, wal_pwrite=True, wal_write_method="mmap")
    with pytest.raises(embraft.ConfigError, match="contradicts"):
        embraft.Node(config, MemoryStateMachine())


def test_unusable_directory_raises_storage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(embraft.StorageError):
        embraft.Node(embraft.Config(id=1, peers=[1], data_dir=str(tmp_path / "file" / "w")),
                     MemoryStateMachine())


def test_second_node_on_a_directory_raises_directory_locked(single_node, tmp_path):
    with pytest.raises(embraft.DirectoryLockedError):
        embraft.Node(single_node_config(tmp_path), MemoryStateMachine())


def test_oversized_proposal_raises_too_large(tmp_path):
    config = single_node_config(tmp_path, max_entry_bytes=100)
    with embraft.Node(config, MemoryStateMachine()) as node:
        with pytest.raises(embraft.TooLargeError):
            node.propose(b"x" * 101)
        node.wait_for_leader(10)
        assert node.propose(b"x" * 100).result(timeout=10) > 0


def test_full_input_queue_raises_busy(tmp_path):
    config = single_node_config(tmp_path, input_queue_capacity=1)
    with embraft.Node(config, MemoryStateMachine()) as node:
        with pytest.raises(embraft.BusyError):
            for _ in range(100000):
                node.propose(b"x")


def test_malformed_message_raises(single_node):
    node, _ = single_node
    with pytest.raises(embraft.MalformedMessageError):
        node.step(b"not a message")


def test_message_for_another_node_raises_wrong_recipient(single_node):
    node, _ = single_node
    # A TimeoutNow (WIRE.md: version 1, tag 0x09, from, to, term; no body).
    timeout_now = struct.pack("<BBQQQ", 1, 9, 2, 99, 1)
    with pytest.raises(embraft.WrongRecipientError):
        node.step(timeout_now)


def test_invalid_log_level_raises_invalid_argument(single_node):
    node, _ = single_node
    with pytest.raises(embraft.InvalidArgumentError):
        node.set_log_level(99)


def test_follower_proposal_fails_with_not_leader(tmp_path):
    # Node 1 of a two-voter cluster whose peer never starts: never a leader.
    config = embraft.Config(id=1, peers=[1, 2], data_dir=str(tmp_path / "w"),
                            tick_interval=0.02, segment_size=TEST_SEGMENT_BYTES)
    with embraft.Node(config, MemoryStateMachine()) as node:
        with pytest.raises(embraft.NotLeaderError):
            node.propose(b"x").result(timeout=10)
        with pytest.raises(embraft.ReadIndexError):
            node.read_index().result(timeout=10)
        with pytest.raises(TimeoutError):
            node.wait_for_leader(0.2)


def test_invalid_membership_change_fails(single_node):
    node, _ = single_node
    with pytest.raises(embraft.MembershipChangeError):
        node.remove_node(42).result(timeout=10)


def test_status_reports_membership(single_node):
    node, _ = single_node
    status = node.status()
    assert status.role == "leader" and status.leader == 1 and status.voters == [1]
    assert status.commit >= 1


# ----- snapshots and clusters ---------------------------------------------------

def test_snapshot_compacts_and_restart_restores_it(tmp_path):
    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        for value in (b"a", b"b"):
            node.propose(value).result(timeout=10)
        snapshot_index = node.snapshot().result(timeout=10)
        # compact() is queued: the status catches up shortly.
        assert wait_until(lambda: node.status().snapshot_index == snapshot_index, 10)
        node.propose(b"c").result(timeout=10)
    machine = MemoryStateMachine()
    with embraft.Node(config, machine):
        assert wait_until(lambda: machine.values() == [b"a", b"b", b"c"], 10)
        assert machine.restored == [b"a\nb"]


def test_three_nodes_replicate_and_transfer_leadership(local_cluster):
    for node_id in (1, 2, 3):
        local_cluster.start(node_id, [1, 2, 3])
    leader_id = local_cluster.nodes[1].wait_for_leader(10)
    leader = local_cluster.nodes[leader_id]
    futures = [leader.propose(b"v%d" % i) for i in range(100)]
    last = max(future.result(timeout=10) for future in futures)
    machines = local_cluster.machines.values()
    assert wait_until(lambda: all(len(m.values()) == 100 for m in machines), 10)
    assert all(node.read_index().result(timeout=10) >= last
               for node in local_cluster.nodes.values())
    target = next(i for i in (1, 2, 3) if i != leader_id)
    leader.transfer_leadership(target)
    assert local_cluster.nodes[target].wait_for_leader(10, leader=target) == target
    assert local_cluster.nodes[target].propose(b"after").result(timeout=10) > last


def test_an_idle_cluster_goes_quiet_and_a_proposal_wakes_it(local_cluster):
    for node_id in (1, 2, 3):
        local_cluster.start(node_id, [1, 2, 3], quiesce_ticks=5)
    nodes = local_cluster.nodes.values()
    leader = local_cluster.nodes[local_cluster.nodes[1].wait_for_leader(10)]
    leader.propose(b"before").result(timeout=10)
    assert wait_until(lambda: all(node.status().quiescent for node in nodes), 10)
    # Quiet for many election timeouts (10 ticks of 20 ms): nobody campaigns.
    term = leader.status().term
    time.sleep(1.0)
    assert all(node.status().quiescent and node.status().term == term for node in nodes)
    index = leader.propose(b"after").result(timeout=10)
    assert all(node.read_index().result(timeout=10) >= index for node in nodes)
    assert wait_until(lambda: all(node.status().quiescent for node in nodes), 10)


def test_new_member_catches_up_from_a_streamed_snapshot(local_cluster):
    first = local_cluster.start(1, [1], compact_keep_entries=0)
    first.wait_for_leader(10)
    for i in range(20):
        first.propose(b"k%d" % i).result(timeout=10)
    first.snapshot().result(timeout=10)
    local_cluster.start(2, [])
    # As a learner first, the usual way to grow a cluster: it catches up
    # without counting toward the quorum, then is promoted.
    first.add_learner(2).result(timeout=10)
    joined = local_cluster.machines[2]
    expected = [b"k%d" % i for i in range(20)]
    assert wait_until(lambda: joined.values() == expected, 20), joined.values()
    assert joined.restored, "the new member should have restored a snapshot"
    # The leader promotes only once it has heard that the learner caught
    # up, which may lag what the learner applied: retry as a host would.
    deadline = time.monotonic() + 20
    while True:
        try:
            first.promote_learner(2).result(timeout=10)
            break
        except embraft.MembershipChangeError as error:
            if error.outcome != _ffi.PROPOSAL_DROPPED_LEARNER_BEHIND or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    first.propose(b"last").result(timeout=10)
    assert wait_until(lambda: joined.values() == expected + [b"last"], 20)


def test_state_machine_failure_fails_pending_futures(tmp_path):
    class Failing(MemoryStateMachine):
        def apply(self, index, data):
            raise RuntimeError("broken state machine")

    with embraft.Node(single_node_config(tmp_path), Failing()) as node:
        node.wait_for_leader(10)
        with pytest.raises(embraft.NodeFailedError):
            node.propose(b"x").result(timeout=10)


def test_closing_from_the_driver_thread_defers_the_free(tmp_path):
    holder = {}

    class ClosesItsNode(MemoryStateMachine):
        def apply(self, index, data):
            super().apply(index, data)
            holder["node"].close()  # runs on the driver thread

    node = embraft.Node(single_node_config(tmp_path), ClosesItsNode())
    holder["node"] = node
    node.wait_for_leader(10)
    future = node.propose(b"x")
    assert wait_until(lambda: not node_threads(1), 10)
    assert node.closed
    # The batch being handled when close() was called is finished first.
    assert future.result(timeout=10) > 0
    with pytest.raises(embraft.ClosedError):
        node.propose(b"y")
    with embraft.Node(single_node_config(tmp_path), MemoryStateMachine()):
        pass


def test_proposal_during_a_leadership_transfer_fails(local_cluster):
    for node_id in (1, 2, 3):
        local_cluster.start(node_id, [1, 2, 3])
    leader_id = local_cluster.nodes[1].wait_for_leader(10)
    leader = local_cluster.nodes[leader_id]
    leader.propose(b"before").result(timeout=10)
    # A transfer to a stopped voter stays under way for an election timeout.
    target = next(i for i in (1, 2, 3) if i != leader_id)
    local_cluster.nodes[target].close()
    leader.transfer_leadership(target)
    with pytest.raises(embraft.TransferInProgressError):
        leader.propose(b"during").result(timeout=10)


# Every status code and outcome maps to its documented exception.
STATUS_EXCEPTIONS = {
    _ffi.ERR_NULL_ARGUMENT: embraft.InvalidArgumentError,
    _ffi.ERR_INVALID_ARGUMENT: embraft.InvalidArgumentError,
    _ffi.ERR_INVALID_CONFIG: embraft.ConfigError,
    _ffi.ERR_BUSY: embraft.BusyError,
    _ffi.ERR_MALFORMED_MESSAGE: embraft.MalformedMessageError,
    _ffi.ERR_WRONG_RECIPIENT: embraft.WrongRecipientError,
    _ffi.ERR_TOO_LARGE: embraft.TooLargeError,
    _ffi.ERR_NOT_DELIVERED: embraft.NotDeliveredError,
    _ffi.ERR_OUT_OF_RANGE: embraft.InvalidArgumentError,
    _ffi.ERR_DIRECTORY_LOCKED: embraft.DirectoryLockedError,
    _ffi.ERR_STORAGE: embraft.StorageError,
    _ffi.ERR_NODE_FAILED: embraft.NodeFailedError,
    _ffi.ERR_RESOURCE: embraft.ResourceError,
    _ffi.ERR_PANIC: embraft.InternalError,
    _ffi.ERR_NOT_APPLIED: embraft.NotAppliedError,
    _ffi.ERR_STALE_SNAPSHOT: embraft.StaleSnapshotError,
    _ffi.ERR_CORRUPT: embraft.CorruptError,
    _ffi.ERR_UNKNOWN_GROUP: embraft.UnknownGroupError,
    _ffi.ERR_GROUP_EXISTS: embraft.GroupExistsError,
}


def test_every_error_status_of_the_header_has_an_exception():
    codes = [value for name, value in vars(_ffi).items()
             if name.startswith("ERR_") and isinstance(value, int)]
    assert sorted(codes) == sorted(STATUS_EXCEPTIONS)


def test_snapshot_exceptions_are_grouped():
    assert issubclass(embraft.NotAppliedError, embraft.SnapshotError)
    assert issubclass(embraft.StaleSnapshotError, embraft.SnapshotError)
    # Corrupt data is a storage problem: existing handlers still catch it.
    assert issubclass(embraft.CorruptError, embraft.StorageError)


@pytest.mark.parametrize("code,expected", sorted(STATUS_EXCEPTIONS.items()))
def test_status_codes_map_to_exceptions(code, expected):
    error = errors.error_for_status(code, "detail")
    assert type(error) is expected and error.status == code
    assert "detail" in str(error)


@pytest.mark.parametrize("outcome,expected", [
    (_ffi.PROPOSAL_DROPPED_NOT_LEADER, embraft.NotLeaderError),
    (_ffi.PROPOSAL_DROPPED_TRANSFER, embraft.TransferInProgressError),
    (_ffi.PROPOSAL_DROPPED_TOO_LARGE, embraft.ProposalTooLargeError),
    (_ffi.PROPOSAL_DROPPED_SUPERSEDED, embraft.SupersededError),
    (_ffi.PROPOSAL_DROPPED_CONF_CHANGE_PENDING, embraft.MembershipChangeError),
    (_ffi.PROPOSAL_DROPPED_CONF_CHANGE_INVALID, embraft.MembershipChangeError),
    (_ffi.PROPOSAL_DROPPED_LEARNER_BEHIND, embraft.MembershipChangeError),
    (_ffi.PROPOSAL_UNKNOWN, embraft.OutcomeUnknownError),
])
def test_outcomes_map_to_exceptions(outcome, expected):
    error = errors.error_for_outcome(outcome, 7, 3)
    assert type(error) is expected
    if expected is embraft.NotLeaderError:
        assert error.leader == 3
    if expected is embraft.OutcomeUnknownError:
        assert error.index == 7
    else:
        assert isinstance(error, embraft.ProposalDroppedError) and error.outcome == outcome
    assert isinstance(errors.error_for_outcome(_ffi.PROPOSAL_DROPPED_TOO_LARGE, 0, 0),
                      embraft.TooLargeError)


@pytest.mark.parametrize("result", [_ffi.READ_NO_LEADER, _ffi.READ_LEADERSHIP_LOST,
                                    _ffi.READ_REFUSED, _ffi.READ_BUSY])
def test_read_failures_map_to_read_index_error(result):
    error = errors.error_for_read(result)
    assert isinstance(error, embraft.ReadIndexError) and error.result == result
