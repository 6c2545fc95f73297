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
#   RAFTD_DEMO_HTTP=curl|devtcp   HTTP client (default: curl if installed,
#                                 else bash's /dev/tcp)
#   RAFTD_DEMO_NO_BUILD=1         use the binaries already built
#   RAFTD_DEMO_QUIET_BUILD=1      (default) hide cargo/make output unless they fail
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}
raftd=$target_dir/raftd-c/raftd
started=$SECONDS

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

workdir=''
pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null
    done
    if [ -n "$workdir" ] && [ -d "$workdir" ]; then
        if [ "$failed" -ne 0 ] || [ "$status" -ne 0 ]; then
            for log in "$workdir"/node*.log; do
                [ -f "$log" ] || continue
                say "${dim}--- last lines of $(basename "$log")"
                tail -n 15 "$log"
                printf '%s' "$plain"
            done
        fi
        rm -rf "$workdir"
    fi
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
    quietly cargo build --release --lib || fail "cargo build --release failed"
    detail "libembraft (cargo build --release) ... ok ($((SECONDS - build_start)) s)"
    quietly make -C examples/c/raftd || fail "building the C raftd failed"
    detail "raftd (examples/c/raftd, C) ......... ok"
fi
[ -x "$raftd" ] || fail "$raftd is missing"

# ---- HTTP ------------------------------------------------------------------

http_client=${RAFTD_DEMO_HTTP:-}
if [ -z "$http_client" ]; then
    http_client=devtcp
    command -v curl >/dev/null && http_client=curl
fi

# http METHOD HOST:PORT PATH [BODY]: sets code and body (code 000 when no
# answer came within 15 s).
code=000
body=''
http() {
    local method=$1 addr=$2 path=$3 data=${4-}
    code=000
    body=''
    if [ "$http_client" = curl ]; then
        local out
        out=$(curl -s -m 15 -X "$method" --data-binary "$data" -w '\n%{http_code}' \
            "http://$addr$path" 2>/dev/null) || true
        code=${out##*$'\n'}
        body=${out%$'\n'*}
        [ -n "$code" ] || code=000
        return
    fi
    # bash's /dev/tcp: one request per connection (raftd answers with
    # Connection: close), read until the server closes.
    local response
    response=$(timeout 15 bash -c '
        exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
        printf "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" \
            "$2" "$3" "$1" "${#4}" "$4" >&3
        cat <&3' _ "$addr" "$method" "$path" "$data" 2>/dev/null) || true
    if [[ $response == HTTP/1.?" "[0-9][0-9][0-9]* ]]; then
        code=${response:9:3}
        body=${response#*$'\r\n\r\n'}
    fi
}

# ---- cluster helpers -------------------------------------------------------

workdir=$(mktemp -d "${TMPDIR:-/tmp}/embraft-demo.XXXXXX")
declare -a port=() id=()

# A port nobody listens on (a connection attempt is refused).
free_port() {
    local candidate
    for _ in $(seq 1 50); do
        candidate=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null &&
            [[ " ${port[*]} " != *" $candidate "* ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# start N [ARGS...]: runs raftd number N in the background.
start() {
    local n=$1
    shift
    "$raftd" -h 127.0.0.1 -p "${port[$n]}" -v "$@" "$workdir/node$n" >>"$workdir/node$n.log" 2>&1 &
    pids[n]=$!
}

# status N: reads node N's /status into role, term, leader, commit, applied.
role='' term='' leader='' commit='' applied='' node_id=''
json_string() { sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" <<<"$body"; }
json_number() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" <<<"$body"; }
status() {
    role='' term='' leader='' commit='' applied='' node_id=''
    http GET "127.0.0.1:${port[$1]}" /status
    [ "$code" = 200 ] || return 1
    role=$(json_string role)
    term=$(json_number term)
    leader=$(json_string leader)
    commit=$(json_number commit)
    applied=$(json_number applied)
    node_id=$(json_string id)
}

# The demo's number of a node id ("?" if unknown).
number_of() {
    local n
    for n in 1 2 3; do
        [ "${id[$n]-}" = "$1" ] && { echo "$n"; return; }
    done
    echo "?"
}

# wait_until SECONDS COMMAND...: polls every 0.1 s.
wait_until() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    while [ $SECONDS -lt $deadline ]; do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

is_leader() { status "$1" && [ "$role" = leader ]; }
follows() { status "$1" && [ "$role" = follower ] && [ "$leader" = "${id[$2]}" ]; }
caught_up() { status "$1" && [ "$role" = follower ] && [ -n "$commit" ] && [ "$applied" -ge "$2" ]; }

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

leader_number() {
    local n
    for n in "$@"; do
        if is_leader "$n"; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

write() { # write N KEY VALUE
    http POST "127.0.0.1:${port[$1]}" "/db/$2" "$3"
    [ "$code" = 200 ]
}
reads() { # reads N KEY VALUE: a linearizable GET answers VALUE
    http GET "127.0.0.1:${port[$1]}" "/db/$2"
    [ "$code" = 200 ] && [ "$body" = "$3" ]
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
http GET "127.0.0.1:${port[1]}" /status
voters=$(grep -o '"voters": \[[^]]*\]' <<<"$body" | grep -o '"[0-9]*"' | wc -l)
check "the leader counts 3 voters" [ "$voters" -eq 3 ]

step "3. Writes are replicated"
write 1 greeting "hello, raft"
detail "POST /db/greeting = \"hello, raft\" to node 1 (leader)            -> $code"
write 3 color "blue"
detail "POST /db/color = \"blue\" to node 3 (follower, forwards to leader) -> $code"
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
kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
pids[1]=''
killed_at=$SECONDS
detail "kill -9 node 1 (the leader, term $old_term)"

step "5. A new leader is elected"
new=$(wait_until 20 leader_number 2 3) || fail "no new leader among nodes 2 and 3"
status "$new"
detail "node $new is the new leader in term $term (after about $((SECONDS - killed_at + 1)) s)"
other=$((new == 2 ? 3 : 2))
describe "$other"
check "a new leader was elected in a later term" [ "$term" -gt "$old_term" ]

step "6. Writes continue"
write "$other" greeting "hello again"
detail "POST /db/greeting = \"hello again\" to node $other (follower)     -> $code"
write "$new" counter "3"
detail "POST /db/counter = \"3\" to node $new (leader)                    -> $code"
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
