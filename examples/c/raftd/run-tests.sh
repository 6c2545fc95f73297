#!/usr/bin/env bash
# Multi-process tests of the C raftd on 127.0.0.1 (docs/RAFTD.md):
#   build         libembraft and raftd build with -Wall -Wextra -Werror
#   walkthrough   node 1 founds, 2 and 3 join, writes on the leader are read
#                 on all three, the leader is killed (SIGKILL), a new leader
#                 takes writes, the killed node restarts without -join and
#                 catches up
#   forwarding    followers forward writes, deletes and joins to the leader
#   metrics       the leader's /metrics before and after writes, parsed by
#                 prometheus_client's parser (in a virtualenv of this
#                 script's own) and checked against docs/RAFTD.md "Metrics"
#                 by scripts/check_metrics.py
#   bad input     404, 413, 400s, 405, 411, malformed HTTP and peer frames;
#                 the node keeps serving
#   identity      node.json, restart ignores -join, /metrics, /leave
#   snapshots     the codec against docs/vectors/raftd-snapshot-v1.bin (under
#                 valgrind when installed: no errors, no leaks); with
#                 RAFTD_SNAPSHOT_EVERY=20 and RAFTD_COMPACT_KEEP=5, a killed
#                 follower catches up through the leader's snapshot and a
#                 restarted leader restores its own; a snapshot that is not
#                 raftd's stops the node (exit 1, "refusing snapshot")
#   shards        -shards 8 (RAFTD.md "Shards"): three nodes join every group,
#                 keys land in their FNV-1a-64 group, writes and linearizable
#                 reads of many keys through every node (forwarding to each
#                 key's group leader), per-group /metrics, the hello's
#                 group-frames flag (status 5 both ways), a node killed and
#                 restarted from disk (per-group snapshots, only group 1's
#                 with peers), every key read back from every node, /leave
#                 from every group, a joiner killed amid its joins; these
#                 nodes are built with -fsanitize=address,undefined and
#                 must exit cleanly (no error, no leak)
#   demo          scripts/demo.sh, with curl and with bash's /dev/tcp
# Every wait is bounded; processes and directories are removed on exit. The
# last line reads "N passed, M failed"; the exit status is non-zero on any
# failure.
set -uo pipefail
cd "$(dirname "$0")"
here=$PWD
root=$(cd ../../.. && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
raftd=$target_dir/raftd-c/raftd
# shellcheck source=cluster.sh
source "$here/cluster.sh"

passed=0
failed=0
failures=()
# check NAME COMMAND...: one assertion.
check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name (code=$code body=${body:0:120})"
    fi
}

workdir=$(mktemp -d "${TMPDIR:-/tmp}/raftd-c-tests.XXXXXX")
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ "$failed" -ne 0 ] && SHOW_LOGS=1
    cluster_stop
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ends the run now, counting what could not be checked as failed.
abort() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "FAIL $1 (aborting)"
    finish
}

finish() {
    if [ ${#failures[@]} -gt 0 ]; then
        echo "failed: ${failures[*]}"
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

started=$SECONDS

# ---- build -----------------------------------------------------------------

echo "--- build"
check "build: libembraft and raftd with -Wall -Wextra -Werror" make -s -C "$here"
[ -x "$raftd" ] || abort "raftd binary missing"
check "usage: no data directory is an error (exit 2)" \
    bash -c '"$1" >/dev/null 2>&1; [ $? -eq 2 ]' _ "$raftd"
check "usage: an unknown option is an error (exit 2)" \
    bash -c '"$1" -bogus dir >/dev/null 2>&1; [ $? -eq 2 ]' _ "$raftd"
for bad in 0 65537 x; do
    check "usage: -shards $bad is an error (exit 2)" \
        bash -c '"$1" -shards "$2" dir >/dev/null 2>&1; [ $? -eq 2 ]' _ "$raftd" "$bad"
done

# ---- walkthrough -------------------------------------------------------------

echo "--- walkthrough"
for n in 1 2 3; do
    port[n]=$(free_port) || abort "no free port"
done
start 1
check "node 1 founds a cluster and leads it" wait_until 15 is_leader 1
id[1]=$node_id
[ -n "${id[1]}" ] || abort "node 1 never answered"
start 2 -join "127.0.0.1:${port[1]}"
check "node 2 joins through the leader" wait_until 15 follows 2 1
id[2]=$node_id
# Through a follower: node 2 forwards the join to the leader.
start 3 -join "127.0.0.1:${port[2]}"
check "node 3 joins through a follower" wait_until 15 follows 3 1
id[3]=$node_id
check "three voters" [ "$(voter_count 1)" -eq 3 ]
check "every node knows every address" \
    eval 'status 3 && [ "$(grep -o "127.0.0.1:[0-9]*" <<<"$body" | sort -u | wc -l)" -eq 3 ]'

check "write on the leader" write 1 alpha one
for n in 1 2 3; do
    check "node $n reads the write (linearizable)" reads "$n" alpha one
done
check "a stale read on a follower eventually sees it" \
    wait_until 5 eval 'http GET "127.0.0.1:${port[3]}" "/db/alpha?stale=true"; [ "$body" = one ]'

status 1
old_term=$term
kill_node 1
new=$(wait_until 20 leader_among 2 3)
check "a new leader is elected after the leader is killed" [ -n "$new" ]
[ -n "$new" ] || abort "no leader after the kill"
other=$((new == 2 ? 3 : 2))
status "$new"
check "the new leader's term is higher" [ "$term" -gt "$old_term" ]
check "the new leader accepts writes" write "$new" alpha two
check "the surviving follower reads them" reads "$other" alpha two
check "writes through the surviving follower work" write "$other" beta three
status "$new"
target=$commit

# Restarted without -join: the -join argument must be ignored, so give one
# that leads nowhere.
start 1 -join "127.0.0.1:1"
check "the killed node restarts from its data directory and catches up" \
    wait_until 20 caught_up 1 "$target"
check "it follows the new leader" follows 1 "$new"
check "it serves the latest values" eval 'reads 1 alpha two && reads 1 beta three'
check "its identity is unchanged" eval 'status 1 && [ "$node_id" = "${id[1]}" ]'
check "its log says it restarted and ignored -join" \
    grep -q -- "-join is ignored" "$workdir/node1.log"

# ---- forwarding ----------------------------------------------------------------

echo "--- forwarding"
leader_n=$(leader_among 1 2 3) || abort "no leader"
follower_n=$((leader_n % 3 + 1))
check "a follower forwards a POST" write "$follower_n" fwd value-from-follower
check "the leader has applied it when the follower answers" \
    eval 'http GET "127.0.0.1:${port[$leader_n]}" "/db/fwd?stale=true"; [ "$body" = value-from-follower ]'
check "a follower forwards a DELETE" \
    eval 'http DELETE "127.0.0.1:${port[$follower_n]}" /db/fwd; [ "$code" = 200 ]'
absent_everywhere() {
    local n
    for n in 1 2 3; do
        http GET "127.0.0.1:${port[$n]}" "/db/$1"
        [ "$code" = 404 ] || return 1
    done
}
check "the key is gone everywhere" absent_everywhere fwd
check "DELETE of an absent key is 200" \
    eval 'http DELETE "127.0.0.1:${port[$follower_n]}" /db/never-there; [ "$code" = 200 ]'
check "binary values round-trip through a follower" \
    eval 'write "$follower_n" bin "$(printf "a\tb c%%d")" && reads "$leader_n" bin "$(printf "a\tb c%%d")"'
check "percent-encoded keys are decoded" \
    eval 'write "$follower_n" "sp%20ace" x && http GET "127.0.0.1:${port[$leader_n]}" "/db/sp%20ace" && [ "$body" = x ]'

# ---- metrics -------------------------------------------------------------------

echo "--- metrics"
# prometheus_client, for its parser of the text format, in a virtualenv of
# this script's own (RAFTD_METRICS_VENV; PYTHON builds it, default python3).
metrics_venv=${RAFTD_METRICS_VENV:-$target_dir/raftd-c/venv}
metrics_python() {
    local python=${PYTHON:-python3}
    if [ ! -x "$metrics_venv/bin/python" ] &&
        ! "$python" -m venv "$metrics_venv" >/dev/null 2>&1; then
        # No ensurepip: a venv without pip, filled by the interpreter's pip.
        rm -rf "$metrics_venv"
        "$python" -m venv --without-pip "$metrics_venv" || return 1
    fi
    "$metrics_venv/bin/python" -c 'import prometheus_client' 2>/dev/null && return 0
    if [ -x "$metrics_venv/bin/pip" ]; then
        "$metrics_venv/bin/pip" install --quiet --disable-pip-version-check prometheus_client
    else
        "$python" -m pip --python "$metrics_venv/bin/python" install --quiet \
            --disable-pip-version-check prometheus_client
    fi
}
scrape() { # scrape N FILE: node N's /metrics into FILE
    http GET "127.0.0.1:${port[$1]}" /metrics
    [ "$code" = 200 ] && printf '%s\n' "$body" >"$2"
}
leader_n=$(leader_among 1 2 3) || abort "no leader"
check "prometheus_client for the checks (own virtualenv)" metrics_python
check "the leader answers /metrics" scrape "$leader_n" "$workdir/metrics-before.txt"
writes_ok=1
for i in $(seq 1 10); do write "$leader_n" "metrics$i" "v$i" || writes_ok=0; done
check "10 writes on the leader" [ "$writes_ok" = 1 ]
check "the leader answers /metrics after them" scrape "$leader_n" "$workdir/metrics-after.txt"
check "/metrics follows docs/RAFTD.md (scripts/check_metrics.py)" \
    "$metrics_venv/bin/python" "$root/scripts/check_metrics.py" "$root/docs/RAFTD.md" \
    "$workdir/metrics-before.txt" "$workdir/metrics-after.txt"
check "the scrape counts the requests" \
    grep -q '^raftd_requests_total{method="POST",code="200"} [1-9]' "$workdir/metrics-after.txt"

# ---- bad input -----------------------------------------------------------------

echo "--- bad input"
addr=127.0.0.1:${port[$follower_n]}
expect() { # expect CODE METHOD PATH [BODY]
    local want=$1
    shift
    http "$1" "$addr" "${@:2}"
    [ "$code" = "$want" ] && [ -n "$body" ]
}
check "unknown key: 404 with a message" expect 404 GET /db/no-such-key
check "unknown endpoint: 404" expect 404 GET /nothing
check "value over 1 MiB: 413" \
    eval 'http POST "$addr" /db/big "$(head -c 1048577 /dev/zero | tr "\0" x)"; [ "$code" = 413 ]'
check "value of exactly 1 MiB is accepted" \
    eval 'write "$follower_n" max "$(head -c 1048576 /dev/zero | tr "\0" y)" && http GET "$addr" /db/max && [ ${#body} -eq 1048576 ]'
check "malformed join (not JSON): 400" expect 400 POST /join 'nonsense'
check "malformed join (address without port): 400" expect 400 POST /join '{"id": "7", "addr": "nohost"}'
check "malformed join (id 0): 400" expect 400 POST /join '{"id": "0", "addr": "127.0.0.1:1"}'
check "empty key: 400" expect 400 POST /db/ x
check "key over 1024 bytes: 400" expect 400 GET "/db/$(head -c 1025 /dev/zero | tr '\0' k)"
check "key of 1024 bytes is accepted" write "$follower_n" "$(head -c 1024 /dev/zero | tr '\0' k)" v
check "key with a bad escape: 400" expect 400 GET /db/a%zz
check "key that is not UTF-8: 400" expect 400 GET /db/%ff%fe
check "two path segments: 400" expect 400 GET /db/a/b
check "PUT on /db: 405" expect 405 PUT /db/k v
check "GET on /join: 405" expect 405 GET /join

raw() { # raw BYTES: sends them on a fresh connection, prints the answer
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "$2" >&3; cat <&3' \
        _ "${port[$follower_n]}" "$1" 2>/dev/null
}
# answered_and_closed_by N BYTES HEX: node N's answer to BYTES starts with
# the bytes HEX and it closed the connection by itself (within 3 s).
answered_and_closed_by() {
    local answer
    answer=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "$2" >&3; od -An -tx1 <&3' \
        _ "${port[$1]}" "$2" 2>/dev/null) || return 1
    answer=${answer//[$' \n']/}
    [[ $answer == "$3"* ]]
}
answered_and_closed() { answered_and_closed_by "$follower_n" "$@"; }
check "malformed request line: 400" eval '[[ $(raw "GARBAGE\r\n\r\n") == "HTTP/1.1 400"* ]]'
check "HTTP/2.0: 505" eval '[[ $(raw "GET / HTTP/2.0\r\n\r\n") == "HTTP/1.1 505"* ]]'
check "bad Content-Length: 400" \
    eval '[[ $(raw "POST /db/x HTTP/1.1\r\nContent-Length: 12x\r\n\r\n") == "HTTP/1.1 400"* ]]'
check "chunked body: 411" \
    eval '[[ $(raw "POST /db/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == "HTTP/1.1 411"* ]]'
check "headers over 16 KiB: 431" \
    eval '[[ $(raw "GET /status HTTP/1.1\r\nX: $(head -c 17000 /dev/zero | tr "\0" h)\r\n\r\n") == "HTTP/1.1 431"* ]]'
check "peer hello from another cluster is refused (status 2) and closed" answered_and_closed \
    "EMRF\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00" \
    454d524601000200
# A well-formed hello, then a frame that is not a message: the connection is
# closed and the node keeps serving.
cluster_hex=$(printf '%016x' "$(sed -n 's/.*"cluster_id": "\([0-9]*\)".*/\1/p' "$workdir/node$follower_n/node.json")")
follower_hex=$(printf '%016x' "${id[$follower_n]}")
le() { # little-endian \x escapes of a 16-digit hex number
    local hex=$1 out='' i
    for ((i = 14; i >= 0; i -= 2)); do out+="\\x${hex:i:2}"; done
    printf '%s' "$out"
}
hello="EMRF\x01\x00\x00\x00$(le "$cluster_hex")\x07\x00\x00\x00\x00\x00\x00\x00$(le "$follower_hex")"
check "a peer frame that is not a message closes the stream" \
    answered_and_closed "${hello}\x05\x00\x00\x00junk!" 454d524601000000
check "a peer frame over 64 MiB closes the stream" \
    answered_and_closed "${hello}\xff\xff\xff\xff" 454d524601000000
check "the node logged the bad frames" grep -q "bad frame\|64 MiB" "$workdir/node$follower_n.log"
# WIRE.md "Group frames": bit 0 of the flags says the dialer sends group
# frames, which a one-group node does not take.
check "a hello with the group-frames flag is refused by a one-group node (status 5)" \
    answered_and_closed "EMRF\x01\x00\x01\x00$(le "$cluster_hex")\x07\x00\x00\x00\x00\x00\x00\x00$(le "$follower_hex")" \
    454d524601000500
check "after all that, every node still serves reads" \
    eval 'reads 1 alpha two && reads 2 alpha two && reads 3 alpha two'

# ---- identity, metrics, leave ----------------------------------------------------

echo "--- identity, metrics, leave"
check "node.json holds the id and cluster id as decimal strings" \
    grep -Eq '^\{"id": "[0-9]+", "cluster_id": "[0-9]+"\}$' "$workdir/node2/node.json"
check "the WAL lives in DATA-DIR/wal" [ -d "$workdir/node2/wal" ]
metrics_complete() {
    local metric
    http GET "$addr" /metrics
    [ "$code" = 200 ] || return 1
    for metric in embraft_term embraft_commit_index embraft_applied_index embraft_last_index \
        embraft_is_leader 'raftd_requests_total{method="GET",code="404"}'; do
        grep -qF "$metric" <<<"$body" || return 1
    done
}
check "/metrics has the gauges and the request counter" metrics_complete
# Without a body the receiving node removes itself; a follower forwards it.
check "/leave without a body removes the follower that got it" \
    eval 'http POST "127.0.0.1:${port[$follower_n]}" /leave; [ "$code" = 200 ]'
check "the leader counts two voters and forgets the address" \
    eval 'wait_until 5 eval "[ \$(voter_count $leader_n) -eq 2 ]" && status $leader_n && ! grep -q "${id[$follower_n]}" <<<"$(grep -o "\"peers\".*" <<<"$body")"'
check "the cluster still takes writes" write "$leader_n" after-leave ok
remaining=$((6 - leader_n - follower_n))
check "SIGTERM stops a node cleanly (exit 0)" stop_node "$remaining"
check "it said so in its log" grep -q "stopped$" "$workdir/node$remaining.log"
for n in 1 2 3; do kill_node "$n"; done

# ---- snapshots -------------------------------------------------------------------

echo "--- snapshots"
vector=$root/docs/vectors/raftd-snapshot-v1.bin
check "build: the snapshot codec's tests" make -s -C "$here" kv_test
if command -v valgrind >/dev/null; then
    check "the codec decodes and re-encodes the shared vector, refuses damaged ones (valgrind: no errors, no leaks)" \
        valgrind --quiet --error-exitcode=87 --leak-check=full --errors-for-leak-kinds=all \
        "$target_dir/raftd-c/kv_test" "$vector"
else
    echo "note: valgrind is not installed; the codec's tests run without it"
    check "the codec decodes and re-encodes the shared vector, refuses damaged ones" \
        "$target_dir/raftd-c/kv_test" "$vector"
fi

# snapshot_files N: the stored snapshots of node N.
snapshot_files() { compgen -G "$workdir/node$1/wal/snapshots/snap-*.snap"; }
has_snapshot() { snapshot_files "$1" >/dev/null; }
# crc32 FILE: CRC-32 (IEEE) as 8 hex digits, from gzip's trailer.
crc32() { printf '%08x' "$(gzip -c <"$1" | tail -c 8 | od -An -tu4 -N4 | tr -d ' ')"; }
# Replaces stored snapshot PATH's bytes with FILE's, renamed so that
# embraft's own length and CRC checks pass: only raftd can tell.
replace_snapshot() {
    local path=$1 data=$2 name index_term
    name=$(basename "$path")
    index_term=$(cut -d- -f2-3 <<<"$name")
    cp "$data" "$(dirname "$path")/snap-$index_term-$(printf '%020d' "$(stat -c %s "$data")")-$(crc32 "$data").snap"
    rm "$path"
}
all_keys_on() { # all_keys_on N COUNT: stale reads of s0..s(COUNT-1) on node N
    local i
    for ((i = 0; i < $2; i++)); do
        http GET "127.0.0.1:${port[$1]}" "/db/s$i?stale=true"
        [ "$code" = 200 ] && [ "$body" = "v$i" ] || return 1
    done
}
export RAFTD_SNAPSHOT_EVERY=20 RAFTD_COMPACT_KEEP=5
for n in 4 5 6; do
    port[n]=$(free_port) || abort "no free port"
done
start 4
check "node 4 founds a cluster (snapshots every 20 entries)" wait_until 15 is_leader 4
id[4]=$node_id
start 5 -join "127.0.0.1:${port[4]}"
start 6 -join "127.0.0.1:${port[4]}"
check "nodes 5 and 6 join" wait_until 15 eval '[ "$(voter_count 4)" -eq 3 ]'
# Node 6 must have applied the address book (to answer after a restart).
check "node 6 applied the first write" eval 'write 4 first 1 && reads 6 first 1'
kill_node 6
writes_ok=1
for i in $(seq 0 69); do write 4 "s$i" "v$i" || writes_ok=0; done
check "70 writes with node 6 down" [ "$writes_ok" = 1 ]
check "the leader took a snapshot" wait_until 10 has_snapshot 4
start 6
check "node 6 catches up through the leader's snapshot" wait_until 30 all_keys_on 6 70
check "node 6 says it restored the snapshot" \
    grep -q "restored the key/value state from snapshot" "$workdir/node6.log"
check "the leader stops cleanly (exit 0)" stop_node 4
start 4
check "the leader restarts from its own snapshot and log" wait_until 30 all_keys_on 4 70
check "it restored its own snapshot" \
    eval '[ "$(grep -c "restored the key/value state from snapshot" "$workdir/node4.log")" -ge 1 ]'
check "node 6 stored the snapshot it installed" has_snapshot 6
check "SIGTERM stops node 6 (exit 0)" stop_node 6
truncated=$workdir/truncated.bin
head -c 117 "$vector" >"$truncated"
# The latest one is the one its WAL names (the names sort by index).
replace_snapshot "$(snapshot_files 6 | tail -n 1)" "$truncated"
start 6
exited_with() { # exited_with N STATUS: node N's process ended with STATUS
    ! kill -0 "${pids[$1]}" 2>/dev/null && { wait "${pids[$1]}"; [ $? -eq "$2" ]; }
}
check "a malformed snapshot stops the node with exit status 1" wait_until 20 exited_with 6 1
pids[6]=''
check "it said why" grep -q "refusing snapshot .*truncated" "$workdir/node6.log"
check "the rest of the cluster still serves" reads 5 s69 v69
for n in 4 5 6; do kill_node "$n"; done
unset RAFTD_SNAPSHOT_EVERY RAFTD_COMPACT_KEEP

# ---- shards ----------------------------------------------------------------------

echo "--- shards"
# RAFTD.md "Shards": 8 groups on each node's runtime; snapshots every 10
# entries per group, so the restarted node meets its own and its peers'.
export RAFTD_SNAPSHOT_EVERY=10 RAFTD_COMPACT_KEEP=5
# The sharded nodes run a build with AddressSanitizer and
# UndefinedBehaviorSanitizer: a memory error, undefined behaviour or a leak
# (checked when they exit on SIGTERM) fails the run.
asan_out=$target_dir/raftd-c-asan
check "build: raftd with -fsanitize=address,undefined" \
    make -s -C "$here" OUT="$asan_out" CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer"
plain_raftd=$raftd
[ -x "$asan_out/raftd" ] && raftd=$asan_out/raftd
export UBSAN_OPTIONS=print_stacktrace=1
for n in 7 8 9; do
    port[n]=$(free_port) || abort "no free port"
done
# voter_counts N: how many voters node N lists at the top level (group 1),
# then in each group, one number a line.
voter_counts() {
    local list
    status "$1" || return 1
    grep -o '"voters": \[[^]]*\]' <<<"$body" | while read -r list; do
        grep -o '"[0-9]*"' <<<"$list" | wc -l
    done
}
# every_group_has N COUNT: node N lists COUNT voters in group 1 and in each
# of the 8 groups.
every_group_has() {
    local counts
    counts=$(voter_counts "$1") || return 1
    [ "$(grep -cx "$2" <<<"$counts")" -eq 9 ]
}
# leaders_of N: the leader ids node N knows, top level then each group.
leaders_of() { status "$1" && grep -o '"leader": "[0-9]*"' <<<"$body" | grep -o '[0-9]*'; }
# every_group_led_without N ID: each of node N's groups knows a leader, and
# it is not ID.
every_group_led_without() {
    local leaders
    leaders=$(leaders_of "$1") || return 1
    [ "$(wc -l <<<"$leaders")" -eq 9 ] && ! grep -qx "0\|$2" <<<"$leaders"
}
# keys_read N FROM TO: linearizable reads of keyFROM .. key(TO-1) on node N.
keys_read() {
    local i
    for ((i = $2; i < $3; i++)); do
        reads "$1" "key$i" "value$i" || return 1
    done
}
# write_keys FROM TO NODE...: writes keyFROM .. key(TO-1) through the nodes
# in turn; true if all were 200.
write_keys() {
    local from=$1 to=$2 i ok=0
    shift 2
    local nodes=("$@")
    for ((i = from; i < to; i++)); do
        write "${nodes[$((i % ${#nodes[@]}))]}" "key$i" "value$i" || ok=1
    done
    return $ok
}
start 7 -shards 8
check "node 7 founds a cluster of 8 groups and leads each" \
    wait_until 15 eval 'status 7 && [ "$(grep -o "\"role\": \"leader\"" <<<"$body" | wc -l)" -eq 9 ]'
id[7]=$node_id
check "its status says 8 shards and lists the groups 1 to 8" \
    eval 'status 7 && grep -q "\"shards\": 8, \"groups\": \[{\"group\": 1, " <<<"$body" && grep -q "{\"group\": 8, " <<<"$body"'
check "node.json records the shards" grep -q '"shards": 8}' "$workdir/node7/node.json"
start 8 -join "127.0.0.1:${port[7]}"
# Through a follower, and with a -shards the cluster's number overrides.
check "node 8 joins every group" wait_until 20 every_group_has 7 2
start 9 -join "127.0.0.1:${port[8]}" -shards 3
check "node 9 joins every group through a follower" wait_until 20 every_group_has 7 3
check "node 9 took the cluster's number of shards" grep -q '"shards": 8[,}]' "$workdir/node9/node.json"
check "and said its -shards 3 was ignored" grep -q -- "-shards 3 is ignored" "$workdir/node9.log"
check "and keeps its join answer's addresses in node.json" \
    grep -q "\"peers\": {.*\"127.0.0.1:${port[7]}\"" "$workdir/node9/node.json"
id[9]=$(sed -n 's/.*"id": "\([0-9]*\)".*/\1/p' "$workdir/node9/node.json")
cluster_hex=$(printf '%016x' "$(sed -n 's/.*"cluster_id": "\([0-9]*\)".*/\1/p' "$workdir/node7/node.json")")
check "a hello without the group-frames flag is refused by a sharded node (status 5)" \
    answered_and_closed_by 7 "EMRF\x01\x00\x00\x00$(le "$cluster_hex")\x07\x00\x00\x00\x00\x00\x00\x00$(le "$(printf '%016x' "${id[7]}")")" \
    454d524601000500
scrape 7 "$workdir/metrics-sharded-before.txt"
check "64 writes through all three nodes (followers forward to the key's leader)" \
    write_keys 0 64 7 8 9
for n in 7 8 9; do
    check "node $n reads the 64 keys (linearizable)" keys_read "$n" 0 64
done
# group_commits N: "GROUP COMMIT" lines of node N's groups.
group_commits() {
    status "$1" && grep -o '"group": [0-9]*, [^}]*' <<<"$body" |
        sed 's/"group": \([0-9]*\),.*"commit": \([0-9]*\),.*/\1 \2/'
}
# lands_in KEY GROUP: a write of KEY through node 8 commits in GROUP alone
# (node 7 leads every group and has applied it when node 8 answers).
lands_in() {
    local before after
    before=$(group_commits 7) && write 8 "$1" x && after=$(group_commits 7) || return 1
    [ "$(diff <(echo "$before") <(echo "$after") | sed -n 's/^> \([0-9]*\) .*/\1/p')" = "$2" ]
}
check "key foo goes to group 8 (RAFTD.md's example)" lands_in foo 8
check "key a goes to group 5 (RAFTD.md's example)" lands_in a 5
scrape 8 "$workdir/metrics-sharded.txt"
check "sharded /metrics: per-group series carry a group label, the WAL's none" \
    eval 'grep -q "^embraft_term{group=\"8\"} [1-9]" "$workdir/metrics-sharded.txt" &&
        grep -q "^embraft_network_messages_sent_total{group=\"1\",type=\"Append\"} " "$workdir/metrics-sharded.txt" &&
        grep -q "^embraft_disk_wal_write_bytes_total [1-9]" "$workdir/metrics-sharded.txt" &&
        ! grep -q "^embraft_disk_wal_.*{group=" "$workdir/metrics-sharded.txt" &&
        [ "$(grep -c "^embraft_is_leader{group=" "$workdir/metrics-sharded.txt")" -eq 8 ]'
check "sharded /metrics parses as Prometheus text" "$metrics_venv/bin/python" -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name, family in families.items():
    for s in family.samples:
        grouped = "group" in s.labels
        per_node = name.startswith("embraft_disk_wal_") or name.startswith("raftd_")
        assert grouped != per_node, (name, s.labels)
assert len(families["embraft_term"].samples) == 8
' "$workdir/metrics-sharded.txt"
scrape 7 "$workdir/metrics-sharded-after.txt"
check "sharded /metrics follows docs/RAFTD.md (scripts/check_metrics.py -shards 8)" \
    "$metrics_venv/bin/python" "$root/scripts/check_metrics.py" -shards 8 "$root/docs/RAFTD.md" \
    "$workdir/metrics-sharded-before.txt" "$workdir/metrics-sharded-after.txt"

kill_node 7
check "after node 7 is killed, every group has a leader among 8 and 9" \
    wait_until 20 every_group_led_without 8 "${id[7]}"
check "96 more writes through nodes 8 and 9 while node 7 is down" write_keys 64 160 8 9
group_snapshots() { compgen -G "$workdir/node$1/wal/groups/*/snapshots/snap-*.snap" >/dev/null; }
check "the groups took snapshots" wait_until 10 group_snapshots 8
# Restarts ignore -shards: the node runs the groups of its node.json.
start 7 -shards 2
check "node 7 restarts from disk and reads all 160 keys" wait_until 30 keys_read 7 0 160
check "it restored groups from snapshots" grep -q "group [0-9]*: restored the key/value state from snapshot" "$workdir/node7.log"
check "it still runs 8 groups" eval 'status 7 && grep -q "\"shards\": 8" <<<"$body"'
for n in 8 9; do
    check "node $n reads all 160 keys" keys_read "$n" 0 160
done
# peer_count FILE: the peer count of an RDKV snapshot file.
peer_count() { od -An -tu4 -j8 -N4 "$1" | tr -d ' '; }
snapshot_peers_ok() {
    local file group ok=1
    while read -r file; do
        group=$(basename "$(dirname "$(dirname "$file")")")
        if [ "$group" = 1 ]; then
            [ "$(peer_count "$file")" -eq 3 ] || ok=0
        else
            [ "$(peer_count "$file")" -eq 0 ] || ok=0
        fi
    done < <(compgen -G "$workdir/node8/wal/groups/*/snapshots/snap-*.snap")
    [ $ok = 1 ]
}
check "only group 1's snapshots list the peers" snapshot_peers_ok
check "/leave without a body on node 9 removes it from every group" \
    eval 'http POST "127.0.0.1:${port[9]}" /leave; [ "$code" = 200 ]'
check "nodes 7 and 8 list two voters in every group" \
    wait_until 10 eval 'every_group_has 7 2 && every_group_has 8 2'
check "and node 9's address is forgotten" \
    wait_until 5 eval 'status 7 && ! grep -q "${id[9]}" <<<"$(grep -o "\"peers\": {[^}]*}" <<<"$body")"'
# Groups node 9 led elect a new leader (an election timeout, 1 to 2 s).
check "every group has a leader among nodes 7 and 8" \
    wait_until 10 every_group_led_without 7 "${id[9]}"
check "the two remaining nodes take writes in every group" write_keys 160 200 7 8
# A joiner killed as soon as it wrote node.json, before or amid its joins
# of groups 2 to 8 (RAFTD.md "Shards", steps 2 and 3): restarted, it takes
# its join answer's addresses from node.json and asks again for the groups
# it finds with an empty membership.
port[10]=$(free_port) || abort "no free port"
start 10 -join "127.0.0.1:${port[8]}"
deadline=$((SECONDS + 20))
while [ ! -e "$workdir/node10/node.json" ] && [ $SECONDS -lt $deadline ]; do :; done
kill_node 10
start 10
check "a joiner killed while joining the groups restarts and joins every group" \
    wait_until 30 every_group_has 7 3
if grep -q "joining it again" "$workdir/node10.log"; then
    echo "     (it was killed amid its joins and asked again)"
fi
check "it reads the keys" wait_until 10 keys_read 10 150 200
for n in 7 8 9 10; do
    check "SIGTERM stops sharded node $n cleanly (exit 0, no leak)" stop_node "$n"
done
check "the sanitizers reported nothing" \
    bash -c '! grep -l "AddressSanitizer\|LeakSanitizer\|runtime error" "$@"' _ "$workdir"/node{7,8,9,10}.log
for n in 7 8 9 10; do kill_node "$n"; done
raftd=$plain_raftd
unset RAFTD_SNAPSHOT_EVERY RAFTD_COMPACT_KEEP UBSAN_OPTIONS

# ---- the demo --------------------------------------------------------------------

echo "--- demo"
check "scripts/demo.sh (curl)" \
    bash -c 'RAFTD_DEMO_NO_BUILD=1 RAFTD_HTTP_CLIENT=curl timeout 120 "$1/scripts/demo.sh" >"$2/demo-curl.log" 2>&1 || { cat "$2/demo-curl.log"; exit 1; }' _ "$root" "$workdir"
check "scripts/demo.sh (bash /dev/tcp, no curl)" \
    bash -c 'RAFTD_DEMO_NO_BUILD=1 RAFTD_HTTP_CLIENT=devtcp timeout 120 "$1/scripts/demo.sh" >"$2/demo-devtcp.log" 2>&1 || { cat "$2/demo-devtcp.log"; exit 1; }' _ "$root" "$workdir"

echo "--- done in $((SECONDS - started)) s"
finish
