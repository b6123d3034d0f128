#!/usr/bin/env bash
# Installs everything podwire's tests and demo need on a fresh Debian bookworm machine.
# Idempotent: safe to run again. Needs root.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: must run as root (apt-get, hugepages, namespaces)" >&2
  exit 1
fi

# bookworm-backports: QEMU 10 and kernel 6.12 (the VFIO guest) come from there.
bp=/etc/apt/sources.list.d/podwire-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list.d/ /etc/apt/sources.list; then
  log "adding bookworm-backports apt source ($bp)"
  cat >"$bp" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

pkgs=(dpdk containernetworking-plugins busybox-static iproute2 iputils-ping tcpdump ethtool xz-utils curl procps psmisc)
need_update=1
stamp=/var/lib/podwire-apt-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pkgs[*]} qemu" ]; then
  missing=0
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing=1; done
  command -v qemu-system-x86_64 >/dev/null || missing=1
  [ $missing = 0 ] && need_update=0
fi
if [ $need_update = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  apt-get update -q
  log "apt-get install ${pkgs[*]}"
  apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  log "apt-get install -t bookworm-backports qemu-system-x86"
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
  echo "${pkgs[*]} qemu" >"$stamp"
fi

# Hugepages: 2 MiB pages for podwire's DMA memory and for the DPDK pods.
want=${PODWIRE_HUGEPAGES:-1024}
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  log "reserving $want 2 MiB hugepages (had $have)"
  echo "$want" >/proc/sys/vm/nr_hugepages
fi
got=$(cat /proc/sys/vm/nr_hugepages)
if [ "$got" -lt "$want" ]; then
  echo "install-deps: only $got of $want hugepages could be reserved (memory fragmented?)" >&2
  exit 1
fi
mkdir -p /dev/hugepages
if ! mountpoint -q /dev/hugepages; then
  log "mounting hugetlbfs on /dev/hugepages"
  mount -t hugetlbfs none /dev/hugepages
fi
# Stale DPDK files from killed runs keep pages reserved.
rm -f /dev/hugepages/*map_* /dev/hugepages/rtemap_* 2>/dev/null || true
log "ok: $(dpdk-testpmd --version 2>/dev/null | head -1 || true) qemu=$(qemu-system-x86_64 --version | head -1)"
