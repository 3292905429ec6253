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
