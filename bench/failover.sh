#!/usr/bin/env bash
# Failover side by side with HAProxy and nginx (kill -9 and SIGSTOP of one pool server under
# load). Installs what it needs, builds, writes bench/results/failover-DATE.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" bench
BUILD_DIR="$root/build" "$root/scripts/build.sh" >/dev/null
mkdir -p "$root/bench/results"
exec python3 "$root/bench/failover.py" --out "$root/bench/results/failover-$(date +%Y-%m-%d).md" "$@"
