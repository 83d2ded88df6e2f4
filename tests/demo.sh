#!/bin/bash
# make demo: two hosts in network namespaces joined by a 300 and a 200 Mbit/s link, configured only through
# their own /etc/network/interfaces and the real ifup, with our hooks installed. Prints each link's goodput
# alone and the goodput of ONE TCP flow between the two virtual addresses, then takes everything down.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
P=${DEMO_PREFIX:-lgdemo}
RATES=(${DEMO_RATES:-300 200})
SECS=${DEMO_SECONDS:-5}
[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin/linkagg-ifupdown" ] || { echo "build first: make build" >&2; exit 1; }
work=$(mktemp -d)
cleanup() {
  for h in A B; do [ -d "$work/etc-$h" ] && "$lab/ifupdown-netns.sh" ${P}$h "$work/etc-$h" ifdown -a >/dev/null 2>&1 || true; done
  "$lab/twohost.sh" down $P; rm -rf "$work"
}
trap cleanup EXIT

ADDR=0 "$lab/twohost.sh" up $P "${RATES[*]}"
weights="${RATES[*]}"
tables=""; for i in "${!RATES[@]}"; do tables+=" $((40000 + i))"; done
for h in A B; do
  n=$([ $h = A ] && echo 10 || echo 20)
  etc=$work/etc-$h; mkdir -p "$etc"
  for d in if-pre-up.d if-up.d if-down.d if-post-down.d; do mkdir -p "$etc/$d"; ln -s "$bin/linkagg-ifupdown" "$etc/$d/linkagg"; done
  {
    for i in "${!RATES[@]}"; do
      l=${P}$(echo $h | tr AB ab)$i
      printf 'auto %s\niface %s inet static\n    address 10.96.%d.%d/24\n\n' $l $l $i $n
    done
    printf 'auto tun0\niface tun0 inet static\n    address 10.96.255.%d\n    netmask 255.255.255.255\n' $n
    printf '    mtu 9000\n    fakenet 10.96.255.0/24\n    table%s\n    weight %s\n' "$tables" "$weights"
    for peer in 10 20; do
      printf '    rspec 10.96.255.%d' $peer; for i in "${!RATES[@]}"; do printf ':10.96.%d.%d' $i $peer; done; echo
    done
  } > "$etc/interfaces"
  "$lab/ifupdown-netns.sh" ${P}$h "$etc" ifup -a
done
echo "== host A, /etc/network/interfaces:"; sed -n '/iface tun0/,$p' "$work/etc-A/interfaces"
echo "== host A, the kernel state our hooks made:"
ip -n ${P}A rule show | grep -E 'linkagg|proto 76' || true
ip netns exec ${P}A nft list table ip linkagg_tun0 | grep -E 'numgen|mark set'
echo
sum=0
for i in "${!RATES[@]}"; do
  r=$("$lab/twohost.sh" iperf $P 10.96.$i.20 $SECS)
  printf 'link %d alone (%s Mbit/s shaped): %8.1f Mbit/s\n' $i ${RATES[$i]} $r
  sum=$(python3 -c "print($sum + $r)")
done
agg=$("$lab/twohost.sh" iperf $P 10.96.255.20 $SECS)
printf 'one flow VIP->VIP over all links:  %8.1f Mbit/s\n' $agg
python3 -c "print('aggregate / sum of links alone: %.3f' % ($agg / $sum))"
for h in A B; do "$lab/ifupdown-netns.sh" ${P}$h "$work/etc-$h" ifdown -a; done
left=$(ip -n ${P}A rule show | grep -cE 'linkagg|proto 76' || true)
echo "after ifdown -a: $left rules of ours, nft tables: $(ip netns exec ${P}A nft list tables | grep -c linkagg || true)"
