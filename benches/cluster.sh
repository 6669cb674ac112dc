#!/usr/bin/env bash
# What a cluster costs a room: one chatd alone against two chatd nodes
# joined through one private nats-server (JetStream), with the publisher on
# node A and every reader on node B, so that each message crosses NATS.
# The same chat-bench command otherwise, alternating single and cluster, a
# fresh server (and a fresh cluster name, so a fresh stream) per run, REPS
# runs each. Prints a Markdown table of medians.
#
#   benches/cluster.sh
#   REPS=5 CASES="10:20000 1000:20000" RATE_MESSAGES=1000 benches/cluster.sh
#
# Throughput cases are subscribers:messages, published as fast as the
# window allows; the latency case publishes RATE_MESSAGES at 100 a second
# to RATE_SUBS readers. Needs nats-server on PATH or in /usr/sbin (Debian's
# package). Everything stays on 127.0.0.1; every run is bounded in time;
# servers and NATS are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
CASES=${CASES:-"10:50000 100:20000 1000:20000"}
RATE_SUBS=${RATE_SUBS:-100}
RATE_MESSAGES=${RATE_MESSAGES:-1000}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS_SERVER" ] || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 2; }

cargo build --release --bins --quiet
CHATD=target/release/chatd
BENCH=target/release/chat-bench
# shellcheck source=benches/servers.sh
. benches/servers.sh

NATS_PID=""
trap 'stop_server; [ -z "$NATS_PID" ] || stop_pid "$NATS_PID"; rm -rf "$WORK"' EXIT
for _ in 1 2 3 4 5; do
    nats_port=$(spare_port)
    "$NATS_SERVER" -js -a 127.0.0.1 -p "$nats_port" -sd "$WORK/jetstream" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!
    if await_port "$NATS_PID" "$nats_port"; then break; fi
    stop_pid "$NATS_PID"
    NATS_PID=""
done
[ -n "$NATS_PID" ] || { echo "nats-server did not start:" >&2; tail "$WORK/nats.log" >&2; exit 1; }
NATS_URL=nats://127.0.0.1:$nats_port

proto_for() { echo chat; }
FLAGS=(--rate 0 --max-per-ip 0 --max-clients 40000 --db :memory: -q)
start_single() { start_on "$WORK/single.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}"; }
RUN=0
start_cluster() {
    RUN=$((RUN + 1))
    local cluster=(--cluster "$NATS_URL" --cluster-name "bench$RUN")
    start_on "$WORK/node-a.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}" \
        "${cluster[@]}" --node a || return 1
    local a_pid=$SERVER_PID a_addr=$ADDR
    SERVER_PID=""
    OTHER_PIDS=("$a_pid")
    start_on "$WORK/node-b.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}" \
        "${cluster[@]}" --node b || return 1
    # The readers (and the CPU and memory figures) on B, the publisher on A.
    BENCH_EXTRA=(--pub-addr "$a_addr")
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
    order="single cluster"
    [ $((rep % 2)) -eq 0 ] && order="cluster single"
    for case in $CASES; do
        for side in $order; do
            run "$side" "subs=${case%%:*}" "$rep" --subs "${case%%:*}" --messages "${case##*:}"
        done
    done
    for side in $order; do
        run "$side" rate "$rep" --subs "$RATE_SUBS" --messages "$RATE_MESSAGES" --send-rate 100
    done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "### One node and a two-node cluster ($(date -u +%Y-%m-%d), $(nproc) CPUs, $("$NATS_SERVER" --version), $REPS runs each)"
echo
echo "| figure | single node | cluster (A → NATS → B) | cluster/single | clean runs |"
echo "|---|---|---|---|---|"
for case in $CASES; do
    f="subs=${case%%:*}"
    s=$(median single "$f" messages_per_s)
    c=$(median cluster "$f" messages_per_s)
    printf '| room messages/s, 1 → %s readers | %s | %s | %s | %s+%s of %s+%s |\n' \
        "${case%%:*}" "$s" "$c" "$(ratio "$c" "$s")" \
        "$(count_ok single "$f")" "$(count_ok cluster "$f")" "$REPS" "$REPS"
done
for p in p50_us p99_us; do
    s=$(median single rate "$p")
    c=$(median cluster rate "$p")
    printf '| latency %s, 100 messages/s to %s readers | %s | %s | +%s µs | %s+%s of %s+%s |\n' \
        "${p%_us}" "$RATE_SUBS" "$s" "$c" \
        "$(awk -v a="$c" -v b="$s" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.0f", a - b }')" \
        "$(count_ok single rate)" "$(count_ok cluster rate)" "$REPS" "$REPS"
done
echo
echo "flags: ${FLAGS[*]}; cluster nodes add --cluster $NATS_URL --cluster-name benchN --node a|b"
echo "load average before: $START_LOAD; after: $END_LOAD"
if grep -q FAILED "$RESULTS"; then
    echo
    echo "Failed runs:"
    grep FAILED "$RESULTS" | sed 's/^/- /'
fi
