#!/usr/bin/env bash
# Cluster benchmark: publish -> receive latency across nodes over Redis,
# herald against nchan in Redis mode in the same run, with the same Redis
# settings (AOF fsynced on every write). Redis and the two server nodes
# share core 0, the load client (examples/bench_latency.rs) gets core 1.
# Subscribers hold WebSockets on node B; the publisher posts to node A.
#
#   ./scripts/bench-cluster.sh [SECONDS]     (default 20 per run)
#   BENCH_RUNS="herald-redis-cluster" ./scripts/bench-cluster.sh   (some runs only)
#   BENCH_RAMP="" BENCH_IDLE=0 ./scripts/bench-cluster.sh 10        (1 000/s only)
#
# Per server: 1 000 subscribers at 1 000 publishes/s, then a ramp
# (2 000 … 16 000/s, 10 s each) to find the highest rate whose p99
# stays under 100 ms; Redis commands and CPU per delivered event at
# 1 000/s. herald runs twice: on one Redis, and on a Redis Cluster of 3
# primaries + 3 replicas (each append waits for its replica), where the
# commands are counted per primary, and their balance is measured over
# 10 000 users. Then 50 000 idle WebSockets held across three herald
# nodes (the fd limit is per process), memory per connection.
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
    REDIS_PIDS=("$REDIS_PID")
    STORE="redis://127.0.0.1:$REDIS_PORT"
    PRIMARIES=$REDIS_PORT
}
redis_stop() { kill "${REDIS_PIDS[@]}"; wait "${REDIS_PIDS[@]}" 2>/dev/null || true; }
# The Redis Cluster: 3 primaries + 3 replicas on ports 18200-18205.
RC_PORTS=(18200 18201 18202 18203 18204 18205)
redis_cluster_start() {
    REDIS_PIDS=()
    for p in "${RC_PORTS[@]}"; do
        rm -rf "$WORK/rc-$p"; mkdir -p "$WORK/rc-$p"
        taskset -c 0 redis-server --port "$p" --bind 127.0.0.1 --dir "$WORK/rc-$p" \
            --appendonly yes --appendfsync always --save "" --loglevel warning \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            >"$WORK/rc-$p.log" 2>&1 &
        REDIS_PIDS+=($!); PIDS+=($!); wait_port "$p"
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${RC_PORTS[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
    for p in "${RC_PORTS[@]}"; do
        until redis-cli -p "$p" info replication | grep -Eq "role:master|master_link_status:up"; do sleep 0.1; done
    done
    STORE="redis-cluster://127.0.0.1:18200,127.0.0.1:18201,127.0.0.1:18202"
}
primaries() {
    for p in "${RC_PORTS[@]}"; do
        if redis-cli -p "$p" info replication | grep -q role:master; then echo "$p"; fi
    done
}
calls_on() { redis-cli -p "$1" info commandstats | awk -F'[=,:]' '/^cmdstat/ {n += $3} END {print n + 0}'; }
calls() { # every command the primaries (or the one Redis) ran so far
    local total=0
    for p in $PRIMARIES; do total=$((total + $(calls_on "$p"))); done
    echo "$total"
}
by_command() { # "command calls" lines summed over the primaries
    for p in $PRIMARIES; do redis-cli -p "$p" info commandstats; done |
        awk -F'[=,:]' '/^cmdstat/ {n[$1] += $3} END {for (c in n) print substr(c, 9), n[c]}' | sort
}
cpu_ms() { # user+system CPU of the given pids, in ms
    local total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo $((total * 1000 / $(getconf CLK_TCK)))
}
herald_node() { # port; sets NODE_PID
    taskset -c 0 "$BIN/herald" --listen "127.0.0.1:$1" --store "$STORE" \
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
for run in ${BENCH_RUNS:-herald herald-redis-cluster nchan}; do
    proto=${run%%-*}
    if [ "$run" = herald-redis-cluster ]; then
        redis_cluster_start; PRIMARIES=$(primaries)
    else
        redis_start
    fi
    echo "-- $run"
    if [ "$run" = herald ]; then
        # Redis's own durable script rate on this primary: a script that
        # does an append's core (HINCRBY + XADD + PUBLISH), 50 clients.
        SCRIPT_RATE=$(taskset -c 1 redis-benchmark -p $REDIS_PORT -q -c 50 -n 50000 -r 10000 eval \
            "local s = redis.call('HINCRBY', KEYS[1], 's', 1) redis.call('XADD', KEYS[2], '*', 'j', ARGV[1]) return redis.call('PUBLISH', 'w', s)" \
            2 "m:__rand_int__" "q:__rand_int__" '{"t":1}' | awk -F'[: ]+' '/requests per second/ {for (i = 1; i < NF; i++) if ($(i + 1) == "requests") print $i}')
        echo "redis alone: $SCRIPT_RATE durable script calls/s (HINCRBY + XADD + PUBLISH, 50 clients)"
    fi
    "${proto}_node" 18101; A=$NODE_PID
    "${proto}_node" 18102; B=$NODE_PID
    by_command >"$WORK/commands0"
    calls0=$(calls); cpu0=$(cpu_ms "$A" "$B"); rcpu0=$(cpu_ms "${REDIS_PIDS[@]}")
    line=$(latency "$proto" 1000 "$SECONDS_PER_RUN"); echo "$line"
    delivered=$(echo "$line" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^delivered/) print $i}')
    calls1=$(calls); cpu1=$(cpu_ms "$A" "$B"); rcpu1=$(cpu_ms "${REDIS_PIDS[@]}")
    awk -v c=$((calls1 - calls0)) -v s=$((cpu1 - cpu0)) -v r=$((rcpu1 - rcpu0)) -v d="$delivered" -v p="$run" \
        'BEGIN {printf "%-7s per delivered event: %.1f redis commands, %.0f us node CPU, %.0f us redis CPU (all redis processes)\n", p, c / d, s * 1000 / d, r * 1000 / d}'
    by_command | join -a 1 - "$WORK/commands0" | awk -v d="$delivered" '
        {n = ($2 - $3) / d; if (n >= 0.05) line = line sprintf(" %s %.2f", $1, n)}
        END {print "  by command:" line}'
    if [ "$run" = herald-redis-cluster ]; then
        # Balance: one event to each of 10 000 users, 500 per publish.
        declare -A before=()
        for p in $PRIMARIES; do before[$p]=$(calls_on "$p"); done
        for batch in $(seq 0 19); do
            to=$(seq $((batch * 500)) $((batch * 500 + 499)) | sed 's/.*/"b&"/' | paste -sd,)
            curl -sf -o /dev/null -H "Authorization: Bearer bench-api-key-0123" \
                -H 'content-type: application/json' -d "{\"to\":[$to],\"data\":0}" \
                http://127.0.0.1:18101/api/v1/publish
        done
        for p in $PRIMARIES; do echo "$p $(( $(calls_on "$p") - before[$p] ))"; done | awk '
            {n[NR] = $2; sum += $2; if ($2 > max) max = $2; line = line sprintf(" %s: %d", $1, $2)}
            END {printf "commands per primary for 10 000 users:%s; max/mean %.2f\n", line, max / (sum / NR)}'
    fi
    ceiling=0
    if echo "$line" | awk '{for (i = 1; i < NF; i++) if ($i == "p99") exit !($(i + 1) < 100)}' &&
        echo "$line" | grep -q " 0 publish failures, *0 lost"; then ceiling=1000; fi
    for rate in ${BENCH_RAMP-2000 4000 8000 12000 16000}; do
        line=$(latency "$proto" "$rate" 10); echo "$line"
        if echo "$line" | awk '{for (i = 1; i < NF; i++) if ($i == "p99") exit !($(i + 1) < 100)}' &&
            echo "$line" | grep -q " 0 publish failures, *0 lost"; then ceiling=$rate; fi
    done
    if [ -n "${BENCH_RAMP-x}" ]; then
        echo "$run ceiling (p99 < 100 ms, nothing lost): $ceiling/s"
        if [ "$run" = herald ] && [ -n "${SCRIPT_RATE:-}" ]; then
            awk -v c=$ceiling -v r="$SCRIPT_RATE" 'BEGIN {printf "herald on one primary: %.2fx of redis alone\n", c / r}'
        fi
    fi
    kill "$A" "$B"; wait "$A" "$B" 2>/dev/null || true
    redis_stop
done

[ "${BENCH_IDLE:-1}" = 1 ] || exit 0
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
