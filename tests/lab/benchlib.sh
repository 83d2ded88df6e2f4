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
#   busy                   the machine's busy and total CPU ticks so far (/proc/stat)
# Each flow takes the next server port, so flows may run at once into one namespace.
#
# The two-host lab through the real ifupdown (twohost.sh, ifupdown-netns.sh), with $P, $NET and $work set:
#   lab_up RATES            hosts ${P}A/${P}B joined by links of RATES ("1000 250"), unaddressed; the hooks
#                           ifupdown runs are $bin's; dev_a/dev_b name each host's links
#   lab_configure RATES MODE EXTRA   both hosts' tun0 down and up again by ifupdown with a new stanza: the
#                           links addressed 10.$NET.i.10|20/24, tun0 10.$NET.255.10|20, `speed RATES` (a veth
#                           reports no rate; EXTRA "nospeed" leaves it out) and the group options EXTRA
#   lab_use_bin DIR         the hooks are DIR's from now on (tun0 goes down first, by the hooks that made it)
#   lab_cleanup             everything down, the namespaces gone
SECS=${SECS:-5}
OMIT=${OMIT:-1}
_bench_port=$((5400 + RANDOM % 200))

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:] if x != "none"]; print("%.1f" % statistics.median(v) if v else "none")' "$@"; }
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

busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# lab_interfaces H N RATES MODE EXTRA: host H's (.N) NICs and its tun0 group, EXTRA options (";"-separated)
lab_interfaces() {
  local h=$1 n=$2 mode=$4 extra=$5 i peer o
  local -a r=(${3//,/ })
  local l=$(echo "$h" | tr AB ab)
  {
    for i in "${!r[@]}"; do printf 'auto %s%s%d\niface %s%s%d inet static\n    address 10.%d.%d.%d/24\n\n' $P $l $i $P $l $i $NET $i $n; done
    printf 'auto tun0\niface tun0 inet static\n    address 10.%d.255.%d\n    netmask 255.255.255.255\n' $NET $n
    printf '    fakenet 10.%d.255.0/24\n    table' $NET; for i in "${!r[@]}"; do printf ' %d' $((43000 + i)); done
    printf '\n    mode %s\n' "$mode"
    case ";$extra;" in *";nospeed;"*) ;; *) printf '    speed %s\n' "${r[*]}" ;; esac
    group_options "${extra//nospeed/}"
    for peer in 10 20; do printf '    rspec 10.%d.255.%d' $NET $peer; for i in "${!r[@]}"; do printf ':10.%d.%d.%d' $NET $i $peer; done; echo; done
  } > "$work/etc-$h/interfaces"
}

# lab_use_bin DIR: the hooks ifupdown runs are DIR's linkagg-ifupdown from now on; tun0 goes down first, by the
# hooks that brought it up
lab_use_bin() {
  local h d
  [ -x "$1/linkagg-ifupdown" ] || { echo "no $1/linkagg-ifupdown" >&2; exit 1; }
  for h in A B; do
    "$lab/ifupdown-netns.sh" $P$h "$work/etc-$h" ifdown tun0 >/dev/null 2>&1 || true
    for d in if-pre-up.d if-up.d if-down.d if-post-down.d; do ln -sfn "$1/linkagg-ifupdown" "$work/etc-$h/$d/linkagg"; done
  done
}

# lab_configure RATES MODE EXTRA: both hosts' tun0 taken down and brought up again by ifupdown with the new stanza
lab_configure() {
  for h in A B; do
    "$lab/ifupdown-netns.sh" $P$h "$work/etc-$h" ifdown tun0 >/dev/null 2>&1 || true
    lab_interfaces $h $([ $h = A ] && echo 10 || echo 20) "$1" "$2" "$3"
    "$lab/ifupdown-netns.sh" $P$h "$work/etc-$h" ifup -a >/dev/null
  done
}


lab_up() {
  local i
  dev_a=(); dev_b=(); for i in $1; do dev_a+=(${P}a${#dev_a[@]}); dev_b+=(${P}b${#dev_b[@]}); done
  NET=$NET ADDR=0 "$lab/twohost.sh" up $P "$1" >/dev/null
  for h in A B; do mkdir -p "$work/etc-$h"/if-{pre-up,up,down,post-down}.d; done
  lab_use_bin "$bin"
}

lab_cleanup() {
  local h
  for h in A B; do [ -f "$work/etc-$h/interfaces" ] && "$lab/ifupdown-netns.sh" $P$h "$work/etc-$h" ifdown -a >/dev/null 2>&1 || true; done
  "$lab/twohost.sh" down $P >/dev/null 2>&1 || true
}

# lab_variant CONFIG: a configuration of the form NAME[+SUFFIX...][@DIR] as the benchmarks take it, into
# variant_name (NAME), variant_extra (the group options its suffixes add: +wlen0 `tcp-min-rtt-wlen 0`, +w
# `weight` equal to the link rates $rates, +nospeed no `speed`) and variant_bin (DIR, else $bin).
lab_variant() {
  local c=${1%%@*} sfx
  variant_bin=$bin
  [ "$c" = "$1" ] || variant_bin=${1#*@}
  variant_name=${c%%+*} variant_extra=""
  for sfx in $(echo "${c#"$variant_name"}" | tr '+' ' '); do
    case $sfx in
      wlen0) variant_extra+="tcp-min-rtt-wlen 0;" ;;
      w) variant_extra+="weight $rates;" ;;
      nospeed) variant_extra+="nospeed;" ;;
      *) echo "unknown configuration suffix +$sfx in $1" >&2; exit 2 ;;
    esac
  done
}
