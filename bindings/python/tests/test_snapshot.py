"""Snapshots through the library's snapshot files: taking them (the state
machine streams itself into an embraft.SnapshotWriter), the writer's error
cases, restoring after a restart, a lagging follower catching up through
the leader's snapshot, and automatic snapshots when the node asks for one."""

import io
import os
import threading
import zlib
from pathlib import Path

import pytest
from conftest import MemoryStateMachine, single_node_config, wait_until

import embraft
from embraft import _ffi


def snapshot_folder(config: embraft.Config) -> Path:
    return Path(config.data_dir) / "snapshots"


def stored_snapshots(config: embraft.Config):
    """The finished snapshot files, as {index: path}."""
    folder = snapshot_folder(config)
    if not folder.is_dir():
        return {}
    return {int(name.split("-")[1]): folder / name for name in os.listdir(folder)
            if name.startswith("snap-") and name.endswith(".snap")}


def other_files(config: embraft.Config):
    """Anything in the snapshots folder but finished snapshots."""
    folder = snapshot_folder(config)
    stored = set(path.name for path in stored_snapshots(config).values())
    return sorted(set(os.listdir(folder)) - stored) if folder.is_dir() else []


class RecordingStateMachine(MemoryStateMachine):
    """Also records the order of restores and applies, and the stream
    objects it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.events = []
        self.streams = []

    def apply(self, index, data):
        super().apply(index, data)
        self.events.append(("apply", data))

    def snapshot(self, out):
        self.streams.append(out)
        super().snapshot(out)

    def restore(self, src):
        self.streams.append(src)
        super().restore(src)
        self.events.append(("restore", self.restored[-1]))


def started_single_node(tmp_path, machine, **options):
    node = embraft.Node(single_node_config(tmp_path, **options), machine)
    node.wait_for_leader(10)
    return node


# ----- taking a snapshot ----------------------------------------------------------

def test_snapshot_is_stored_in_the_library_folder(tmp_path):
    config = single_node_config(tmp_path, compact_keep_entries=0)
    machine = RecordingStateMachine()
    with embraft.Node(config, machine) as node:
        node.wait_for_leader(10)
        for value in (b"a", b"b"):
            node.propose(value).result(timeout=10)
        index = node.snapshot().result(timeout=10)
        assert index == node.applied_index
        assert wait_until(lambda: node.status().snapshot_index == index, 10)
        assert wait_until(lambda: node.status().first_index > index, 10)
        # The state machine got a buffered binary stream into the file.
        out = machine.streams[-1]
        assert isinstance(out, embraft.SnapshotWriter) and isinstance(out, io.BufferedIOBase)
        assert out.writable() and not out.seekable() and out.closed and out.ended
        # Its path was never asked for (the bytes were checksummed as they
        # were written), and the writer has ended.
        with pytest.raises(ValueError):
            _ = out.name
    files = stored_snapshots(config)
    assert list(files) == [index]
    assert files[index].read_bytes() == b"a\nb"
    assert files[index].name.endswith(f"-{zlib.crc32(b'a' + bytes([10]) + b'b'):08x}.snap")
    assert other_files(config) == []


def test_large_state_streams_in_many_writes(tmp_path):
    values = [bytes([65 + i % 26]) * 1000 for i in range(3000)]  # about 3 MB

    class Big(MemoryStateMachine):
        def snapshot(self, out):
            for value in values:
                out.write(value)

    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, Big()) as node:
        node.wait_for_leader(10)
        node.propose(b"x").result(timeout=10)
        index = node.snapshot().result(timeout=10)
    assert stored_snapshots(config)[index].read_bytes() == b"".join(values)


def test_restart_restores_the_snapshot_then_applies_the_log_after_it(tmp_path):
    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        for value in (b"a", b"b", b"c"):
            node.propose(value).result(timeout=10)
        index = node.snapshot().result(timeout=10)
        assert wait_until(lambda: node.status().first_index > index, 10)
        for value in (b"d", b"e"):
            node.propose(value).result(timeout=10)
    machine = RecordingStateMachine()
    with embraft.Node(config, machine) as node:
        assert wait_until(lambda: machine.values() == [b"a", b"b", b"c", b"d", b"e"], 10)
        assert machine.events == [("restore", b"a\nb\nc"), ("apply", b"d"), ("apply", b"e")]
        # The restore read a real file, closed once restore returned.
        source = machine.streams[0]
        assert source.name == str(stored_snapshots(config)[index]) and source.closed
        assert node.applied_index >= index + 2


def test_restored_snapshot_counts_as_applied(tmp_path):
    # Restart with nothing after the snapshot: the restore alone is
    # acknowledged, so the next snapshot can be taken past it.
    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        first = node.snapshot().result(timeout=10)
    machine = MemoryStateMachine()
    with embraft.Node(config, machine) as node:
        node.wait_for_leader(10)
        assert wait_until(lambda: machine.restored == [b"a"], 10)
        node.propose(b"b").result(timeout=10)
        second = node.snapshot().result(timeout=10)
        assert second > first
        assert wait_until(lambda: list(stored_snapshots(config)) == [second], 10)
    assert stored_snapshots(config)[second].read_bytes() == b"a\nb"


def test_state_machine_failure_fails_only_the_snapshot(tmp_path):
    class Failing(MemoryStateMachine):
        def snapshot(self, out):
            out.write(b"partial")
            raise RuntimeError("cannot serialize")

    config = single_node_config(tmp_path)
    with embraft.Node(config, Failing()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        with pytest.raises(RuntimeError, match="cannot serialize"):
            node.snapshot().result(timeout=10)
        # The node goes on; the partial file is gone.
        assert node.propose(b"b").result(timeout=10) > 0
        assert node.status().snapshot_index == 0
    assert stored_snapshots(config) == {} and other_files(config) == []


# ----- the writer's error cases ---------------------------------------------------

def test_begin_beyond_the_applied_index_raises_not_applied(tmp_path):
    with started_single_node(tmp_path, MemoryStateMachine()) as node:
        node.propose(b"a").result(timeout=10)
        with pytest.raises(embraft.NotAppliedError) as caught:
            node.begin_snapshot(node.applied_index + 100)
        assert caught.value.status == _ffi.ERR_NOT_APPLIED
        assert isinstance(caught.value, embraft.SnapshotError)


def test_snapshot_at_or_below_the_latest_raises_stale(tmp_path):
    config = single_node_config(tmp_path)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        index = node.snapshot().result(timeout=10)
        # Nothing applied since: the same index again.
        with pytest.raises(embraft.StaleSnapshotError) as caught:
            node.snapshot().result(timeout=10)
        assert caught.value.status == _ffi.ERR_STALE_SNAPSHOT
        with pytest.raises(embraft.StaleSnapshotError):
            node.begin_snapshot(index)
        with pytest.raises(embraft.StaleSnapshotError):
            node.begin_snapshot(index - 1)


def test_two_writers_at_one_index_the_second_finish_is_stale(tmp_path):
    config = single_node_config(tmp_path)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        index = node.applied_index
        first, second = node.begin_snapshot(index), node.begin_snapshot(index)
        first.write(b"one")
        second.write(b"two")
        assert first.finish() == index
        with pytest.raises(embraft.StaleSnapshotError):
            second.finish()
        assert second.ended
    assert stored_snapshots(config)[index].read_bytes() == b"one"
    assert other_files(config) == []


def test_writer_as_context_manager_finishes_or_aborts(tmp_path):
    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        index = node.applied_index
        with pytest.raises(KeyError):
            with node.begin_snapshot(index) as out:
                out.write(b"thrown away")
                assert Path(out.path).exists()
                assert Path(out.path).parent == snapshot_folder(config)
                raise KeyError("serializer failed")
        assert out.ended and not Path(out.path).exists()
        with pytest.raises(ValueError):
            out.write(b"more")
        assert stored_snapshots(config) == {} and other_files(config) == []
        with node.begin_snapshot(index) as out:
            out.write(b"custom ")
            out.write(bytearray(b"state"))
        assert out.ended
        with pytest.raises(ValueError):
            out.finish()
        assert wait_until(lambda: node.status().snapshot_index == index, 10)
    machine = MemoryStateMachine()
    with embraft.Node(config, machine):
        assert wait_until(lambda: machine.restored == [b"custom state"], 10)


def test_writer_from_another_thread(tmp_path):
    # A host that serializes a copy of its state off the driver thread.
    config = single_node_config(tmp_path)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        result = {}

        def take():
            with node.begin_snapshot(node.applied_index) as out:
                out.write(b"from a thread")
            result["index"] = out.index

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(10)
        assert result["index"] == node.applied_index
    assert stored_snapshots(config)[result["index"]].read_bytes() == b"from a thread"


def test_unfinished_writer_is_aborted_when_collected(tmp_path):
    import gc
    config = single_node_config(tmp_path)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"a").result(timeout=10)
        writer = node.begin_snapshot(node.applied_index)
        writer.write(b"forgotten")
        path = Path(writer.path)
        assert path.exists()
        del writer
        gc.collect()
        assert not path.exists()


def test_finishing_after_the_node_closed_fails(tmp_path):
    config = single_node_config(tmp_path)
    node = started_single_node(tmp_path, MemoryStateMachine())
    node.propose(b"a").result(timeout=10)
    writer = node.begin_snapshot(node.applied_index)
    writer.write(b"late")
    node.close()
    with pytest.raises(embraft.NodeFailedError):
        writer.finish()
    # The file was never recorded in the WAL: the next start deletes it.
    machine = MemoryStateMachine()
    with embraft.Node(config, machine) as node:
        node.wait_for_leader(10)
        assert wait_until(lambda: machine.values() == [b"a"], 10)
        assert stored_snapshots(config) == {} and machine.restored == []
        assert node.status().snapshot_index == 0


# ----- followers ------------------------------------------------------------------

def test_lagging_follower_catches_up_through_the_leaders_snapshot(local_cluster):
    # Small chunks: the snapshot reaches the follower in many messages.
    options = dict(compact_keep_entries=0, snapshot_chunk_size=4096)
    for node_id in (1, 2, 3):
        local_cluster.start(node_id, [1, 2, 3], **options)
    leader_id = local_cluster.nodes[1].wait_for_leader(10)
    leader = local_cluster.nodes[leader_id]
    lagging = next(i for i in (1, 2, 3) if i != leader_id)
    values = [b"early-%d-" % i + b"x" * 1000 for i in range(10)]
    for value in values:
        leader.propose(value).result(timeout=10)
    assert wait_until(lambda: local_cluster.machines[lagging].values() == values, 10)
    local_cluster.nodes[lagging].close()

    late = [b"late-%d-" % i + b"y" * 1000 for i in range(40)]
    for value in late:
        leader.propose(value).result(timeout=10)
    index = leader.snapshot().result(timeout=10)
    # The log the follower needs is gone from the leader: only the
    # snapshot can bring it up to date.
    assert wait_until(lambda: leader.status().first_index > index, 10)
    expected_snapshot = b"\n".join(values + late)
    assert len(expected_snapshot) > 10 * 4096

    local_cluster.start(lagging, [1, 2, 3], **options)
    machine = local_cluster.machines[lagging]
    assert wait_until(lambda: machine.values() == values + late, 30), len(machine.values())
    assert machine.restored[-1] == expected_snapshot
    follower_config = embraft.Config(id=lagging, data_dir=str(local_cluster.directory /
                                                             f"wal{lagging}"))
    assert wait_until(lambda: index in stored_snapshots(follower_config), 10)
    assert stored_snapshots(follower_config)[index].read_bytes() == expected_snapshot
    # And it follows the log from there.
    leader.propose(b"after").result(timeout=10)
    assert wait_until(lambda: machine.values()[-1:] == [b"after"], 10)


# ----- automatic snapshots ----------------------------------------------------------

def test_node_asks_for_snapshots_past_snapshot_entries(tmp_path):
    config = single_node_config(tmp_path, snapshot_entries=10, compact_keep_entries=0)
    machine = RecordingStateMachine()
    with embraft.Node(config, machine) as node:
        node.wait_for_leader(10)
        for i in range(25):
            node.propose(b"v%d" % i).result(timeout=10)
        assert wait_until(lambda: node.status().snapshot_index >= 20, 10), node.status()
        assert len(machine.streams) >= 2
        # Older snapshots are deleted once a newer one is recorded.
        assert wait_until(lambda: len(stored_snapshots(config)) == 1, 10)
    assert max(stored_snapshots(config)) >= 20
    restarted = MemoryStateMachine()
    with embraft.Node(config, restarted):
        assert wait_until(lambda: restarted.values() == [b"v%d" % i for i in range(25)], 10)
        assert restarted.restored


def test_no_automatic_snapshot_by_default(tmp_path):
    config = single_node_config(tmp_path)
    machine = RecordingStateMachine()
    with embraft.Node(config, machine) as node:
        node.wait_for_leader(10)
        for i in range(30):
            node.propose(b"v%d" % i).result(timeout=10)
        assert node.status().snapshot_index == 0
    assert machine.streams == [] and stored_snapshots(config) == {}


def test_damaged_snapshot_file_refuses_to_start_with_corrupt_error(tmp_path):
    config = single_node_config(tmp_path, compact_keep_entries=0)
    with embraft.Node(config, MemoryStateMachine()) as node:
        node.wait_for_leader(10)
        node.propose(b"abc").result(timeout=10)
        index = node.snapshot().result(timeout=10)
        assert wait_until(lambda: node.status().first_index > index, 10)
    path = stored_snapshots(config)[index]
    path.write_bytes(b"abd")
    with pytest.raises(embraft.CorruptError) as caught:
        embraft.Node(config, MemoryStateMachine())
    assert caught.value.status == _ffi.ERR_CORRUPT
