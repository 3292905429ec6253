#!/usr/bin/env bash
# Connection benchmark: server memory per idle SSE / WebSocket connection
# and per held long-poll for herald, nchan (nginx module) and socket.io,
# measured the same way in
# one run, plus a 10 000-way WebSocket fan-out of each. Each server gets core
# 0, the Rust load client (examples/bench_connections.rs) core 1; the last
# fan-out run gives herald both cores. Writes the fan-out curves (share of
# subscribers reached over time) to target/bench/fanout.{jsonl,svg}.
#
#   ./scripts/bench-connections.sh [COUNT]      (default 10000)
#
# HERALD_BIN=path/to/herald runs another build of herald (side by side
# with the previous binary) with this build's load client.
#
# BENCH_SMOKE=1 (what the test suite runs): 200 connections, a debug build,
# and the peers only if they are already installed; it checks that every
# stage still runs and prints its figures, and asserts no timing.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE="${BENCH_SMOKE:-}"
COUNT="${1:-$([ -n "$SMOKE" ] && echo 200 || echo 10000)}"
export DEBIAN_FRONTEND=noninteractive
if [ -z "$SMOKE" ] && [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan >/dev/null
    # The package starts a system nginx; the benchmark runs its own.
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi
if [ -z "$SMOKE" ]; then
    (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cargo build --release --locked --bin herald --example bench_connections --example bench_latency 2>&1 | tail -1
    BIN=target/release
else
    cargo build --locked --bin herald --example bench_connections --example bench_latency 2>&1 | tail -1
    BIN=target/debug
fi
CLIENT=$BIN/examples/bench_connections
have_nchan() { [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null; }
have_socketio() { [ -d bench/peers/node_modules/socket.io ]; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
herald() {
    start 18080 "${HERALD_BIN:-$BIN/herald}" --listen 127.0.0.1:18080 --data "$WORK/data-$RANDOM" \
        --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 --max-body 1048576 --max-user-connections 4 --max-conns-per-ip 0 "$@"
}
idle() { taskset -c 1 "$CLIENT" idle --pid "$SERVER_PID" --count "$COUNT" "$@" | tee -a "$WORK/results"; }

echo "== disk: $(taskset -c 1 "$CLIENT" fsync --dir "$WORK")"
echo "== idle connections ($COUNT each; server RSS growth / connections)"
herald; idle --proto herald-sse --addr 127.0.0.1:18080; stop
herald; idle --proto herald-ws --addr 127.0.0.1:18080; stop
herald; idle --proto herald-longpoll --addr 127.0.0.1:18080; stop
# HTTPS with HTTP/2 (a certificate made at start): 100 streams per
# connection, as a browser's tabs share one connection per origin.
herald --tls-self-signed; idle --proto herald-h2-sse --addr 127.0.0.1:18080; stop
herald --tls-self-signed; idle --proto herald-h2-longpoll --addr 127.0.0.1:18080; stop
# WebTransport (HTTP/3 over QUIC on UDP, the same port): one QUIC
# connection per session.
herald --tls-self-signed --webtransport-listen 127.0.0.1:18080; idle --proto herald-webtransport --addr 127.0.0.1:18080; stop
if have_nchan; then
    start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
    idle --proto nchan-sse --addr 127.0.0.1:18081; stop
    start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
    idle --proto nchan-ws --addr 127.0.0.1:18081; stop
    start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
    idle --proto nchan-longpoll --addr 127.0.0.1:18081; stop
else echo "nchan: skipped (not installed)"; fi
if have_socketio; then
    start 18082 node bench/peers/socketio-server.js 18082
    idle --proto socketio-ws --addr 127.0.0.1:18082; stop
else echo "socket.io: skipped (not installed)"; fi

per() { awk -v p="$1" '$1 == p { for (i = 1; i <= NF; i++) if ($i == "B") print $(i-1) }' "$WORK/results"; }
# "herald H vs PEER P = Rx", or that the peer did not run.
ratio() { awk -v h="$2" -v n="$3" -v peer="$1" -v unit="$4" 'BEGIN {
    if (n == "") printf "%s not run", peer; else printf "herald %.0f %s vs %s %.0f %s = %.2fx", h, unit, peer, n, unit, h / n }'; }
for p in herald-sse herald-ws herald-longpoll herald-h2-sse herald-h2-longpoll herald-webtransport; do
    [ -n "$(per $p)" ] || { echo "herald idle figure missing: $p" >&2; exit 1; }
done
echo "== ratios (herald / peer, lower is better for herald)"
echo "SSE per connection: $(ratio nchan "$(per herald-sse)" "$(per nchan-sse)" B)"
echo "held long-poll per request: $(ratio nchan "$(per herald-longpoll)" "$(per nchan-longpoll)" B)"
echo "over HTTPS/h2 (nchan over cleartext HTTP/1.1): SSE per stream $(ratio nchan "$(per herald-h2-sse)" "$(per nchan-sse)" B), held long-poll per request $(ratio nchan "$(per herald-h2-longpoll)" "$(per nchan-longpoll)" B)"
echo "WebSocket per connection: $(ratio nchan "$(per herald-ws)" "$(per nchan-ws)" B), $(ratio socket.io "$(per herald-ws)" "$(per socketio-ws)" B)"
echo "WebTransport per session (no peer serves it here): $(per herald-webtransport) B; $(ratio "herald's own WebSocket" "$(per herald-webtransport)" "$(per herald-ws)" B)"

echo "== fan-out: one publish to $COUNT WebSocket subscribers (median of 5 rounds)"
# herald: one durable event in each of $COUNT per-user queues; the peers: one
# message on one channel in memory (nchan) / one io.emit (socket.io).
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/fanout.jsonl"
fanout() { taskset -c 1 "$CLIENT" fanout --count "$COUNT" --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 --out "$OUT/fanout.jsonl" "$@" | tee -a "$WORK/results"; }
herald; fanout --proto herald-ws --addr 127.0.0.1:18080; stop
if have_nchan; then
    start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
    fanout --proto nchan-ws --addr 127.0.0.1:18081; stop
fi
if have_socketio; then
    start 18082 node bench/peers/socketio-server.js 18082
    fanout --proto socketio-ws --addr 127.0.0.1:18082; stop
fi
echo "-- herald with two cores (shared with the load client)"
SERVER_CORES=0,1 herald
taskset -c 1 "$CLIENT" fanout --count "$COUNT" --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 --proto herald-ws --addr 127.0.0.1:18080 \
    --out "$OUT/fanout.jsonl" --label "herald-ws, 2 cores"
stop
"$BIN/examples/bench_latency" curve --in "$OUT/fanout.jsonl" --out "$OUT/fanout.svg" \
    --title "one publish to $COUNT WebSocket subscribers: share reached"

fan() { awk -v p="$1" '$1 == p && /fan-out to/ { for (i = 1; i <= NF; i++) if ($i == "ms" && $(i+1) == "(median") print $(i-1) }' "$WORK/results"; }
[ -n "$(fan herald-ws)" ] || { echo "herald fan-out figure missing" >&2; exit 1; }
echo "fan-out, server on one core: $(ratio nchan "$(fan herald-ws)" "$(fan nchan-ws)" ms), $(ratio socket.io "$(fan herald-ws)" "$(fan socketio-ws)" ms)"
