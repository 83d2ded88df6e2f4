#!/bin/bash
# bench-failover.sh: what a link's carrier loss costs one striped TCP flow (make bench, failover row).
# Two hosts joined by 300 + 200 Mbit/s links, weights 3:2, `linkagg watch` on both. A flow VIP->VIP runs
# for SECS seconds with 0.1 s intervals; after LOSS_AT seconds the 200 Mbit/s link's far end goes down.
# Printed, each the median of REPEAT runs:
#   map_ms       carrier loss -> the path is out of A's nft map (polled with nft, so +~10 ms of polling)
#   recover_ms   carrier loss -> end of the first 0.1 s interval with goodput >= 0.9 x the remaining link
#                alone (measured in the same run)
#   after_ratio  mean goodput from 1 s after the loss to the end / the remaining link alone
# Needs root, iperf3, nft, python3, and build/bin (make build).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=$top/build/bin
REPEAT=${REPEAT:-3}
SECS=${SECS:-8}
LOSS_AT=${LOSS_AT:-3}
P=fob
[ "$(id -u)" = 0 ] || { echo "bench-failover needs root (network namespaces)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$lab/twohost.sh" down $P >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; m=statistics.median(v); print("%.2f" % m if m < 10 else "%.0f" % m)' "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
lk() { local ns=$1 h=$2; shift 2; ip netns exec "$ns" "$bin/linkagg" --interfaces "$work/empty" --confdir "$work/conf$h" --run-dir "$work/run$h" "$@"; }
maplen() { ip netns exec "$1" nft list table ip linkagg_tun0 2>/dev/null | sed -n 's/.*numgen inc mod \([0-9]*\).*/\1/p'; }
iperf_json() { # NS DST SECS INTERVAL PORT -> JSON on stdout
  ip netns exec ${P}B iperf3 -s -1 -p "$5" >/dev/null 2>&1 &
  local s=$!
  for _ in $(seq 30); do ip netns exec ${P}B ss -ltn "sport = :$5" | grep -q LISTEN && break; sleep 0.1; done
  ip netns exec "$1" iperf3 -c "$2" -p "$5" -t "$3" -i "$4" -J
  wait $s 2>/dev/null || true
}

NET=92 "$lab/twohost.sh" up $P "300 200"
: > "$work/empty"
for h in A B; do
  n=$([ $h = A ] && echo 10 || echo 20)
  mkdir -p "$work/conf$h" && chmod 755 "$work/conf$h"
  cat > "$work/conf$h/tun0.toml" <<EOT
[tun0]
address = "10.92.255.$n"
fakenet = ["10.92.255.0/24"]
table = [29000, 29001]
weight = [3, 2]
rspec = ["10.92.255.10:10.92.0.10:10.92.1.10", "10.92.255.20:10.92.0.20:10.92.1.20"]
EOT
  lk ${P}$h $h apply >/dev/null
  # not through lk: $! must be the watcher itself (ip netns exec execs it), not a subshell around it
  ip netns exec ${P}$h "$bin/linkagg" --interfaces "$work/empty" --confdir "$work/conf$h" --run-dir "$work/run$h" watch >"$work/watch$h.log" 2>&1 &
  pids+=($!)
done
for h in A B; do for _ in $(seq 50); do grep -q "watching links" "$work/watch$h.log" && break; sleep 0.1; done; done

maps=(); recs=(); ratios=(); alones=()
for r in $(seq "$REPEAT"); do
  alone=$(iperf_json ${P}A 10.92.0.20 3 1 $((5300 + r)) | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6)')
  iperf_json ${P}A 10.92.255.20 "$SECS" 0.1 $((5400 + r)) > "$work/flow.json" &
  fl=$!
  t_start=$(now_ms)
  sleep "$LOSS_AT"
  t_loss=$(now_ms)
  ip -n ${P}B link set ${P}b1 down
  while [ "$(maplen ${P}A)" != 1 ]; do sleep 0.005; done
  t_map=$(now_ms)
  wait $fl
  ip -n ${P}B link set ${P}b1 up
  for _ in $(seq 100); do [ "$(maplen ${P}A)" = 5 ] && break; sleep 0.05; done
  read -r rec ratio < <(python3 - "$work/flow.json" $((t_loss - t_start)) "$alone" <<'EOPY'
import json, sys
d = json.load(open(sys.argv[1])); loss = float(sys.argv[2]) / 1000; alone = float(sys.argv[3])
if d.get("error"): print("nan nan"); sys.exit()
iv = [(i["sum"]["start"], i["sum"]["end"], i["sum"]["bits_per_second"] / 1e6) for i in d["intervals"]]
rec = next((e - loss for s, e, b in iv if s >= loss and b >= 0.9 * alone), float("nan"))
after = [b for s, e, b in iv if s >= loss + 1]
print("%.0f %.3f" % (rec * 1000, (sum(after) / len(after)) / alone if after else float("nan")))
EOPY
)
  maps+=($((t_map - t_loss))); recs+=("$rec"); ratios+=("$ratio"); alones+=("$alone")
  sleep 1
done
printf 'failover (300+200 Mbit/s, 200 lost at %ss): map_ms %s  recover_ms %s  after_ratio %s  (remaining link alone %s Mbit/s; runs: map %s, recover %s)\n' \
  "$LOSS_AT" "$(median "${maps[@]}")" "$(median "${recs[@]}")" "$(median "${ratios[@]}")" "$(median "${alones[@]}")" "${maps[*]}" "${recs[*]}"
