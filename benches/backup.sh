#!/usr/bin/env bash
# A backup of a big history while traffic flows: fills a database with
# about HISTORY_MB of recorded messages, then runs `chatd backup` while a
# publisher talks to subscribers at a steady rate, and reports how long
# the loop's turns took meanwhile (from chatd_loop_turn_seconds, scraped
# before and after) and how long the backup took.
#
#   benches/backup.sh                  # about 1 GB of history
#   HISTORY_MB=200 benches/backup.sh   # a quicker look
#
# Needs about twice HISTORY_MB of free disk in the temporary directory.
# Everything stays on 127.0.0.1; the server is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

HISTORY_MB=${HISTORY_MB:-1024}
SIZE=1000
RATE=${RATE:-2000}
SUBS=${SUBS:-100}

cargo build --release --bins --quiet
CHATD=$PWD/target/release/chatd
BENCH=$PWD/target/release/chat-bench
WORK=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$CHATD" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --db "$WORK/big.db" --rate 0 --max-per-ip 0 \
    --max-clients 20000 --history-keep 1000000000 -q >"$WORK/chatd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/chatd.log" && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/chatd.log" | head -1)
METRICS=$(sed -n 's/.*metrics on \([0-9.:]*\).*/\1/p' "$WORK/chatd.log" | head -1)
[ -n "$ADDR" ] && [ -n "$METRICS" ] || { cat "$WORK/chatd.log"; exit 1; }

messages=$((HISTORY_MB * 1024 * 1024 / SIZE))
echo "filling the history: $messages messages of about $SIZE bytes"
"$BENCH" --addr "$ADDR" --subs 1 --messages "$messages" --size "$SIZE" --timeout 600 --kv >/dev/null
# Until everything is stored: the backlog drains.
for _ in $(seq 600); do
    backlog=$(curl -s "http://$METRICS/metrics" | awk '/^chatd_storage_backlog_bytes /{print $2}' || true)
    [ "${backlog:-1}" = "0" ] && break
    sleep 0.5
done
ls -la "$WORK"/big.db* | awk '{ printf "  %s %.0f MiB\n", $NF, $5 / 1048576 }'

# Turns per bucket, cumulative, as "le count" lines.
turns() { curl -s "http://$METRICS/metrics" | awk -F'[{}" ]+' '/^chatd_loop_turn_seconds_bucket/ { print $3, $NF }'; }

echo "traffic: 1 publisher -> $SUBS subscribers at $RATE messages/s, and a backup beside it"
"$BENCH" --addr "$ADDR" --subs "$SUBS" --messages $((RATE * 300)) --send-rate "$RATE" \
    --timeout 600 --kv >"$WORK/traffic.out" 2>&1 &
TRAFFIC=$!
sleep 3 # the subscribers log in and the rate settles; only the backup is measured
turns >"$WORK/before"
started=$(date +%s.%N)
"$CHATD" backup "$WORK/copy.db" --db "$WORK/big.db"
took=$(echo "$(date +%s.%N) - $started" | bc)
turns >"$WORK/after"
kill "$TRAFFIC" 2>/dev/null || true
wait "$TRAFFIC" 2>/dev/null || true
"$CHATD" check --db "$WORK/copy.db"

echo "backup took ${took} s; loop turns meanwhile:"
paste "$WORK/before" "$WORK/after" | awk '
    { le[NR] = $1; n[NR] = $4 - $2 }
    END {
        total = n[NR]
        for (i = 1; i <= NR; i++) {
            printf "  <= %s s: %d turns (%.3f%%)\n", le[i], n[i], total ? 100 * n[i] / total : 0
        }
        for (i = 1; i <= NR; i++) if (n[i] >= 0.99 * total) { print "  p99 turn time <= " le[i] " s"; break }
    }'
