#!/usr/bin/env bash
# First scenario: keep-alive ActiveSync-like requests over 10,000 users through sprayer to
# three poolsim servers. Prints req/s, p50/p99 latency and sprayer's CPU µs per request
# (utime+stime from /proc/PID/stat divided by requests served). sprayer is pinned to CPU 0,
# wrk and the pool servers to the others.
# usage: bench/core.sh [seconds=10] [connections=50] [repetitions=3]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${1:-10}
connections=${2:-50}
reps=${3:-3}
"$bench_root/scripts/install-deps.sh" bench
BUILD_DIR="$bench_root/build" BUILD_TYPE=Release "$bench_root/scripts/build.sh" >/dev/null

work=$(mktemp -d /tmp/sprayer-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

others=$(( $(nproc) > 1 ? 1 : 0 ))-$(( $(nproc) - 1 ))
servers=""
for i in 1 2 3; do
  port=$(free_port)
  taskset -c "$others" "$bench_root/build/tests/poolsim/poolsim" --id "pool$i" --listen "127.0.0.1:$port" >"$work/pool$i.log" 2>&1 &
  pids+=($!)
  wait_port 127.0.0.1 "$port" 10
  servers+="  - id: pool$i
    address: 127.0.0.1:$port
"
done
listen=$(free_port)
admin=$(free_port)
cat >"$work/sprayer.yaml" <<YAML
workers: 1
listeners:
  - name: http
    address: 127.0.0.1:$listen
servers:
$servers
limits:
  max_connections: 9000
admin:
  address: 127.0.0.1:$admin
log:
  level: warn
YAML
taskset -c 0 "$bench_root/build/proxy/sprayer" -c "$work/sprayer.yaml" >"$work/sprayer.log" 2>&1 &
spid=$!
pids+=($spid)
wait_port 127.0.0.1 "$listen" 10

requests_served() { curl -s "http://127.0.0.1:$admin/metrics" | awk '/^sprayer_requests_total/ {print $2}'; }
tick=$(getconf CLK_TCK)

echo "| run | req/s | p50 | p99 | sprayer CPU µs/req | sprayer RSS MiB |"
echo "|---|---|---|---|---|---|"
# Warm-up: fills the upstream pools and the page cache.
taskset -c "$others" wrk -t1 -c"$connections" -d2s -s "$bench_root/bench/lua/activesync_users.lua" "http://127.0.0.1:$listen" >/dev/null
for r in $(seq 1 "$reps"); do
  c0=$(cpu_ticks $spid); n0=$(requests_served)
  out=$(taskset -c "$others" wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$bench_root/bench/lua/activesync_users.lua" "http://127.0.0.1:$listen")
  c1=$(cpu_ticks $spid); n1=$(requests_served)
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  us=$(python3 -c "print(f'{($c1-$c0)/$tick*1e6/max(1,$n1-$n0):.2f}')")
  rss=$(python3 -c "print(f'{$(rss_kib $spid)/1024:.1f}')")
  echo "| $r | $rps | $p50 | $p99 | $us | $rss |"
done
