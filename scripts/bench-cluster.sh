#!/usr/bin/env bash
# Cluster benchmark: publish -> receive latency across nodes over Redis,
# herald against nchan in Redis mode in the same run, with the same Redis
# settings (AOF fsynced on every write). Redis and the two server nodes
# share core 0, the load client (examples/bench_latency.rs) gets core 1.
# Subscribers hold WebSockets on node B; the publisher posts to node A.
#
#   ./scripts/bench-cluster.sh [SECONDS]     (default 20 per run)
#
# Per server: 1 000 subscribers at 1 000 publishes/s, then a ramp
# (2 000 … 16 000/s, 10 s each) to find the highest rate whose p99
# stays under 100 ms; Redis commands and CPU per delivered event at
# 1 000/s. Then 50 000 idle WebSockets held across three herald nodes
# (the fd limit is per process), memory per connection.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
export DEBIAN_FRONTEND=noninteractive
need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(nginx-light libnginx-mod-nchan)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    systemctl stop nginx redis-server 2>/dev/null || pkill -x nginx || true
fi
cargo build --release --locked --bin herald --example bench_latency --example bench_connections 2>&1 | tail -1
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
REDIS_PORT=18190

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
redis_start() {
    rm -rf "$WORK/redis"; mkdir -p "$WORK/redis"
    taskset -c 0 redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$WORK/redis" \
        --appendonly yes --appendfsync always --save "" --loglevel warning >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!; PIDS+=("$REDIS_PID"); wait_port $REDIS_PORT
}
redis_stop() { kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; }
calls() { redis-cli -p $REDIS_PORT info commandstats | awk -F'[=,:]' '/^cmdstat/ {n += $3} END {print n}'; }
cpu_ms() { # user+system CPU of the given pids, in ms
    local total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo $((total * 1000 / $(getconf CLK_TCK)))
}
herald_node() { # port; sets NODE_PID
    taskset -c 0 "$BIN/herald" --listen "127.0.0.1:$1" --store "redis://127.0.0.1:$REDIS_PORT" \
        --secret bench-secret-0123456789abcdefghij --api-key bench-api-key-0123 \
        --send-rate 0 --max-conns-per-ip 0 >"$WORK/herald-$1.log" 2>&1 &
    NODE_PID=$!; PIDS+=("$NODE_PID"); wait_port "$1"
}
nchan_node() { # port; sets NODE_PID
    sed -e "s/LISTEN_PORT/$1/g" -e "s/REDIS_PORT/$REDIS_PORT/g" bench/peers/nchan-redis.conf >"$WORK/nchan-$1.conf"
    (cd "$WORK" && exec taskset -c 0 nginx -p "$WORK" -c "$WORK/nchan-$1.conf" >"$WORK/nchan-$1.log" 2>&1) &
    NODE_PID=$!; PIDS+=("$NODE_PID"); wait_port "$1"
}
latency() { # server rate seconds
    taskset -c 1 "$BIN/examples/bench_latency" run --server "$1" --transport ws --pub 127.0.0.1:18101 \
        --sub 127.0.0.1:18102 --subscribers 1000 --rate "$2" --seconds "$3"
}

echo "== redis $(redis-server --version | awk '{print $3}'), appendonly yes, appendfsync always; $(nproc) cores"
for proto in herald nchan; do
    redis_start
    "${proto}_node" 18101; A=$NODE_PID
    "${proto}_node" 18102; B=$NODE_PID
    calls0=$(calls); cpu0=$(cpu_ms "$A" "$B"); rcpu0=$(cpu_ms "$REDIS_PID")
    line=$(latency "$proto" 1000 "$SECONDS_PER_RUN"); echo "$line"
    delivered=$(echo "$line" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "delivered,") print $i}')
    calls1=$(calls); cpu1=$(cpu_ms "$A" "$B"); rcpu1=$(cpu_ms "$REDIS_PID")
    awk -v c=$((calls1 - calls0)) -v s=$((cpu1 - cpu0)) -v r=$((rcpu1 - rcpu0)) -v d="$delivered" -v p="$proto" \
        'BEGIN {printf "%-7s per delivered event: %.1f redis commands, %.0f us node CPU, %.0f us redis CPU\n", p, c / d, s * 1000 / d, r * 1000 / d}'
    for rate in 2000 4000 8000 12000 16000; do
        latency "$proto" "$rate" 10
    done
    kill "$A" "$B"; wait "$A" "$B" 2>/dev/null || true
    redis_stop
done

echo "== 50 000 idle WebSockets across three herald nodes"
redis_start
pids=()
for port in 18111 18112 18113; do herald_node $port; pids+=("$NODE_PID"); done
clients=()
i=0
for port in 18111 18112 18113; do
    # One client per node, holding at once: 3 x 16 667 connections.
    taskset -c 1 "$BIN/examples/bench_connections" idle --proto herald-ws --addr "127.0.0.1:$port" \
        --pid "${pids[$i]}" --count 16667 --hold-s 20 &
    clients+=($!)
    i=$((i + 1))
done
wait "${clients[@]}"
