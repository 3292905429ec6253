#!/usr/bin/env bash
# Server memory per idle WebTransport session, wtransport against quinn +
# h3 + h3-webtransport, alternated, each server on core 0 and the client
# (wtransport's) on core 1; both servers use the system allocator.
#
#   ./run.sh [SESSIONS]      (default 5000)
set -euo pipefail
cd "$(dirname "$0")"
COUNT="${1:-5000}"
cargo build --release --locked 2>&1 | tail -1
for server in wt_server h3_server wt_server h3_server; do
    taskset -c 0 "target/release/$server" >"target/$server.out" 2>&1 &
    pid=$!
    until grep -q listening "target/$server.out"; do sleep 0.1; done
    hash=$(awk '/^hash/ { print $2 }' "target/$server.out")
    echo -n "$server: "
    taskset -c 1 target/release/client "$pid" "$hash" "$COUNT"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
