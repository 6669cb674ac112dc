#!/usr/bin/env bash
# Before and after: two chatd builds under the same load, alternating, a
# fresh server per run, REPS runs each; the same chat-bench (this tree's)
# drives both. For checking that a change costs plain connections nothing.
# Prints a Markdown table of medians with the after/before ratio.
#
#   git worktree add ../before COMMIT && (cd ../before && cargo build --release --bin chatd)
#   benches/ab.sh ../before/target/release/chatd
#   REPS=5 SUBS="10 1000" IDLE=10000 benches/ab.sh OLD_CHATD [NEW_CHATD]
#
# NEW_CHATD defaults to this tree's release build. TLS=1 also adds runs of
# the new build over TLS (a throwaway self-signed certificate), reported
# beside its plain runs. Everything stays on 127.0.0.1; every run is
# bounded in time; servers are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: benches/ab.sh OLD_CHATD [NEW_CHATD]" >&2; exit 2; }
OLD=$(realpath "$1")
REPS=${REPS:-3}
SUBS=${SUBS:-"1000"}
MESSAGES=${MESSAGES:-10000}
IDLE=${IDLE:-10000}
TLS=${TLS:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

cargo build --release --bins --quiet
NEW=$(realpath "${2:-target/release/chatd}")
CHATD=$NEW
BENCH=target/release/chat-bench
# shellcheck source=benches/servers.sh
. benches/servers.sh

proto_for() { echo chat; }
FLAGS=(--rate 0 --max-per-ip 0 --max-clients 40000 --history-keep 0 --db :memory: -q)
# A build from before --max-per-ip existed takes the flags without it.
OLD_FLAGS=("${FLAGS[@]}")
if ! "$OLD" --help | grep -q -- --max-per-ip; then
    OLD_FLAGS=(--rate 0 --max-clients 40000 --history-keep 0 --db :memory: -q)
fi
start_before() { start_on "$WORK/before.log" "$OLD" --listen 127.0.0.1:PORT "${OLD_FLAGS[@]}"; }
start_after() { start_on "$WORK/after.log" "$NEW" --listen 127.0.0.1:PORT "${FLAGS[@]}"; }
# --tls-self-signed with --db :memory: keeps its certificate in the working
# directory: the run's own. start_on must set SERVER_PID and ADDR in this
# shell, so the directory is changed and restored rather than subshelled.
start_tls() {
    local here=$PWD
    cd "$WORK"
    rm -f chatd.cert.pem chatd.key.pem
    start_on "$WORK/tls.log" "$NEW" --listen 127.0.0.1:PORT "${FLAGS[@]}" --tls-self-signed
    local status=$?
    cd "$here"
    return $status
}

sides="before after"
STARTED=$(date +%s)
for rep in $(seq "$REPS"); do
    order=$sides
    [ $((rep % 2)) -eq 0 ] && order="after before"
    for subs in $SUBS; do
        for side in $order; do
            run "$side" "subs=$subs" "$rep" --subs "$subs" --messages "$MESSAGES" --size 64
        done
        if [ "$TLS" = 1 ]; then
            run tls "subs=$subs" "$rep" --tls --subs "$subs" --messages "$MESSAGES" --size 64
        fi
    done
    for side in $order; do
        run "$side" idle "$rep" --idle "$IDLE"
    done
    if [ "$TLS" = 1 ]; then
        run tls idle "$rep" --tls --idle "$IDLE"
    fi
done

echo
echo "### chatd before and after ($(date -u +%Y-%m-%d), $(nproc) CPUs, $((REPS)) runs each, $(($(date +%s) - STARTED)) s)"
echo
echo "before: $OLD"
echo "after:  $NEW"
echo
echo "| figure | before | after | after/before | ns per delivery (before / after) | peak RSS MiB (before / after) | clean runs |"
echo "|---|---|---|---|---|---|---|"
mib() { awk -v k="$1" 'BEGIN{ if (k == "-") print "-"; else printf "%.0f", k / 1024 }'; }
for subs in $SUBS; do
    f="subs=$subs"
    b=$(median before "$f" deliveries_per_s)
    a=$(median after "$f" deliveries_per_s)
    printf '| deliveries/s, 1 → %s | %s | %s | %s | %s / %s | %s / %s | %s+%s of %s+%s |\n' \
        "$subs" "$(mega "$b")" "$(mega "$a")" "$(ratio "$a" "$b")" \
        "$(median before "$f" server_ns_per_delivery)" "$(median after "$f" server_ns_per_delivery)" \
        "$(mib "$(median before "$f" server_peak_rss_kib)")" "$(mib "$(median after "$f" server_peak_rss_kib)")" \
        "$(count_ok before "$f")" "$(count_ok after "$f")" "$REPS" "$REPS"
    if [ "$TLS" = 1 ]; then
        t=$(median tls "$f" deliveries_per_s)
        printf '| over TLS (after), 1 → %s | | %s | %s of plain | %s | %s | %s of %s |\n' \
            "$subs" "$(mega "$t")" "$(ratio "$t" "$a")" \
            "$(median tls "$f" server_ns_per_delivery)" \
            "$(mib "$(median tls "$f" server_peak_rss_kib)")" "$(count_ok tls "$f")" "$REPS"
    fi
done
b=$(median before idle server_bytes_per_conn)
a=$(median after idle server_bytes_per_conn)
printf '| RSS bytes per idle named connection, %s | %s | %s | %s | | | %s+%s of %s+%s |\n' \
    "$IDLE" "$b" "$a" "$(ratio "$a" "$b")" \
    "$(count_ok before idle)" "$(count_ok after idle)" "$REPS" "$REPS"
if [ "$TLS" = 1 ]; then
    printf '| RSS bytes per idle named TLS connection, %s | | %s | | | | %s of %s |\n' \
        "$IDLE" "$(median tls idle server_bytes_per_conn)" "$(count_ok tls idle)" "$REPS"
fi
if grep -q FAILED "$RESULTS"; then
    echo
    echo "Failed runs:"
    grep FAILED "$RESULTS" | sed 's/^/- /'
fi
