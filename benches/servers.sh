# Shared by compare.sh and recording.sh (sourced, from the repository
# root, after CHATD and BENCH are set): private servers on spare loopback
# ports, stopped by PID on exit, and one key=value line per chat-bench run,
# summed up as medians. The sourcing script defines start_SIDE for each
# side it runs and proto_for SIDE.

WORK=$(mktemp -d)
SERVER_PID=""
ADDR=""
# More processes a start_SIDE may start beside SERVER_PID (stopped with
# it), and more chat-bench arguments it may set for its run.
OTHER_PIDS=()
BENCH_EXTRA=()
# stop_pid PID: TERM, up to 5 s, then KILL.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    local pid
    for pid in ${OTHER_PIDS[@]+"${OTHER_PIDS[@]}"}; do stop_pid "$pid"; done
    OTHER_PIDS=()
    BENCH_EXTRA=()
    [ -n "$SERVER_PID" ] || return 0
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# Waits (5 s at most) until $1 accepts connections on 127.0.0.1:$2.
await_port() {
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# A loopback port below the ephemeral range, so the clients' own ports (and
# the TIME_WAIT entries 20,000 sockets a run leave behind) never clash with
# it, and free now.
spare_port() {
    local port
    for _ in $(seq 20); do
        port=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# start_on LOG COMMAND...: starts COMMAND with PORT in its arguments
# replaced by a spare port, and waits until it listens; up to five tries.
start_on() {
    local log=$1 port
    shift
    for _ in 1 2 3 4 5; do
        port=$(spare_port)
        "${@//PORT/$port}" >"$log" 2>&1 &
        SERVER_PID=$!
        if await_port "$SERVER_PID" "$port"; then
            ADDR=127.0.0.1:$port
            return 0
        fi
        stop_pid "$SERVER_PID"
        SERVER_PID=""
    done
    echo "$1 did not start:" >&2; tail "$log" >&2; return 1
}

# run SERVER FIGURE REP CHAT-BENCH-ARGS...: one fresh server, one run; its
# key=value line goes to the results file, a failure is recorded as such.
RESULTS=$WORK/results
run() {
    local server=$1 figure=$2 rep=$3
    shift 3
    # A server that will not start (a flag this build lacks, say) is one
    # failed run, listed at the end, not the end of the comparison.
    if ! "start_$server"; then
        stop_server
        echo "$server $figure $rep FAILED the server did not start (its log is above)" >>"$RESULTS"
        printf '%-6s %-10s run %s: %s\n' "$server" "$figure" "$rep" "$(tail -n1 "$RESULTS" | cut -d' ' -f4-)" >&2
        return 0
    fi
    local proto
    proto=$(proto_for "$server")
    local line
    if line=$(timeout $((2 * RUN_TIMEOUT + 30)) "$BENCH" --addr "$ADDR" --proto "$proto" \
            --server-pid "$SERVER_PID" --timeout "$RUN_TIMEOUT" --kv ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"} "$@" 2>"$WORK/bench.err"); then
        echo "$server $figure $rep ok $line" >>"$RESULTS"
    else
        echo "$server $figure $rep FAILED $line $(tr '\n' ' ' <"$WORK/bench.err")" >>"$RESULTS"
    fi
    stop_server
    printf '%-6s %-10s run %s: %s\n' "$server" "$figure" "$rep" "$(tail -n1 "$RESULTS" | cut -d' ' -f4-)" >&2
}

# median SERVER FIGURE KEY: the median of KEY over the clean runs.
median() {
    awk -v s="$1" -v f="$2" -v k="$3" '
        $1 == s && $2 == f && $4 == "ok" {
            for (i = 5; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] }
        }' "$RESULTS" | sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# first_value SERVER KEY: KEY from the first clean run of SERVER (for
# values that are not numbers, such as the TLS cipher suite).
first_value() {
    awk -v s="$1" -v k="$2" '
        $1 == s && $4 == "ok" {
            for (i = 5; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } }
        }' "$RESULTS" | grep . || echo "-"
}
count_ok() { awk -v s="$1" -v f="$2" '$1 == s && $2 == f && $4 == "ok"' "$RESULTS" | wc -l; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
mega() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f M", v / 1e6 }'; }

