#!/bin/bash
# MPTCP goodput benchmark (the lead wires it into `make bench`): for 300/200 and 4x250 Mbit/s links, each
# link alone (plain TCP over that link), one MPTCP connection VIP->VIP (mptcpize'd iperf3) over `mode mptcp`
# made by `linkagg apply`, and over `mode hybrid` one MPTCP connection and one plain TCP flow (striped), each
# with its ratio to the sum of the links alone. Each figure is the median of REPEAT runs of SECS seconds.
# Needs root and build/bin/linkagg (make build).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
P=mpbench
[ "$(id -u)" = 0 ] || { echo "bench-mptcp needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin/linkagg" ] || { echo "no $bin/linkagg: run make build" >&2; exit 1; }
work=$(mktemp -d)
trap '"$lab/twohost.sh" down $P >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v))' "$@"; }

# config HOST WEIGHTS PATHS MODE -> $work/$HOST.interfaces: group tun0 between 10.94.0.10 and .20
config() {
  local host=$1 weights=$2 paths=$3 mode=$4 tables="" i
  for ((i = 0; i < paths; i++)); do tables+=" $((50000 + i))"; done
  {
    printf 'iface tun0 inet static\n    address 10.94.0.%d\n    netmask 255.255.255.255\n' "$host"
    printf '    fakenet 10.94.0.0/16\n    table%s\n    weight %s\n    mode %s\n' "$tables" "$weights" "$mode"
    for peer in 10 20; do
      printf '    rspec 10.94.0.%d' $peer; for ((i = 0; i < paths; i++)); do printf ':10.95.%d.%d' $i $peer; done; echo
    done
  } > "$work/$host.interfaces"
}

linkagg() { local ns=$1 host=$2; shift 2; ip netns exec "$ns" "$bin/linkagg" --interfaces "$work/$host.interfaces" --confdir "$work/none" --run-dir "$work/run-$ns" "$@"; }

goodput() {
  local rates=$1 weights=$2
  local -a r=($rates); local paths=${#r[@]}
  echo "== MPTCP goodput, links ${rates// //} Mbit/s, weight $weights, $REPEAT runs of ${SECS}s, median"
  NET=95 "$lab/twohost.sh" up $P "$rates" >/dev/null
  local sums=() aggs=() hmp=() hplain=()
  declare -A alone
  for _ in $(seq "$REPEAT"); do
    local sum=0 v
    for ((i = 0; i < paths; i++)); do
      v=$("$lab/twohost.sh" iperf $P 10.95.$i.20 "$SECS"); alone[$i]+=" $v"; sum=$(python3 -c "print($sum+$v)")
    done
    sums+=("$sum")
    config 10 "$weights" "$paths" mptcp; config 20 "$weights" "$paths" mptcp
    linkagg ${P}A 10 apply >/dev/null; linkagg ${P}B 20 apply >/dev/null
    aggs+=("$("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS" mptcp)")
    config 10 "$weights" "$paths" hybrid; config 20 "$weights" "$paths" hybrid
    linkagg ${P}A 10 apply >/dev/null; linkagg ${P}B 20 apply >/dev/null
    hmp+=("$("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS" mptcp)")
    hplain+=("$("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS")")
    linkagg ${P}A 10 down >/dev/null; linkagg ${P}B 20 down >/dev/null
  done
  for ((i = 0; i < paths; i++)); do printf '  link %d alone:                 %8s Mbit/s\n' $i "$(median ${alone[$i]})"; done
  local s a
  s=$(median "${sums[@]}"); a=$(median "${aggs[@]}")
  printf '  sum of links alone:           %8s Mbit/s\n' "$s"
  ratio() { python3 -c "print('%.3f' % ($1/$s))"; }
  printf '  one MPTCP flow, mode mptcp:   %8s Mbit/s   ratio %s\n' "$a" "$(ratio "$a")"
  a=$(median "${hmp[@]}"); printf '  one MPTCP flow, mode hybrid:  %8s Mbit/s   ratio %s\n' "$a" "$(ratio "$a")"
  a=$(median "${hplain[@]}"); printf '  one TCP flow, mode hybrid:    %8s Mbit/s   ratio %s\n' "$a" "$(ratio "$a")"
  "$lab/twohost.sh" down $P >/dev/null
}

goodput "300 200" "3 2"
goodput "250 250 250 250" "1 1 1 1"
