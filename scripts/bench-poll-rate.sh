#!/usr/bin/env bash
# Request rate of the polls, with the same load client for every server:
# wrk (Debian's, installed if missing) on core 1, 50 connections, 8 s, the
# median of 3 rounds; each server pinned to core 0.
# - herald short poll at the head (`/v1/poll?cursor=N`, nothing new);
# - herald long-poll answered from a queued event (`/v1/longpoll?cursor=0`
#   on a queue that has one: answered at once, as a poller catching up is);
# - nchan's long-poll answered from a queued message (`/sub-oldest/c`,
#   `nchan_subscriber_first_message oldest`), memory store.
# Writes target/bench/request-rate.jsonl and target/bench/request-rate.svg.
#
#   ./scripts/bench-poll-rate.sh [path/to/herald]   (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(nginx-light libnginx-mod-nchan)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi
BIN="${1:-}"
cargo build --release --locked --example bench_latency 2>&1 | tail -1
if [ -z "$BIN" ]; then
    cargo build --release --locked --bin herald 2>&1 | tail -1
    BIN=target/release/herald
fi
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/request-rate.jsonl"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
# The median requests/s of 3 wrk rounds of `$@` (extra wrk arguments, URL last).
rate() {
    for _ in 1 2 3; do
        taskset -c 1 wrk -t1 -c50 -d8s "$@" | awk '/Requests\/sec/ {print $2}'
    done | sort -n | sed -n 2p
}
record() { # server scenario rate
    echo "$1 $2: $3 requests/s (median of 3 rounds)"
    printf '{"server":"%s","scenario":"%s","rps":%s}\n' "$1" "$2" "$3" >>"$OUT/request-rate.jsonl"
}

taskset -c 0 "$BIN" --listen 127.0.0.1:18095 --data "$WORK/data" \
    --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 >"$WORK/log" 2>&1 &
PIDS+=($!); wait_port 18095
api() { curl -sf -X POST -H "Authorization: Bearer bench-api-key-0123" -H "content-type: application/json" -d "$2" "http://127.0.0.1:18095$1"; }
TOKEN=$(api /api/v1/tokens '{"uid":"poller"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
HEAD=$(api /api/v1/publish '{"to":["poller"],"data":"queued"}' | sed 's/.*"poller":\([0-9]*\).*/\1/')
record herald "short poll at the head" \
    "$(rate -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18095/v1/poll?cursor=$HEAD")"
record herald "long-poll, queued event" \
    "$(rate -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18095/v1/longpoll?cursor=0")"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

taskset -c 0 nginx -p "$PWD/bench/peers" -c "$PWD/bench/peers/nchan.conf" >"$WORK/nchan.log" 2>&1 &
PIDS+=($!); wait_port 18081
curl -sf -X POST -d '{"queued":true}' http://127.0.0.1:18081/pub/c >/dev/null
record nchan "long-poll, queued event" "$(rate "http://127.0.0.1:18081/sub-oldest/c")"

target/release/examples/bench_latency chart --in "$OUT/request-rate.jsonl" --out "$OUT/request-rate.svg" \
    --group scenario --measure rps --linear --unit "requests/s" \
    --title "poll request rate, wrk -c50 on one core, server on the other (higher is better)"
