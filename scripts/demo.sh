#!/usr/bin/env bash
# The README's first command: podwire switching real traffic on this machine.
# Installs the prerequisites (scripts/install-deps.sh: iproute2, ethtool, ping,
# dpdk-testpmd for the DPDK pod, hugepages; a fast no-op when present), builds podwire
# in release and runs `podwire demo` (see `podwire demo --help`): two network
# namespaces on AF_XDP ports and a DPDK pod on a vhost-user port, all on one podwire
# bridge; ping, a checked TCP transfer, live counters, a summary, and everything
# removed at the end (also on Ctrl-C). Exits with the demo's status. Needs root.
#
# Arguments go to `podwire demo` (e.g. --duration 30, --keep, --no-pod).
# Environment: PODWIRE_SKIP_DEPS=1 skips install-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || {
  echo "demo.sh: must run as root (namespaces, XDP programs, hugepages)" >&2
  exit 1
}
if [ "${PODWIRE_SKIP_DEPS:-0}" != 1 ]; then
  ./scripts/install-deps.sh
fi
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
  echo "demo.sh: cargo not found. Install a Rust toolchain >= 1.87 with rustup and put ~/.cargo/bin on PATH." >&2
  exit 1
}
echo "demo.sh: building podwire (release)"
cargo build --release --bin podwire
exec target/release/podwire demo "$@"
