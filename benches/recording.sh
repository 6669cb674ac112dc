#!/usr/bin/env bash
# What recording history costs: the broadcast rate with recording off
# (--history-keep 0) and on (--history-keep 10000, the default), the same
# chatd and chat-bench command otherwise, alternating, a fresh server and
# a fresh database file per run, REPS runs each. Prints a Markdown table of
# medians.
#
#   benches/recording.sh
#   REPS=5 CASES="10:2000000" benches/recording.sh
#
# Everything stays on 127.0.0.1; every run is bounded in time; servers are
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
# Subscribers:messages per run (about 1 s of work each here).
CASES=${CASES:-"10:2000000 1000:20000"}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

cargo build --release --bins --quiet
CHATD=target/release/chatd
BENCH=target/release/chat-bench
# shellcheck source=benches/servers.sh
. benches/servers.sh

proto_for() { echo chat; }
FLAGS=(--rate 0 --max-per-ip 0 --max-clients 40000 -q)
start_with_keep() {
    rm -f "$WORK"/history.db*
    start_on "$WORK/chatd.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}" \
        --db "$WORK/history.db" --history-keep "$1"
}
start_off() { start_with_keep 0; }
start_rec() { start_with_keep 10000; }

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for case in $CASES; do
    subs=${case%%:*}
    messages=${case##*:}
    for rep in $(seq "$REPS"); do
        # off rec, then rec off: neither always runs first.
        order="off rec"
        [ $((rep % 2)) -eq 0 ] && order="rec off"
        for side in $order; do
            run "$side" "subs=$subs" "$rep" --subs "$subs" --messages "$messages"
        done
    done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "### Recording history on and off ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
echo
echo "| subscribers | off: deliveries/s | on: deliveries/s | on/off | server ns/delivery off / on | machine busy % off / on | clean runs |"
echo "|---|---|---|---|---|---|---|"
for case in $CASES; do
    f="subs=${case%%:*}"
    off=$(median off "$f" deliveries_per_s)
    on=$(median rec "$f" deliveries_per_s)
    printf '| %s | %s | %s | %s | %s / %s | %s / %s | %s+%s of %s+%s |\n' \
        "${case%%:*}" "$(mega "$off")" "$(mega "$on")" "$(ratio "$on" "$off")" \
        "$(median off "$f" server_ns_per_delivery)" "$(median rec "$f" server_ns_per_delivery)" \
        "$(median off "$f" machine_busy_pct)" "$(median rec "$f" machine_busy_pct)" \
        "$(count_ok off "$f")" "$(count_ok rec "$f")" "$REPS" "$REPS"
done
echo
echo "Medians of $REPS runs each, alternating. Load average $START_LOAD at the start, $END_LOAD at the end."
echo "chatd \`--listen 127.0.0.1:PORT ${FLAGS[*]} --db FILE --history-keep 0|10000\`;"
echo "load \`chat-bench --proto chat --subs N --messages M --server-pid PID --kv\` (64-byte deliveries)."
if grep -q FAILED "$RESULTS"; then
    echo
    echo "Failed runs:"
    grep FAILED "$RESULTS" | sed 's/^/    /'
fi
