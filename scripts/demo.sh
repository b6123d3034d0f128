#!/usr/bin/env bash
# podwire's main job on its built-in example: `podwire run` cross-connects two
# vhost-user ports (examples/xconnect.toml), a DPDK pod (testpmd, two virtio-user
# ports, io forwarding, on core 1) attaches to both sockets and injects traffic with
# `start tx_first 32`; the packets circulate pod -> podwire -> pod for a few seconds.
# Prints the pod's and podwire's counters, tears everything down by PID, and exits
# non-zero if nothing was forwarded. Needs root, hugepages and dpdk-testpmd
# (scripts/install-deps.sh).
#
# Environment: DEMO_SECONDS (default 3) = how long traffic runs;
#   PODWIRE_DEMO_SWITCH=dpdk runs DPDK's testpmd net_vhost as the switch instead of
#   podwire (to check the pod side of this script against the reference).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "demo: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root (hugepages)"
# A fresh machine needs the peers and hugepages first (fast no-op when present).
if [ "${PODWIRE_SKIP_DEPS:-0}" != 1 ]; then
  ./scripts/install-deps.sh
fi
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found: run scripts/install-deps.sh (apt-get install dpdk)"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

config=examples/xconnect.toml
dir=/tmp/podwire-demo
sock_a=$dir/a.sock
sock_b=$dir/b.sock
control=$dir/podwire.sock
seconds=${DEMO_SECONDS:-3}
switch=${PODWIRE_DEMO_SWITCH:-podwire}
pod_prefix=pwdemopod$$
sw_prefix=pwdemosw$$
podwire=target/release/podwire

mkdir -p "$dir"
rm -f "$sock_a" "$sock_b" "$control" "$dir"/pod.in "$dir"/switch.in

switch_pid=""
pod_pid=""
stop_pid() { # pid: SIGTERM, then SIGKILL after 5 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  exec 3>&- 4>&- 2>/dev/null || true
  stop_pid "$pod_pid"
  stop_pid "$switch_pid"
  rm -f /dev/hugepages/"$pod_prefix"map_* /dev/hugepages/"$sw_prefix"map_*
  rm -rf /var/run/dpdk/"$pod_prefix" /var/run/dpdk/"$sw_prefix" "$dir"/pod.in "$dir"/switch.in
  rm -f "$sock_a" "$sock_b"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # seconds, description, test command...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the switch
if [ "$switch" = podwire ]; then
  echo "demo: building podwire (release)"
  cargo build --release --bin podwire
  echo "demo: starting $podwire run --config $config"
  "$podwire" run --config "$config" >"$dir/podwire.log" 2>&1 &
  switch_pid=$!
else
  echo "demo: PODWIRE_DEMO_SWITCH=$switch: DPDK testpmd net_vhost is the switch"
  # Interactive, with stdin on a fifo this script holds open (fd 4): on EOF it quits.
  mkfifo "$dir/switch.in"
  stdbuf -o0 dpdk-testpmd --lcores 0@0,1@0 --main-lcore 0 --no-pci --file-prefix="$sw_prefix" \
    --huge-dir /dev/hugepages -m 256 --single-file-segments \
    --vdev "net_vhost0,iface=$sock_a,queues=1" --vdev "net_vhost1,iface=$sock_b,queues=1" \
    -- -i --nb-cores=1 --forward-mode=io --no-flush-rx --auto-start --total-num-mbufs=32768 \
    <"$dir/switch.in" >"$dir/switch.log" 2>&1 &
  switch_pid=$!
  exec 4>"$dir/switch.in"
fi
sockets_up() { [ -S "$sock_a" ] && [ -S "$sock_b" ]; }
switch_alive() { kill -0 "$switch_pid" 2>/dev/null; }
sockets_up_or_switch_gone() { sockets_up || ! switch_alive; }
wait_for 30 "switch sockets" sockets_up_or_switch_gone || true
if ! sockets_up; then
  if ! switch_alive; then
    echo "demo: the switch exited before creating its sockets; its log:" >&2
  else
    echo "demo: the switch's sockets did not appear within 30 s; its log:" >&2
  fi
  tail -n 20 "$dir"/podwire.log "$dir"/switch.log 2>/dev/null >&2 || true
  [ "$switch" = podwire ] && echo "demo: (podwire's vhost-user datapath may not have landed yet: see README, Status)" >&2
  exit 1
fi
echo "demo: switch (pid $switch_pid) listening on $sock_a and $sock_b"

# ---------------------------------------------------------------- the pod
mkfifo "$dir/pod.in"
stdbuf -o0 dpdk-testpmd --lcores 0@1,1@1 --main-lcore 0 --no-pci --file-prefix="$pod_prefix" \
  --huge-dir /dev/hugepages -m 256 --single-file-segments \
  --vdev "net_virtio_user0,path=$sock_a,queues=1,queue_size=1024" \
  --vdev "net_virtio_user1,path=$sock_b,queues=1,queue_size=1024" \
  -- -i --nb-cores=1 --forward-mode=io --no-flush-rx --total-num-mbufs=32768 \
  <"$dir/pod.in" >"$dir/pod.log" 2>&1 &
pod_pid=$!
exec 3>"$dir/pod.in"
prompts() { grep -o 'testpmd> ' "$dir/pod.log" 2>/dev/null | wc -l; }
prompts_at_least() { [ "$(prompts)" -ge "$1" ]; }
send() { # command, then wait (10 s) for one more prompt
  local before
  before=$(prompts)
  printf '%s\n' "$1" >&3
  wait_for 10 "prompt" prompts_at_least $((before + 1)) || die "pod did not answer '$1' (see $dir/pod.log)"
}
pod_gone() { ! kill -0 "$pod_pid" 2>/dev/null; }
pod_ready_or_gone() { prompts_at_least 1 || pod_gone; }
wait_for 60 "pod prompt" pod_ready_or_gone
if pod_gone || ! prompts_at_least 1; then
  tail -n 20 "$dir/pod.log" >&2
  die "the pod did not start (see $dir/pod.log)"
fi
if [ "$(grep -cE '^Port [01]: [0-9A-Fa-f:]{17}$' "$dir/pod.log")" -lt 2 ]; then
  grep -E 'virtio_user|vhost_user|probe' "$dir/pod.log" >&2 || true
  die "the pod could not attach both virtio-user ports to the switch (see $dir/pod.log)"
fi
echo "demo: pod (testpmd pid $pod_pid) attached; injecting 32 bursts per port for ${seconds}s"
send "start tx_first 32"
sleep "$seconds"
mark=$(wc -c <"$dir/pod.log")
send "show port stats all"
stats=$(tail -c +"$((mark + 1))" "$dir/pod.log")
send "stop"
printf 'quit\n' >&3
exec 3>&-
wait_for 10 "pod exit" pod_gone || true

echo
echo "==== pod (testpmd) port counters"
printf '%s\n' "$stats" | grep -E 'statistics for port|RX-packets|TX-packets' || true
rx=$(printf '%s\n' "$stats" | awk '/RX-packets:/ {s += $2} END {print s + 0}')

echo
echo "==== switch counters"
if [ "$switch" = podwire ]; then
  if switch_alive; then
    "$podwire" stats --socket "$control" || echo "(podwire stats failed)"
  else
    echo "(podwire is not running; its log:)"
    tail -n 20 "$dir/podwire.log" || true
  fi
else
  echo "(DPDK reference switch: see $dir/switch.log after it stops)"
fi

echo
if [ "$rx" -gt 0 ]; then
  echo "demo: OK: the switch forwarded $rx packets back to the pod in ${seconds}s"
  exit 0
fi
echo "demo: FAILED: no packets were forwarded (logs in $dir)"
exit 1
