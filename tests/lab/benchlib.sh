# benchlib.sh: what the benchmark scripts share (sourced, not run).
#   median V...            the median, one decimal
#   ratio A B              A / B, three decimals
#   group_options "OPT V;OPT V"   the stanza lines of those group options (empty ones skipped)
#   nic_bytes NS tx|rx DEV...      the devices' byte counters in namespace NS, space-separated
#   mb_delta "B0..." "B1..."       per device, what the counters grew by in MB, "/"-separated
#   share_delta "B0..." "B1..."    per device, its share of that growth in percent, "/"-separated
#   iperf_flow FROM TO DST CC [WRAP]   one TCP flow of $SECS seconds (the first $OMIT not counted) from
#                          namespace FROM to a server in namespace TO, the sender's congestion control CC
#                          (iperf3 -C), both ends started under WRAP (e.g. "mptcpize run"); prints
#                          "MBIT SENDER_CPU RECEIVER_CPU RETRANSMITS" (CPU: iperf3's host/remote total, %)
# Each flow takes the next server port, so flows may run at once into one namespace.
SECS=${SECS:-5}
OMIT=${OMIT:-1}
_bench_port=$((5400 + RANDOM % 200))

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v))' "$@"; }
ratio() { python3 -c "import sys; print('%.3f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
nic_bytes() {
  local ns=$1 dir=$2 d; shift 2
  for d; do ip netns exec "$ns" cat "/sys/class/net/$d/statistics/${dir}_bytes"; done | paste -sd' '
}
mb_delta() { python3 -c 'import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print("/".join("%.1f" % ((int(y) - int(x)) / 1e6) for x, y in zip(a, b)))' "$1" "$2"; }
share_delta() { python3 -c 'import sys; d = [int(y) - int(x) for x, y in zip(sys.argv[1].split(), sys.argv[2].split())]; print("/".join("%.1f" % (100.0 * v / max(sum(d), 1)) for v in d))' "$1" "$2"; }
group_options() { local IFS=';' o; for o in $1; do [ -z "$o" ] || printf '    %s\n' "$o"; done; }

iperf_flow() {
  local from=$1 to=$2 dst=$3 cc=$4 wrap=${5:-} port
  _bench_port=$((_bench_port + 1)); port=$_bench_port
  # shellcheck disable=SC2086
  ip netns exec "$to" $wrap iperf3 -s -1 -p $port >/dev/null 2>&1 &
  local spid=$!
  for _ in $(seq 30); do ip netns exec "$to" ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.1; done
  # shellcheck disable=SC2086
  ip netns exec "$from" timeout $((SECS + OMIT + 20)) $wrap iperf3 -c "$dst" -p $port -t "$SECS" -O "$OMIT" -C "$cc" -J \
    | python3 -c 'import json,sys
d=json.load(sys.stdin); e=d.get("end",{}); c=e.get("cpu_utilization_percent",{})
print(round(e.get("sum_received",{}).get("bits_per_second",0)/1e6,1), round(c.get("host_total",0),1), round(c.get("remote_total",0),1), e.get("sum_sent",{}).get("retransmits",0))'
  wait $spid 2>/dev/null || true
}
