"""A cluster mixing the Python raftd with another implementation of
docs/RAFTD.md and the stream transport (the C or the Go raftd). Skipped
unless EMBRAFT_INTEROP_RAFTD names that program's executable, for example

    EMBRAFT_INTEROP_RAFTD=target/raftd-c/raftd bindings/python/run-tests.sh
"""

import os

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
