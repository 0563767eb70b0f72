#!/usr/bin/env bash
# Everything side by side: installs haproxy, nginx and wrk from Debian, builds sprayer and
# poolsim (Release), then runs bench/run.py with the arguments given (see its --help).
# Results: bench/results/run-DATE.md. Run it on an otherwise idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" bench
BUILD_DIR="$root/build" BUILD_TYPE=Release BUILD_TARGETS="sprayer poolsim" "$root/scripts/build.sh" >/dev/null
ulimit -n "$(ulimit -Hn)"
exec python3 "$root/bench/run.py" "$@"
