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
built=$(cargo test --locked --no-run 2>&1) || { echo "$built"; exit 1; }
# The Redis Cluster tests (tests/redis_cluster.rs, then tests/cluster.rs
# again on a Redis Cluster) mostly wait for failovers and slot moves:
# they run beside the others, one at a time, their output shown after.
# (Their binaries are run directly: two cargo processes would wait for
# each other's lock on target/.)
binary() { echo "$built" | sed -n "s|^ *Executable tests/$1\.rs (\(.*\))\$|\1|p"; }
redis_cluster=$(binary redis_cluster)
cluster=$(binary cluster)
[ -x "$redis_cluster" ] && [ -x "$cluster" ] || { echo "test binaries not found in: $built" >&2; exit 1; }
cluster_log=$(mktemp)
(
    set -e
    echo "== tests/redis_cluster.rs (3 primaries + 3 replicas)"
    "$redis_cluster"
    echo "== the cluster tests again, on a Redis Cluster (3 primaries + 3 replicas)"
    HERALD_TEST_REDIS=cluster "$cluster"
) >"$cluster_log" 2>&1 &
cluster_pid=$!
others=()
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [ "$name" = redis_cluster ] || others+=(--test "$name")
done
# (The examples were built above; no doctests: herald's docs hold no Rust code blocks.)
tests_rc=0
cargo test --locked --lib --bins "${others[@]}" || tests_rc=$?
# Waited for either way: nothing of theirs outlives this script.
cluster_rc=0
wait "$cluster_pid" || cluster_rc=$?
cat "$cluster_log"
rm -f "$cluster_log"
[ "$tests_rc" = 0 ] || { echo "cargo test failed" >&2; exit 1; }
[ "$cluster_rc" = 0 ] || { echo "the Redis Cluster tests failed" >&2; exit 1; }

echo "== benchmark smoke runs (tiny scale: every stage must still run; no timing is asserted)"
BENCH_SCALE=0.02 cargo run --locked --quiet --example bench_queue
BENCH_SCALE=0.02 HERALD_BIN=target/debug/herald cargo run --locked --quiet --example bench_trace
BENCH_SMOKE=1 ./scripts/bench-connections.sh
BENCH_SMOKE=1 ./scripts/bench-latency.sh

echo "== browser tests (headless chromium)"
[ -x /usr/lib/chromium/chromium ] || apt_install chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
# With the examples, so that the dependencies keep the features the test
# build gave them (dev-dependencies such as tokio's test-util): herald
# alone would rebuild them all (a minute) for the same binary.
cargo build --locked --bin herald --examples
rc=0
# The timeout holds for each file as a whole too (demo.test.mjs: ~40 s
# quiet, over 60 s with both cores loaded).
(cd e2e && node --test --test-reporter=tap --test-timeout=180000 .) || rc=$?
(cd e2e && HERALD_TEST_REDIS=cluster node --test --test-reporter=tap --test-timeout=180000 cluster.test.mjs) || rc=$?
echo "screenshots: target/e2e/"
exit "$rc"
