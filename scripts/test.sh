#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine: installs the
# prerequisites (scripts/install-deps.sh), then fmt, clippy, a release build (tests
# that start the daemon use target/release/podwire), unit tests, integration tests
# (one at a time: they start testpmd/QEMU peers that busy-poll the two cores and hold
# hugepages), doc tests, and the fuzz targets for a bounded time each
# (scripts/fuzz.sh, fuzz/README.md). Runs every step even after a failure and prints a summary;
# exits non-zero if any step failed. Needs root.
#
# Environment: PODWIRE_SKIP_DEPS=1 skips install-deps (for a quick re-run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

logdir=target/test-logs
start_all=$(date +%s)
names=()
results=()
times=()
failed=0

step() {
  local name=$1
  shift
  local t0 rc
  t0=$(date +%s)
  printf '\n==== %s: %s\n' "$name" "$*"
  set +e
  "$@" 2>&1 | tee "$logdir/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  names+=("$name")
  times+=("$(($(date +%s) - t0))")
  if [ "$rc" = 0 ]; then
    results+=(ok)
  else
    results+=("FAILED (exit $rc)")
    failed=1
  fi
  return 0
}

if [ "${PODWIRE_SKIP_DEPS:-0}" != 1 ]; then
  # Without the peers nothing else means anything: stop here if this fails.
  ./scripts/install-deps.sh
fi
if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found. Install a Rust toolchain >= 1.80 with rustup and put ~/.cargo/bin on PATH." >&2
  exit 1
fi
mkdir -p "$logdir"

step fmt sh -c 'cargo fmt --all -- --check && cd fuzz && cargo fmt -- --check'
step clippy sh -c 'cargo clippy --workspace --all-targets -- -D warnings &&
  cd fuzz && cargo clippy --all-targets -- -D warnings'
step build-release cargo build --release --workspace
step unit-tests cargo test --workspace --lib --bins
step integration-tests cargo test --workspace --no-fail-fast --test '*' -- --test-threads=1
step doc-tests cargo test --workspace --doc
# Two minutes of mixed traffic and port churn; fails if RSS, fds, hugepage memory or
# buffers held grow after the warm-up (benches/soak.rs).
step soak cargo bench --bench soak -- --duration 120
# Each fuzz target for PODWIRE_FUZZ_SECONDS (default 25), two at a time, from its
# checked-in corpus: about 2 minutes after the build.
step fuzz ./scripts/fuzz.sh

# Count test results over the test steps.
passed=0
tfailed=0
ignored=0
for f in "$logdir"/unit-tests.log "$logdir"/integration-tests.log "$logdir"/doc-tests.log; do
  [ -f "$f" ] || continue
  while read -r p fl ig; do
    passed=$((passed + p))
    tfailed=$((tfailed + fl))
    ignored=$((ignored + ig))
  done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$f")
done

# testpmd instances started by the harness use prefixes pwpod<pid>x<n>/pwsw<pid>x<n>
# (<pid>: the test process): none of their hugepage files may survive the suite. Files
# whose test process still runs belong to a suite running in another worktree.
leftovers=0
for f in /dev/hugepages/pw*x*map_*; do
  [ -e "$f" ] || continue
  pid=$(basename "$f" | sed -n 's/^pw[a-z]*\([0-9][0-9]*\)x.*/\1/p')
  if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
    continue
  fi
  echo "leftover DPDK hugepage file: $f"
  leftovers=$((leftovers + 1))
done

printf '\n==== summary (logs in %s)\n' "$logdir"
for i in "${!names[@]}"; do
  printf '  %-18s %-16s %4ss\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
printf '  tests: %d passed, %d failed, %d ignored\n' "$passed" "$tfailed" "$ignored"
printf '  leftover DPDK hugepage files from the harness: %d\n' "$leftovers"
printf '  wall time: %ss\n' "$(($(date +%s) - start_all))"
if [ "$leftovers" != 0 ]; then
  failed=1
fi
if [ "$failed" != 0 ]; then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: OK"
