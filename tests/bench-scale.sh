#!/bin/bash
# bench-scale.sh: time `linkagg apply` (from nothing), a no-op re-apply and `linkagg down` for one group of
# 254 peers x 8 paths (2033 routes, 8 rules) in a network namespace; prints the median of 3 runs of each.
#   tests/bench-scale.sh [BINDIR]     BINDIR holds linkagg (default build/bin; `make build` makes it)
set -eu
cd "$(dirname "$0")/.."
bin=$(cd "${1:-build/bin}" && pwd)/linkagg
[ -x "$bin" ] || { echo "bench-scale: $bin is missing (make build)" >&2; exit 1; }
P=hdb; NET=75; F=74; LINKS=8
dir=$(mktemp -d)
cleanup() { tests/lab/twohost.sh down $P >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
NET=$NET tests/lab/twohost.sh up $P "$(printf '1000 %.0s' $(seq $LINKS))" >/dev/null
mkdir -p "$dir/linkagg" "$dir/run"
{
  printf 'iface tun0 inet static\n    address 10.%d.0.1/32\n    fakenet 10.%d.0.0/23\n    table' $F $F
  for i in $(seq 0 $((LINKS-1))); do printf ' %d' $((35500+i)); done
  printf '\n    rspec 10.%d.0.1' $F
  for i in $(seq 0 $((LINKS-1))); do printf ':10.%d.%d.10' $NET $i; done; printf '\n'
  for k in $(seq 1 254); do
    g=$k; [ $k = 10 ] && g=254
    printf '    rspec 10.%d.1.%d' $F $k
    for i in $(seq 0 $((LINKS-1))); do printf ':10.%d.%d.%d' $NET $i $g; done; printf '\n'
  done
} > "$dir/interfaces"
la() { ip netns exec ${P}A "$bin" --interfaces "$dir/interfaces" --confdir "$dir/linkagg" --run-dir "$dir/run" "$@"; }
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
A=(); N=(); D=()
for _ in 1 2 3; do
  A+=($(ms la apply)); N+=($(ms la apply)); D+=($(ms la down))
done
[ -z "$(ip netns exec ${P}A ip route show table all proto 76)" ] || { echo "bench-scale: residue after down" >&2; exit 1; }
echo "scale 254 peers x 8 paths (2033 routes, 8 rules), median of 3:"
echo "  apply        $(median "${A[@]}") ms   (runs: ${A[*]})"
echo "  no-op apply  $(median "${N[@]}") ms   (runs: ${N[*]})"
echo "  down         $(median "${D[@]}") ms   (runs: ${D[*]})"
