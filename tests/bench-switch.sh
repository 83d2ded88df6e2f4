#!/bin/bash
# Switch benchmark (run by `make bench`): three hosts A, B, C with two NICs each on ONE switch (a Linux
# bridge, tests/lab/switch.sh), every NIC and its switch port shaped to RATE Mbit/s (default 1000), groups
# made by `linkagg apply`, each stanza saying its NICs' rate with `speed` (a veth reports no real one).
# For all NICs on one subnet (flat) and one subnet per NIC (pernic), under cubic and bbr,
# each figure the median of REPEAT runs of SECS seconds (the first second not counted):
#   - each NIC alone (A's NIC i -> B's NIC i, bound to the device) and their sum;
#   - one flow A -> B and one B -> A, VIP to VIP, and the ratio to the sum;
#   - two flows at once: A -> B + A -> C (A's send side shared) and A -> B + C -> B (B's receive side
#     shared), their total against the sum of the NICs alone (what that side's two NICs carry).
# EXTRA="opt value;opt value" adds group options (e.g. EXTRA="tcp-min-rtt-wlen 0").
# Each one-flow line also gives how the flow's bytes split over the NICs, as the sender's NICs sent them and
# the receiver's NICs received them (percent on NIC 0 / NIC 1, median).
# Needs root and build/bin/linkagg (make build; BIN=DIR measures the binaries in DIR instead).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=${BIN:-$top/build/bin}
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
RATE=${RATE:-1000}
P=lgsw
HOSTS="A B C"
[ "$(id -u)" = 0 ] || { echo "bench-switch needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin/linkagg" ] || { echo "no $bin/linkagg: run make build" >&2; exit 1; }
work=$(mktemp -d)
trap '"$lab/switch.sh" down $P "$HOSTS" 2 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# median, ratio, group_options
# shellcheck source=lab/benchlib.sh
. "$lab/benchlib.sh"

# addr MODE K I: host K's (1 = A) address on NIC I
addr() { if [ "$1" = flat ]; then echo "10.0.0.$((10 * $2 + $3))"; else echo "10.0.$3.$((10 * $2))"; fi; }

# config MODE K: host K's group tun0 (VIP 10.99.255.K0) with every host in its rspec
config() {
  local mode=$1 k=$2 j
  {
    printf 'iface tun0 inet static\n    address 10.99.255.%d\n    netmask 255.255.255.255\n' $((10 * k))
    printf '    fakenet 10.99.255.0/24\n    table 30000 30001\n    speed %d %d\n' "$RATE" "$RATE"
    group_options "${EXTRA:-}"
    for j in 1 2 3; do printf '    rspec 10.99.255.%d:%s:%s\n' $((10 * j)) "$(addr "$mode" $j 0)" "$(addr "$mode" $j 1)"; done
  } > "$work/$k.interfaces"
}
linkagg() { local k=$1; shift; ip netns exec $P$(echo " A B C" | cut -d' ' -f$((k + 1))) "$bin/linkagg" --interfaces "$work/$k.interfaces" --confdir "$work/none" --run-dir "$work/run-$k" "$@"; }

# flow FROM TO DST CC [DEV]: one iperf3 flow, prints the received Mbit/s. Each call takes the next server
# port ($port is advanced by the caller: flows run in the background are subshells)
port=5300
flow() {
  local from=$1 to=$2 dst=$3 cc=$4 dev=${5:-}
  ip netns exec $P$to iperf3 -s -1 -p $port >/dev/null 2>&1 &
  local spid=$!
  for _ in $(seq 20); do ip netns exec $P$to ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.1; done
  ip netns exec $P$from iperf3 -c "$dst${dev:+%$dev}" -p $port -t "$SECS" -O 1 -C "$cc" -J \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6,1))'
  wait $spid 2>/dev/null || true
}

# split_of "P..." : the median share P of NIC 0, as "P/100-P"
split_of() { local p; p=$(median $1); python3 -c "print('%.1f/%.1f' % ($p, 100 - $p))"; }

bench() {
  local mode=$1 cc rep i
  echo "== switch, 3 hosts x 2 NICs of $RATE Mbit/s, $mode addressing${EXTRA:+, options: $EXTRA}, $REPEAT runs of ${SECS}s (first second not counted), median"
  "$lab/switch.sh" up $P "$HOSTS" 2 "$RATE" "$mode" >/dev/null
  for k in 1 2 3; do config "$mode" $k; linkagg $k apply >/dev/null; done
  for cc in cubic bbr; do
    local -a n0=() n1=() sum=() ab=() ba=() two_a=() two_b=()
    local -A split=()
    for rep in $(seq "$REPEAT"); do
      local a0 a1
      port=$((port + 1)); a0=$(flow A B "$(addr "$mode" 2 0)" $cc eth0)
      port=$((port + 1)); a1=$(flow A B "$(addr "$mode" 2 1)" $cc eth1)
      n0+=("$a0"); n1+=("$a1"); sum+=("$(python3 -c "print($a0 + $a1)")")
      # one flow each way, with the bytes per NIC at both ends
      local f from to dst tx0 rx0 tx1 rx1
      for f in "A B 10.99.255.20" "B A 10.99.255.10"; do
        read -r from to dst <<<"$f"
        tx0=$(nic_bytes $P$from tx eth0 eth1); rx0=$(nic_bytes $P$to rx eth0 eth1)
        port=$((port + 1)); m=$(flow $from $to $dst $cc)
        tx1=$(nic_bytes $P$from tx eth0 eth1); rx1=$(nic_bytes $P$to rx eth0 eth1)
        split[$from,tx]+=" $(share_delta "$tx0" "$tx1" | cut -d/ -f1)"
        split[$to,rx]+=" $(share_delta "$rx0" "$rx1" | cut -d/ -f1)"
        if [ $from = A ]; then ab+=("$m"); else ba+=("$m"); fi
        echo "   run $rep $cc: $from->$to $m Mbit/s, $from sent $(mb_delta "$tx0" "$tx1") MB on eth0/eth1, $to received $(mb_delta "$rx0" "$rx1") MB" >&2
      done
      # two flows at once, each in the background, their total
      port=$((port + 1)); flow A B 10.99.255.20 $cc > "$work/f1" & local p1=$!
      port=$((port + 1)); flow A C 10.99.255.30 $cc > "$work/f2" & local p2=$!
      wait $p1 $p2
      two_a+=("$(python3 -c "print($(cat "$work/f1") + $(cat "$work/f2"))")")
      echo "   run $rep $cc: A->B + A->C = $(cat "$work/f1") + $(cat "$work/f2")" >&2
      port=$((port + 1)); flow A B 10.99.255.20 $cc > "$work/f1" & p1=$!
      port=$((port + 1)); flow C B 10.99.255.20 $cc > "$work/f2" & p2=$!
      wait $p1 $p2
      two_b+=("$(python3 -c "print($(cat "$work/f1") + $(cat "$work/f2"))")")
      echo "   run $rep $cc: A->B + C->B = $(cat "$work/f1") + $(cat "$work/f2")" >&2
    done
    local s=$(median "${sum[@]}")
    printf '  %-5s NIC 0 alone %6s, NIC 1 alone %6s, sum %6s Mbit/s\n' $cc "$(median "${n0[@]}")" "$(median "${n1[@]}")" "$s"
    printf '  %-5s one flow A->B %6s Mbit/s (ratio %s), B->A %6s (ratio %s)\n' $cc "$(median "${ab[@]}")" "$(ratio "$(median "${ab[@]}")" "$s")" \
      "$(median "${ba[@]}")" "$(ratio "$(median "${ba[@]}")" "$s")"
    printf '  %-5s   bytes on NIC 0 / NIC 1: A->B sent by A %s%%, received by B %s%%; B->A sent by B %s%%, received by A %s%%\n' $cc \
      "$(split_of "${split[A,tx]}")" "$(split_of "${split[B,rx]}")" "$(split_of "${split[B,tx]}")" "$(split_of "${split[A,rx]}")"
    printf '  %-5s two flows A->B + A->C %6s Mbit/s (ratio %s to the sum), A->B + C->B %6s (ratio %s)\n' $cc \
      "$(median "${two_a[@]}")" "$(ratio "$(median "${two_a[@]}")" "$s")" "$(median "${two_b[@]}")" "$(ratio "$(median "${two_b[@]}")" "$s")"
  done
  for k in 1 2 3; do linkagg $k down >/dev/null; done
  "$lab/switch.sh" down $P "$HOSTS" 2
}

mkdir -p "$work/none"
for mode in ${SWITCH_MODES:-flat pernic}; do bench "$mode"; done
