#!/usr/bin/env bash
# embraft demo: a 3-node replicated key/value cluster on this machine.
#
# Builds libembraft (cargo build --release) and the C raftd
# (examples/c/raftd), then runs three raftd processes on 127.0.0.1 with
# their data in a temporary directory and shows, step by step: node 1
# founds the cluster, nodes 2 and 3 join, writes are replicated and read
# back from every node, the leader is killed (SIGKILL), a new leader is
# elected and takes writes, and the killed node restarts from its data
# directory and catches up.
#
# Exits 0 only if every check held. Processes and the temporary directory
# are removed on any exit.
#
# Environment:
#   RAFTD_HTTP_CLIENT=curl|devtcp  HTTP client (default: curl if installed,
#                                  else bash's /dev/tcp)
#   RAFTD_DEMO_NO_BUILD=1          use the binaries already built
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
raftd=$target_dir/raftd-c/raftd
started=$SECONDS
# http, start, status, wait_until, reads, write, cluster_stop...: shared
# with the C raftd's tests.
# shellcheck source=../examples/c/raftd/cluster.sh
source "$root/examples/c/raftd/cluster.sh"

if [ -t 1 ]; then
    bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' plain=$'\e[0m'
else
    bold='' green='' red='' dim='' plain=''
fi

say() { printf '%s\n' "$*"; }
step() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }
detail() { printf '   %s\n' "$*"; }

passed=0
failed=0
# check DESCRIPTION CONDITION...: one verified claim of the demo.
check() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        printf '   %s✓%s %s\n' "$green" "$plain" "$what"
    else
        failed=$((failed + 1))
        printf '   %s✗ %s%s\n' "$red" "$what" "$plain"
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The nodes' logs explain a failure (not an interruption by the user).
    if [ "$status" -ne 130 ] && { [ "$failed" -ne 0 ] || [ "$status" -ne 0 ]; }; then
        SHOW_LOGS=1
    fi
    cluster_stop
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    say "${red}demo failed: $*${plain}"
    failed=$((failed + 1))
    exit 1
}

# ---- build -----------------------------------------------------------------

quietly() {
    local log
    log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    cat "$log"
    rm -f "$log"
    return 1
}

say "${bold}embraft demo: a 3-node raftd cluster on 127.0.0.1${plain}"
if [ -z "${RAFTD_DEMO_NO_BUILD:-}" ]; then
    step "Building"
    command -v cargo >/dev/null || fail "cargo is not installed (https://rustup.rs)"
    command -v cc >/dev/null || fail "a C compiler (cc) is needed"
    command -v make >/dev/null || fail "make is needed"
    build_start=$SECONDS
    detail "${dim}(the first build of libembraft takes a minute or two)${plain}"
    quietly cargo build --release --lib || fail "cargo build --release failed"
    detail "libembraft (cargo build --release) ... ok ($((SECONDS - build_start)) s)"
    quietly make -C examples/c/raftd || fail "building the C raftd failed"
    detail "raftd (examples/c/raftd, C) ......... ok"
fi
[ -x "$raftd" ] || fail "$raftd is missing"

# ---- the cluster -----------------------------------------------------------

workdir=$(mktemp -d "${TMPDIR:-/tmp}/embraft-demo.XXXXXX")

# describe N: one line with node N's role and term, from its /status.
describe() {
    if status "$1"; then
        local lead="none"
        [ "$leader" != 0 ] && lead="node $(number_of "$leader")"
        detail "node $1 (127.0.0.1:${port[$1]}): $role in term $term, leader $lead, commit $commit, applied $applied"
    else
        detail "node $1 (127.0.0.1:${port[$1]}): no answer"
    fi
}

# show_write N KEY VALUE WHO: one write and its answer.
show_write() {
    write "$1" "$2" "$3"
    detail "$(printf '%-62s -> %s' "POST /db/$2 = \"$3\" to node $1 ($4)" "$code")"
}

# Milliseconds on a monotonic-enough clock (bash 5's EPOCHREALTIME).
now_ms() {
    local t=${EPOCHREALTIME:-$SECONDS.000000}
    t=${t/,/.}
    echo $((${t%.*} * 1000 + 10#${t#*.} / 1000))
}

# ---- the story -------------------------------------------------------------

for n in 1 2 3; do
    port[n]=$(free_port) || fail "no free port found"
done
detail "${dim}data in $workdir; HTTP client: $http_client${plain}"

step "1. Node 1 founds the cluster"
start 1
wait_until 15 is_leader 1 || fail "node 1 did not become leader"
id[1]=$node_id
describe 1
check "node 1 is the leader of its new cluster" is_leader 1

step "2. Nodes 2 and 3 join"
start 2 -join "127.0.0.1:${port[1]}"
wait_until 15 follows 2 1 || fail "node 2 did not join"
id[2]=$node_id
describe 2
# Node 3 asks node 2, a follower, which forwards the join to the leader.
start 3 -join "127.0.0.1:${port[2]}"
wait_until 15 follows 3 1 || fail "node 3 did not join"
id[3]=$node_id
describe 3
check "nodes 2 and 3 follow node 1" follows 2 1
check "the leader counts 3 voters" [ "$(voter_count 1)" -eq 3 ]

step "3. Writes are replicated"
show_write 1 greeting "hello, raft" "the leader"
show_write 3 color "blue" "a follower: it forwards"
for n in 1 2 3; do
    reads "$n" greeting "hello, raft" && g=$body || g="($code)"
    reads "$n" color "blue" && c=$body || c="($code)"
    status "$n"
    detail "node $n ($role): greeting = \"$g\", color = \"$c\""
done
check "every node reads both values back" \
    eval 'reads 1 greeting "hello, raft" && reads 2 greeting "hello, raft" && reads 3 greeting "hello, raft" && reads 1 color blue && reads 2 color blue && reads 3 color blue'

step "4. The leader is killed"
status 1
old_term=$term
kill_node 1
killed_at=$(now_ms)
detail "kill -9 node 1 (the leader, term $old_term)"

step "5. A new leader is elected"
new=$(wait_until 20 leader_among 2 3) || fail "no new leader among nodes 2 and 3"
elapsed=$(($(now_ms) - killed_at))
status "$new"
detail "$(printf 'node %s is the new leader in term %s, %d.%d s after the kill' "$new" "$term" \
    $((elapsed / 1000)) $((elapsed % 1000 / 100)))"
other=$((new == 2 ? 3 : 2))
describe "$other"
check "a new leader was elected in a later term" [ "$term" -gt "$old_term" ]

step "6. Writes continue"
show_write "$other" greeting "hello again" "a follower"
show_write "$new" counter "3" "the new leader"
check "both nodes read the new values" \
    eval 'reads 2 greeting "hello again" && reads 3 greeting "hello again" && reads 2 counter 3 && reads 3 counter 3'
http GET "127.0.0.1:${port[$new]}" /status
target=$(json_number commit)

step "7. Node 1 restarts from its data directory (no -join)"
start 1
wait_until 20 caught_up 1 "$target" || fail "node 1 did not catch up to index $target"
describe 1
reads 1 greeting "hello again" && g=$body || g="($code)"
reads 1 counter 3 && c=$body || c="($code)"
detail "node 1 serves greeting = \"$g\", counter = \"$c\""
check "node 1 rejoined as a follower of node $new" follows 1 "$new"
check "node 1 serves the latest values" eval 'reads 1 greeting "hello again" && reads 1 counter 3 && reads 1 color blue'

echo
if [ "$failed" -eq 0 ]; then
    say "${green}${bold}All $passed checks passed${plain} in $((SECONDS - started)) s. Stopping the cluster."
else
    say "${red}${bold}$failed of $((passed + failed)) checks failed${plain}"
fi
[ "$failed" -eq 0 ]
