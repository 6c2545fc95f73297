"""A cluster mixing the Python raftd with another implementation of
docs/RAFTD.md and the stream transport (the C or the Go raftd), including
snapshots in the shared format of RAFTD.md "Snapshots" travelling both
ways. Skipped unless EMBRAFT_INTEROP_RAFTD names that program's executable,
for example

    EMBRAFT_INTEROP_RAFTD=target/raftd-c/raftd bindings/python/run-tests.sh
"""

import os
import re

import pytest
from conftest import wait_until
from test_raftd import RaftdCluster, request, status

OTHER_RAFTD = os.environ.get("EMBRAFT_INTEROP_RAFTD")

pytestmark = pytest.mark.skipif(not OTHER_RAFTD, reason="EMBRAFT_INTEROP_RAFTD not set")


def test_mixed_cluster_replicates_forwards_and_fails_over(tmp_path):
    other = [os.path.abspath(OTHER_RAFTD)]
    cluster = RaftdCluster(tmp_path)
    try:
        cluster.start(1)                              # Python founds the cluster
        assert wait_until(lambda: cluster.leader() == 1, 30), cluster.log(1)
        cluster.start(2, join=1, program=other)       # the other joins through Python
        cluster.start(3, join=2)                      # Python joins through the other
        assert wait_until(lambda: len(status(cluster.ports[1])["voters"]) == 3, 30)

        assert request(cluster.ports[2], "POST", "/db/mixed", b"value")[0] == 200
        for name in (1, 2, 3):
            assert request(cluster.ports[name], "GET", "/db/mixed") == (200, b"value")

        cluster.kill(1)
        assert wait_until(lambda: cluster.leader([2, 3]) is not None, 30)
        assert request(cluster.ports[3], "POST", "/db/after", b"failover")[0] == 200
        cluster.start(1)
        assert wait_until(lambda: request(cluster.ports[1], "GET", "/db/after?stale=true")
                          == (200, b"failover"), 30)
        assert request(cluster.ports[2], "GET", "/db/after") == (200, b"failover")
    finally:
        cluster.close()


# Small thresholds, so that a few hundred writes make every node snapshot
# and compact its log well past what a stopped or new node holds.
SNAPSHOT_ENV = {"RAFTD_SNAPSHOT_EVERY": "50", "RAFTD_COMPACT_KEEP": "10",
                "RAFTD_SEGMENT_SIZE": str(4 << 20)}
KEYS = 120


def _snapshots(cluster, name):
    folder = cluster.directory / f"node{name}" / "wal" / "snapshots"
    return sorted(folder.glob("snap-*.snap")) if folder.exists() else []


def _write_keys(port, first, count):
    for i in range(first, first + count):
        code, body = request(port, "POST", f"/db/key{i}", b"value-%d" % i)
        assert code == 200, (i, code, body)


def _reads_all(port, count):
    """Every key, through a linearizable read."""
    for i in range(count):
        assert request(port, "GET", f"/db/key{i}") == (200, b"value-%d" % i), i


def _restore_indexes(log):
    """Indexes of the snapshots a C, Go or Python raftd log says it restored."""
    return [int(i) for i in re.findall(r"(?:restored|restoring)[^\n]*?index[ =](\d+)", log)]


def test_snapshots_cross_between_languages(tmp_path):
    other = [os.path.abspath(OTHER_RAFTD)]
    cluster = RaftdCluster(tmp_path, SNAPSHOT_ENV)
    try:
        # The other raftd founds a cluster and compacts its log.
        cluster.start(1, program=other)
        assert wait_until(lambda: cluster.leader() == 1, 30), cluster.log(1)
        _write_keys(cluster.ports[1], 0, KEYS)
        assert wait_until(lambda: _snapshots(cluster, 1), 15), cluster.log(1)

        # A new Python node can only catch up through the other's snapshot.
        cluster.start(2, join=1)
        port2 = cluster.ports[2]
        assert wait_until(lambda: request(port2, "GET", f"/db/key{KEYS - 1}?stale=true")
                          == (200, b"value-%d" % (KEYS - 1)), 30), cluster.log(2)
        assert "restored the key/value state from snapshot" in cluster.log(2), cluster.log(2)
        _reads_all(port2, KEYS)
        cluster.start(3, join=2)  # forwarded to the other's leader
        assert wait_until(lambda: len(status(cluster.ports[1])["voters"]) == 3, 30)
        assert request(cluster.ports[3], "GET", "/db/key0") == (200, b"value-0")

        # The other node stops; the Python nodes go on and compact past it.
        applied_before = status(cluster.ports[1])["applied"]
        cluster.kill(1)
        assert wait_until(lambda: cluster.leader([2, 3]) is not None, 30)
        _write_keys(port2, KEYS, KEYS)  # through a follower or the leader

        # Restarted, it catches up through a snapshot a Python node took.
        cluster.start(1, program=other)
        port1 = cluster.ports[1]
        last = 2 * KEYS - 1
        assert wait_until(lambda: request(port1, "GET", f"/db/key{last}?stale=true")
                          == (200, b"value-%d" % last), 30), cluster.log(1)
        restored = _restore_indexes(cluster.log(1))
        assert any(index > applied_before + 10 for index in restored), (
            applied_before, restored, cluster.log(1))
        _reads_all(port1, 2 * KEYS)
    finally:
        cluster.close()


INTEROP_SHARDS = os.environ.get("EMBRAFT_INTEROP_SHARDS")


@pytest.mark.skipif(not INTEROP_SHARDS, reason="EMBRAFT_INTEROP_SHARDS not set")
def test_mixed_sharded_cluster(tmp_path):
    """RAFTD.md "Shards" across implementations: with
    EMBRAFT_INTEROP_SHARDS=N as well, a Python node founds a cluster of N
    groups, the other raftd joins through it (taking N from the answer),
    a Python node joins through the other; keys of every group are written
    and read through every node; the founder is killed and restarted."""
    shards = int(INTEROP_SHARDS or "0")
    other = [os.path.abspath(OTHER_RAFTD or "")]
    cluster = RaftdCluster(tmp_path)

    def members_everywhere():
        reports = [status(cluster.ports[n]) for n in (1, 2, 3)]
        return all(r and len(r.get("groups", [])) == shards
                   and all(len(g["voters"]) == 3 for g in r["groups"]) for r in reports)

    try:
        cluster.start(1, args=["-shards", str(shards)])
        assert wait_until(lambda: all(g["role"] == "leader"
                                      for g in status(cluster.ports[1])["groups"]), 30)
        cluster.start(2, join=1, program=other)
        cluster.start(3, join=2)
        assert wait_until(members_everywhere, 60), cluster.log(2)
        values = {f"mixed{i}": b"v%d" % i for i in range(8 * shards)}
        for i, (key, value) in enumerate(values.items()):
            assert request(cluster.ports[1 + i % 3], "POST", f"/db/{key}", value)[0] == 200
        cluster.kill(1)
        def answers(port, method, key, body, expected):
            return wait_until(lambda: request(port, method, f"/db/{key}", body) == expected,
                              30, interval=0.2)

        for i in range(4 * shards):
            key = f"after{i}"
            values[key] = b"a%d" % i
            # 503 until the groups node 1 led have elected a new leader.
            assert answers(cluster.ports[2 + i % 2], "POST", key, values[key], (200, b""))
        cluster.start(1)
        assert wait_until(members_everywhere, 30)
        for key, value in values.items():
            for name in (1, 2, 3):
                assert answers(cluster.ports[name], "GET", key, None, (200, value)), (name, key)
    finally:
        cluster.close()


# A sharded cluster of three implementations at once.
THIRD_RAFTD = os.environ.get("EMBRAFT_INTEROP_THIRD_RAFTD")
TRIO_SHARDS = 4
TRIO_KEYS = 48


def _groups_led(cluster, names):
    """Every group has a leader among `names` that all of them agree on."""
    reports = [status(cluster.ports[n]) for n in names]
    if any(r is None or len(r.get("groups", [])) != TRIO_SHARDS for r in reports):
        return False
    ids = {r["id"] for r in reports}
    for index in range(TRIO_SHARDS):
        leaders = {r["groups"][index]["leader"] for r in reports}
        if len(leaders) != 1 or leaders.pop() not in ids:
            return False
    return True


def _every_group_has_voters(cluster, names, count):
    reports = [status(cluster.ports[n]) for n in names]
    return all(r is not None and len(r.get("groups", [])) == TRIO_SHARDS
               and all(len(g["voters"]) == count for g in r["groups"]) for r in reports)


def _write_until_committed(port, key, value):
    """POST, again while the key's group has no leader (503)."""
    answers = []

    def committed():
        answers.append(request(port, "POST", f"/db/{key}", value))
        return answers[-1][0] == 200
    assert wait_until(committed, 30, interval=0.2), (key, answers[-3:])


@pytest.mark.skipif(not (THIRD_RAFTD and INTEROP_SHARDS),
                    reason="EMBRAFT_INTEROP_THIRD_RAFTD or EMBRAFT_INTEROP_SHARDS not set")
def test_sharded_cluster_of_three_languages(tmp_path):
    """With EMBRAFT_INTEROP_THIRD_RAFTD naming a third implementation as
    well: it founds a sharded cluster, a Python node joins through it (and
    takes N from the answer), the other raftd joins through the Python
    node (its group joins forwarded across languages); keys of every group
    are written and read through every node; the founder is killed, the
    groups it led elect leaders in the other two languages, and it
    restarts from its data directory (without -shards) and catches up."""
    founder = [os.path.abspath(THIRD_RAFTD or "")]
    joiner = [os.path.abspath(OTHER_RAFTD or "")]
    cluster = RaftdCluster(tmp_path)
    names = (1, 2, 3)
    try:
        cluster.start(1, program=founder, args=["-shards", str(TRIO_SHARDS)])
        assert wait_until(lambda: _groups_led(cluster, [1]), 30), cluster.log(1)
        cluster.start(2, join=1)
        cluster.start(3, join=2, program=joiner)
        assert wait_until(lambda: _every_group_has_voters(cluster, names, 3), 60), (
            cluster.log(2), cluster.log(3))
        assert all(status(cluster.ports[n])["shards"] == TRIO_SHARDS for n in names)

        # Writes through every node, most forwarded to their group's leader.
        for i in range(TRIO_KEYS):
            _write_until_committed(cluster.ports[names[i % 3]], f"key{i}", b"value-%d" % i)
        for name in names:
            for i in range(TRIO_KEYS):
                assert request(cluster.ports[name], "GET", f"/db/key{i}") == (
                    200, b"value-%d" % i), (name, i)

        # The founder dies; the groups it led elect leaders elsewhere.
        cluster.kill(1)
        assert wait_until(lambda: _groups_led(cluster, [2, 3]), 60), (
            status(cluster.ports[2]), status(cluster.ports[3]))
        for i in range(TRIO_KEYS, 2 * TRIO_KEYS):
            _write_until_committed(cluster.ports[names[1 + i % 2]], f"key{i}", b"value-%d" % i)

        # Restarted from its data directory, it catches up in every group.
        cluster.start(1, program=founder)
        last = 2 * TRIO_KEYS - 1
        assert wait_until(lambda: request(cluster.ports[1], "GET", f"/db/key{last}?stale=true")
                          == (200, b"value-%d" % last), 60), cluster.log(1)
        assert wait_until(lambda: _groups_led(cluster, names), 60)
        for name in names:
            for i in range(2 * TRIO_KEYS):
                assert request(cluster.ports[name], "GET", f"/db/key{i}") == (
                    200, b"value-%d" % i), (name, i)
    finally:
        cluster.close()
