#!/usr/bin/env bash
# A local herald cluster: Redis (AOF fsynced on every write), three herald
# nodes sharing it, and HAProxy sending each request to the next node.
# With --redis-cluster, Redis is a Redis Cluster of 3 primaries and 3
# replicas (ports REDIS_PORT to REDIS_PORT+5) instead of one process.
# The demo page is at http://127.0.0.1:8080/ (HERALD_PORT to change it).
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

redis_cluster=false
case "${1:-}" in
    --redis-cluster) redis_cluster=true ;;
    "") ;;
    *) echo "usage: $0 [--redis-cluster]" >&2; exit 2 ;;
esac

port=${HERALD_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
dir=${CLUSTER_DIR:-target/cluster}
# One secret and API key for every node: a token from one is good on all.
secret=${HERALD_SECRET:-$(head -c 24 /dev/urandom | base64)}
api_key=${HERALD_API_KEY:-$(head -c 18 /dev/urandom | base64)}

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Waits until `check` passes, or says why the process `pid` ($2) ended.
ready() {
    local name=$1 pid=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: $name did not start (port taken?)" >&2; exit 1; }
        sleep 0.1
    done
}

# One redis-server: its port ($1), its dir, then extra flags.
start_redis() {
    local p=$1
    shift
    mkdir -p "$dir/redis/$p"
    redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/redis/$p" \
        --appendonly yes --appendfsync always --save "" --loglevel warning "$@" &
    pids+=($!)
    ready "redis-server on port $p" $! redis-cli -p "$p" ping
}

if $redis_cluster; then
    addresses=()
    for p in $(seq "$redis_port" $((redis_port + 5))); do
        # A node remembers its cluster in nodes.conf: start from scratch.
        rm -rf "$dir/redis/$p"
        start_redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000
        addresses+=("127.0.0.1:$p")
    done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    # Every replica in sync: one that never synced cannot take over.
    for p in $(seq "$redis_port" $((redis_port + 5))); do
        until redis-cli -p "$p" info replication | grep -Eq "role:master|master_link_status:up"; do
            sleep 0.1
        done
    done
    store="redis-cluster://$(IFS=,; echo "${addresses[*]:0:3}")"
else
    start_redis "$redis_port"
    store="redis://127.0.0.1:$redis_port"
fi

cargo build --release --locked --bin herald
for i in 1 2 3; do
    ./target/release/herald --listen "127.0.0.1:$((port + i))" \
        --store "$store" \
        --secret "$secret" --api-key "$api_key" --demo \
        >"$dir/node$i.log" 2>&1 &
    pids+=($!)
    ready "herald node $i (see $dir/node$i.log)" $! curl -sf "http://127.0.0.1:$((port + i))/healthz"
done

LISTEN="127.0.0.1:$port" NODE1="127.0.0.1:$((port + 1))" NODE2="127.0.0.1:$((port + 2))" \
    NODE3="127.0.0.1:$((port + 3))" haproxy -f docs/deploy/haproxy-cluster.cfg -db &
pids+=($!)
ready "haproxy on port $port" $! curl -sf "http://127.0.0.1:$port/healthz"

echo "herald cluster: 3 nodes on $store behind http://127.0.0.1:$port/"
echo "API key: $api_key (node logs: $dir/node*.log)"
wait
