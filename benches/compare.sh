#!/usr/bin/env bash
# Fan-out, chatd against Redis pub/sub, side by side: the same load tool
# (chat-bench), the same machine, the same matrix, each server fresh for
# every run, the two alternating, REPS times each. Prints one Markdown
# table of medians with the chatd/Redis ratio, the flags used, and the
# machine's load, so a disturbed run can be spotted.
#
#   benches/compare.sh                 # full matrix, three runs each
#   REPS=1 SUBS="10 1000" benches/compare.sh
#   REPS=1 SUBS="" TLS_SUBS="10 1000" benches/compare.sh   # TLS rows only
#
# The TLS rows load both servers over TLS (chat-bench --tls): chatd on its
# own port with --tls-cert/--tls-key, Redis on --tls-port, both with the
# same throwaway self-signed ECDSA P-256 certificate, made with openssl in
# the run's temporary directory. TLS_SUBS="" leaves them out.
#
# Installs nothing: needs redis-server on PATH (apt-get install
# redis-server), and openssl for the TLS rows; the system service is not
# used, a private instance is started on a spare loopback port.
# Everything stays on 127.0.0.1, every run is bounded in time, and both
# servers are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
SUBS=${SUBS:-"10 100 1000 10000"}
# Deliveries per throughput run; never fewer than two windows of messages.
DELIVERIES=${DELIVERIES:-10000000}
MIN_MESSAGES=${MIN_MESSAGES:-2000}
SIZE=${SIZE:-64}
WINDOW=${WINDOW:-1000}
# The latency figure: this many subscribers, this rate, this many messages.
LAT_SUBS=${LAT_SUBS:-1000}
LAT_RATE=${LAT_RATE:-1000}
LAT_MESSAGES=${LAT_MESSAGES:-5000}
IDLE=${IDLE:-10000}
# Subscriber counts for the TLS rows, each a throughput run like the
# plain ones; empty for none.
TLS_SUBS=${TLS_SUBS-1000}
# Seconds chat-bench may spend logging in, and again on its run.
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

# Redis runs without persistence; chatd likewise records nothing and keeps
# its (empty) database in memory. Recording's own cost is measured apart
# (README, "Recording history").
CHATD_FLAGS=(--rate 0 --max-per-ip 0 --max-clients 40000 --history-keep 0 --db :memory: -q)
REDIS_FLAGS=(--save "" --appendonly no --client-output-buffer-limit "pubsub 0 0 0"
             --maxclients 40000 --protected-mode no --daemonize no)

command -v redis-server >/dev/null || {
    echo "compare.sh needs redis-server on PATH (apt-get install redis-server)" >&2
    exit 2
}
if [ -n "$TLS_SUBS" ]; then
    command -v openssl >/dev/null || {
        echo "compare.sh needs openssl for the TLS rows (or TLS_SUBS=\"\")" >&2
        exit 2
    }
fi
cargo build --release --bins --quiet
CHATD=target/release/chatd
BENCH=target/release/chat-bench

# shellcheck source=benches/servers.sh
. benches/servers.sh

proto_for() { case $1 in redis*) echo redis ;; *) echo chat ;; esac; }

start_chatd() {
    start_on "$WORK/chatd.log" "$CHATD" --listen 127.0.0.1:PORT "${CHATD_FLAGS[@]}"
}

start_redis() {
    start_on "$WORK/redis.log" redis-server --port PORT --bind 127.0.0.1 "${REDIS_FLAGS[@]}"
}

# One certificate for both servers, so neither pays for a bigger key. The
# handshakes happen while chat-bench logs in, before its clock starts;
# what the rows measure is the encrypted stream.
CERT=$WORK/cert.pem
KEY=$WORK/key.pem
if [ -n "$TLS_SUBS" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$KEY" -out "$CERT" 2>"$WORK/openssl.err" || {
        echo "openssl could not make a certificate:" >&2; cat "$WORK/openssl.err" >&2; exit 2
    }
fi
CHATD_TLS_FLAGS=(--tls-cert "$CERT" --tls-key "$KEY")
# --tls-auth-clients no: chat-bench shows no client certificate; the CA
# file is only there because Redis will not start TLS without one.
REDIS_TLS_FLAGS=(--tls-cert-file "$CERT" --tls-key-file "$KEY" --tls-ca-cert-file "$CERT"
                 --tls-auth-clients no)

start_chatd_tls() {
    start_on "$WORK/chatd.log" "$CHATD" --listen 127.0.0.1:PORT "${CHATD_FLAGS[@]}" \
        "${CHATD_TLS_FLAGS[@]}"
}

start_redis_tls() {
    start_on "$WORK/redis.log" redis-server --port 0 --tls-port PORT --bind 127.0.0.1 \
        "${REDIS_TLS_FLAGS[@]}" "${REDIS_FLAGS[@]}"
}

messages_for() {
    local m=$((DELIVERIES / $1))
    [ "$m" -lt "$MIN_MESSAGES" ] && m=$MIN_MESSAGES
    echo "$m"
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
for rep in $(seq "$REPS"); do
    # A B, then B A: neither server always runs first.
    order="chatd redis"
    [ $((rep % 2)) -eq 0 ] && order="redis chatd"
    for subs in $SUBS; do
        for server in $order; do
            run "$server" "subs=$subs" "$rep" --subs "$subs" \
                --messages "$(messages_for "$subs")" --size "$SIZE" --window "$WINDOW"
        done
    done
    for subs in $TLS_SUBS; do
        for server in $order; do
            run "${server}_tls" "subs=$subs" "$rep" --tls --subs "$subs" \
                --messages "$(messages_for "$subs")" --size "$SIZE" --window "$WINDOW"
        done
    done
    for server in $order; do
        run "$server" latency "$rep" --subs "$LAT_SUBS" --messages "$LAT_MESSAGES" \
            --send-rate "$LAT_RATE" --size "$SIZE" --window "$WINDOW"
    done
    for server in $order; do
        run "$server" idle "$rep" --idle "$IDLE"
    done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "### chatd and Redis pub/sub, fan-out on loopback ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
echo
echo "| figure | chatd | Redis | chatd/Redis | target | chatd ns/delivery, peak RSS | Redis ns/delivery, peak RSS | machine busy % (chatd / Redis) | clean runs |"
echo "|---|---|---|---|---|---|---|---|---|"
for subs in $SUBS; do
    f="subs=$subs"
    c=$(median chatd "$f" deliveries_per_s)
    r=$(median redis "$f" deliveries_per_s)
    case $subs in 10) target="≥ 1×" ;; 1000) target="≥ 2×" ;; 10000) target="≥ 1.5×" ;; *) target="" ;; esac
    printf '| deliveries/s, 1 → %s | %s | %s | %s | %s | %s ns, %s MiB | %s ns, %s MiB | %s / %s | %s+%s of %s+%s |\n' \
        "$subs" "$(mega "$c")" "$(mega "$r")" "$(ratio "$c" "$r")" "$target" \
        "$(median chatd "$f" server_ns_per_delivery)" \
        "$(awk -v k="$(median chatd "$f" server_peak_rss_kib)" 'BEGIN{ if (k=="-") print "-"; else printf "%.0f", k/1024 }')" \
        "$(median redis "$f" server_ns_per_delivery)" \
        "$(awk -v k="$(median redis "$f" server_peak_rss_kib)" 'BEGIN{ if (k=="-") print "-"; else printf "%.0f", k/1024 }')" \
        "$(median chatd "$f" machine_busy_pct)" "$(median redis "$f" machine_busy_pct)" \
        "$(count_ok chatd "$f")" "$(count_ok redis "$f")" "$REPS" "$REPS"
done
# Flatness: how far the medians spread from 100 subscribers up.
spread() {
    local s=$1 lo="" hi=""
    for subs in $SUBS; do
        [ "$subs" -ge 100 ] || continue
        local v
        v=$(median "$s" "subs=$subs" deliveries_per_s)
        [ "$v" = "-" ] && { echo "-"; return; }
        lo=$(awk -v a="$lo" -v b="$v" 'BEGIN{ print (a == "" || b < a) ? b : a }')
        hi=$(awk -v a="$hi" -v b="$v" 'BEGIN{ print (a == "" || b > a) ? b : a }')
    done
    awk -v lo="$lo" -v hi="$hi" 'BEGIN{ if (hi == "" || hi == 0) print "-"; else printf "%.0f%%", 100 * (hi - lo) / hi }'
}
printf '| spread of deliveries/s from 100 up, (max-min)/max | %s | %s | | < 30%% | | | | |\n' \
    "$(spread chatd)" "$(spread redis)"
for subs in $TLS_SUBS; do
    f="subs=$subs"
    c=$(median chatd_tls "$f" deliveries_per_s)
    r=$(median redis_tls "$f" deliveries_per_s)
    printf '| deliveries/s over TLS, 1 → %s | %s | %s | %s | | %s ns, %s MiB | %s ns, %s MiB | %s / %s | %s+%s of %s+%s |\n' \
        "$subs" "$(mega "$c")" "$(mega "$r")" "$(ratio "$c" "$r")" \
        "$(median chatd_tls "$f" server_ns_per_delivery)" \
        "$(awk -v k="$(median chatd_tls "$f" server_peak_rss_kib)" 'BEGIN{ if (k=="-") print "-"; else printf "%.0f", k/1024 }')" \
        "$(median redis_tls "$f" server_ns_per_delivery)" \
        "$(awk -v k="$(median redis_tls "$f" server_peak_rss_kib)" 'BEGIN{ if (k=="-") print "-"; else printf "%.0f", k/1024 }')" \
        "$(median chatd_tls "$f" machine_busy_pct)" "$(median redis_tls "$f" machine_busy_pct)" \
        "$(count_ok chatd_tls "$f")" "$(count_ok redis_tls "$f")" "$REPS" "$REPS"
    # What TLS costs each server, when the same count also ran plain.
    if [[ " $SUBS " == *" $subs "* ]]; then
        printf '| TLS/plain deliveries/s, 1 → %s | %s | %s | | | | | | |\n' "$subs" \
            "$(ratio "$c" "$(median chatd "$f" deliveries_per_s)")" \
            "$(ratio "$r" "$(median redis "$f" deliveries_per_s)")"
    fi
done
c=$(median chatd latency p99_us)
r=$(median redis latency p99_us)
printf '| p99 latency µs, %s msg/s to %s | %s (p50 %s) | %s (p50 %s) | %s | ≤ 1× | | | %s / %s | %s+%s of %s+%s |\n' \
    "$LAT_RATE" "$LAT_SUBS" "$c" "$(median chatd latency p50_us)" "$r" "$(median redis latency p50_us)" \
    "$(ratio "$c" "$r")" "$(median chatd latency machine_busy_pct)" "$(median redis latency machine_busy_pct)" \
    "$(count_ok chatd latency)" "$(count_ok redis latency)" "$REPS" "$REPS"
c=$(median chatd idle server_bytes_per_conn)
r=$(median redis idle server_bytes_per_conn)
printf '| server RSS bytes per idle named connection, %s | %s | %s | %s | ≤ 1024 B | kernel: %s B | kernel: %s B | | %s+%s of %s+%s |\n' \
    "$IDLE" "$c" "$r" "$(ratio "$c" "$r")" \
    "$(median chatd idle kernel_bytes_per_conn)" "$(median redis idle kernel_bytes_per_conn)" \
    "$(count_ok chatd idle)" "$(count_ok redis idle)" "$REPS" "$REPS"
echo
echo "Medians of $REPS runs each, alternating, a fresh server per run; ${SIZE}-byte deliveries on the wire,"
echo "publisher at most $WINDOW messages ahead of the slowest subscriber, $DELIVERIES deliveries per run"
echo "(at least $MIN_MESSAGES messages). Load average $START_LOAD at the start, $END_LOAD at the end;"
echo "$(($(date +%s) - STARTED)) s in all. $(redis-server --version | cut -d' ' -f1-3)."
echo
echo "- chatd: \`chatd --listen 127.0.0.1:PORT ${CHATD_FLAGS[*]}\`"
echo "- Redis: \`redis-server --port PORT --bind 127.0.0.1 --save \"\" --appendonly no --client-output-buffer-limit \"pubsub 0 0 0\" --maxclients 40000 --protected-mode no\`"
echo "- load: \`chat-bench --proto chat|redis --subs N --messages M --size $SIZE --window $WINDOW\`; latency adds \`--send-rate $LAT_RATE\`; memory is \`chat-bench --idle $IDLE\`; all with \`--server-pid PID --kv\`"
if [ -n "$TLS_SUBS" ]; then
    echo "- TLS: chatd adds \`--tls-cert cert.pem --tls-key key.pem\`; Redis runs with \`--port 0 --tls-port PORT --tls-cert-file cert.pem --tls-key-file key.pem --tls-ca-cert-file cert.pem --tls-auth-clients no\`; chat-bench adds \`--tls\` (rustls with aws-lc-rs; certificate not verified). Self-signed ECDSA P-256 certificate for both; negotiated: chatd $(first_value chatd_tls tls), Redis $(first_value redis_tls tls)"
fi
if grep -q FAILED "$RESULTS"; then
    echo
    echo "Failed runs:"
    grep FAILED "$RESULTS" | sed 's/^/    /'
fi
