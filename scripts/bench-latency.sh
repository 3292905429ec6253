#!/usr/bin/env bash
# Latency on one server: 1 000 subscribers on WebSocket, SSE and long-poll
# (socket.io: WebSocket only), 1 000 publishes/s for 20 s, each event to one
# subscriber; publish -> receive p50/p99/p99.9 for herald (sled, fsync on),
# nchan 1.3 (memory store) and socket.io 4.8 (in memory), in one run. Each
# server on core 0, the load client (examples/bench_latency.rs) on core 1.
# Then typing signals (herald only: no fsync on their path), sender ->
# receiver over WebSockets, and what group read receipts cost their sender
# (pushed, or riding on its keepalives). Then sustained fan-out: every publish to all 1 000 WebSocket subscribers
# (herald: 1 000 durable events per publish), at rising rates, herald vs
# nchan, 10 s each: deliveries/s and their p99. After each herald run, its
# group commit's flush + fdatasync times (its /metrics): herald's floor.
# Writes target/bench/latency.jsonl and sustained.jsonl, and the charts
# target/bench/latency.svg and sustained.svg.
#
#   ./scripts/bench-latency.sh [SECONDS]     (default 20)
#
# BENCH_FAN_ONLY=1 runs the fan-out stage only; BENCH_FAN_RATES="100"
# picks its rates. BENCH_HERALD=PATH runs another herald binary (an older
# build, side by side with this one).
#
# BENCH_SMOKE=1 (what the test suite runs): a debug build, 100 subscribers
# at 200/s for 2 s, the peers only if already installed; it checks that
# every stage still runs, and asserts no timing.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE="${BENCH_SMOKE:-}"
SECONDS_PER_RUN="${1:-$([ -n "$SMOKE" ] && echo 2 || echo 20)}"
SUBSCRIBERS=$([ -n "$SMOKE" ] && echo 100 || echo 1000)
RATE=$([ -n "$SMOKE" ] && echo 200 || echo 1000)
export DEBIAN_FRONTEND=noninteractive
if [ -z "$SMOKE" ]; then
    if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan >/dev/null
        systemctl stop nginx 2>/dev/null || pkill -x nginx || true
    fi
    (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cargo build --release --locked --bin herald --example bench_latency --example bench_receipts 2>&1 | tail -1
    BIN=target/release
else
    cargo build --locked --bin herald --example bench_latency --example bench_receipts 2>&1 | tail -1
    BIN=target/debug
fi
have_nchan() { [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null; }
have_socketio() { [ -d bench/peers/node_modules/socket.io ]; }
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/latency.jsonl" "$OUT/sustained.jsonl"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
run() { # server transport port [rate seconds out extra...]
    taskset -c 1 "$BIN/examples/bench_latency" run --server "$1" --transport "$2" \
        --pub "127.0.0.1:$3" --sub "127.0.0.1:$3" --subscribers "$SUBSCRIBERS" --rate "${4:-$RATE}" \
        --seconds "${5:-$SECONDS_PER_RUN}" --out "$OUT/${6:-latency}.jsonl" "${@:7}"
}
API_KEY=bench-api-key-0123
herald_start() {
    start 18080 "${BENCH_HERALD:-$BIN/herald}" --listen 127.0.0.1:18080 --data "$WORK/data-$RANDOM" \
        --secret bench-secret-0123456789abcdefghij --api-key "$API_KEY" \
        --send-rate 0 --max-conns-per-ip 0 "$@"
}

for transport in $([ -n "${BENCH_FAN_ONLY:-}" ] || echo ws sse longpoll); do
    herald_start
    run herald "$transport" 18080; flush_figures 18080 "$API_KEY"; stop
    if have_nchan; then
        start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
        run nchan "$transport" 18081; stop
    else echo "nchan: skipped (not installed)"; fi
done
if [ -z "${BENCH_FAN_ONLY:-}" ]; then
    # The same over HTTPS with HTTP/2 (a certificate made at start), 100
    # subscribers on each connection.
    for transport in sse longpoll; do
        herald_start --tls-self-signed
        run herald "$transport" 18080 "$RATE" "$SECONDS_PER_RUN" latency --tls; stop
    done
    # WebTransport (HTTP/3 over QUIC, UDP on the same port), one session
    # per subscriber.
    herald_start --tls-self-signed --webtransport-listen 127.0.0.1:18080
    run herald webtransport 18080 "$RATE" "$SECONDS_PER_RUN" latency --tls; stop
fi
if [ -z "${BENCH_FAN_ONLY:-}" ] && have_socketio; then
    start 18082 node bench/peers/socketio-server.js 18082
    run socketio ws 18082; stop
else echo "socket.io: skipped (not installed)"; fi

if [ -z "${BENCH_FAN_ONLY:-}" ]; then
    # Typing signals: never stored, so no fsync on their path. 2 a second
    # per sender (under --typing-rate's 5).
    echo "== typing signals: a sender's WebSocket to its receiver's, each timed"
    PAIRS=$([ -n "$SMOKE" ] && echo 10 || echo 100)
    herald_start
    taskset -c 1 "$BIN/examples/bench_latency" typing --pub 127.0.0.1:18080 --sub 127.0.0.1:18080 \
        --subscribers "$PAIRS" --rate $((PAIRS * 2)) --seconds "$SECONDS_PER_RUN" | tee "$WORK/typing.txt"
    stop
    grep -q "pairs: *[1-9][0-9]* delivered" "$WORK/typing.txt" || { echo "no typing signal delivered" >&2; exit 1; }
fi

if [ -z "${BENCH_FAN_ONLY:-}" ]; then
    # Group read receipts to the sender: pushed as events, or riding on its
    # keepalives (every 15 s; 1 s in the smoke run).
    echo "== group read receipts: pushed vs on the keepalive"
    RECEIPTS=$([ -n "$SMOKE" ] && echo "--members 20 --online 5 --messages 10 --rate 20" || echo "--members 200 --online 40 --messages 100 --rate 10")
    for mode in push keepalive; do
        herald_start --group-receipts "$mode" $([ -n "$SMOKE" ] && echo --heartbeat-ms 1000)
        echo -n "$mode: "
        # shellcheck disable=SC2086
        taskset -c 1 "$BIN/examples/bench_receipts" --addr 127.0.0.1:18080 $RECEIPTS
        stop
    done
fi

echo "== sustained fan-out: every publish to all $SUBSCRIBERS WebSocket subscribers"
FAN_RATES=${BENCH_FAN_RATES:-$([ -n "$SMOKE" ] && echo 2 || echo "20 50 100 200")}
FAN_SECONDS=$([ -n "$SMOKE" ] && echo 2 || echo 10)
for rate in $FAN_RATES; do
    herald_start
    run herald ws 18080 "$rate" "$FAN_SECONDS" sustained --fanout; flush_figures 18080 "$API_KEY"; stop
    if have_nchan; then
        start 18081 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf"
        run nchan ws 18081 "$rate" "$FAN_SECONDS" sustained --fanout; stop
    fi
done

# One line per fan-out rate: herald's p99 against nchan's, so that a
# regression shows at a glance.
python3 - "$OUT/sustained.jsonl" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["rate"], {})[r["server"]] = r
for rate, by in sorted(runs.items()):
    h, n = by.get("herald"), by.get("nchan")
    if h and n:
        print(f"fan-out {rate}/s: herald p99 {h['p99_ms']:.1f} ms, nchan {n['p99_ms']:.1f} ms: "
              f"{h['p99_ms'] / max(n['p99_ms'], 0.001):.2f}x; delivered {h['delivered']} / {n['delivered']}")
PY
[ -n "${BENCH_FAN_ONLY:-}" ] && exit 0
"$BIN/examples/bench_latency" chart --in "$OUT/latency.jsonl" --out "$OUT/latency.svg" \
    --title "publish → receive at $RATE/s, $SUBSCRIBERS subscribers, one core each (lower is better)"
"$BIN/examples/bench_latency" chart --in "$OUT/sustained.jsonl" --out "$OUT/sustained.svg" \
    --group rate --measure deliveries_per_s --linear --unit "deliveries/s" \
    --title "fan-out to $SUBSCRIBERS WebSockets: deliveries/s by publishes/s (higher is better)"
# Every herald run must have delivered (no timing is asserted).
for transport in ws sse longpoll "sse over h2" "longpoll over h2" webtransport; do
    grep '"server":"herald"' "$OUT/latency.jsonl" | grep "\"transport\":\"$transport\"" \
        | grep -q '"delivered":[1-9]' || { echo "herald $transport delivered nothing" >&2; exit 1; }
done
