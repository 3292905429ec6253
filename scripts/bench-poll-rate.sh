#!/usr/bin/env bash
# Request rate of a short poll at the head of a queue: herald pinned to
# core 0, wrk (Debian's, installed if missing) on core 1, 50 connections,
# 8 s. A first figure for issue 13's request-rate scenario (no peer yet).
#
#   ./scripts/bench-poll-rate.sh [path/to/herald]   (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }
BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --release --locked --bin herald 2>&1 | tail -1
    BIN=target/release/herald
fi
WORK=$(mktemp -d)
taskset -c 0 "$BIN" --listen 127.0.0.1:18095 --data "$WORK/data" \
    --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 >"$WORK/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18095) 2>/dev/null && break; sleep 0.1; done
TOKEN=$(curl -s -X POST -H "Authorization: Bearer bench-api-key-0123" -H "content-type: application/json" \
    -d '{"uid":"poller"}' http://127.0.0.1:18095/api/v1/tokens | sed 's/.*"token":"\([^"]*\)".*/\1/')
taskset -c 1 wrk -t1 -c50 -d8s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18095/v1/poll?cursor=0" \
    | grep -E "Requests/sec|Latency"
