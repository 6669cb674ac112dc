#!/usr/bin/env bash
# The stress gate: a release chatd, recording to a file, under everything
# at once for a bounded time, and a verdict. Beside one publisher and
# SUBS subscribers in the lobby (every delivery checked for loss,
# duplication and order), it runs connection churn (chat-bench --soak in
# its own room), slow readers that never read (they must be dropped at
# --max-outbuf, nobody else hurt), and hostile bytes (random data, an
# over-long line, a truncated TLS hello, a flood of blank lines).
# Fails on any lost, doubled or reordered delivery, a failed churn cycle,
# a crash, a slow reader not dropped, a server peak RSS over
# MAX_RSS_MIB, or a shutdown that does not end cleanly.
#
#   benches/stress.sh                      # 3 to 10 s on two cores
#   SUBS=200 MESSAGES=20000 benches/stress.sh
#
# Everything stays on 127.0.0.1; every step is bounded in time; the server
# is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-1000}
MESSAGES=${MESSAGES:-60000}
SLOW=${SLOW:-4}
CHURN_ROUNDS=${CHURN_ROUNDS:-3}
CHURN_CYCLES=${CHURN_CYCLES:-10000}
MAX_OUTBUF=${MAX_OUTBUF:-262144}
MAX_RSS_MIB=${MAX_RSS_MIB:-400}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}

cargo build --release --bins --quiet
CHATD=target/release/chatd
BENCH=target/release/chat-bench
WORK=$(mktemp -d)
PID=""
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# On failure the server's log is kept where STRESS_LOG says, if set.
fail() {
    echo "stress: FAILED: $*" >&2
    tail -n 20 "$WORK/chatd.log" >&2 || true
    [ -n "${STRESS_LOG:-}" ] && cp "$WORK/chatd.log" "$STRESS_LOG"
    exit 1
}

# Port 0: the kernel picks a free one, read back from the log.
"$CHATD" --listen 127.0.0.1:0 --db "$WORK/stress.db" --rate 0 --max-per-ip 0 --max-clients 20000 \
    --auth-queue 1024 --max-outbuf "$MAX_OUTBUF" --tls-self-signed ${LOG_FLAG:--q} >"$WORK/chatd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    grep -q "listening on" "$WORK/chatd.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || fail "chatd did not start"
    sleep 0.1
done
ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/chatd.log" | head -1)
[ -n "$ADDR" ] || fail "chatd did not listen within 10 s"
PORT=${ADDR##*:}
STARTED=$(date +%s)

# Slow readers: in #slow, never reading, while a sender there says more
# than their buffers hold, so chatd must drop them, and nobody else waits.
for i in $(seq "$SLOW"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'slow%s\n/join slow\n' "$i" >&3; exec sleep "$RUN_TIMEOUT") &
done
slow_sender() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'flooder\n/join slow\n' >&3
    # Waits (bounded) until every slow reader is in the room.
    local seen=0 l
    for _ in $(seq 100); do
        printf '/who\n' >&3
        seen=0
        while IFS= read -r -t 5 l <&3; do
            case $l in
                *"end of /who"*) break ;;
                "*   slow"*) seen=$((seen + 1)) ;;
            esac
        done
        [ "$seen" -ge "$SLOW" ] && break
        sleep 0.1
    done
    local line
    line=$(head -c 4000 /dev/zero | tr '\0' f)
    for _ in $(seq 3000); do printf '%s\n' "$line"; done >&3
    # Its own replies are few; it quits and closes.
    printf '/quit\n' >&3
}

# Hostile bytes, each on its own connection, for as long as the load runs.
hostile() {
    local end=$((SECONDS + 20))
    while [ $SECONDS -lt $end ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && head -c 65536 /dev/urandom >&3) 2>/dev/null || true
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && { printf 'h%s\n' $RANDOM; head -c 20000 /dev/zero | tr '\0' x; printf '\n'; } >&3) 2>/dev/null || true
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' >&3) 2>/dev/null || true
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && { printf 'b%s\n' $RANDOM; yes '' | head -n 5000; } >&3) 2>/dev/null || true
        sleep 0.05
    done
}
hostile &
HOSTILE=$!
slow_sender &
SLOW_SENDER=$!

"$BENCH" --addr "$ADDR" --soak "$CHURN_ROUNDS" --cycles "$CHURN_CYCLES" --server-pid "$PID" \
    --timeout "$RUN_TIMEOUT" >"$WORK/churn.out" 2>&1 &
CHURN=$!

status=0
"$BENCH" --addr "$ADDR" --subs "$SUBS" --messages "$MESSAGES" --server-pid "$PID" \
    --timeout "$RUN_TIMEOUT" >"$WORK/fanout.out" 2>&1 || status=$?
cat "$WORK/fanout.out"
[ "$status" -eq 0 ] || fail "the fan-out lost, repeated or reordered deliveries (exit $status)"

wait "$CHURN" || { cat "$WORK/churn.out"; fail "connection churn failed"; }
cat "$WORK/churn.out"
kill "$HOSTILE" 2>/dev/null || true
wait "$HOSTILE" 2>/dev/null || true
wait "$SLOW_SENDER" 2>/dev/null || true

kill -0 "$PID" 2>/dev/null || fail "chatd is gone"
dropped=$(grep -c "over --max-outbuf" "$WORK/chatd.log" || true)
[ "$dropped" -ge "$SLOW" ] || fail "$dropped of $SLOW slow readers were dropped at --max-outbuf"
peak=$(awk '/^VmHWM:/ { print int($2 / 1024) }' "/proc/$PID/status")
[ "$peak" -le "$MAX_RSS_MIB" ] || fail "chatd peaked at $peak MiB, over $MAX_RSS_MIB MiB"

kill -TERM "$PID"
for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && fail "chatd did not exit within 10 s of SIGTERM"
wait "$PID" || fail "chatd exited with status $? after SIGTERM"
PID=""
echo "stress: passed in $(($(date +%s) - STARTED)) s: $SUBS subscribers x $MESSAGES messages checked," \
    "$((CHURN_ROUNDS * CHURN_CYCLES)) churn cycles, $dropped slow readers dropped, peak RSS $peak MiB"
