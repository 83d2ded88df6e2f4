#!/bin/bash
# make bench: goodput and apply-time benchmarks, measured in this run, each figure the median of REPEAT runs.
#  1. goodput: each link alone, one TCP flow VIP->VIP over all links, and the ratio aggregate / sum of the
#     links alone, for 300/200 Mbit/s (weight 3 2) and 4x250 Mbit/s. The same flow is also run over the same
#     kernel state made by the `ip`/`nft` commands of `linkagg plan`, and over a hand-written BLOCK sequence
#     (1,1,1,2,2 instead of 1,2,1,2,1) to show what interleaving buys.
#  2. apply time of `linkagg apply` (whole process) for 4 peers x 4 paths and 254 peers x 4 paths, against
#     the same state made by running those ip/nft/sysctl commands one by one from a shell script, and the
#     time of a second, no-op apply.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
P=lgbench
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces)" >&2; exit 1; }
work=$(mktemp -d)
trap '"$lab/twohost.sh" down $P >/dev/null 2>&1 || true; ip netns del lgbapply 2>/dev/null || true; rm -rf "$work"' EXIT
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v))' "$@"; }

# config HOST WEIGHTS PATHS EXTRA -> $work/$H.interfaces: group tun0 of host 10.94.0.HOST with the peer host
# (.10 or .20) and EXTRA more peers (10.94.1.x, 10.94.2.x, ...) reached through gateways .100+ on each path
config() {
  local host=$1 weights=$2 paths=$3 extra=$4 tables="" i k
  for ((i = 0; i < paths; i++)); do tables+=" $((50000 + i))"; done
  {
    printf 'iface tun0 inet static\n    address 10.94.0.%d\n    netmask 255.255.255.255\n    mtu 9000\n' $host
    printf '    fakenet 10.94.0.0/16\n    table%s\n    weight %s\n' "$tables" "$weights"
    for peer in 10 20; do
      printf '    rspec 10.94.0.%d' $peer; for ((i = 0; i < paths; i++)); do printf ':10.95.%d.%d' $i $peer; done; echo
    done
    for ((k = 0; k < extra; k++)); do
      printf '    rspec 10.94.%d.%d' $((1 + k / 200)) $((1 + k % 200))
      for ((i = 0; i < paths; i++)); do printf ':10.95.%d.%d' $i $((100 + k % 150)); done; echo
    done
  } > "$work/$H.interfaces"
}

linkagg() { local ns=$1; shift; ip netns exec "$ns" "$bin/linkagg" --interfaces "$work/$H.interfaces" --confdir "$work/none" --run-dir "$work/run-$ns" "$@"; }

goodput() {
  local rates=$1 weights=$2
  local -a r=($rates); local paths=${#r[@]}
  echo "== goodput, links ${rates// //} Mbit/s, weight $weights, $REPEAT runs of ${SECS}s, median"
  NET=95 "$lab/twohost.sh" up $P "$rates" >/dev/null
  local -a alone_runs agg_runs script_runs block_runs
  for h in A B; do H=$h; config $([ $h = A ] && echo 10 || echo 20) "$weights" $paths 0; done
  local sums=() aggs=() scripts=()
  blocks=()
  declare -A alone
  for rep in $(seq "$REPEAT"); do
    local sum=0
    for ((i = 0; i < paths; i++)); do
      v=$("$lab/twohost.sh" iperf $P 10.95.$i.20 "$SECS"); alone[$i]+=" $v"; sum=$(python3 -c "print($sum+$v)")
    done
    sums+=($sum)
    for h in A B; do H=$h; linkagg ${P}$h apply >/dev/null; done
    aggs+=($("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS"))
    # the same state from the plan's ip/nft commands, run by a shell
    H=A; linkagg ${P}A plan > "$work/planA.sh"; linkagg ${P}A down >/dev/null
    ip netns exec ${P}A bash "$work/planA.sh" >/dev/null 2>&1
    scripts+=($("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS"))
    # a hand-written block sequence with the same weights: 1,1,1,2,2 (or 1,2,3,4 for equal weights)
    python3 - "$work/planA.sh" > "$work/blockA.sh" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
def block(m):
    elems = re.findall(r"goto (mark_[0-9a-f]+)", m.group(2))
    order = sorted(elems, key=elems.index)  # group equal marks together, first-seen order
    return m.group(1) + "{ " + ", ".join("%d : goto %s" % (i, c) for i, c in enumerate(order)) + " }"
s = re.sub(r"(numgen inc mod \d+ vmap )\{([^}]*)\}", block, s)
print("nft delete table ip linkagg_tun0")
print(s[s.index("nft -f"):])
PY
    # with equal weights the block order is the smooth order itself: nothing to compare
    if ! cmp -s <(grep -o 'vmap {.*}' "$work/planA.sh") <(grep -o 'vmap {.*}' "$work/blockA.sh"); then
      ip netns exec ${P}A bash "$work/blockA.sh" >/dev/null
      blocks+=($("$lab/twohost.sh" iperf $P 10.94.0.20 "$SECS"))
    fi
    ip netns exec ${P}A nft delete table ip linkagg_tun0 2>/dev/null || true
    H=A; linkagg ${P}A down >/dev/null; H=B; linkagg ${P}B down >/dev/null
  done
  for ((i = 0; i < paths; i++)); do printf '  link %d alone:                       %8s Mbit/s\n' $i "$(median ${alone[$i]})"; done
  local s a
  s=$(median "${sums[@]}"); a=$(median "${aggs[@]}")
  printf '  sum of links alone:                %8s Mbit/s\n' "$s"
  printf '  one flow, linkagg:                 %8s Mbit/s   ratio to sum %.3f\n' "$a" "$(python3 -c "print($a/$s)")"
  printf '  one flow, same state by ip/nft:    %8s Mbit/s\n' "$(median "${scripts[@]}")"
  [ ${#blocks[@]} = 0 ] || printf '  one flow, block sequence:          %8s Mbit/s\n' "$(median "${blocks[@]}")"
  "$lab/twohost.sh" down $P
}

applytime() {
  local peers=$1 paths=$2 ns=lgbapply i
  echo "== apply time, $peers peers x $paths paths, $REPEAT runs, median (timed inside the namespace)"
  ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up
  for ((i = 0; i < paths; i++)); do
    ip -n $ns link add lgv$i type veth peer name lgw$i
    ip -n $ns addr add 10.95.$i.10/24 dev lgv$i; ip -n $ns link set lgv$i up; ip -n $ns link set lgw$i up
  done
  local w=""; for ((i = 0; i < paths; i++)); do w+=" 1"; done
  H=A; config 10 "${w# }" $paths $((peers - 1))
  # the script: the plan's own ip/nft/sysctl commands, one process each, as an admin's script would run them
  linkagg $ns plan | grep -v '^ip tuntap' > "$work/plan.sh"
  local L="$bin/linkagg --interfaces $work/A.interfaces --confdir $work/none --run-dir $work/run-$ns"
  ip netns exec $ns bash -s "$REPEAT" "$L" "$work/plan.sh" "$paths" > "$work/times" <<'INNER'
    rep=$1 L=$2 script=$3 paths=$4
    now() { date +%s%N; }
    for r in $(seq "$rep"); do
      t0=$(now); $L --version >/dev/null; t1=$(now); echo "start $(( (t1 - t0) / 1000 ))"
      t0=$(now); $L apply; t1=$(now); echo "apply $(( (t1 - t0) / 1000 ))"
      t0=$(now); $L apply; t1=$(now); echo "noop $(( (t1 - t0) / 1000 ))"
      t0=$(now); $L down; t1=$(now); echo "down $(( (t1 - t0) / 1000 ))"
      ip tuntap add mode tun name tun0
      t0=$(now); bash "$script" >/dev/null 2>&1; t1=$(now); echo "script $(( (t1 - t0) / 1000 ))"
      nft delete table ip linkagg_tun0; ip link del tun0
      ip rule flush; ip rule add pref 32766 lookup main; ip rule add pref 32767 lookup default
      for ((i = 0; i < paths; i++)); do ip route flush table $((50000 + i)); done
    done
INNER
  med() { python3 -c "import statistics,sys; print('%.1f' % (statistics.median([int(x) for x in sys.argv[1:]])/1000))" $(awk -v k=$1 '$1==k {print $2}' "$work/times"); }
  local st=$(med start) a=$(med apply) n=$(med noop) d=$(med down) s=$(med script)
  printf '  process start (linkagg --version): %8s ms   (this machine: /bin/true alone takes several ms)\n' "$st"
  printf '  linkagg apply (from nothing):      %8s ms\n' "$a"
  printf '  linkagg apply (no change):         %8s ms\n' "$n"
  printf '  linkagg down:                      %8s ms\n' "$d"
  printf '  ip/nft/sysctl script, same state:  %8s ms   (%.1fx the linkagg apply time)\n' "$s" "$(python3 -c "print($s/$a)")"
  ip netns del $ns
}

mkdir -p "$work/none"
[ -n "${SKIP_GOODPUT:-}" ] || goodput "300 200" "3 2"
[ -n "${SKIP_GOODPUT:-}" ] || goodput "250 250 250 250" "1 1 1 1"
applytime 4 4
applytime 254 4
for b in "$top"/tests/bench-*.sh; do [ -x "$b" ] && "$b"; done
exit 0
