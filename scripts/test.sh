#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test through ctest
# (units, integration with real processes), the unit tests again under ASan/UBSan, and a
# short libFuzzer run of the request extractor when clang is available.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)
failed=()

"$root/scripts/install-deps.sh" test || { echo "test.sh: dependency install failed" >&2; exit 1; }

echo "== build (RelWithDebInfo)"
BUILD_DIR="$root/build" "$root/scripts/build.sh" || { echo "test.sh: build failed" >&2; exit 1; }

echo "== build (AddressSanitizer + UBSan, unit tests)"
BUILD_DIR="$root/build-asan" BUILD_TYPE=Debug "$root/scripts/build.sh" -DSPRAYER_SANITIZE=ON -DSPRAYER_UNIT_ONLY=ON \
  || failed+=("asan build")

fuzz_ok=0
if command -v clang++ >/dev/null 2>&1 && [ -n "$(ls "$root"/tests/fuzz/*_fuzz.cpp 2>/dev/null)" ]; then
  echo "== build (libFuzzer targets)"
  fuzz_targets=$(cd "$root/tests/fuzz" && ls *_fuzz.cpp | sed 's/\.cpp$//' | tr '\n' ' ')
  if CC=clang CXX=clang++ BUILD_DIR="$root/build-fuzz" BUILD_TYPE=RelWithDebInfo BUILD_TARGETS="$fuzz_targets" \
       "$root/scripts/build.sh" \
       -DSPRAYER_FUZZ=ON -DSPRAYER_UNIT_ONLY=ON; then
    fuzz_ok=1
  else
    failed+=("fuzz build")
  fi
fi

if [ $fuzz_ok -eq 1 ]; then
  for target in "$root"/build-fuzz/tests/*_fuzz; do
    [ -x "$target" ] || continue
    name=$(basename "$target")
    corpus="$root/build-fuzz/corpus-$name"
    mkdir -p "$corpus"
    seeds="$root/tests/fuzz/corpus/${name%_fuzz}"
    echo "== fuzz $name (${FUZZ_SECONDS:-30} s)"
    if ! "$target" -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 -print_final_stats=0 "$corpus" \
         $( [ -d "$seeds" ] && echo "$seeds" ) >"$root/build-fuzz/$name.log" 2>&1; then
      tail -60 "$root/build-fuzz/$name.log"
      failed+=("fuzz $name")
    fi
  done
fi

echo "== unit tests under ASan/UBSan"
if [ -d "$root/build-asan" ]; then
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest -j"$jobs" --output-on-failure) || failed+=("asan unit tests")
fi

echo "== all tests"
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 900) || failed+=("ctest")

if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all passed"
