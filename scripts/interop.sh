#!/usr/bin/env bash
# Mixed-language clusters: the Python raftd founds a cluster that a raftd
# written in another language joins (and the other way round), over the
# stream transport of docs/WIRE.md; the cluster replicates, forwards writes
# and fails over. Then snapshots cross languages (docs/RAFTD.md
# "Snapshots", RAFTD_SNAPSHOT_EVERY=50, RAFTD_COMPACT_KEEP=10): the other
# raftd founds a cluster and compacts its log, a new Python node catches up
# through the other's snapshot; the other node is killed, the Python nodes
# compact past it, and the restarted node catches up through a Python
# node's snapshot; every key is read back from each. Sharded clusters
# (docs/RAFTD.md "Shards", -shards 4) of Python and the other raftd, and of
# all three languages at once, write and read keys of every group through
# every node and survive the founder's kill and restart. Run once with the
# C raftd and once with the Go raftd (bindings/python/tests/test_interop.py).
#
# Builds what it needs: libembraft (cargo build --release), the C raftd
# (make -C examples/c/raftd), the Go raftd (target/raftd-go/raftd), and the
# Python package into its virtualenv (bindings/python/run-tests.sh, here
# limited to the interop tests: the rest of the Python suite is its own
# step of scripts/test-all.sh).
# Bounded: each run is stopped after INTEROP_TIMEOUT seconds (default 300),
# with every process it started; its temporary directories are removed on
# any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --lib --quiet
make -C examples/c/raftd --quiet >/dev/null
mkdir -p target/raftd-go
root=$PWD
# shellcheck source=../bindings/go/cgo-env.sh
. bindings/go/cgo-env.sh
(cd bindings/go && go build -o ../../target/raftd-go/raftd ./cmd/raftd)

# Everything temporary (the Python tests' data directories and logs) lives
# here; run-tests.sh removes its own part, this trap the rest.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/embraft-interop.XXXXXX")
run=''
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # `timeout` leads a process group of its own: the test run and every
    # raftd it started.
    if [ -n "$run" ] && kill -0 "$run" 2>/dev/null; then
        kill -TERM -- "-$run" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$run" 2>/dev/null || true
    fi
    rm -rf "$scratch"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

limit=${INTEROP_TIMEOUT:-300}
started=$SECONDS
passed=0
failed=0
for other in target/raftd-c/raftd target/raftd-go/raftd; do
    # The third implementation founds the three-language sharded cluster.
    third=target/raftd-go/raftd
    [ "$other" = "$third" ] && third=target/raftd-c/raftd
    echo "--- Python raftd with $other (sharded: with $third as well)"
    run_started=$SECONDS
    TMPDIR=$scratch EMBRAFT_INTEROP_RAFTD="$other" EMBRAFT_INTEROP_SHARDS=4 \
        EMBRAFT_INTEROP_THIRD_RAFTD="$third" \
        timeout -k 10 "$limit" bindings/python/run-tests.sh \
        -k test_interop &
    run=$!
    if wait "$run"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    run=''
    echo "--- $other: $((SECONDS - run_started)) s"
done
echo "interop: $passed passed, $failed failed in $((SECONDS - started)) s"
[ "$failed" -eq 0 ]
