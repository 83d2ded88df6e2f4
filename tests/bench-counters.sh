#!/bin/bash
# bench-counters.sh: what the per-path nftables counters (linkagg status) cost one striped TCP flow.
# Two hosts, weights 3:2; per setup, congestion control (cubic, bbr: iperf3 -C) and repetition, one flow
# VIP->VIP of SECS seconds WITH the counters (linkagg apply: every mark chain counts) and one WITHOUT
# (the same table from `linkagg plan` with the `counter` statements removed, loaded by nft), alternating in
# the same run. Printed: the median of REPEAT runs of each, and the difference.
#   setups: 300/200 Mbit/s (htb, as the goodput benchmark) and 10000/10000 Mbit/s (htb far above what
#   this machine forwards: CPU-bound, where a per-packet cost shows first)
# Needs root, iperf3, nft, python3, and build/bin (make build).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
SETUPS=${SETUPS:-"300,200 10000,10000"}
P=lgctr
[ "$(id -u)" = 0 ] || { echo "bench-counters needs root (network namespaces)" >&2; exit 1; }
work=$(mktemp -d)
trap '"$lab/twohost.sh" down $P >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
chmod 755 "$work"
median() { python3 -c 'import sys,statistics; print("%.1f" % statistics.median([float(x) for x in sys.argv[1:]]))' "$@"; }
lk() { local h=$1; shift; ip netns exec ${P}$h "$bin/linkagg" --interfaces "$work/empty" --confdir "$work/conf$h" --run-dir "$work/run$h" "$@"; }

flow() { # CC PORT -> Mbit/s received
  ip netns exec ${P}B iperf3 -s -1 -p "$2" >/dev/null 2>&1 &
  local s=$!
  for _ in $(seq 30); do ip netns exec ${P}B ss -ltn "sport = :$2" | grep -q LISTEN && break; sleep 0.1; done
  ip netns exec ${P}A iperf3 -c 10.91.255.20 -p "$2" -t "$SECS" -O 1 -C "$1" -J \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6,1))'
  wait $s 2>/dev/null || true
}

with_counters() {
  # the table of the 'without' run carries no tags of ours, so apply would refuse it as foreign: drop it
  for h in A B; do
    ip netns exec ${P}$h nft list table ip linkagg_tun0 2>/dev/null | grep -q 'comment "linkagg:' || ip netns exec ${P}$h nft delete table ip linkagg_tun0 2>/dev/null || true
    lk $h apply >/dev/null
  done
}
without_counters() {
  for h in A B; do
    ip netns exec ${P}$h nft delete table ip linkagg_tun0
    ip netns exec ${P}$h bash -c "$(cat "$work/nocounter$h.sh")" >/dev/null
  done
}
has_counters() { ip netns exec ${P}A nft list table ip linkagg_tun0 | grep -c 'counter packets' || true; }

: > "$work/empty"
echo "== counter overhead: one flow, with and without the mark chains' counters, $REPEAT runs of ${SECS}s each, alternating, median"
for setup in $SETUPS; do
  rates=${setup//,/ }
  NET=91 "$lab/twohost.sh" up $P "$rates" >/dev/null 2>&1   # (htb warns about its quantum at 10 Gbit/s)
  for h in A B; do
    n=$([ $h = A ] && echo 10 || echo 20)
    mkdir -p "$work/conf$h" && chmod 755 "$work/conf$h"
    cat > "$work/conf$h/tun0.toml" <<EOT
[tun0]
address = "10.91.255.$n"
mtu = 9000
fakenet = ["10.91.255.0/24"]
table = [29100, 29101]
weight = [3, 2]
rspec = ["10.91.255.10:10.91.0.10:10.91.1.10", "10.91.255.20:10.91.0.20:10.91.1.20"]
EOT
    lk $h apply >/dev/null
    # the nft part of the plan, without counters
    lk $h plan | sed -n '/^nft -f/,/^EOF$/p' | sed 's/ counter / /' > "$work/nocounter$h.sh"
  done
  declare -A runs=()
  port=5600
  for r in $(seq "$REPEAT"); do
    for cc in cubic bbr; do
      # alternate which goes first, so a drift of the machine does not favour one
      order="with without"; [ $((r % 2)) = 0 ] && order="without with"
      for v in $order; do
        ${v}_counters
        c=$(has_counters)
        if { [ $v = with ] && [ "$c" != 2 ]; } || { [ $v = without ] && [ "$c" != 0 ]; }; then
          echo "bench-counters: table of A has $c counters in the '$v' run" >&2; exit 1
        fi
        port=$((port + 1))
        runs[$cc.$v]+=" $(flow $cc $port)"
      done
    done
  done
  for cc in cubic bbr; do
    w=$(median ${runs[$cc.with]}); wo=$(median ${runs[$cc.without]})
    printf '  %-11s %-5s  with counters %7s Mbit/s   without %7s Mbit/s   difference %+.1f %%   (runs with:%s  without:%s)\n' \
      "${rates// //} Mbit/s" "$cc" "$w" "$wo" "$(python3 -c "print(($w - $wo) / $wo * 100)")" "${runs[$cc.with]}" "${runs[$cc.without]}"
  done
  for h in A B; do lk $h down >/dev/null; done
  "$lab/twohost.sh" down $P >/dev/null
  unset runs
done
