# Helpers to run and query a local cluster of C raftd processes, sourced by
# scripts/demo.sh and examples/c/raftd/run-tests.sh (bash only).
#
# Before use, set:   raftd=<path of the raftd binary>
#                    workdir=<a fresh temporary directory>
# Nodes are numbered 1, 2, 3...: port[N], id[N] and pids[N] describe node N,
# whose data lives in $workdir/nodeN and its log in $workdir/nodeN.log.
# Call cluster_stop from the caller's EXIT trap.

declare -a port=() id=() pids=()

# ---- HTTP ------------------------------------------------------------------

# RAFTD_HTTP_CLIENT=curl|devtcp; curl when installed, else bash's /dev/tcp.
http_client=${RAFTD_HTTP_CLIENT:-}
if [ -z "$http_client" ]; then
    http_client=devtcp
    command -v curl >/dev/null && http_client=curl
fi

# http METHOD HOST:PORT PATH [BODY]: sets `code` and `body` (code 000 when no
# answer came within 15 s).
code=000
body=''
http() {
    local method=$1 addr=$2 path=$3 data=${4-}
    # Byte lengths, not characters; data goes through pipes, never argv
    # (a 1 MiB argument exceeds the kernel's limit for one argument).
    local LC_ALL=C
    code=000
    body=''
    if [ "$http_client" = curl ]; then
        local out
        out=$(printf '%s' "$data" | curl -s -m 15 -X "$method" --data-binary @- \
            -w '\n%{http_code}' "http://$addr$path" 2>/dev/null) || true
        code=${out##*$'\n'}
        body=${out%$'\n'*}
        [ -n "$code" ] || code=000
        return 0
    fi
    # One request per connection (raftd answers with Connection: close);
    # read until the server closes.
    local response
    response=$(printf '%s' "$data" | timeout 15 bash -c '
        exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
        printf "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" \
            "$2" "$3" "$1" "$4" >&3
        cat >&3
        cat <&3' _ "$addr" "$method" "$path" "${#data}" 2>/dev/null) || true
    if [[ $response == HTTP/1.?" "[0-9][0-9][0-9]* ]]; then
        code=${response:9:3}
        body=${response#*$'\r\n\r\n'}
    fi
    return 0
}

# ---- processes -------------------------------------------------------------

# A port nobody listens on (a connection attempt is refused) and no node of
# ours was given.
free_port() {
    local candidate
    for _ in $(seq 1 50); do
        # Below Linux's ephemeral range (32768 and up by default): a port
        # some recent client connection used may sit in TIME-WAIT, and then
        # listen() fails with "Address already in use" though nothing listens.
        candidate=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null &&
            [[ " ${port[*]} " != *" $candidate "* ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# start N [ARGS...]: runs node N in the background on 127.0.0.1:port[N].
start() {
    local n=$1
    shift
    "$raftd" -h 127.0.0.1 -p "${port[$n]}" -v "$@" "$workdir/node$n" >>"$workdir/node$n.log" 2>&1 &
    pids[n]=$!
}

# kill_node N: SIGKILL, as a crash.
kill_node() {
    if [ -n "${pids[$1]-}" ]; then
        kill -9 "${pids[$1]}" 2>/dev/null
        wait "${pids[$1]}" 2>/dev/null
        pids[$1]=''
    fi
}

# stop_node N: SIGTERM, as an operator would; returns the node's exit
# status (SIGKILL and 124 after 10 s without exiting).
stop_node() {
    local pid=${pids[$1]-} waited=0 status
    [ -n "$pid" ] || return 1
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill_node "$1"
        return 124
    fi
    wait "$pid"
    status=$?
    pids[$1]=''
    return $status
}

# Kills every node started here and removes $workdir (its logs first shown
# when SHOW_LOGS is 1).
cluster_stop() {
    local n
    for n in "${!pids[@]}"; do
        kill_node "$n"
    done
    if [ -n "${workdir:-}" ] && [ -d "$workdir" ]; then
        if [ "${SHOW_LOGS:-0}" = 1 ]; then
            for log in "$workdir"/node*.log; do
                [ -f "$log" ] || continue
                echo "--- last lines of $(basename "$log")"
                tail -n 20 "$log"
            done
        fi
        rm -rf "$workdir"
    fi
}

# ---- status ----------------------------------------------------------------

role='' term='' leader='' commit='' applied='' node_id=''
json_string() { sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" <<<"$body"; }
json_number() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" <<<"$body"; }

# status N: node N's /status into role, term, leader, commit, applied, node_id.
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

# voter_count N: how many voters node N lists.
voter_count() {
    status "$1" || { echo 0; return; }
    grep -o '"voters": \[[^]]*\]' <<<"$body" | grep -o '"[0-9]*"' | wc -l
}

# number_of ID: the number of the node with that id ("?" if none).
number_of() {
    local n
    for n in "${!id[@]}"; do
        [ "${id[$n]}" = "$1" ] && { echo "$n"; return; }
    done
    echo "?"
}

# wait_until SECONDS COMMAND...: polls every 0.1 s; the command's status.
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
# follows N M: node N is a follower of node M.
follows() { status "$1" && [ "$role" = follower ] && [ "$leader" = "${id[$2]}" ]; }
# caught_up N INDEX: node N follows someone and applied through INDEX.
caught_up() { status "$1" && [ "$role" = follower ] && [ -n "$applied" ] && [ "$applied" -ge "$2" ]; }

# leader_among N...: prints the number of the first of them that leads.
leader_among() {
    local n
    for n in "$@"; do
        if is_leader "$n"; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

# ---- data ------------------------------------------------------------------

# write N KEY VALUE: POST through node N; true on 200.
write() {
    http POST "127.0.0.1:${port[$1]}" "/db/$2" "$3"
    [ "$code" = 200 ]
}
# reads N KEY VALUE: a linearizable GET on node N answers VALUE.
reads() {
    http GET "127.0.0.1:${port[$1]}" "/db/$2"
    [ "$code" = 200 ] && [ "$body" = "$3" ]
}
