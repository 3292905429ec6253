#!/usr/bin/env bash
# Connection benchmark: server memory per idle SSE / WebSocket connection
# for herald, nchan (nginx module) and socket.io, measured the same way in
# one run, plus a 10 000-way WebSocket fan-out of each. Each server gets core
# 0, the Rust load client (examples/bench_connections.rs) core 1; the last
# fan-out run gives herald both cores.
#
#   ./scripts/bench-connections.sh [COUNT]      (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-10000}"
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan >/dev/null
    # The package starts a system nginx; the benchmark runs its own.
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --release --locked --bin herald --example bench_connections 2>&1 | tail -1
CLIENT=target/release/examples/bench_connections
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# Starts a server pinned to core 0; waits for its port; sets SERVER_PID.
start() {
    local port=$1; shift
    taskset -c "${SERVER_CORES:-0}" "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$WORK/server.log"; exit 1
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
herald() {
    start 18080 target/release/herald --listen 127.0.0.1:18080 --data "$WORK/data-$RANDOM" \
        --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 --max-body 1048576 --max-user-connections 4 --max-conns-per-ip 0
}
idle() { taskset -c 1 "$CLIENT" idle --pid "$SERVER_PID" --count "$COUNT" "$@" | tee -a "$WORK/results"; }

echo "== idle connections ($COUNT each; server RSS growth / connections)"
herald; idle --proto herald-sse --addr 127.0.0.1:18080; stop
herald; idle --proto herald-ws --addr 127.0.0.1:18080; stop
start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
idle --proto nchan-sse --addr 127.0.0.1:18081; stop
start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
idle --proto nchan-ws --addr 127.0.0.1:18081; stop
start 18082 node bench/peers/socketio-server.js 18082
idle --proto socketio-ws --addr 127.0.0.1:18082; stop

per() { awk -v p="$1" '$1 == p { for (i = 1; i <= NF; i++) if ($i == "B") print $(i-1) }' "$WORK/results"; }
echo "== ratios (herald / peer, lower is better for herald)"
awk -v h="$(per herald-sse)" -v n="$(per nchan-sse)" 'BEGIN { printf "SSE: herald %.0f B vs nchan %.0f B per connection = %.2fx\n", h, n, h / n }'
awk -v h="$(per herald-ws)" -v n="$(per nchan-ws)" -v s="$(per socketio-ws)" \
    'BEGIN { printf "WebSocket: herald %.0f B vs nchan %.0f B = %.2fx, vs socket.io %.0f B = %.2fx\n", h, n, h / n, s, h / s }'

echo "== fan-out: one publish to $COUNT WebSocket subscribers (median of 5 rounds)"
# herald: one durable event in each of $COUNT per-user queues; the peers: one
# message on one channel in memory (nchan) / one io.emit (socket.io).
fanout() { taskset -c 1 "$CLIENT" fanout --count "$COUNT" --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 "$@" | tee -a "$WORK/results"; }
herald; fanout --proto herald-ws --addr 127.0.0.1:18080; stop
start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
fanout --proto nchan-ws --addr 127.0.0.1:18081; stop
start 18082 node bench/peers/socketio-server.js 18082
fanout --proto socketio-ws --addr 127.0.0.1:18082; stop
echo "-- herald with two cores (shared with the load client)"
SERVER_CORES=0,1 herald
taskset -c 1 "$CLIENT" fanout --count "$COUNT" --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 --proto herald-ws --addr 127.0.0.1:18080
stop

fan() { awk -v p="$1" '$1 == p && /fan-out to/ { for (i = 1; i <= NF; i++) if ($i == "ms" && $(i+1) == "(median") print $(i-1) }' "$WORK/results"; }
awk -v h="$(fan herald-ws)" -v n="$(fan nchan-ws)" -v s="$(fan socketio-ws)" \
    'BEGIN { printf "fan-out, server on one core: herald %.0f ms vs nchan %.0f ms = %.2fx, vs socket.io %.0f ms = %.2fx\n", h, n, h / n, s, h / s }'
