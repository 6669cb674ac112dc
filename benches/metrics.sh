#!/usr/bin/env bash
# What metrics cost the hot path: the same chatd and chat-bench fan-out,
# with --metrics-listen and /metrics scraped every second, and without,
# alternating, a fresh server per run, REPS runs each. Prints medians and
# the with/without ratio.
#
#   benches/metrics.sh
#   REPS=5 SUBS=1000 MESSAGES=200000 benches/metrics.sh   # runs of about 7 s: 6 scrapes each
#
# Everything stays on 127.0.0.1; every run is bounded in time; servers
# and the scraper are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
SUBS=${SUBS:-1000}
MESSAGES=${MESSAGES:-200000}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

cargo build --release --bins --quiet
CHATD=target/release/chatd
BENCH=target/release/chat-bench
# shellcheck source=benches/servers.sh
. benches/servers.sh

proto_for() { echo chat; }
FLAGS=(--rate 0 --max-per-ip 0 --max-clients 40000 --history-keep 0 --db :memory: -q)
SCRAPER=""
stop_scraper() {
    [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
    [ -n "$SCRAPER" ] && wait "$SCRAPER" 2>/dev/null || true
    SCRAPER=""
}
trap 'stop_scraper; stop_server; rm -rf "$WORK"' EXIT

start_plain() { start_on "$WORK/plain.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}"; }
start_scraped() {
    local mport
    mport=$(spare_port)
    start_on "$WORK/scraped.log" "$CHATD" --listen 127.0.0.1:PORT "${FLAGS[@]}" \
        --metrics-listen "127.0.0.1:$mport" || return 1
    # One scrape a second, over bash's /dev/tcp, for as long as the run.
    (
        while sleep 1; do
            exec 3<>"/dev/tcp/127.0.0.1/$mport" || continue
            printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
            cat <&3 >/dev/null
            exec 3<&-
        done
    ) &
    SCRAPER=$!
}

STARTED=$(date +%s)
for rep in $(seq "$REPS"); do
    order="plain scraped"
    [ $((rep % 2)) -eq 0 ] && order="scraped plain"
    for side in $order; do
        run "$side" "subs=$SUBS" "$rep" --subs "$SUBS" --messages "$MESSAGES" --size 64
        stop_scraper
    done
done

f="subs=$SUBS"
p=$(median plain "$f" deliveries_per_s)
m=$(median scraped "$f" deliveries_per_s)
echo
echo "### fan-out with and without metrics scraped every second ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(($(date +%s) - STARTED)) s)"
echo
echo "| figure | without metrics | scraped every second | ratio |"
echo "|---|---|---|---|"
printf '| deliveries/s, 1 → %s | %s | %s | %s |\n' "$SUBS" "$(mega "$p")" "$(mega "$m")" "$(ratio "$m" "$p")"
printf '| server ns per delivery | %s | %s | |\n' \
    "$(median plain "$f" server_ns_per_delivery)" "$(median scraped "$f" server_ns_per_delivery)"
printf '| clean runs | %s of %s | %s of %s | |\n' \
    "$(count_ok plain "$f")" "$REPS" "$(count_ok scraped "$f")" "$REPS"
