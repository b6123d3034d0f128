#!/usr/bin/env bash
# Builds podwire's fuzz targets (fuzz/, cargo fuzz + libFuzzer, stable toolchain) and
# runs each for a bounded time from its checked-in corpus; exits non-zero on the first
# target that crashes, fails an assertion, leaks, times out or cannot be built. See
# fuzz/README.md. scripts/test.sh runs this as its `fuzz` step.
#
# Usage: scripts/fuzz.sh [TARGET...]        (default: every target in fuzz/Cargo.toml)
# Environment:
#   PODWIRE_FUZZ_SECONDS  seconds per target (default 25)
#   PODWIRE_FUZZ_JOBS     targets run at once (default 2: one per core here)
# New inputs the runs find go to a scratch directory, not to fuzz/corpus/; crashing
# inputs are kept in target/fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing; scripts/install-deps.sh installs it" \
    "(cargo install --locked cargo-fuzz)" >&2
  exit 1
fi

seconds=${PODWIRE_FUZZ_SECONDS:-25}
jobs=${PODWIRE_FUZZ_JOBS:-2}
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^podwire-fuzz$')
fi

# --sanitizer none: the stable toolchain has no sanitizers without -Z flags. The build
# is cargo fuzz's default otherwise: optimized, with debug assertions and overflow
# checks (which catch misaligned pointers and arithmetic overflow).
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do (cd fuzz && cargo fuzz build --sanitizer none "$t"); done
else
  (cd fuzz && cargo fuzz build --sanitizer none)
fi

bin=fuzz/target/x86_64-unknown-linux-gnu/release
artifacts=target/fuzz-artifacts
scratch=$(mktemp -d /tmp/podwire-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"

run() {
  local t=$1
  mkdir -p "$scratch/$t"
  # The first directory receives new inputs; the checked-in corpus is only read.
  # -timeout: an input running for 10 s is a hang, and fails like a crash.
  "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
    "$scratch/$t" "fuzz/corpus/$t" >"$scratch/$t.log" 2>&1
}

failed=()
pids=()
names=()
wait_one() {
  local pid=${pids[0]} t=${names[0]}
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
  if wait "$pid"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
    printf 'fuzz %-14s ok   %s executions in %ss\n' "$t" "${runs:-?}" "$seconds"
  else
    printf 'fuzz %-14s FAILED\n' "$t"
    grep -E -A12 "panicked|ERROR: libFuzzer|SUMMARY" "$scratch/$t.log" | head -40 || tail -40 "$scratch/$t.log"
    ls -1 "$artifacts/$t-"* 2>/dev/null | sed 's/^/  input: /'
    failed+=("$t")
  fi
}

for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || {
    echo "fuzz.sh: no corpus fuzz/corpus/$t" >&2
    exit 1
  }
  run "$t" &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$jobs" ]; then wait_one; fi
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failing targets: ${failed[*]}"
  echo "  reproduce: cd fuzz && cargo fuzz run --sanitizer none TARGET INPUT"
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds}s each without a failure"
