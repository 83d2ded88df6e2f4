#!/bin/bash
# make demo: two hosts in network namespaces joined by four 1 Gbit/s links (the seed's nodes: four GbE NICs
# each), configured only through their own /etc/network/interfaces and the real ifup, with our hooks
# installed. Prints each link's goodput alone and the goodput of ONE TCP flow between the two virtual
# addresses, then takes everything down. DEMO_RATES="300 200" (Mbit/s) picks other links.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
P=${DEMO_PREFIX:-lgdemo}
RATES=(${DEMO_RATES:-1000 1000 1000 1000})
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
speeds="${RATES[*]}"  # a veth reports a fixed 10000 Mbit/s, whatever shapes it: the stanza says the real rate
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
    printf '    mtu 9000\n    fakenet 10.96.255.0/24\n    table%s\n    speed %s\n' "$tables" "$speeds"
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
echo "== host A, the weights and the striping unit linkagg chose (linkagg status):"
ip netns exec ${P}A "$bin/linkagg" --interfaces "$work/etc-A/interfaces" --confdir "$work/none" --run-dir "$work/etc-A/run-linkagg" status | grep -E '^  (weights|unit):'
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

# Part 2: the lab of the blog post we were built from, three hosts with two NICs each on ONE switch (a Linux
# bridge), every NIC and switch port shaped to 1 Gbit/s (DEMO_SWITCH_RATE), all NICs on one subnet, configured
# by ifup -a.
[ -n "${DEMO_NO_SWITCH:-}" ] && exit 0
S=${P}s
cleanup_switch() {
  for h in A B C; do [ -d "$work/sw-$h" ] && "$lab/ifupdown-netns.sh" $S$h "$work/sw-$h" ifdown -a >/dev/null 2>&1 || true; done
  "$lab/switch.sh" down $S "A B C" 2 >/dev/null 2>&1 || true
}
trap 'cleanup_switch; cleanup' EXIT
echo
SWRATE=${DEMO_SWITCH_RATE:-1000}
echo "== one switch: hosts A, B, C with eth0 and eth1 each (10.0.0.10/.11, .20/.21, .30/.31), $SWRATE Mbit/s per NIC"
"$lab/switch.sh" up $S "A B C" 2 $SWRATE none
k=0
for h in A B C; do
  k=$((k + 1)); etc=$work/sw-$h; mkdir -p "$etc"
  for d in if-pre-up.d if-up.d if-down.d if-post-down.d; do mkdir -p "$etc/$d"; ln -s "$bin/linkagg-ifupdown" "$etc/$d/linkagg"; done
  {
    for i in 0 1; do printf 'auto eth%d\niface eth%d inet static\n    address 10.0.0.%d/24\n\n' $i $i $((10 * k + i)); done
    printf 'auto tun0\niface tun0 inet static\n    address 10.99.255.%d\n    netmask 255.255.255.255\n    fakenet 10.99.255.0/24\n    table 41000 41001\n    speed %d %d\n' $((10 * k)) $SWRATE $SWRATE
    for j in 1 2 3; do printf '    rspec 10.99.255.%d:10.0.0.%d:10.0.0.%d\n' $((10 * j)) $((10 * j)) $((10 * j + 1)); done
  } > "$etc/interfaces"
  "$lab/ifupdown-netns.sh" $S$h "$etc" ifup -a
done
echo "== host A, its tables: each path leaves by its own NIC, though both NICs are on 10.0.0.0/24"
ip -n ${S}A route show table 41000 | sed 's/^/   41000: /'
ip -n ${S}A route show table 41001 | sed 's/^/   41001: /'
tx() { for i in 0 1; do ip netns exec ${S}A cat /sys/class/net/eth$i/statistics/tx_bytes; done; }
port=5390
ip netns exec ${S}B iperf3 -s -1 -p $port >/dev/null 2>&1 & sleep 0.5
t0=($(tx))
one=$(ip netns exec ${S}A iperf3 -c 10.0.0.20 -p $port -t $SECS -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))')
wait
ip netns exec ${S}B iperf3 -s -1 -p $((port + 1)) >/dev/null 2>&1 & sleep 0.5
t0=($(tx))
agg=$(ip netns exec ${S}A iperf3 -c 10.99.255.20 -p $((port + 1)) -t $SECS -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))')
wait
t1=($(tx))
printf 'A -> B over one NIC (10.0.0.20):     %8.1f Mbit/s\n' $one
printf 'A -> B VIP -> VIP over both NICs:     %8.1f Mbit/s (%.2f x one NIC); A sent %d MB on eth0, %d MB on eth1\n' $agg \
  "$(python3 -c "print($agg / $one)")" $(( (t1[0] - t0[0]) / 1000000 )) $(( (t1[1] - t0[1]) / 1000000 ))
for h in A B C; do "$lab/ifupdown-netns.sh" $S$h "$work/sw-$h" ifdown -a; done
echo "after ifdown -a on every host: $(ip -n ${S}A rule show | grep -cE 'linkagg|proto 76' || true) rules of ours on A"
