#!/usr/bin/env bash
# Builds the tiny Linux guest that tests/vhost_qemu.rs boots in QEMU: Debian's
# bookworm-backports kernel (6.12) and a busybox initramfs whose /init loads the
# stock virtio_net driver, configures eth0 from the kernel command line, runs one
# role (ping client / TCP server), prints a verdict line on the serial console and
# powers off.
#
#   scripts/build-guest.sh OUTDIR      -> OUTDIR/vmlinuz, OUTDIR/initrd.img
#   scripts/build-guest.sh OUTDIR vfio -> OUTDIR/vmlinuz, OUTDIR/initrd-vfio.img
#
# The vfio flavour (tests/vfio_qemu.rs) loads vfio-pci, igb/igbvf, virtio_net,
# e1000e and 9p, mounts the host's root read-only over 9p (mount tag host0),
# chroots into it with fresh /proc, /sys, /dev, /tmp and /run, runs the script named
# by podwire.script=PATH (a host path) with the host's binaries, and ends QEMU
# through isa-debug-exit (iobase 0xf4): exit status 33 when the script succeeded,
# 3 when it failed. It prints "PODWIRE-RESULT: ok" or "PODWIRE-RESULT: FAIL ..."
# too. Both flavours share the kernel download.
#
# Cached: the kernel package is downloaded (`apt-get download`, nothing is installed
# on the host) and unpacked once; the initramfs is rebuilt only when this script
# changes. Needs: apt-get, dpkg-deb, xz, busybox (static, from busybox-static).
#
# Guest kernel command line (read by /init):
#   podwire.ip=10.99.0.1/24   address of eth0
#   podwire.peer=10.99.0.2    the other guest
#   podwire.role=client|server
#     client: waits for the peer to answer (ARP + first ping), then counts
#             podwire.pings (default 20) pings, then sends podwire.kib KiB (default
#             1024, 0 = no transfer) of random data over TCP to the peer's port 5000.
#             With podwire.reload=1 the client first unloads and reloads virtio_net
#             (a device reset and restart through the backend) and pings again.
#     server: receives one TCP stream on port 5000 (if podwire.kib != 0).
#   podwire.stay=1: after an ok verdict, do not power off; a client keeps pinging
#   (5/s) until its QEMU is killed.
#   Verdict lines: "PODWIRE-RESULT: ok ..." or "PODWIRE-RESULT: FAIL <why>";
#   progress lines start with "PODWIRE: ".
set -euo pipefail

out=${1:?usage: build-guest.sh OUTDIR [vfio]}
flavor=${2:-vhost}
kpkg_wanted=${PODWIRE_GUEST_KERNEL_PKG:-}
case $flavor in
vhost) modules=(virtio_net); initrd=initrd.img; stamp=stamp ;;
vfio)
  modules=(vfio vfio_iommu_type1 vfio_pci igb igbvf virtio_net e1000e 9p 9pnet_virtio)
  initrd=initrd-vfio.img; stamp=stamp-vfio ;;
*) printf 'build-guest: unknown flavour %s (vhost or vfio)\n' "$flavor" >&2; exit 1 ;;
esac

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf 'build-guest: %s\n' "$*" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
# One builder at a time (two test processes may start together).
exec 9>"$out/.lock"
flock 9

script_sum=$(sha256sum "$0" | cut -d' ' -f1)
if [ -s "$out/vmlinuz" ] && [ -s "$out/$initrd" ] && [ "$(cat "$out/$stamp" 2>/dev/null)" = "$script_sum" ]; then
  exit 0
fi

busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: install busybox-static (scripts/install-deps.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static (scripts/install-deps.sh)"
fi
for t in apt-get apt-cache dpkg-deb xz; do
  command -v "$t" >/dev/null || die "$t not found (Debian host expected)"
done

# --- the kernel package -----------------------------------------------------------
kdir="$out/kernel"
if [ ! -d "$kdir/lib/modules" ] || [ ! -s "$out/vmlinuz" ]; then
  pkg=$kpkg_wanted
  if [ -z "$pkg" ]; then
    # linux-image-amd64 from bookworm-backports depends on the exact 6.12 package.
    pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-6\.12[^ ]*-amd64\)$/\1/p' | head -1)
    if [ -z "$pkg" ]; then
      log "no 6.12 kernel known to apt yet: apt-get update"
      apt-get update -q >&2 || true
      pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.12[^ ]*-amd64\)$/\1/p' | head -1)
    fi
    [ -n "$pkg" ] || die "cannot find linux-image-6.12.*-amd64 in bookworm-backports: run scripts/install-deps.sh (adds the backports source)"
  fi
  dl="$out/download"
  rm -rf "$dl" "$kdir"
  mkdir -p "$dl"
  log "apt-get download $pkg"
  # apt drops privileges to _apt for downloads; let it write here.
  chmod 0777 "$dl"
  if ! (cd "$dl" && apt-get download -q "$pkg" >&2); then
    # Stale package lists name a version the mirror no longer has: refresh once.
    log "apt-get download failed: apt-get update and retry"
    apt-get update -q >&2 || true
    if [ -z "$kpkg_wanted" ]; then
      pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.12[^ ]*-amd64\)$/\1/p' | head -1)
    fi
    (cd "$dl" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
  fi
  deb=$(ls "$dl"/*.deb | head -1)
  log "unpacking $(basename "$deb")"
  mkdir -p "$kdir.tmp"
  dpkg-deb -x "$deb" "$kdir.tmp"
  vmlinuz=$(ls "$kdir.tmp"/boot/vmlinuz-* | head -1)
  [ -s "$vmlinuz" ] || die "no vmlinuz in $deb"
  # Keep only what the guest needs (the modules tree is ~400 MB unpacked).
  kver=$(basename "$(ls -d "$kdir.tmp"/lib/modules/*/ | head -1)")
  mkdir -p "$kdir/lib/modules"
  mv "$kdir.tmp/lib/modules/$kver" "$kdir/lib/modules/"
  cp "$vmlinuz" "$out/vmlinuz.tmp"
  rm -rf "$kdir.tmp" "$dl"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi
kver=$(basename "$(ls -d "$kdir"/lib/modules/*/ | head -1)")
mdir="$kdir/lib/modules/$kver"

# --- modules and their dependencies, in load order ------------------------------
declare -A seen=()
order=()
modpath() {
  # Module names use _ but files may use - (and vice versa).
  local alt=${1//_/-}
  find "$mdir/kernel" \( -name "$1.ko.xz" -o -name "$alt.ko.xz" -o -name "$1.ko" \) | head -1
}
add_module() {
  local name=$1 f deps d
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  f=$(modpath "$name")
  [ -n "$f" ] || die "module $name not found under $mdir"
  # The .modinfo section holds "depends=a,b" (no depmod/modinfo needed).
  if [[ $f == *.xz ]]; then
    deps=$(xz -dc "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1)
  else
    deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -1)
  fi
  for d in ${deps//,/ }; do add_module "$d"; done
  order+=("$name")
}
for m in "${modules[@]}"; do add_module "$m"; done
log "modules (load order): ${order[*]}"

# --- the initramfs ----------------------------------------------------------------
root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,lib/modules,usr/bin,usr/sbin}
cp "$busybox" "$root/bin/busybox"
for name in "${order[@]}"; do
  f=$(modpath "$name")
  if [[ $f == *.xz ]]; then xz -dc "$f" >"$root/lib/modules/$name.ko"; else cp "$f" "$root/lib/modules/$name.ko"; fi
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/order"

if [ "$flavor" = vfio ]; then
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "PODWIRE: $*" >/dev/console; }
# $1: 0 = pass; $2: the verdict line. isa-debug-exit: 0x10 -> QEMU exits 33, 0x01 -> 3.
verdict() {
  echo "PODWIRE-RESULT: $2" >/dev/console
  sync
  if [ "$1" = 0 ]; then printf '\020'; else printf '\001'; fi |
    dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  poweroff -f
  sleep 10
}
script=
for kv in $(cat /proc/cmdline); do
  case $kv in podwire.script=*) script=${kv#*=} ;; esac
done
[ -n "$script" ] || verdict 1 "FAIL no podwire.script= on the kernel command line"
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko || verdict 1 "FAIL insmod $m"
done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host0 /host ||
  verdict 1 "FAIL cannot mount the host root (9p tag host0)"
mount -t proc proc /host/proc && mount -t sysfs sys /host/sys &&
  mount -t devtmpfs dev /host/dev && mount -t tmpfs tmp /host/tmp &&
  mount -t tmpfs run /host/run || verdict 1 "FAIL mounts inside the host root"
mkdir -p /host/dev/hugepages 2>/dev/null
say "running $script"
chroot /host /bin/sh "$script" </dev/null >/dev/console 2>&1
rc=$?
if [ $rc = 0 ]; then verdict 0 "ok"; else verdict 1 "FAIL $script exited with $rc"; fi
INIT
else
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null

say() { echo "PODWIRE: $*" >/dev/console; }
irqs() {
  # Interrupts the driver took: proof that the backend's call eventfd path works.
  awk '/virtio0-input/ {i += $2} /virtio0-output/ {o += $2}
       END {printf "PODWIRE: interrupts input %d output %d\n", i, o}' /proc/interrupts >/dev/console
}
verdict() {
  irqs
  echo "PODWIRE-RESULT: $*" >/dev/console
  sync
  if [ "$stay" = 1 ] && [ "${1%% *}" = ok ]; then
    # Keep the link busy until the test kills this guest's QEMU: the backend then
    # loses a frontend whose rings are running and whose memory it has mapped.
    [ "$role" = client ] && ping -q -i 0.2 "$peer" >/dev/null 2>&1 &
    say "staying up"
    sleep 600
  fi
  poweroff -f
  sleep 10
}
fail() { verdict "FAIL $*"; }

ip= peer= role= pings=20 kib=1024 reload=0 stay=0
for kv in $(cat /proc/cmdline); do
  case $kv in
    podwire.ip=*) ip=${kv#*=} ;;
    podwire.peer=*) peer=${kv#*=} ;;
    podwire.role=*) role=${kv#*=} ;;
    podwire.pings=*) pings=${kv#*=} ;;
    podwire.kib=*) kib=${kv#*=} ;;
    podwire.reload=*) reload=${kv#*=} ;;
    podwire.stay=*) stay=${kv#*=} ;;
  esac
done
[ -n "$ip" ] && [ -n "$peer" ] && [ -n "$role" ] || fail "missing podwire.ip/peer/role on the command line"

for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko || fail "insmod $m"
done
n=0
while [ ! -e /sys/class/net/eth0 ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fail "no eth0 after loading virtio_net"
  sleep 0.1
done
ip link set lo up
ip addr add "$ip" dev eth0 || fail "ip addr add $ip"
ip link set eth0 up || fail "ip link set eth0 up"
feat=$(cat /sys/class/net/eth0/device/features 2>/dev/null)
say "eth0 up $ip mac $(cat /sys/class/net/eth0/address) features $feat role $role"

case $role in
server)
  if [ "$kib" = 0 ]; then
    # Nothing to receive: just answer pings until the test powers us off.
    say "server ready (no transfer)"
    sleep 600
    fail "server timed out"
  fi
  # nc exits as soon as its stdin ends: give it a fifo that never does.
  mkfifo /tmp/hold
  exec 3<>/tmp/hold
  say "server listening on 5000"
  nc -l -p 5000 <&3 >/tmp/recv || fail "nc -l exited with $?"
  got=$(wc -c </tmp/recv)
  sum=$(md5sum </tmp/recv | cut -d' ' -f1)
  verdict "ok server received $got bytes md5 $sum"
  ;;
client)
  n=0
  until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -ge 60 ] && fail "peer $peer never answered a ping (60 tries)"
  done
  say "peer answers after $n failed warm-up pings"
  out=$(ping -c "$pings" -i 0.2 -W 5 "$peer" 2>&1)
  summary=$(echo "$out" | grep 'packets transmitted')
  say "ping: $summary"
  loss=$(echo "$summary" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
  [ "$loss" = 0 ] || fail "ping loss ${loss:-?}%: $summary"
  if [ "$reload" = 1 ]; then
    # Unbind and rebind the driver: the device is reset (the backend sees its rings
    # stopped with GET_VRING_BASE and the status cleared) and started again.
    rmmod virtio_net || fail "rmmod virtio_net"
    insmod /lib/modules/virtio_net.ko || fail "insmod virtio_net again"
    n=0
    while [ ! -e /sys/class/net/eth0 ]; do
      n=$((n + 1)); [ $n -gt 100 ] && fail "no eth0 after reloading virtio_net"
      sleep 0.1
    done
    ip addr add "$ip" dev eth0 && ip link set eth0 up || fail "eth0 after reload"
    n=0
    until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
      n=$((n + 1)); [ $n -ge 20 ] && fail "peer silent after the driver reload (20 tries)"
    done
    out=$(ping -c "$pings" -i 0.2 -W 5 "$peer" 2>&1)
    summary=$(echo "$out" | grep 'packets transmitted')
    say "ping after driver reload: $summary"
    loss=$(echo "$summary" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
    [ "$loss" = 0 ] || fail "ping loss ${loss:-?}% after the driver reload: $summary"
  fi
  if [ "$kib" = 0 ]; then
    verdict "ok client ping $pings sent 0% loss"
  fi
  dd if=/dev/urandom of=/tmp/data bs=1024 count="$kib" 2>/dev/null
  sum=$(md5sum </tmp/data | cut -d' ' -f1)
  n=0
  until nc "$peer" 5000 </tmp/data; do
    n=$((n + 1)); [ $n -ge 30 ] && fail "cannot connect to $peer:5000 (30 tries)"
    sleep 1
  done
  verdict "ok client ping $pings sent 0% loss sent $((kib * 1024)) bytes md5 $sum"
  ;;
*)
  fail "unknown role $role"
  ;;
esac
INIT
fi
chmod 0755 "$root/init"

log "packing initramfs"
(cd "$root" && find . | sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out/$initrd.tmp"
mv "$out/$initrd.tmp" "$out/$initrd"
echo "$script_sum" >"$out/$stamp"
log "ok: $out/vmlinuz ($kver), $out/$initrd ($(du -k "$out/$initrd" | cut -f1) KiB)"
