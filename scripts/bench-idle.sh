#!/usr/bin/env bash
# Idle cost of a 3-node cluster of Go raftd servers on 127.0.0.1, with
# quiescence off (the default) and on (RAFTD_QUIESCE_TICKS): for each, the
# cluster is formed, takes a few writes, is left alone for a settling
# period, then the CPU time (user + system, from /proc) each process spends
# over a measuring window is read. Prints one JSON object: the median per
# process of each run, and their ratio.
#
# Usage: scripts/bench-idle.sh [--seconds S] [--quiesce-ticks N]
#   --seconds S          measuring window (default 20)
#   --quiesce-ticks N    idle ticks before the group goes quiet (default 10)
# Builds libembraft and the Go raftd first. Bounded: every process it
# starts is killed, and its directory removed, on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
quiesce=10
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --quiesce-ticks) quiesce=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--quiesce-ticks N]" >&2; exit 2 ;;
    esac
done

cargo build --release --lib --quiet
mkdir -p target/raftd-go
root=$PWD
# shellcheck source=../bindings/go/cgo-env.sh
. bindings/go/cgo-env.sh
(cd bindings/go && go build -o ../../target/raftd-go/raftd ./cmd/raftd)
raftd=$PWD/target/raftd-go/raftd

scratch=$(mktemp -d "${TMPDIR:-/tmp}/embraft-idle.XXXXXX")
pids=()
stop_all() {
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all; rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

base_port=$((24000 + RANDOM % 2000))
http() { # METHOD PORT PATH [DATA]
    curl -s -m 2 -X "$1" ${4:+--data-binary "$4"} "http://127.0.0.1:$2$3"
}
wait_for() { # PORT PATH: until it answers 200, at most 20 s
    for _ in $(seq 200); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1$2")" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "no answer from 127.0.0.1:$1$2" >&2
    return 1
}
cpu_ticks() { # PID: utime + stime, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
loopback_packets() { # packets sent on the loopback interface so far
    awk '$1 == "lo:" {print $11}' /proc/net/dev
}

# run LABEL QUIESCE_TICKS: prints the CPU percent of a core per process,
# then the loopback packets per second (the cluster's traffic, and whatever
# else the machine sends over loopback meanwhile).
run() {
    local label=$1 ticks=$2 dir="$scratch/$1" i
    local env=(env)
    if [ "$ticks" -gt 0 ]; then
        env+=(RAFTD_QUIESCE_TICKS="$ticks")
    fi
    for i in 1 2 3; do
        local port=$((base_port + i))
        mkdir -p "$dir/n$i"
        if [ "$i" -eq 1 ]; then
            "${env[@]}" "$raftd" -h 127.0.0.1 -p "$port" "$dir/n$i" >"$dir/n$i.log" 2>&1 &
        else
            "${env[@]}" "$raftd" -h 127.0.0.1 -p "$port" -join "127.0.0.1:$((base_port + 1))" \
                "$dir/n$i" >"$dir/n$i.log" 2>&1 &
        fi
        pids+=($!)
        wait_for "$port" /status
    done
    for i in 1 2 3 4 5; do
        http POST $((base_port + 1)) "/db/k$i" "v$i" >/dev/null
    done
    # Settle: the group goes quiet after its idle ticks (at most a few s).
    sleep 5
    local before=() after=() hz
    hz=$(getconf CLK_TCK)
    local packets_before packets_after
    packets_before=$(loopback_packets)
    for pid in "${pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    sleep "$seconds"
    for pid in "${pids[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    packets_after=$(loopback_packets)
    local percents=()
    for i in 0 1 2; do
        percents+=("$(awk -v a="${after[$i]}" -v b="${before[$i]}" -v hz="$hz" -v s="$seconds" \
            'BEGIN {printf "%.3f", 100 * (a - b) / hz / s}')")
    done
    stop_all
    echo "${percents[*]} $(( (packets_after - packets_before) / seconds ))"
}

off=$(run off 0)
base_port=$((base_port + 10))
on=$(run on "$quiesce")
python3 - "$seconds" "$quiesce" "$off" "$on" <<'EOF'
import json, statistics, sys
seconds, quiesce, off, on = sys.argv[1:]
*off, off_packets = [float(x) for x in off.split()]
*on, on_packets = [float(x) for x in on.split()]
median_off, median_on = statistics.median(off), statistics.median(on)
print(json.dumps({
    "benchmark": "idle cost of a 3-node Go raftd cluster",
    "window_seconds": int(seconds),
    "quiesce_ticks": int(quiesce),
    "cpu_percent_per_process_off": off,
    "cpu_percent_per_process_on": on,
    "median_off": median_off,
    "median_on": median_on,
    "loopback_packets_per_sec_off": off_packets,
    "loopback_packets_per_sec_on": on_packets,
    "on_vs_off_ratio": round(median_on / median_off, 3) if median_off else None,
}))
EOF
