#!/usr/bin/env bash
# A fuzzing campaign: every libFuzzer target in tests/fuzz for SECONDS each (default 1800),
# with its corpus kept in build-fuzz/ between campaigns. scripts/test.sh runs the same
# targets for 30 s each as a smoke. A crash leaves its input in build-fuzz/ and the log's tail.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-1800}
"$root/scripts/install-deps.sh" test
targets=$(cd "$root/tests/fuzz" && ls *_fuzz.cpp | sed 's/\.cpp$//' | tr '\n' ' ')
CC=clang CXX=clang++ BUILD_DIR="$root/build-fuzz" BUILD_TYPE=RelWithDebInfo BUILD_TARGETS="$targets" \
  "$root/scripts/build.sh" -DSPRAYER_FUZZ=ON -DSPRAYER_UNIT_ONLY=ON
status=0
for name in $targets; do
  corpus="$root/build-fuzz/corpus-$name"
  mkdir -p "$corpus"
  seeds="$root/tests/fuzz/corpus/${name%_fuzz}"
  echo "== $name ($seconds s)"
  if ! (cd "$root/build-fuzz" && "./tests/$name" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 "$corpus" $( [ -d "$seeds" ] && echo "$seeds" ) >"$name.log" 2>&1); then
    tail -60 "$root/build-fuzz/$name.log"
    status=1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$root/build-fuzz/$name.log" || true
done
exit $status
