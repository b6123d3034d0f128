#!/usr/bin/env bash
# Installs everything podwire's tests, benchmarks and demo need on a fresh Debian
# bookworm machine: the bookworm-backports apt source, DPDK's testpmd with the PMDs the
# tests load (vhost, virtio-user, pcap, af_xdp), QEMU 10, the CNI plugins (host-local
# IPAM), the Kubernetes manifest validator, cargo-fuzz (with g++ for libFuzzer), 2 MiB
# hugepages and the hugetlbfs mount. Idempotent: a second run changes nothing and takes
# about a second. Needs root.
#
# Environment: PODWIRE_HUGEPAGES (default 1024) = how many 2 MiB pages to reserve.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*"; }
die() {
  printf '[install-deps] ERROR: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, hugepages, mounts, namespaces)"

if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" != bookworm ]; then
    log "warning: this script targets Debian bookworm; this is ${PRETTY_NAME:-unknown}"
  fi
fi

# ---------------------------------------------------------------- apt sources
# QEMU 10 and the 6.12 guest kernel come from bookworm-backports. Use the same mirror
# and keyring as the machine's existing Debian source.
bp=/etc/apt/sources.list.d/podwire-backports.sources
if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=""
  keyring=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -qs '^Suites:.*\bbookworm\b' "$f"; then
      uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f")
      keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$f")
      [ -n "$uri" ] && break
    fi
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 ~ / bookworm / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian bookworm apt source found to derive bookworm-backports from"
  [ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  log "adding bookworm-backports apt source ($bp, $uri)"
  cat >"$bp" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SRC
  rm -f /var/lib/podwire-apt-stamp
fi

# ---------------------------------------------------------------- packages
# dpdk-testpmd is in dpdk-dev (not dpdk); the PMDs are separate plugin packages that
# testpmd loads from /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0 (net_vhost = the
# reference switch, net_virtio_user = the pod, net_pcap = payload checks,
# net_af_xdp = the AF_XDP reference; mempool_ring = testpmd's default mempool).
pkgs=(
  dpdk dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-net-pcap23
  librte-net-af-xdp23 librte-mempool-ring23
  containernetworking-plugins busybox-static iproute2 iputils-ping tcpdump ethtool
  xz-utils curl procps psmisc coreutils util-linux ca-certificates python3-venv openssl
  g++
)
apt_opts=(-y -q -o DPkg::Lock::Timeout=600 --no-install-recommends)
export DEBIAN_FRONTEND=noninteractive

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 10 ]
}

missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || ! qemu_ok; then
  log "apt-get update"
  apt-get update -q -o DPkg::Lock::Timeout=600 || {
    sleep 5
    apt-get update -q -o DPkg::Lock::Timeout=600
  }
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get install "${apt_opts[@]}" "${missing[@]}"
  fi
  if ! qemu_ok; then
    log "apt-get install -t bookworm-backports qemu-system-x86"
    apt-get install "${apt_opts[@]}" -t bookworm-backports qemu-system-x86
  fi
fi
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd still missing after installing dpdk-dev"
qemu_ok || die "qemu-system-x86_64 >= 10 missing after installing it from bookworm-backports"
[ -x /usr/lib/cni/host-local ] || die "/usr/lib/cni/host-local missing (containernetworking-plugins)"

# ---------------------------------------------------------------- manifest validator
# cni/tests/deploy_manifests.rs validates deploy/ offline with kubernetes-validate
# (PyPI; it bundles the Kubernetes API schemas, and brings PyYAML and jsonschema) in a
# venv of its own, so the system Python stays untouched.
tools=/opt/podwire-tools
kv_version=1.37.0
if ! "$tools/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$kv_version"; then
  log "installing kubernetes-validate $kv_version into $tools"
  /usr/bin/python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
"$tools/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate missing in $tools"

# ---------------------------------------------------------------- hugepages
want=${PODWIRE_HUGEPAGES:-2048}
hp_dir=/dev/hugepages
mkdir -p "$hp_dir"
if ! mountpoint -q "$hp_dir"; then
  log "mounting hugetlbfs on $hp_dir"
  mount -t hugetlbfs -o pagesize=2M none "$hp_dir"
fi
# Hugepage files left by killed DPDK runs keep their pages reserved. Remove those of
# podwire's own harness and demo (prefixes pwpod*/pwsw*/pwdemo*) that no process here
# uses. Other files are only reported: on a shared kernel their owner may be a
# process this PID namespace cannot see.
shopt -s nullglob
for f in "$hp_dir"/*map_*; do
  case "$(basename "$f")" in
    pwpod*x*map_* | pwsw*x*map_* | pwdemo*map_*)
      if ! fuser -s "$f" 2>/dev/null; then
        log "removing stale hugepage file $f"
        rm -f "$f"
      fi
      ;;
    *) log "note: hugepage file $f belongs to another DPDK app (delete it if that app is gone)" ;;
  esac
done
shopt -u nullglob

have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  log "reserving $want 2 MiB hugepages (had $have)"
  echo "$want" >/proc/sys/vm/nr_hugepages
  if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt "$want" ]; then
    log "memory fragmented: dropping caches, compacting and retrying"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    echo 1 >/proc/sys/vm/compact_memory 2>/dev/null || true
    echo "$want" >/proc/sys/vm/nr_hugepages
  fi
fi
got=$(cat /proc/sys/vm/nr_hugepages)
[ "$got" -ge "$want" ] || die "only $got of $want hugepages could be reserved (free memory? set PODWIRE_HUGEPAGES lower)"
# Keep the reservation across reboots.
sysctl_conf=/etc/sysctl.d/80-podwire-hugepages.conf
if [ ! -f "$sysctl_conf" ] || ! grep -qs "^vm.nr_hugepages *= *$got$" "$sysctl_conf"; then
  echo "vm.nr_hugepages = $got" >"$sysctl_conf"
fi
# A testpmd switch and pod take 256 pages; podwire a few dozen more. If other apps
# hold pages, grow the pool so that PODWIRE_HUGEPAGES_FREE (default 512) are free.
want_free=${PODWIRE_HUGEPAGES_FREE:-512}
free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
if [ "$free" -lt "$want_free" ]; then
  log "only $free hugepages free: growing the pool by $((want_free - free))"
  echo $((got + want_free - free)) >/proc/sys/vm/nr_hugepages || true
  got=$(cat /proc/sys/vm/nr_hugepages)
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
  [ "$free" -ge 256 ] || die "only $free hugepages free; the peer tests need at least 256"
fi

# ---------------------------------------------------------------- runtime dirs
mkdir -p /run/podwire /var/run/dpdk

# ---------------------------------------------------------------- Rust
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "warning: cargo not found. Install a Rust toolchain >= 1.80 with rustup"
  log "  (the Rust project's installer; Debian bookworm's cargo package is too old),"
  log "  then make sure ~/.cargo/bin is on PATH."
else
  # The fuzz targets (fuzz/, scripts/fuzz.sh) are built with cargo fuzz, from
  # crates.io; it runs on the stable toolchain with --sanitizer none.
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install --locked cargo-fuzz (a few minutes)"
    cargo install --locked cargo-fuzz --version 0.13.2
  fi
  cargo fuzz --version >/dev/null 2>&1 || die "cargo fuzz still missing after cargo install"
fi

log "ok: dpdk-testpmd $(dpkg-query -W -f='${Version}' dpdk-dev)," \
  "$(qemu-system-x86_64 --version | head -1), hugepages $got (free $free)"
