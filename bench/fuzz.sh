#!/usr/bin/env bash
# A fuzzing campaign: every libFuzzer target in tests/fuzz for SECONDS each (default 1800),
# one at a time under nice -n 19 (the machine may be shared), and tls_records once more in
# its differential mode (SPRAYER_FUZZ_DIFFERENTIAL=1: against OpenSSL's record layer). The
# corpus of each is kept in build-fuzz/corpus-NAME between campaigns, seeded from
# tests/fuzz/corpus/NAME; at the end of each run it is minimised (-merge=1 into a fresh
# folder). Each run's log is build-fuzz/NAME.log; its last line of stats (executions, cov,
# ft, corpus) and the final stats are printed. A crash leaves its input in build-fuzz/ and
# the log's tail on the terminal. scripts/test.sh runs the same targets for 30 s as a smoke.
#   FUZZ_TARGETS="request_parser_fuzz ..."  only these
#   FUZZ_RUNS="tls_records_fuzz:differential extract_fuzz"  exactly these runs
#   FUZZ_SKIP_BUILD=1                       use build-fuzz/ as it is
#   FUZZ_UPDATE_SEEDS=1                     add the minimised corpora to tests/fuzz/corpus/
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-1800}
build="$root/build-fuzz"
targets=${FUZZ_TARGETS:-$(cd "$root/tests/fuzz" && ls *_fuzz.cpp | sed 's/\.cpp$//' | tr '\n' ' ')}
if [ -z "${FUZZ_SKIP_BUILD:-}" ]; then
  "$root/scripts/install-deps.sh" test
  CC=clang CXX=clang++ BUILD_DIR="$build" BUILD_TYPE=RelWithDebInfo BUILD_TARGETS="$targets" \
    nice -n 10 "$root/scripts/build.sh" -DSPRAYER_FUZZ=ON -DSPRAYER_UNIT_ONLY=ON
fi
runs=${FUZZ_RUNS:-}
if [ -z "$runs" ]; then
  for name in $targets; do
    runs="$runs $name"
    [ "$name" = tls_records_fuzz ] && runs="$runs tls_records_fuzz:differential"
  done
fi
status=0
for run in $runs; do
  name=${run%%:*}
  mode=${run#"$name"}
  log="$build/${name}${mode:+-differential}.log"
  corpus="$build/corpus-$name"
  seeds="$root/tests/fuzz/corpus/${name%_fuzz}"
  mkdir -p "$corpus"
  # The parser targets feed every input many times over (every split): short inputs.
  limits=()
  case $name in request_parser_fuzz|response_parser_fuzz) limits=(-max_len=1024) ;; esac
  echo "== $run ($seconds s)"
  env ${mode:+SPRAYER_FUZZ_DIFFERENTIAL=1} nice -n 19 "$build/tests/$name" -max_total_time="$seconds" \
    -rss_limit_mb=2048 "${limits[@]}" -print_final_stats=1 -artifact_prefix="$build/$name-" "$corpus" \
    $( [ -d "$seeds" ] && echo "$seeds" ) >"$log" 2>&1 || { tail -60 "$log"; status=1; }
  grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1 || grep -E "^#[0-9]+[[:space:]]" "$log" | tail -1 || true
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" || true
  # Minimised: only the inputs that add coverage, in a fresh folder that replaces the old one.
  rm -rf "$corpus.min"
  mkdir -p "$corpus.min"
  nice -n 19 "$build/tests/$name" -merge=1 -rss_limit_mb=2048 "${limits[@]}" "$corpus.min" "$corpus" \
    $( [ -d "$seeds" ] && echo "$seeds" ) >"$log.merge" 2>&1 && { rm -rf "$corpus"; mv "$corpus.min" "$corpus"; }
  echo "corpus: $(ls "$corpus" | wc -l) files, $(du -sk "$corpus" | cut -f1) KiB"
  if [ -n "${FUZZ_UPDATE_SEEDS:-}" ]; then
    # The named seeds stay; inputs the merge kept are added under their content's SHA-1.
    mkdir -p "$seeds"
    known=$(sha1sum "$seeds"/* 2>/dev/null | cut -c1-40 || true)
    for f in "$corpus"/*; do
      sum=$(sha1sum "$f" | cut -c1-40)
      grep -q "$sum" <<<"$known" || cp "$f" "$seeds/$sum"
    done
  fi
done
exit $status
