#!/usr/bin/env bash
# A local herald cluster: Redis (AOF fsynced on every write), three herald
# nodes sharing it, and HAProxy sending each request to the next node.
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

port=${HERALD_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
dir=${CLUSTER_DIR:-target/cluster}
mkdir -p "$dir/redis"
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

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" \
    --appendonly yes --appendfsync always --save "" --loglevel warning &
pids+=($!)
ready "redis-server on port $redis_port" $! redis-cli -p "$redis_port" ping

cargo build --release --locked --bin herald
for i in 1 2 3; do
    ./target/release/herald --listen "127.0.0.1:$((port + i))" \
        --store "redis://127.0.0.1:$redis_port" \
        --secret "$secret" --api-key "$api_key" --demo \
        >"$dir/node$i.log" 2>&1 &
    pids+=($!)
    ready "herald node $i (see $dir/node$i.log)" $! curl -sf "http://127.0.0.1:$((port + i))/healthz"
done

LISTEN="127.0.0.1:$port" NODE1="127.0.0.1:$((port + 1))" NODE2="127.0.0.1:$((port + 2))" \
    NODE3="127.0.0.1:$((port + 3))" haproxy -f docs/deploy/haproxy-cluster.cfg -db &
pids+=($!)
ready "haproxy on port $port" $! curl -sf "http://127.0.0.1:$port/healthz"

echo "herald cluster: 3 nodes on redis://127.0.0.1:$redis_port behind http://127.0.0.1:$port/"
echo "API key: $api_key (node logs: $dir/node*.log)"
wait
