#!/bin/bash
# make bench: every benchmark, measured in this run, each figure the median of REPEAT runs.
#  1. apply time of `linkagg apply` (whole process) for 4 peers x 4 paths and 254 peers x 4 paths, against
#     the same state made by running those ip/nft/sysctl commands one by one from a shell script, and the
#     time of a second, no-op apply;
#  2. then every tests/bench-*.sh: goodput of one flow in every mode under cubic and bbr on three link sets
#     (bench-tcp.sh), the switch (bench-switch.sh), the counters' cost, failover, scale, mptcp-transparent.
#     BENCHES="tcp switch" runs only those (default: all); BENCHES=none only the apply time.
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
applytime 4 4
applytime 254 4
for b in "$top"/tests/bench-*.sh; do
  n=${b##*/bench-}; n=${n%.sh}
  case " ${BENCHES:-all} " in *" all "* | *" $n "*) [ -x "$b" ] && "$b" ;; esac
done
exit 0
