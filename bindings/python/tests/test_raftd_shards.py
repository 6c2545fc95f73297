"""The sharded raftd (docs/RAFTD.md "Shards"): the key hash, and three
`python -m embraft.raftd -shards 8` processes on loopback."""

import json
import re
import sys

import pytest
from conftest import REPOSITORY, wait_until
from test_raftd import RaftdCluster, request, status

from embraft.raftd import fnv1a64, key_group

SHARDS = 8
SHARD_ARGS = ["-shards", str(SHARDS)]


@pytest.mark.parametrize("key,expected", [
    (b"", 0xCBF29CE484222325),
    (b"a", 0xAF63DC4C8601EC8C),
    (b"foo", 0xDCB27518FED9D577),
])
def test_fnv1a64_vectors(key, expected):
    assert fnv1a64(key) == expected


def test_key_groups_of_raftd_md():
    assert key_group(b"foo", 8) == 8
    assert key_group(b"a", 8) == 5
    assert key_group("é".encode(), 1) == 1
    groups = {key_group(f"key{i}".encode(), 8) for i in range(200)}
    assert groups == set(range(1, 9))


def groups_of(port):
    report = status(port)
    return report["groups"] if report else []


def all_members(cluster, names, members):
    """Every group on every node named has exactly these voters."""
    ids = sorted(status(cluster.ports[n])["id"] for n in members)
    return all(len(groups_of(cluster.ports[n])) == SHARDS
               and all(sorted(g["voters"]) == ids for g in groups_of(cluster.ports[n]))
               for n in names)


def write(cluster, name, key, value, timeout=30):
    """POST through `name`, again on 503 (no leader yet) until it commits."""
    port = cluster.ports[name]
    assert wait_until(lambda: request(port, "POST", f"/db/{key}", value)[0] == 200,
                      timeout, interval=0.2), (key, request(port, "POST", f"/db/{key}", value))


def test_sharded_cluster_forwards_restarts_rejoins_and_leaves(tmp_path):
    sys.path.insert(0, str(REPOSITORY / "scripts"))
    import check_metrics

    cluster = RaftdCluster(tmp_path)
    try:
        cluster.start(1, args=SHARD_ARGS)
        port1 = cluster.ports[1]
        assert wait_until(lambda: all(g["role"] == "leader" for g in groups_of(port1)), 30)
        # The joining nodes take the number from the cluster, not -shards.
        cluster.start(2, join=1)
        cluster.start(3, join=2, args=["-shards", "3"])
        assert wait_until(lambda: all_members(cluster, (1, 2, 3), (1, 2, 3)), 60)
        for name in (1, 2, 3):
            with open(tmp_path / f"node{name}" / "node.json") as file:
                assert json.load(file)["shards"] == SHARDS

        report = status(cluster.ports[2])
        assert report["shards"] == SHARDS
        assert [g["group"] for g in report["groups"]] == list(range(1, SHARDS + 1))
        assert set(report["groups"][0]) == {"group", "role", "term", "leader", "commit",
                                           "applied", "last_index", "voters", "learners"}
        assert report["role"] == report["groups"][0]["role"]
        assert len(report["peers"]) == 3

        # Node 1 leads every group: its scrapes around writes to all groups.
        code, before = request(port1, "GET", "/metrics")
        assert code == 200
        values = {}
        for i in range(48):
            key, name = f"key{i}", 1 + i % 3
            values[key] = f"value{i}".encode()
            assert request(cluster.ports[name], "POST", f"/db/{key}", values[key])[0] == 200
        code, after = request(port1, "GET", "/metrics")
        assert not check_metrics.check(str(REPOSITORY / "docs" / "RAFTD.md"), before.decode(),
                                       after.decode(), shards=SHARDS)
        assert re.search(rb'embraft_is_leader\{group="[1-8]"\} 1', after)
        assert b'raftd_requests_total{code="200",method="POST"}' in after
        assert {key_group(k.encode(), SHARDS) for k in values} == set(range(1, SHARDS + 1))
        for key, value in values.items():
            for name in (1, 2, 3):
                assert request(cluster.ports[name], "GET", f"/db/{key}") == (200, value)
        assert request(cluster.ports[3], "DELETE", "/db/key0")[0] == 200
        assert request(cluster.ports[2], "GET", "/db/key0")[0] == 404
        del values["key0"]

        # The leader of every group dies: the others elect leaders per group
        # and take writes through either node.
        cluster.kill(1)
        for i in range(48, 72):
            key = f"key{i}"
            values[key] = f"value{i}".encode()
            write(cluster, 2 + i % 2, key, values[key])
        cluster.start(1)  # a restart: node.json, no -join
        assert wait_until(
            lambda: request(port1, "GET", "/db/key71?stale=true") == (200, values["key71"]), 30)
        for key, value in values.items():
            for name in (1, 2, 3):
                assert request(cluster.ports[name], "GET", f"/db/{key}") == (200, value)

        # A node killed while it joins the groups (right after its
        # node.json is written) finishes joining when it restarts.
        identity = tmp_path / "node4" / "node.json"
        cluster.start(4, join=3, wait=False)
        assert wait_until(identity.exists, 30, interval=0.005), cluster.log(4)
        cluster.kill(4)
        cluster.start(4)
        assert wait_until(lambda: all_members(cluster, (1, 2, 3, 4), (1, 2, 3, 4)), 60), \
            cluster.log(4)
        assert request(cluster.ports[4], "GET", "/db/key50") == (200, values["key50"])
        log = cluster.log(4)
        assert "restarting node" in log
        # Each group joined through its own request, before or after the kill.
        assert all(f"joined group {g}" in log for g in range(2, SHARDS + 1)), log

        # Leaving: node 4 is removed from every group and the address book.
        node4 = status(cluster.ports[4])["id"]
        code, text = request(cluster.ports[2], "POST", "/leave",
                             json.dumps({"id": node4}).encode())
        assert code == 200, text
        assert wait_until(lambda: all_members(cluster, (1, 2, 3), (1, 2, 3)), 30)
        assert node4 not in status(cluster.ports[1])["peers"]
        cluster.stop(4)
    finally:
        cluster.close()


def test_sharded_request_checks(tmp_path):
    cluster = RaftdCluster(tmp_path)
    try:
        cluster.start(1, args=["-shards", "2"])
        port = cluster.ports[1]
        assert wait_until(lambda: all(g["role"] == "leader" for g in groups_of(port)), 30)
        for group in (0, 3, "2", True):
            body = json.dumps({"id": "5", "addr": "h:1", "group": group}).encode()
            code, text = request(port, "POST", "/join", body)
            assert code == 400 and b"group" in text
            body = json.dumps({"id": "5", "group": group}).encode()
            assert request(port, "POST", "/leave", body)[0] == 400
        # A group-only leave of a node that is not a member changes nothing.
        assert request(port, "POST", "/leave", b'{"id": "5", "group": 2}')[0] == 200
        assert all(len(g["voters"]) == 1 for g in groups_of(port))
    finally:
        cluster.close()


SNAPSHOT_ENV = {"RAFTD_SNAPSHOT_EVERY": "20", "RAFTD_COMPACT_KEEP": "5"}


def _group_snapshots(cluster, name, group):
    folder = cluster.directory / f"node{name}" / "wal" / "groups" / str(group) / "snapshots"
    return sorted(folder.glob("snap-*.snap")) if folder.exists() else []


def test_sharded_groups_snapshot_and_a_stopped_node_catches_up(tmp_path):
    """Each group snapshots on its own (RAFTD_SNAPSHOT_EVERY per group),
    in the format of RAFTD.md with the address book in group 1's only; a
    node that was down catches up through the groups' snapshots."""
    from embraft.raftd import decode_snapshot

    shards = 4
    cluster = RaftdCluster(tmp_path, SNAPSHOT_ENV)
    try:
        cluster.start(1, args=["-shards", str(shards)])
        port1 = cluster.ports[1]
        assert wait_until(lambda: all(g["role"] == "leader" for g in groups_of(port1)), 30)
        cluster.start(2, join=1)
        cluster.start(3, join=1)
        assert wait_until(lambda: all(len(g["voters"]) == 3 for n in (1, 2, 3)
                                      for g in groups_of(cluster.ports[n])), 60)
        cluster.kill(3)
        for i in range(40 * shards):
            assert request(port1, "POST", f"/db/s{i}", b"v%d" % i)[0] == 200
        assert wait_until(lambda: all(_group_snapshots(cluster, 1, g)
                                      for g in range(1, shards + 1)), 10)
        with open(_group_snapshots(cluster, 1, 1)[-1], "rb") as file:
            values, peers = decode_snapshot(file)
        assert len(peers) == 3 and values
        with open(_group_snapshots(cluster, 1, 2)[-1], "rb") as file:
            values, peers = decode_snapshot(file)
        assert peers == {} and all(key_group(k, shards) == 2 for k in values)

        cluster.start(3)
        port3 = cluster.ports[3]
        last = 40 * shards - 1
        assert wait_until(lambda: request(port3, "GET", f"/db/s{last}?stale=true")
                          == (200, b"v%d" % last), 30), cluster.log(3)
        for i in range(40 * shards):
            assert wait_until(lambda i=i: request(port3, "GET", f"/db/s{i}?stale=true")
                              == (200, b"v%d" % i), 10), i
        restored = re.findall(r"group (\d+): restored the key/value state from snapshot",
                              cluster.log(3))
        assert len(set(restored)) == shards, cluster.log(3)
    finally:
        cluster.close()
