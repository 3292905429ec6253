# Shared by the benchmark scripts (sourced): start a server pinned to a
# core, wait for its port, stop it. Expects WORK (a temp dir) and PIDS (an
# array the caller's exit trap kills).

# Waits until something listens on 127.0.0.1:$1 (10 s at most).
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# start PORT COMMAND...: runs COMMAND pinned to ${SERVER_CORES:-0}, waits
# for PORT; sets SERVER_PID. On failure prints the server's output, exits.
start() {
    local port=$1; shift
    taskset -c "${SERVER_CORES:-0}" "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$port" && return 0
    cat "$WORK/server.log"; exit 1
}

stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

# flush_figures PORT KEY: what herald's group commit did so far, from its
# /metrics (herald_flush_seconds: flush + fdatasync, in power-of-two
# buckets): how many flushes, and the bucket bounds under which 50% and
# 99% of them finished. A delivery waits for one of them, so they are
# herald's floor for publish -> receive.
flush_figures() {
    curl -sf -H "authorization: Bearer $2" "http://127.0.0.1:$1/metrics" | awk '
        /^herald_flush_seconds_bucket/ {
            match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n++; bound[n] = le; count[n] = $NF
        }
        END {
            total = count[n]
            for (i = 1; i <= n; i++) {
                if (!p50 && count[i] >= total * 0.5) p50 = bound[i]
                if (!p99 && count[i] >= total * 0.99) p99 = bound[i]
            }
            if (total > 0) printf "  herald group commit: %d flushes, 50%% within %.2f ms, 99%% within %.2f ms\n", total, p50 * 1000, p99 * 1000
        }'
}
