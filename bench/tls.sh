#!/usr/bin/env bash
# TLS termination cost, sprayer next to HAProxy on the same certificates (ECDSA P-256 and
# RSA-2048) in front of the same poolsim:
#   1. keep-alive over TLS: req/s and proxy CPU µs per request (utime+stime from /proc/PID/stat
#      divided by wrk's request count), wrk with 50 connections;
#   2. full handshakes (no resumption: `openssl s_time -new`): handshakes/s and proxy CPU µs per
#      handshake, per certificate type;
#   3. memory per idle TLS connection (bench/tls_idle.py: 2000 connections after one request).
# Each proxy runs one thread pinned to CPU 0; clients and poolsim on the other CPUs.
# usage: bench/tls.sh [seconds=10]
#   BENCH_NO_BUILD=1 uses the binaries already in $BUILD_DIR (default build/) instead of a
#   Release build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${1:-10}
build_dir=${BUILD_DIR:-$bench_root/build}
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  "$bench_root/scripts/install-deps.sh" bench
  BUILD_DIR="$build_dir" BUILD_TYPE=Release BUILD_TARGETS="sprayer poolsim" "$bench_root/scripts/build.sh" >/dev/null
fi
for tool in wrk haproxy openssl taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh bench)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/sprayer-bench-tls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
others=$(( $(nproc) > 1 ? 1 : 0 ))-$(( $(nproc) - 1 ))
tick=$(getconf CLK_TCK)

# Certificates: one CA, a P-256 and an RSA-2048 leaf for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" \
  -days 30 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
for kind in ec rsa; do
  if [ $kind = ec ]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else newkey=(-newkey rsa:2048); fi
  openssl req -new "${newkey[@]}" -nodes -keyout "$work/$kind.key" -out "$work/$kind.csr" -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$work/ext.cnf"
  openssl x509 -req -in "$work/$kind.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 30 \
    -extfile "$work/ext.cnf" -out "$work/$kind.pem" 2>/dev/null
  cat "$work/$kind.pem" "$work/$kind.key" >"$work/$kind.combined.pem"  # HAProxy's crt format
done

pool_port=$(free_port)
taskset -c "$others" "$build_dir/tests/poolsim/poolsim" --id pool1 --listen "127.0.0.1:$pool_port" >"$work/pool.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$pool_port" 10

proxy_pid=""
start_sprayer() {  # cert-kind port
  local admin; admin=$(free_port)
  cat >"$work/sprayer-$1.yaml" <<YAML
workers: 1
listeners:
  - name: https
    address: 127.0.0.1:$2
    tls:
      certificates:
        - cert: $work/$1.pem
          key: $work/$1.key
servers:
  - id: pool1
    address: 127.0.0.1:$pool_port
limits:
  max_connections: 20000
health:
  enabled: false
admin:
  address: 127.0.0.1:$admin
log:
  level: warn
YAML
  taskset -c 0 "$build_dir/proxy/sprayer" -c "$work/sprayer-$1.yaml" >"$work/sprayer-$1.log" 2>&1 &
  proxy_pid=$!
  pids+=($proxy_pid)
  wait_port 127.0.0.1 "$2" 10
}

start_haproxy() {  # cert-kind port
  cat >"$work/haproxy-$1.cfg" <<CFG
global
  nbthread 1
  maxconn 9000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$2 ssl crt $work/$1.combined.pem alpn http/1.1
  default_backend be
backend be
  server pool1 127.0.0.1:$pool_port
CFG
  taskset -c 0 haproxy -db -f "$work/haproxy-$1.cfg" >"$work/haproxy-$1.log" 2>&1 &
  proxy_pid=$!
  pids+=($proxy_pid)
  wait_port 127.0.0.1 "$2" 10
}

stop_proxy() { kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }

cpu_us_per() {  # ticks-before ticks-after count
  python3 -c "print(f'{($2-$1)/$tick*1e6/max(1,$3):.1f}')"
}

keepalive_row() {  # proxy-name port
  local url="https://localhost:$2/traveler?action=getStatus"
  taskset -c "$others" wrk -t1 -c50 -d2s "$url" >/dev/null  # warm-up: handshakes, upstream pool
  local c0 c1 out n rps
  c0=$(cpu_ticks "$proxy_pid")
  out=$(taskset -c "$others" wrk -t1 -c50 -d"${duration}s" --latency "$url")
  c1=$(cpu_ticks "$proxy_pid")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  echo "| $1 | $rps | $(echo "$out" | awk '$1=="50%" {print $2}') | $(echo "$out" | awk '$1=="99%" {print $2}') | $(cpu_us_per "$c0" "$c1" "$n") |"
}

handshake_row() {  # proxy-name kind port
  local c0 c1 out n secs
  c0=$(cpu_ticks "$proxy_pid")
  out=$(taskset -c "$others" openssl s_time -new -connect "127.0.0.1:$3" -time "$duration" 2>&1 </dev/null || true)
  c1=$(cpu_ticks "$proxy_pid")
  n=$(echo "$out" | awk '/connections in [0-9.]+ real seconds/ {print $1; exit}')
  secs=$(echo "$out" | awk '/connections in [0-9.]+ real seconds/ {print $4; exit}')
  [ -n "$n" ] || { echo "bench: s_time gave no result: $out" >&2; n=0; secs=1; }
  echo "| $1 | $2 | $(python3 -c "print(f'{$n/$secs:.0f}')") | $(cpu_us_per "$c0" "$c1" "$n") |"
}

idle_row() {  # proxy-name kind port
  local line
  line=$(taskset -c "$others" python3 "$bench_root/bench/tls_idle.py" --port "$3" --pid "$proxy_pid" --n 2000 \
         --ca "$work/ca.pem" --host localhost)
  echo "| $1 | $2 | $(echo "$line" | sed 's/.*per_conn_kib=//') |"
}

echo "## Keep-alive over TLS (ECDSA P-256, TLS 1.3, wrk 50 connections, ${duration}s)"
echo
echo "| proxy | req/s | p50 | p99 | proxy CPU µs/req |"
echo "|---|---|---|---|---|"
for proxy in sprayer haproxy; do
  port=$(free_port); "start_$proxy" ec "$port"; keepalive_row "$proxy" "$port"; stop_proxy
done
echo
echo "## Full handshakes (openssl s_time -new, TLS 1.3, one client, ${duration}s)"
echo
echo "| proxy | certificate | handshakes/s | proxy CPU µs/handshake |"
echo "|---|---|---|---|"
for kind in ec rsa; do
  for proxy in sprayer haproxy; do
    port=$(free_port); "start_$proxy" "$kind" "$port"; handshake_row "$proxy" "$kind" "$port"; stop_proxy
  done
done
echo
echo "## Memory per idle TLS connection (2000 connections, one request each)"
echo
echo "| proxy | certificate | KiB per idle connection |"
echo "|---|---|---|"
for proxy in sprayer haproxy; do
  port=$(free_port); "start_$proxy" ec "$port"; idle_row "$proxy" ec "$port"; stop_proxy
done
