#!/bin/bash
# bench-transparent.sh (run by `make bench`): the table of issue 15. One plain TCP flow (iperf3, no
# mptcpize) VIP -> VIP, in the same run: mode packet (striped), mode hybrid (a plain TCP flow is striped
# too), mode mptcp + `mptcp-transparent all` (the program makes iperf3's sockets MPTCP on both hosts), each
# under cubic and under bbr (iperf3 -C), on 4x250 and 400/250/100/150 Mbit/s links; each figure the median of
# REPEAT runs of SECS seconds, with its ratio to the sum of the links alone (each link alone measured in the
# same run with the same congestion control).
#
# Where this kernel cannot attach the program (Linux < 6.6, or a kernel that refuses BPF trampolines, like
# the Firecracker kernel of our lab), the mptcp row is measured with `mptcpize run iperf3` on both hosts
# and labelled "mptcpize stand-in": the same kernel MPTCP sockets, made by LD_PRELOAD instead of the
# program (what differs is only who asks for IPPROTO_MPTCP). Then, unless VM=0, the whole table runs again
# inside the test VM (tests/vm/run.sh: Debian's 6.12 kernel under QEMU, software emulation without KVM here)
# with the program attached for real, at the rates scaled by VMSCALE (default 0.05: TCG emulation cannot
# move gigabits; its figures say whether transparent MPTCP behaves like mptcpize, not what 1 Gbit/s gives).
# VMREPEAT and VMSECS override REPEAT and SECS for the VM. Needs root and build/bin/linkagg (make build).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
SCALE=${SCALE:-1}
P=ltbench
[ "$(id -u)" = 0 ] || { echo "bench-transparent needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin/linkagg" ] || { echo "no $bin/linkagg: run make build" >&2; exit 1; }
work=$(mktemp -d)
export LINKAGG_BPFFS=$work/bpffs
cleanup() {
  for h in A B; do [ -f "$work/$h.interfaces" ] && linkagg $h down >/dev/null 2>&1 || true; done
  "$lab/twohost.sh" down $P >/dev/null 2>&1 || true
  umount "$LINKAGG_BPFFS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$LINKAGG_BPFFS" "$work/none"
mount -t bpf bpf "$LINKAGG_BPFFS"
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v))' "$@"; }
scale() { python3 -c 'import sys; print(" ".join("%g" % (float(r) * float(sys.argv[1])) for r in sys.argv[2:]))' "$SCALE" "$@"; }

# config H WEIGHTS PATHS MODE EXTRA -> $work/H.interfaces: group tun0 between 10.94.0.10 (A) and .20 (B)
config() {
  local h=$1 weights=$2 paths=$3 mode=$4 extra=$5 host tables="" i
  host=$([ "$h" = A ] && echo 10 || echo 20)
  for ((i = 0; i < paths; i++)); do tables+=" $((50000 + i))"; done
  {
    printf 'iface tun0 inet static\n    address 10.94.0.%d\n    netmask 255.255.255.255\n' "$host"
    printf '    fakenet 10.94.0.0/16\n    table%s\n    weight %s\n    mode %s\n' "$tables" "$weights" "$mode"
    [ -z "$extra" ] || printf '    %s\n' "$extra"
    for peer in 10 20; do
      printf '    rspec 10.94.0.%d' $peer; for ((i = 0; i < paths; i++)); do printf ':10.95.%d.%d' $i $peer; done; echo
    done
  } > "$work/$h.interfaces"
}

linkagg() { local h=$1; shift; ip netns exec ${P}$h "$bin/linkagg" --interfaces "$work/$h.interfaces" --confdir "$work/none" --run-dir "$work/run-$h" "$@"; }
both() { local mode=$1 extra=$2 h; for h in A B; do config $h "$weights" "$paths" "$mode" "$extra"; linkagg $h apply >/dev/null; done; }

# flow DST CC [WRAP...]: one iperf3 flow A -> DST under congestion control CC, both ends run through WRAP;
# prints the Mbit/s received
flow() {
  local dst=$1 cc=$2 port=$((5200 + RANDOM % 700)) spid; shift 2
  ip netns exec ${P}B "$@" iperf3 -s -1 -p $port >/dev/null 2>&1 & spid=$!
  for _ in $(seq 50); do ip netns exec ${P}B ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.1; done
  ip netns exec ${P}A "$@" iperf3 -c "$dst" -p $port -t "$SECS" -O 1 -C "$cc" -J \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6,1))'
  wait $spid 2>/dev/null || true
}

table() {
  local rates weights=$2 paths cc rep i v s where
  rates=$(scale $1)
  local -a r=($rates); paths=${#r[@]}
  where="this machine, kernel $(uname -r)"
  [ -z "${LINKAGG_IN_VM:-}" ] || where="the test VM, kernel $(uname -r), TCG emulation, rates x$SCALE"
  # (htb warns of small quanta at the VM's low rates: not an error)
  out=$(NET=95 "$lab/twohost.sh" up $P "$rates" 2>&1) || { echo "$out" >&2; exit 1; }
  # can this kernel attach the program? (the first apply says, with one line, what it lacks)
  local mp_label="mptcp + transparent" wrap=()
  config A "$weights" "$paths" mptcp "mptcp-transparent all"
  if ! out=$(linkagg A apply 2>&1); then
    echo "$out" | grep -q "mptcp-transparent:" || { echo "$out" >&2; exit 1; }
    mp_label="mptcp (mptcpize stand-in)"; wrap=(mptcpize run); standin=1
    note="  ($(echo "$out" | sed 's/.*apply tun0: //'); the mptcp row uses mptcpize run iperf3)"
  fi
  linkagg A down >/dev/null 2>&1 || true
  echo "== one plain TCP flow, links ${rates// //} Mbit/s, weight $weights, $REPEAT runs of ${SECS}s, median ($where)"
  [ -z "${note:-}" ] || echo "$note"
  declare -A res
  for rep in $(seq "$REPEAT"); do
    for cc in cubic bbr; do
      s=0
      for ((i = 0; i < paths; i++)); do v=$(flow 10.95.$i.20 $cc); s=$(python3 -c "print($s+$v)"); done
      res[alone,$cc]+=" $s"
    done
    both packet ""
    for cc in cubic bbr; do res[packet,$cc]+=" $(flow 10.94.0.20 $cc)"; done
    both hybrid ""
    for cc in cubic bbr; do res[hybrid,$cc]+=" $(flow 10.94.0.20 $cc)"; done
    if [ ${#wrap[@]} = 0 ]; then both mptcp "mptcp-transparent all"; else both mptcp ""; fi
    for cc in cubic bbr; do res[mptcp,$cc]+=" $(flow 10.94.0.20 $cc "${wrap[@]}")"; done
    for h in A B; do linkagg $h down >/dev/null; done
  done
  printf '  %-30s %20s %20s\n' "" cubic bbr
  local sc sb
  sc=$(median ${res[alone,cubic]}); sb=$(median ${res[alone,bbr]})
  printf '  %-30s %13s Mbit/s %13s Mbit/s\n' "sum of the links alone" "$sc" "$sb"
  for row in packet hybrid mptcp; do
    local label=$row mc mb
    [ $row = hybrid ] && label="hybrid (plain TCP, striped)"
    [ $row = mptcp ] && label=$mp_label
    mc=$(median ${res[$row,cubic]}); mb=$(median ${res[$row,bbr]})
    printf '  %-30s %12s (%5.3f) %12s (%5.3f)\n' "$label" "$mc" "$(python3 -c "print($mc/$sc)")" "$mb" "$(python3 -c "print($mb/$sb)")"
  done
  "$lab/twohost.sh" down $P >/dev/null
}

table "250 250 250 250" "1 1 1 1"
table "400 250 100 150" "8 5 2 3"

# the program cannot attach here: the same table, for real, inside the test VM
if [ -n "${standin:-}" ] && [ -z "${LINKAGG_IN_VM:-}" ] && [ "${VM:-1}" != 0 ]; then
  vmwork=${LGVM_WORK:-/var/tmp/linkagg-vm}
  mkdir -p "$vmwork"
  s=$(mktemp "$vmwork/bench-XXXXXX.sh")
  vmout=$s.out
  echo "cd $top && LINKAGG_IN_VM=1 SCALE=${VMSCALE:-0.05} REPEAT=${VMREPEAT:-$REPEAT} SECS=${VMSECS:-$SECS} tests/bench-transparent.sh > $vmout 2>&1" > "$s"
  echo "== the same in the test VM, where the program attaches (rates x${VMSCALE:-0.05}; takes a while: TCG emulation)"
  t0=$(date +%s)
  code=0
  LGVM_SMP=${LGVM_SMP:-2} LGVM_MEM=${LGVM_MEM:-2048} "$top/tests/vm/run.sh" "$s" > "$work/vm.log" 2>&1 || code=$?
  cat "$vmout" 2>/dev/null || true
  echo "  (the VM ran for $(( $(date +%s) - t0 ))s, exit status $code)"
  rm -f "$s" "$vmout"
  [ $code = 0 ] || { tail -20 "$work/vm.log" >&2; exit 1; }
fi
exit 0
