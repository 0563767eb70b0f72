#!/usr/bin/env bash
# Installs what is missing, builds, starts three simulated pool servers (poolsim) and
# sprayer in front of them, prints what to try, and stops everything on Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" build
BUILD_DIR="$root/build" "$root/scripts/build.sh" >/dev/null

run_dir=$(mktemp -d /tmp/sprayer-demo.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping demo..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "logs kept in $run_dir"
}
trap cleanup INT TERM EXIT

# A port that answers is not enough: another process may hold it. Our process must be alive.
wait_port() {  # pid name log host port seconds
  local deadline=$((SECONDS + $6))
  until (exec 3<>"/dev/tcp/$4/$5") 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || { echo "demo: $2 (pid $1) exited; its log ($3):" >&2; tail -20 "$3" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "demo: nothing listens on $4:$5 after $6 s" >&2; return 1; }
    sleep 0.1
  done
  kill -0 "$1" 2>/dev/null || { echo "demo: $2 (pid $1) exited; its log ($3):" >&2; tail -20 "$3" >&2; return 1; }
}

# The pool's ownership table on the embedded default (SQLite), joined by the pool servers.
db="$run_dir/pool.db"
python3 - "$db" "$root/conf/sql/schema-sqlite.sql" <<'PY'
import sqlite3, sys
with sqlite3.connect(sys.argv[1]) as c:
    c.executescript(open(sys.argv[2]).read())
PY

# A demo CA and the pool's shared wildcard certificate, for https://*.example.com:8443.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=sprayer demo CA" \
  -keyout "$run_dir/ca.key" -out "$run_dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=*.example.com" \
  -keyout "$run_dir/wildcard.key" -out "$run_dir/wildcard.csr" 2>/dev/null
printf "subjectAltName=DNS:*.example.com,DNS:example.com\n" >"$run_dir/san.cnf"
openssl x509 -req -in "$run_dir/wildcard.csr" -CA "$run_dir/ca.pem" -CAkey "$run_dir/ca.key" -CAcreateserial \
  -days 30 -extfile "$run_dir/san.cnf" -out "$run_dir/wildcard.pem" 2>/dev/null

for i in 1 2 3; do
  "$root/build/tests/poolsim/poolsim" --id "pool$i" --listen "127.0.0.1:900$i" --db "sqlite:$db" \
    >"$run_dir/pool$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_port "${pids[$((i - 1))]}" "pool$i" "$run_dir/pool$i.log" 127.0.0.1 "900$i" 10; done

# Every answer of this demo's sprayer carries this Via name: proof that port 8080 is ours.
via="sprayer-demo-$$"
sed -e "s|@DB@|$db|" -e "s|@RUN@|$run_dir|g" -e "s|@VIA@|$via|" "$root/conf/examples/demo.yaml" >"$run_dir/sprayer.yaml"
"$root/build/proxy/sprayer" -c "$run_dir/sprayer.yaml" >"$run_dir/sprayer.log" 2>&1 &
sprayer_pid=$!
pids+=($sprayer_pid)
for port in 8080 8443 9100; do wait_port "$sprayer_pid" sprayer "$run_dir/sprayer.log" 127.0.0.1 "$port" 10; done
answer=$(curl -s -i --max-time 5 'http://127.0.0.1:8080/Microsoft-Server-ActiveSync?Cmd=Sync&User=demo&DeviceId=D0&DeviceType=demo' || true)
if ! printf '%s' "$answer" | tr -d '\r' | grep -qi "^via: .*$via"; then
  echo "demo: the answer on 127.0.0.1:8080 did not come from this demo's sprayer (pid $sprayer_pid):" >&2
  printf '%s\n' "$answer" | head -12 >&2
  exit 1
fi
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "demo: process $pid exited during start-up (logs in $run_dir)" >&2; exit 1; }
done

cat <<TXT

sprayer is running in front of a simulated pool of three servers (pool1..pool3) that
share one SQLite ownership table ($db): the first request for a user makes a server claim it,
and from then on sprayer sends every device of that user to its owner.

  sprayer      http://127.0.0.1:8080, https://mail.example.com:8443   (log: $run_dir/sprayer.log)
  admin        http://127.0.0.1:9100      (/healthz, /metrics, /api/v1/...)
  pool servers 127.0.0.1:9001..9003

Try:
  curl -i 'http://127.0.0.1:8080/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=A1&DeviceType=iPhone'
  curl -i 'http://127.0.0.1:8080/traveler?action=getStatus'
  curl -i -u 'ACME\\jdoe:secret' 'http://127.0.0.1:8080/servlet/traveler/Microsoft-Server-ActiveSync?Cmd=Ping&hold=3s'
  curl -i --cacert $run_dir/ca.pem --resolve mail.example.com:8443:127.0.0.1 \\
       'https://mail.example.com:8443/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe'
  curl -s 'http://127.0.0.1:9100/api/v1/route?user=jdoe'
  curl -s http://127.0.0.1:9100/api/v1/servers
  curl -s -X POST http://127.0.0.1:9100/api/v1/servers/pool2/drain
  curl -s http://127.0.0.1:9100/metrics | grep ^sprayer_

Press Ctrl-C to stop.
TXT

# Stay up while every demo process runs; a crash ends the demo with its log.
while true; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    if [ "$pid" = "$sprayer_pid" ]; then
      echo "sprayer exited; last log lines:" >&2
      tail -20 "$run_dir/sprayer.log" >&2
    else
      echo "a pool server (pid $pid) exited; logs in $run_dir" >&2
    fi
    exit 1
  done
  sleep 1
done
