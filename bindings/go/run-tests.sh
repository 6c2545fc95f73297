#!/usr/bin/env bash
# Runs the Go binding's tests (called by scripts/test-all.sh):
#   1. builds libembraft.a with cargo (the package links it statically);
#   2. gofmt and go vet;
#   3. unit and transport tests under the race detector;
#   4. the same under the embraftdebug tag (a collection before every
#      access to a C handle, to catch use after free);
#   5. the raftd walkthroughs (one group and -shards 8), mixed clusters
#      with the C raftd (when examples/c/raftd builds; one group and
#      sharded), the metrics scrape, and the Porcupine linearizability
#      runs, with the test and every Go raftd under the race detector
#      (3 and 5 nodes with one group, 3 nodes with -shards 8, 60 s each;
#      EMBRAFT_SOAK=1 for 10 minutes each, EMBRAFT_LIN_SECONDS=N for N
#      seconds);
#   6. the cross-process scale test with 10,000 groups
#      (EMBRAFT_SCALE_GROUPS=N for another size).
# Ends with "go binding: N passed, M failed" and a non-zero exit on failure.
set -uo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

passed=0
failed=0
failed_names=()
step() {
    local name="$1"
    shift
    echo "--- go: $name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "--- go: $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "--- go: $name: FAILED ($((SECONDS - start)) s)"
    fi
}
summary() {
    [ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
    echo "go binding: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

if ! (cd "$root" && cargo build --release --lib --quiet); then
    failed=1
    failed_names+=("cargo build")
    summary
    exit 1
fi

# shellcheck source=cgo-env.sh
. "$root/bindings/go/cgo-env.sh"
# The cgo pointer checks (on by default; explicit so nothing turns them off).
export GODEBUG=cgocheck=1

gofmt_clean() {
    local unformatted
    unformatted="$(gofmt -l .)"
    [ -z "$unformatted" ] || { echo "not gofmt-ed: $unformatted"; return 1; }
}

step "gofmt" gofmt_clean
step "go vet" go vet ./...
step "go test -race" go test -race -short -count=1 ./...
step "go test -tags embraftdebug" go test -tags embraftdebug -short -count=1 ./...

# The C raftd, when present, joins a mixed Go/C cluster (TestInteropWithCRaftd).
c_raftd_dir="$root/examples/c/raftd"
if [ -f "$c_raftd_dir/Makefile" ]; then
    make -s -C "$c_raftd_dir" >/dev/null 2>&1 || echo "--- go: C raftd did not build; the interop test will skip"
fi

multi_process() {
    local out status
    out="$(mktemp)"
    EMBRAFT_RAFTD_RACE=1 go test -race -count=1 -v -timeout 30m -run 'Walkthrough|Interop|Metrics|Linearizable|RegisterModel' ./cmd/raftd 2>&1 | tee "$out" \
        | grep -E '^(--- |ok|FAIL|panic)|linearizability:|visualization:'
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "--- full output (tail):"
        tail -n 200 "$out"
    fi
    rm -f "$out"
    return "$status"
}
step "raftd walkthrough, interop, metrics and linearizability" multi_process

# 10,000 groups on three groups-host processes (without the race detector,
# which the -short run above covers with 1,000): leaders, quiescence, idle
# CPU per process (printed), recovery after SIGKILL.
scale() {
    local out status
    out="$(mktemp)"
    go test -count=1 -v -timeout 10m -run '^TestScale$' ./cmd/groups-host >"$out" 2>&1
    status=$?
    grep -E 'scale_test.go|^(--- |ok|FAIL|panic)' "$out"
    [ "$status" -eq 0 ] || tail -n 100 "$out"
    rm -f "$out"
    return "$status"
}
step "scale: 10,000 groups across three processes" scale

summary
