#!/bin/bash
# bench-cost.sh (make bench): what striping costs in CPU where this machine, not the links, is the limit
# (10 GbE and faster). Two hosts joined by N veth pairs with no shaper (tests/lab/shape.sh SHAPER=none),
# configured through the real ifupdown with `speed 10000` per path; under cubic and bbr, median of REPEAT:
#   plain   one flow over one link's own subnet (no TUN, no marks): the cost of TCP itself
#   striped one flow VIP -> VIP over the N links, linkagg's defaults
# For each: Gbit/s, the whole machine's busy time (both hosts share its cores; % of one core), and that per
# Gbit/s. Each link alone moves as much as a core can, so the striped flow cannot reach N times one link
# here: the figure to read is the CPU per Gbit/s, which a host with faster cores pays at 10 Gbit/s too.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=${BIN:-$top/build/bin}
REPEAT=${REPEAT:-3}
PATHS=${PATHS:-2}
CCS=${CCS:-"cubic bbr"}
P=lgcost
NET=91
# shellcheck source=lab/benchlib.sh
. "$lab/benchlib.sh"
[ "$(id -u)" = 0 ] || { echo "bench-cost needs root (network namespaces)" >&2; exit 1; }
work=$(mktemp -d)
chmod 755 "$work"
trap 'lab_cleanup; rm -rf "$work"' EXIT
export SHAPER=none

rates=$(for _ in $(seq "$PATHS"); do printf '10000 '; done)
rates=${rates% }
set=${rates// /,}
# cpu_flow DST CC -> "MBIT MACHINE_BUSY_%"
cpu_flow() {
  local b0 b1 out
  b0=$(busy); out=$(iperf_flow ${P}A ${P}B "$1" "$2"); b1=$(busy)
  python3 -c "import sys,os
b0=[int(x) for x in sys.argv[1].split()]; b1=[int(x) for x in sys.argv[2].split()]
print(sys.argv[3].split()[0], round(100.0*(b1[0]-b0[0])/(b1[1]-b0[1])*os.cpu_count(),1))" "$b0" "$b1" "$out"
}
echo "== CPU per Gbit/s: one plain flow over one unshaped link against one flow striped over $PATHS, $REPEAT runs of ${SECS}s, median; $(nproc) cores, $(uname -r), $(date -u +%F)"
lab_up "$rates"
lab_configure "$set" packet ""
declare -A res=()
for rep in $(seq "$REPEAT"); do
  for cc in $CCS; do
    for k in plain striped; do
      dst=10.$NET.0.20; [ $k = striped ] && dst=10.$NET.255.20
      read -r m c <<<"$(cpu_flow $dst $cc)"
      res[$cc,$k]+=" $m"; res[$cc,$k,cpu]+=" $c"
      echo "   run $rep $cc $k: $m Mbit/s, machine $c % of a core" >&2
    done
  done
done
for cc in $CCS; do
  for k in plain striped; do
    m=$(median ${res[$cc,$k]}); c=$(median ${res[$cc,$k,cpu]})
    printf '  %-5s %-7s %6.2f Gbit/s  machine %5s%% of a core  %5.1f%% of a core per Gbit/s\n' $cc $k "$(python3 -c "print($m / 1000)")" "$c" "$(python3 -c "print($c / ($m / 1000))")"
  done
done
