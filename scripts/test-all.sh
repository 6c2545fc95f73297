#!/usr/bin/env bash
# Runs every test of embraft: formatting and lints, the Rust suites
# (unit, codec fuzzing, WAL, the deterministic simulator, the node suites in
# both threading modes), and the C, Python
# and Go suites where they exist. Builds whatever it needs first.
#
# Environment:
#   EMBRAFT_SIM_SEEDS   seeds per randomized simulator scenario (default 500)
#   EMBRAFT_SOAK=1      longer runs (more seeds, longer nemesis runs); see README
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${EMBRAFT_SOAK:-}" ]; then
    export EMBRAFT_SIM_SEEDS="${EMBRAFT_SIM_SEEDS:-20000}"
fi

passed=0
failed=0
failed_names=()

suite() {
    local name="$1"
    shift
    echo
    echo "=== $name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "=== $name: FAILED ($((SECONDS - start)) s)"
    fi
}

suite "rustfmt" cargo fmt --all -- --check
suite "clippy" cargo clippy --all-targets --release -- -D warnings
suite "rust tests" cargo test --release --all-targets
# The node suites again with inline nodes (no threads of their own).
suite "rust node suites, inline" env EMBRAFT_TEST_THREADING=inline \
    cargo test --release --test node_disk --test node_membership --test node_snapshot

for extra in tests/c/run.sh examples/c/raftd/run-tests.sh bindings/python/run-tests.sh \
    bindings/go/run-tests.sh scripts/interop.sh; do
    if [ -x "$extra" ]; then
        suite "$extra" "$extra"
    fi
done

echo
if [ "$failed" -ne 0 ]; then
    echo "failed suites: ${failed_names[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
