"""python -m embraft.raftd as three processes on loopback, following the
raftd walkthrough of docs/RAFTD.md."""

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import zlib

import pytest
from conftest import REPOSITORY, free_port, wait_until

HOST = "127.0.0.1"
PYTHON_RAFTD = [sys.executable, "-m", "embraft.raftd"]


def request(port, method, path, body=None, timeout=20.0):
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def status(port):
    try:
        code, body = request(port, "GET", "/status", timeout=5)
    except OSError:
        return None
    return json.loads(body) if code == 200 else None


class RaftdCluster:
    def __init__(self, directory, env=None):
        self.directory = directory
        self.processes = {}
        self.ports = {}
        # Extra environment of every node (RAFTD_SNAPSHOT_EVERY, ...).
        self.env = dict(os.environ, **(env or {}))

    def start(self, name, join=None, program=PYTHON_RAFTD, wait=True, args=()):
        port = self.ports.setdefault(name, free_port())
        command = program + ["-v", "-h", HOST, "-p", str(port), *args]
        if join is not None:
            command += ["-join", f"{HOST}:{self.ports[join]}"]
        command.append(str(self.directory / f"node{name}"))
        log = open(self.directory / f"node{name}.log", "ab")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                env=self.env)
        log.close()
        if wait:
            assert wait_until(lambda: status(port) is not None, 30), self.log(name)
        return port

    def stop(self, name):
        """SIGTERM, and the exit status."""
        process = self.processes.pop(name)
        process.terminate()
        return process.wait(timeout=20)

    def log(self, name):
        return (self.directory / f"node{name}.log").read_text(errors="replace")

    def kill(self, name):
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def leader(self, names=None):
        """The name of the node that says it leads, if exactly one does."""
        leaders = [n for n in (names or self.processes)
                   if (status(self.ports[n]) or {}).get("role") == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def close(self):
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def start_three(cluster):
    cluster.start(1)
    assert wait_until(lambda: cluster.leader() == 1, 30), cluster.log(1)
    cluster.start(2, join=1)
    cluster.start(3, join=2)  # through a follower: the join is forwarded
    assert wait_until(lambda: len(status(cluster.ports[1])["voters"]) == 3, 30)


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    cluster = RaftdCluster(tmp_path_factory.mktemp("raftd"))
    try:
        start_three(cluster)
        yield cluster
    finally:
        cluster.close()


def test_walkthrough_failover_and_catch_up(tmp_path):
    cluster = RaftdCluster(tmp_path)
    try:
        start_three(cluster)
        leader = cluster.leader()
        assert leader == 1
        assert request(cluster.ports[leader], "POST", "/db/greeting", b"hello")[0] == 200
        for name in (1, 2, 3):
            assert request(cluster.ports[name], "GET", "/db/greeting") == (200, b"hello")

        cluster.kill(leader)
        survivors = [n for n in (1, 2, 3) if n != leader]
        assert wait_until(lambda: cluster.leader(survivors) is not None, 30)
        new_leader = cluster.leader(survivors)
        assert request(cluster.ports[new_leader], "POST", "/db/after", b"failover")[0] == 200
        for name in survivors:
            assert request(cluster.ports[name], "GET", "/db/after") == (200, b"failover")

        cluster.start(leader)  # restart without -join
        port = cluster.ports[leader]
        assert wait_until(
            lambda: request(port, "GET", "/db/after?stale=true") == (200, b"failover"), 30)
        assert request(port, "GET", "/db/greeting") == (200, b"hello")
        assert status(port)["role"] == "follower"
    finally:
        cluster.close()


def test_followers_forward_writes(three_nodes):
    follower = next(n for n in (1, 2, 3) if n != three_nodes.leader())
    port = three_nodes.ports[follower]
    assert request(port, "POST", "/db/forwarded", b"value")[0] == 200
    for name in (1, 2, 3):
        assert request(three_nodes.ports[name], "GET", "/db/forwarded") == (200, b"value")
    assert request(port, "DELETE", "/db/forwarded")[0] == 200
    assert request(three_nodes.ports[1], "GET", "/db/forwarded")[0] == 404


def test_unknown_key_is_404(three_nodes):
    assert request(three_nodes.ports[2], "GET", "/db/never-written")[0] == 404


def test_oversized_value_is_413(three_nodes):
    code, body = request(three_nodes.ports[1], "POST", "/db/big", b"x" * ((1 << 20) + 1))
    assert code == 413 and body


def test_bad_keys_are_400(three_nodes):
    assert request(three_nodes.ports[1], "POST", "/db/", b"v")[0] == 400
    assert request(three_nodes.ports[1], "GET", "/db/" + "k" * 1025)[0] == 400


@pytest.mark.parametrize("body", [b"{bad json", b"{}", b'{"id": "0", "addr": "h:1"}',
                                  b'{"id": "5"}', b'{"id": "5", "addr": "no-port"}'])
def test_malformed_join_is_400(three_nodes, body):
    for name in (1, 2):  # the leader and a follower both check before forwarding
        code, text = request(three_nodes.ports[name], "POST", "/join", body)
        assert code == 400 and text


def test_status_and_metrics(three_nodes):
    report = status(three_nodes.ports[2])
    assert set(report) >= {"id", "cluster_id", "role", "term", "leader", "commit", "applied",
                           "last_index", "voters", "learners", "peers"}
    assert isinstance(report["id"], str) and len(report["peers"]) == 3
    code, text = request(three_nodes.ports[1], "GET", "/metrics")
    assert code == 200
    for name in ("embraft_term", "embraft_commit_index", "embraft_applied_index",
                 "embraft_last_index", "embraft_is_leader 1", "raftd_requests_total{"):
        assert name.encode() in text


def test_metrics_follow_raftd_md(three_nodes):
    """The leader's /metrics before and after writes, parsed with
    prometheus_client's parser: every metric of RAFTD.md's table with its
    type and help, zero series, cumulative buckets, and growth."""
    sys.path.insert(0, str(REPOSITORY / "scripts"))
    import check_metrics

    leader = three_nodes.leader()
    assert leader is not None
    port = three_nodes.ports[leader]
    code, before = request(port, "GET", "/metrics")
    assert code == 200
    for i in range(10):
        assert request(port, "POST", f"/db/metrics{i}", b"v%d" % i)[0] == 200
    code, after = request(port, "GET", "/metrics")
    assert code == 200
    assert not check_metrics.check(str(REPOSITORY / "docs" / "RAFTD.md"), before.decode(),
                                   after.decode())
    assert b'raftd_requests_total{code="200",method="POST"}' in after


def test_unknown_endpoint_is_404(three_nodes):
    assert request(three_nodes.ports[1], "GET", "/nothing")[0] == 404


def test_writes_are_linearizable_reads_everywhere(three_nodes):
    leader_port = three_nodes.ports[three_nodes.leader()]
    for i in range(20):
        assert request(leader_port, "POST", f"/db/seq{i}", b"%d" % i)[0] == 200
        for name in (1, 2, 3):
            assert request(three_nodes.ports[name], "GET", f"/db/seq{i}") == (200, b"%d" % i)


def test_leave_removes_a_member(three_nodes):
    # Last in the file: it shrinks the shared cluster.
    leaving = next(n for n in (1, 2, 3) if n != three_nodes.leader())
    leaving_id = status(three_nodes.ports[leaving])["id"]
    staying = next(n for n in (1, 2, 3) if n != leaving)
    body = ('{"id": "%s"}' % leaving_id).encode()
    assert request(three_nodes.ports[staying], "POST", "/leave", body)[0] == 200
    report = status(three_nodes.ports[staying])
    assert leaving_id not in report["voters"] and leaving_id not in report["peers"]
    assert len(report["voters"]) == 2


# ----- snapshots (RAFTD.md "Snapshots") ----------------------------------------------

VECTOR = REPOSITORY / "docs" / "vectors" / "raftd-snapshot-v1.bin"
VECTOR_VALUES = {b"Z": b"upper", b"a": b"1", b"alpha": b"", "é".encode(): b"\x00\xff\n"}
VECTOR_PEERS = {1: "127.0.0.1:4001", 0x0102030405060708: "localhost:4002"}


def test_snapshot_vector_decodes_and_encodes_byte_for_byte():
    from embraft.raftd import decode_snapshot, encode_snapshot

    data = VECTOR.read_bytes()
    values, peers = decode_snapshot(io.BytesIO(data))
    assert values == VECTOR_VALUES and peers == VECTOR_PEERS
    out = io.BytesIO()
    # Insertion order must not matter: the encoder sorts.
    encode_snapshot(dict(reversed(list(values.items()))), dict(reversed(list(peers.items()))),
                    out)
    assert out.getvalue() == data


def test_snapshot_vector_matches_the_dump_in_raftd_md():
    text = (REPOSITORY / "docs" / "RAFTD.md").read_text(encoding="utf-8")
    block = text.split("docs/vectors/raftd-snapshot-v1.bin")[1].split("```\n")[1]
    dumped = b"".join(bytes.fromhex(line.split("  ")[0]) for line in block.splitlines())
    assert dumped == VECTOR.read_bytes()


def _damaged_vectors():
    """(name, bytes) of snapshots that break one rule each."""
    good = VECTOR.read_bytes()
    peers_at, keys_at = 12, 12 + 26 + 26  # first peer, key count
    first_key = keys_at + 4
    cases = [("bad magic", b"RDKW" + good[4:]),
             ("version 2", good[:4] + b"\x02" + good[5:]),
             ("trailing byte", good + b"\x00"),
             ("peer id 0", good[:peers_at] + bytes(8) + good[peers_at + 8:]),
             ("peers out of order", good[:peers_at] + good[peers_at + 26:keys_at]
              + good[peers_at:peers_at + 26] + good[keys_at:]),
             ("repeated peer", good[:peers_at] + good[peers_at:peers_at + 26] * 2
              + good[keys_at:]),
             ("keys out of order", good[:first_key] + good[first_key + 14:first_key + 24]
              + good[first_key:first_key + 14] + good[first_key + 24:]),
             ("empty address", good[:peers_at + 8] + b"\x00\x00\x00\x00"
              + good[peers_at + 26:]),
             ("address with NUL", good[:peers_at + 12] + b"\x00" + good[peers_at + 13:]),
             ("empty key", good[:first_key] + b"\x00\x00\x00\x00" + good[first_key + 5:]),
             ("key of 1025 bytes", good[:first_key] + (1025).to_bytes(4, "little") + b"k" * 1025
              + good[first_key + 5:]),
             ("value over 1 MiB", good[:first_key + 5] + ((1 << 20) + 1).to_bytes(4, "little")
              + bytes((1 << 20) + 1) + good[first_key + 14:]),
             ("count beyond the data", good[:keys_at] + b"\xff\xff\xff\xff" + good[keys_at + 4:])]
    # Every proper prefix is truncated somewhere.
    cases += [(f"truncated to {n} bytes", good[:n]) for n in range(len(good))]
    return cases


@pytest.mark.parametrize("data", [pytest.param(data, id=name) for name, data in _damaged_vectors()])
def test_malformed_snapshots_are_refused_and_change_nothing(data):
    from embraft.raftd import KeyValueStore, MalformedSnapshotError, encode_set

    refused = []
    store = KeyValueStore(lambda file, error: refused.append(error))
    store.apply(1, encode_set(b"kept", b"state"))
    with pytest.raises(MalformedSnapshotError):
        store.restore(io.BytesIO(data))
    assert store.values == {b"kept": b"state"} and store.peers == {}
    assert len(refused) == 1 and isinstance(refused[0], MalformedSnapshotError)


def test_store_snapshot_round_trip():
    from embraft.raftd import KeyValueStore, encode_delete, encode_peer, encode_set

    store = KeyValueStore()
    store.apply(1, encode_set(b"a", b"1"))
    store.apply(2, encode_set(b"b", b"\x00" * 70000))
    store.apply(3, encode_delete(b"a"))
    store.apply(4, encode_peer(7, "127.0.0.1:4001"))
    store.apply(5, encode_peer(3, "localhost:\udcff"))  # not UTF-8: bytes kept as they are
    out = io.BytesIO()
    store.snapshot(out)
    restored = KeyValueStore()
    restored.apply(1, encode_set(b"stale", b"gone"))
    restored.apply(2, encode_peer(9, "127.0.0.1:9"))
    restored.restore(io.BytesIO(out.getvalue()))
    assert restored.values == {b"b": b"\x00" * 70000}
    assert restored.peers == {7: "127.0.0.1:4001", 3: "localhost:\udcff"}
    again = io.BytesIO()
    restored.snapshot(again)
    assert again.getvalue() == out.getvalue()


def test_commands_out_of_bounds_are_ignored():
    from embraft.raftd import KeyValueStore, encode_delete, encode_peer, encode_set

    store = KeyValueStore()
    for command in (encode_set(b"", b"v"), encode_set(b"k" * 1025, b"v"),
                    encode_set(b"k", bytes((1 << 20) + 1)), encode_peer(0, "h:1"),
                    encode_peer(5, ""), encode_peer(5, "h" * 256), encode_peer(5, "h\0:1")):
        store.apply(1, command)
    store.apply(2, encode_set(b"k" * 1024, bytes(1 << 20)))
    store.apply(3, encode_peer(5, "h" * 255))
    store.apply(4, encode_delete(b""))
    assert list(store.values) == [b"k" * 1024] and store.peers == {5: "h" * 255}


SNAPSHOT_ENV = {"RAFTD_SNAPSHOT_EVERY": "20", "RAFTD_COMPACT_KEEP": "5"}


def _snapshot_files(cluster, name):
    folder = cluster.directory / f"node{name}" / "wal" / "snapshots"
    return sorted(folder.glob("snap-*.snap")) if folder.exists() else []


def test_a_stopped_node_catches_up_through_a_snapshot(tmp_path):
    cluster = RaftdCluster(tmp_path, SNAPSHOT_ENV)
    try:
        start_three(cluster)
        # Node 3 applied the address book (it needs the leader's address to
        # answer after its restart), but no snapshot of its own yet.
        assert request(cluster.ports[1], "POST", "/db/first", b"1")[0] == 200
        assert request(cluster.ports[3], "GET", "/db/first") == (200, b"1")
        cluster.kill(3)
        leader_port = cluster.ports[1]
        for i in range(70):
            assert request(leader_port, "POST", f"/db/k{i}", b"v%d" % i)[0] == 200
        assert wait_until(lambda: _snapshot_files(cluster, 1), 10)
        # The leader compacted its log beyond what node 3 has.
        cluster.start(3)
        port = cluster.ports[3]
        assert wait_until(lambda: request(port, "GET", "/db/k69?stale=true") == (200, b"v69"),
                          30), cluster.log(3)
        assert "restored the key/value state from snapshot" in cluster.log(3)
        for i in range(70):
            assert request(port, "GET", f"/db/k{i}?stale=true") == (200, b"v%d" % i)
        # Restarted from its own snapshot and log, the leader still has it all.
        assert cluster.stop(1) == 0
        cluster.start(1)
        assert wait_until(lambda: request(cluster.ports[1], "GET", "/db/k0?stale=true")
                          == (200, b"v0"), 30), cluster.log(1)
        assert request(cluster.ports[1], "GET", "/db/k69") == (200, b"v69")
    finally:
        cluster.close()


def replace_snapshot_contents(path, data):
    """Swaps a stored snapshot's bytes, renaming the file so that embraft's
    own length and CRC-32 checks pass: only raftd can tell it is wrong."""
    index, term = path.name.split("-")[1:3]
    name = f"snap-{index}-{term}-{len(data):020}-{zlib.crc32(data):08x}.snap"
    (path.parent / name).write_bytes(data)
    path.unlink()


def test_a_malformed_snapshot_stops_the_node(tmp_path):
    cluster = RaftdCluster(tmp_path, SNAPSHOT_ENV)
    try:
        cluster.start(1)
        assert wait_until(lambda: cluster.leader() == 1, 30), cluster.log(1)
        for i in range(30):
            assert request(cluster.ports[1], "POST", f"/db/k{i}", b"v")[0] == 200
        assert wait_until(lambda: _snapshot_files(cluster, 1), 10)
        assert cluster.stop(1) == 0
        # The latest is the one the WAL names (the names sort by index).
        replace_snapshot_contents(_snapshot_files(cluster, 1)[-1], VECTOR.read_bytes()[:-1])
        cluster.start(1, wait=False)
        process = cluster.processes.pop(1)
        assert process.wait(timeout=30) == 1, cluster.log(1)
        log = cluster.log(1)
        assert "refusing snapshot" in log and "truncated" in log
        assert "Traceback" not in log
    finally:
        cluster.close()
