"""python -m embraft.raftd as three processes on loopback, following the
raftd walkthrough of docs/RAFTD.md."""

import http.client
import json
import signal
import subprocess
import sys

import pytest
from conftest import free_port, wait_until

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
    def __init__(self, directory):
        self.directory = directory
        self.processes = {}
        self.ports = {}

    def start(self, name, join=None, program=PYTHON_RAFTD):
        port = self.ports.setdefault(name, free_port())
        command = program + ["-v", "-h", HOST, "-p", str(port)]
        if join is not None:
            command += ["-join", f"{HOST}:{self.ports[join]}"]
        command.append(str(self.directory / f"node{name}"))
        log = open(self.directory / f"node{name}.log", "ab")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        assert wait_until(lambda: status(port) is not None, 30), self.log(name)
        return port

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


def test_store_snapshot_round_trip():
    import io

    from embraft.raftd import KeyValueStore, encode_delete, encode_peer, encode_set

    store = KeyValueStore()
    store.apply(1, encode_set(b"a", b"1"))
    store.apply(2, encode_set(b"b", b"\x00" * 70000))
    store.apply(3, encode_delete(b"a"))
    store.apply(4, encode_peer(7, "127.0.0.1:4001"))
    out = io.BytesIO()
    store.snapshot(out)
    restored = KeyValueStore()
    restored.apply(1, encode_set(b"stale", b"gone"))
    restored.restore(io.BytesIO(out.getvalue()))
    assert restored.values == {b"b": b"\x00" * 70000}
    assert restored.peer_map() == {"7": "127.0.0.1:4001"}
    with pytest.raises(ValueError, match="not a raftd snapshot"):
        KeyValueStore().restore(io.BytesIO(out.getvalue()[:-1]))
