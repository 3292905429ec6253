#!/usr/bin/env bash
# Runs every herald test and installs what they need (safe to run again):
# unit and integration tests (real herald processes on 127.0.0.1, real
# HTTP/SSE/WebSocket clients; the cluster tests with their own
# redis-server, then again on their own Redis Cluster), smoke runs of the benchmarks, then the
# real-browser tests (Debian's chromium driven by playwright-core against
# the real server).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# The cluster tests start their own redis-server processes on free ports
# (one, or six as a Redis Cluster with HERALD_TEST_REDIS=cluster), and the
# cluster browser test puts Debian's haproxy in front of three nodes.
command -v redis-server >/dev/null || apt_install redis-server
command -v haproxy >/dev/null || apt_install haproxy
# The dead-peer test drops one client's packets with nftables inside a
# network namespace of its own (ip netns, from iproute2).
command -v ip >/dev/null || apt_install iproute2
command -v nft >/dev/null || apt_install nftables
# A browser test runs the demo through Debian's nginx with docs/deploy/nginx.conf.
if ! command -v nginx >/dev/null; then
    apt_install nginx-light
    # The package starts a system nginx; the test runs its own.
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi

echo "== layer check (src/lib.rs's drawing: no import cycle, nothing runs up it)"
python3 scripts/check-layers.py

echo "== cargo test (unit + integration, real servers on 127.0.0.1)"
cargo test --locked

echo "== the cluster tests again, on a Redis Cluster (3 primaries + 3 replicas)"
HERALD_TEST_REDIS=cluster cargo test --locked --test cluster

echo "== benchmark smoke runs (tiny scale: every stage must still run; no timing is asserted)"
BENCH_SCALE=0.02 cargo run --locked --quiet --example bench_queue
BENCH_SMOKE=1 ./scripts/bench-connections.sh
BENCH_SMOKE=1 ./scripts/bench-latency.sh

echo "== browser tests (headless chromium)"
[ -x /usr/lib/chromium/chromium ] || apt_install chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked --bin herald
rc=0
(cd e2e && node --test --test-reporter=tap --test-timeout=60000 .) || rc=$?
(cd e2e && HERALD_TEST_REDIS=cluster node --test --test-reporter=tap --test-timeout=60000 cluster.test.mjs) || rc=$?
echo "screenshots: target/e2e/"
exit "$rc"
