"""embraft.Runtime: many groups per process on the library's runtime,
three runtimes joined by the real GroupStreamTransport on loopback."""

import collections
import concurrent.futures
import gc
import os
import time

import pytest
from conftest import TEST_SEGMENT_BYTES, MemoryStateMachine, wait_until

import embraft
from embraft.transport import GroupStreamTransport

CLUSTER = 7
GROUPS = range(1, 101)
RUNTIMES = (1, 2, 3)


def runtime_config(directory, runtime_id, **options):
    options.setdefault("segment_size", TEST_SEGMENT_BYTES)
    return embraft.Config(id=runtime_id, data_dir=str(directory / f"rt{runtime_id}"), **options)


class RuntimeCluster:
    """Three runtimes in this process, each running every group."""

    def __init__(self, directory, groups=GROUPS, **options):
        self.directory = directory
        self.groups = list(groups)
        self.options = options
        self.addresses = {}
        self.runtimes = {}
        self.machines = {}

    def start(self, runtime_id, joining=()):
        """Starts a runtime with every group: founded with the three
        runtimes, or restarted from its WAL; those in `joining` join with
        no members. Returns the runtime and the groups its WAL held."""
        transport = GroupStreamTransport(runtime_id, CLUSTER, self.addresses.get,
                                         listen=("127.0.0.1", 0))
        # Peers look the address up at each connection attempt.
        self.addresses[runtime_id] = transport.address
        runtime = embraft.Runtime(runtime_config(self.directory, runtime_id, **self.options),
                                  transport=transport, workers=1, tick_interval=0.05)
        self.runtimes[runtime_id] = runtime
        stored = runtime.stored_groups()
        for group in self.groups:
            machine = self.machines[runtime_id, group] = MemoryStateMachine()
            # Ignored for a group the WAL holds: a restart takes its own.
            members = [] if group in joining else list(RUNTIMES)
            runtime.start_group(group, members=members, state_machine=machine)
        return runtime, stored

    def stop(self, runtime_id):
        self.runtimes.pop(runtime_id).close()

    def close(self):
        for runtime in self.runtimes.values():
            runtime.close()

    def leaders(self):
        """Group -> the runtime whose replica says it leads (None if none)."""
        found = {}
        for group in self.groups:
            leading = [rid for rid, rt in self.runtimes.items() if rt.group(group).is_leader]
            found[group] = leading[0] if len(leading) == 1 else None
        return found

    def propose(self, group, data, timeout=20.0):
        """Proposes through whichever runtime leads the group, again after
        a leader change, until it commits."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leaders()[group]
            if leader is not None:
                try:
                    return self.runtimes[leader].group(group).propose(data).result(timeout)
                except (embraft.ProposalDroppedError, embraft.BusyError):
                    pass
            assert time.monotonic() < deadline, f"group {group}: {data!r} not committed"
            time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path):
    cluster = RuntimeCluster(tmp_path, compact_keep_entries=0)
    yield cluster
    cluster.close()


def balance(cluster, timeout=30.0):
    """Transfers leaderships until each runtime leads a third of the groups
    (33 or 34 of 100); returns the final count per runtime."""
    deadline = time.monotonic() + timeout
    while True:
        leaders = cluster.leaders()
        counts = collections.Counter(leaders.values())
        if None not in counts and max(counts[r] for r in RUNTIMES) - min(
                counts[r] for r in RUNTIMES) <= 1:
            return counts
        assert time.monotonic() < deadline, f"leaders not balanced: {counts}"
        most = max(RUNTIMES, key=lambda r: counts[r])
        least = min(RUNTIMES, key=lambda r: counts[r])
        moves = (counts[most] - counts[least]) // 2
        for group in [g for g, r in leaders.items() if r == most][:moves]:
            try:
                cluster.runtimes[most].group(group).transfer_leadership(least)
            except embraft.EmbraftError:
                pass  # lost the lead meanwhile: the next round sees it
        time.sleep(0.3)


def test_three_runtimes_hundred_groups_restart_and_balance(cluster):
    for runtime_id in RUNTIMES:
        assert cluster.start(runtime_id)[1] == []
    for group in cluster.groups:
        cluster.runtimes[1].group(group).wait_for_leader(20)

    counts = balance(cluster)
    assert sorted(counts[r] for r in RUNTIMES) == [33, 33, 34]
    # Every runtime learns the leaders (a follower hears of a transfer at
    # the new leader's first heartbeat).
    leaders = cluster.leaders()
    assert wait_until(lambda: all(runtime.group(group).leader == leader
                                  for group, leader in leaders.items()
                                  for runtime in cluster.runtimes.values()), 10)

    # Proposals to every group at once, through their leaders.
    expected = {group: [] for group in cluster.groups}
    futures = []
    for round_number in range(3):
        for group in cluster.groups:
            data = f"g{group}-{round_number}".encode()
            expected[group].append(data)
            futures.append(cluster.runtimes[leaders[group]].group(group).propose(data))
    indexes = [future.result(20) for future in futures]
    assert all(index > 0 for index in indexes)

    # Runtime 3 goes away; the groups it led elect another leader and keep
    # committing. It also loses its state of ten groups (a replaced disk,
    # as it were), which their leaders compact behind a snapshot: it gets
    # them back as snapshots, the other ninety from its own WAL and log.
    lost = cluster.groups[:10]
    for group in lost:
        cluster.runtimes[3].remove_group(group)
    cluster.stop(3)
    for group in cluster.groups:
        data = f"g{group}-while-down".encode()
        cluster.propose(group, data)
        expected[group].append(data)
    for group in lost:
        for runtime in cluster.runtimes.values():
            assert runtime.group(group).snapshot().result(20) > 0

    restarted, stored = cluster.start(3, joining=lost)
    assert stored == cluster.groups[10:]
    assert restarted.running_groups() == cluster.groups
    for group in cluster.groups:
        data = f"g{group}-after".encode()
        cluster.propose(group, data)
        expected[group].append(data)

    def caught_up():
        return all(cluster.machines[r, g].values() == expected[g]
                   for r in RUNTIMES for g in cluster.groups)

    assert wait_until(caught_up, 30), {
        (r, g): cluster.machines[r, g].values() for r in RUNTIMES for g in cluster.groups
        if cluster.machines[r, g].values() != expected[g]}
    assert all(cluster.machines[3, g].restored for g in lost)
    assert not any(cluster.machines[3, g].restored for g in cluster.groups[10:])
    assert restarted.stored_groups() == cluster.groups
    # Leadership is spread again after the restart.
    counts = balance(cluster)
    assert sorted(counts[r] for r in RUNTIMES) == [33, 33, 34]


def test_group_api_on_one_runtime(tmp_path):
    config = runtime_config(tmp_path, 1, compact_keep_entries=0, tick_interval=0.02)
    machines = {g: MemoryStateMachine() for g in (1, 2, 3)}
    with embraft.Runtime(config) as runtime:
        groups = {g: runtime.start_group(g, [1], machines[g]) for g in machines}
        for group in groups.values():
            assert group.wait_for_leader(10) == 1
        changes = []
        groups[1].on_state_change(lambda role, leader, term: changes.append(role))
        for i in range(5):
            for g, group in groups.items():
                group.propose(f"{g}:{i}".encode()).result(10)
        assert groups[2].read_index().result(10) >= 5
        status = groups[2].status()
        assert (status.id, status.role, status.voters) == (1, "leader", [1])
        metrics = groups[2].metrics()
        assert metrics.proposals_committed == 5
        assert metrics.wal_batches_written > 0
        # One WAL for the three groups: fewer syncs than group steps.
        stats = runtime.stats()
        assert 0 < stats.syncs <= stats.rounds and stats.group_steps >= stats.rounds
        assert groups[2].snapshot().result(10) == status.applied
        with pytest.raises(embraft.StaleSnapshotError):
            groups[2].snapshot().result(10)
        snapshot_files = os.listdir(tmp_path / "rt1" / "groups" / "2" / "snapshots")
        assert snapshot_files
        # Membership changes go through the group too (runtime 9 never
        # answers, so the change cannot commit; the joint one is refused
        # while it is pending).
        learner = groups[3].add_learner(9)
        assert learner.result(10) > 0
        assert groups[3].status().learners == [9]
        assert runtime.running_groups() == [1, 2, 3]
        runtime.remove_group(3)
        assert runtime.stored_groups() == [1, 2]
        with pytest.raises(embraft.UnknownGroupError):
            runtime.group(3)

    # A restart: group 2 restores its snapshot, then applies what follows.
    with embraft.Runtime(config) as runtime:
        assert runtime.stored_groups() == [1, 2]
        again = {g: MemoryStateMachine() for g in (1, 2)}
        for g in again:
            runtime.start_group(g, [], again[g]).wait_for_leader(10)
        assert wait_until(lambda: again[1].values() == machines[1].values()
                          and again[2].values() == machines[2].values(), 10)
        assert again[2].restored and not again[1].restored


def test_bad_input_gives_clear_exceptions(tmp_path):
    runtime = embraft.Runtime(runtime_config(tmp_path, 1, tick_interval=0.02))
    group = runtime.start_group(5, [1], MemoryStateMachine())
    group.wait_for_leader(10)
    with pytest.raises(embraft.UnknownGroupError, match="group 6"):
        runtime.group(6)
    with pytest.raises(embraft.GroupExistsError):
        runtime.start_group(5, [1], MemoryStateMachine())
    with pytest.raises(ValueError):
        runtime.start_group(0, [1], MemoryStateMachine())
    with pytest.raises(ValueError):
        runtime.start_group(8, [1])
    with pytest.raises(embraft.InvalidArgumentError):
        runtime.start_group(9, [0], MemoryStateMachine())
    assert runtime.running_groups() == [5]
    # Garbage is refused whole; a well-formed frame for unknown groups is
    # counted, not failed.
    for garbage in (b"", b"\x01", b"\x05\x00\x00\x00" + b"\x00" * 12, b"\xff" * 40):
        with pytest.raises(embraft.MalformedMessageError):
            runtime.step_frame(garbage)
    report = runtime.step_frame(b"\x01\x00\x00\x00" + (77).to_bytes(8, "little")
                                + (3).to_bytes(4, "little") + b"abc")
    assert report.stepped == 0 and report.unknown_group + report.refused == 1
    assert runtime.step_frame(b"\x00\x00\x00\x00") == embraft.FrameReport(0, 0, 0, 0)

    # A stopped group's handle fails clearly; its pending futures fail.
    pending = group.read_index()
    runtime.stop_group(5)
    with pytest.raises((embraft.ClosedError, concurrent.futures.CancelledError)):
        pending.result(5)
    with pytest.raises(embraft.UnknownGroupError):
        group.propose(b"x")
    with pytest.raises(embraft.UnknownGroupError):
        runtime.stop_group(5)
    assert runtime.stored_groups() == [5]

    # A closed runtime refuses everything with ClosedError.
    group = runtime.start_group(5, [], MemoryStateMachine())
    group.wait_for_leader(10)
    runtime.close()
    runtime.close()
    for call in (lambda: group.propose(b"x"), lambda: group.read_index(),
                 lambda: group.status(), lambda: runtime.group(5),
                 lambda: runtime.stored_groups(), lambda: runtime.step_frame(b"\0\0\0\0"),
                 lambda: runtime.start_group(6, [1], MemoryStateMachine())):
        with pytest.raises(embraft.ClosedError):
            call()


def test_pending_futures_fail_when_the_runtime_closes(tmp_path):
    # The leader of a group whose other members are gone (and which keeps
    # leading: no check-quorum) cannot commit: its proposal and read wait
    # until the close fails them.
    cluster = RuntimeCluster(tmp_path, groups=[1], check_quorum=False)
    try:
        for runtime_id in RUNTIMES:
            cluster.start(runtime_id)
        leader = cluster.runtimes[1].group(1).wait_for_leader(20)
        for runtime_id in RUNTIMES:
            if runtime_id != leader:
                cluster.stop(runtime_id)
        group = cluster.runtimes[leader].group(1)
        proposal, read = group.propose(b"never"), group.read_index()
        cluster.stop(leader)
        for future in (proposal, read):
            with pytest.raises(embraft.ClosedError):
                future.result(5)
        with pytest.raises(TimeoutError):
            group.wait_for_leader(0.5, leader=99)
    finally:
        cluster.close()


def test_a_forgotten_runtime_is_closed_by_its_finalizer(tmp_path):
    config = runtime_config(tmp_path, 1, tick_interval=0.02)
    group = embraft.Runtime(config).start_group(1, [1], MemoryStateMachine())
    group.wait_for_leader(10)
    # The group keeps its runtime open; once both are garbage the data
    # directory is released.
    with pytest.raises(embraft.DirectoryLockedError):
        embraft.Runtime(config)
    del group
    gc.collect()
    with embraft.Runtime(config) as runtime:
        assert runtime.stored_groups() == [1]
