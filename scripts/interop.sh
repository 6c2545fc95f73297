#!/usr/bin/env bash
# Mixed-language clusters: the Python raftd founds a cluster that a raftd
# written in another language joins (and the other way round), over the
# stream transport of docs/WIRE.md; the cluster replicates, forwards writes
# and fails over. Run once with the C raftd and once with the Go raftd.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --lib --quiet
make -C examples/c/raftd --quiet >/dev/null
mkdir -p target/raftd-go
(cd bindings/go && go build -o ../../target/raftd-go/raftd ./cmd/raftd)

passed=0
failed=0
for other in target/raftd-c/raftd target/raftd-go/raftd; do
    echo "--- Python raftd with $other"
    if EMBRAFT_INTEROP_RAFTD="$other" bindings/python/run-tests.sh \
        bindings/python/tests/test_interop.py; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
