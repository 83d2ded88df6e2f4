#!/bin/bash
# bench-tcp.sh (make bench): one TCP flow VIP -> VIP in every mode, under cubic and bbr (iperf3 -C), on the
# link sets 4x250, 300/200 and 400/250/100/150 Mbit/s (two hosts, tests/lab/twohost.sh: veth pairs shaped
# with htb both ways), configured through the real ifupdown (tests/lab/ifupdown-netns.sh). Each stanza says
# its paths' rates with `speed` (a veth reports a fixed 10000 Mbit/s whatever shapes it; a NIC reports its
# own): the defaults derive the weights and the striping unit from them. Each figure is the median of REPEAT runs of SECS seconds (the first OMIT not counted),
# the configurations alternating within each run; each ratio is to the sum of the links alone, measured in
# the same run (a plain flow over each link's own subnet).
#   alone       each link alone, summed
#   packet      mode packet, linkagg's defaults (weights and unit from the speeds)
#   gsoN        mode packet with gso-max-size N (gso65536: the kernel's default, no cap on the striping unit)
#   X+wlen0     configuration X with `tcp-min-rtt-wlen 0` (a namespace-wide TCP sysctl, off by default)
#   X+w         configuration X with `weight` equal to the link rates (as every stanza had before `speed`;
#               packet+w@DIR measures a build older than `speed`, which ignores that option)
#   X+nospeed   configuration X without `speed` (what a group on veths gets when nobody says their rate)
#   X@DIR       configuration X made by the binaries in DIR (e.g. CONFIGS="packet packet@/tmp/old": a
#               before/after of two builds in one run; script and the mptcp configs too)
#   script      the same state as `packet` made by the ip/nft commands of `linkagg plan` (hand-written way)
#   hyb-tcp     mode hybrid, a plain TCP flow (striped)
#   hyb-mptcp   mode hybrid, an MPTCP flow (mptcpize run)
#   mptcp       mode mptcp, an MPTCP flow (mptcpize run)
# and, for packet and the gsoN variants, the CPU the flow costs: the whole machine's busy time during the flow (both
# hosts share its cores) in percent of one core, and iperf3's own sender/receiver process CPU.
# Needs root, build/bin (make build; BIN=DIR measures the binaries in DIR instead, e.g. an older build) and the
# packages of make deps. The per-run lines (stderr) also give the bytes each link carried, as A sent and B received them.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=${BIN:-$top/build/bin}
REPEAT=${REPEAT:-3}
LINKSETS=${LINKSETS:-"250,250,250,250 300,200 400,250,100,150"}
CCS=${CCS:-"cubic bbr"}
CONFIGS=${CONFIGS:-"packet gso65536 gso8192 script hyb-tcp hyb-mptcp mptcp"}
P=lgtcp
NET=93
# shellcheck source=lab/benchlib.sh
. "$lab/benchlib.sh"
[ "$(id -u)" = 0 ] || { echo "bench-tcp needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin/linkagg-ifupdown" ] || { echo "no $bin/linkagg-ifupdown: run make build" >&2; exit 1; }
work=$(mktemp -d)
chmod 755 "$work"
trap 'lab_cleanup; rm -rf "$work"' EXIT

# flow_cpu CC [WRAP] -> "MBIT MACHINE_BUSY_%_OF_ONE_CORE SENDER_CPU RECEIVER_CPU RETRANSMITS A_TX_MB B_RX_MB"
# (the last two per link, "/"-separated: what A's links sent and B's links received during the flow)
flow_cpu() {
  local b0 b1 out tx0 rx0
  tx0=$(nic_bytes ${P}A tx "${dev_a[@]}"); rx0=$(nic_bytes ${P}B rx "${dev_b[@]}")
  b0=$(busy); out=$(iperf_flow ${P}A ${P}B 10.$NET.255.20 "$@"); b1=$(busy)
  python3 -c "import sys,os
b0=[int(x) for x in sys.argv[1].split()]; b1=[int(x) for x in sys.argv[2].split()]; m,s,r,x=sys.argv[3].split()
print(m, round(100.0*(b1[0]-b0[0])/(b1[1]-b0[1])*os.cpu_count(),1), s, r, x)" "$b0" "$b1" "$out" | tr -d '\n'
  echo " $(mb_delta "$tx0" "$(nic_bytes ${P}A tx "${dev_a[@]}")") $(mb_delta "$rx0" "$(nic_bytes ${P}B rx "${dev_b[@]}")")"
}


echo "== one TCP flow, every mode, cubic and bbr, $REPEAT runs of ${SECS}s (first ${OMIT}s not counted), median; $(nproc) cores, $(uname -r), $(date -u +%F)"
for set in $LINKSETS; do
  rates=${set//,/ }
  read -r -a r <<<"$rates"
  lab_up "$rates"
  declare -A res=()
  for rep in $(seq "$REPEAT"); do
    for cc in $CCS; do
      lab_configure "$set" packet ""
      sum=0
      for i in "${!r[@]}"; do read -r v _ <<<"$(iperf_flow ${P}A ${P}B 10.$NET.$i.20 $cc)"; sum=$(python3 -c "print($sum + $v)"); done
      res[$cc,alone]+=" $sum"
      for c in $CONFIGS; do
        # NAME[+SUFFIX...][@DIR]: benchlib.sh lab_variant (DIR: another build's binaries, same run)
        lab_variant "$c"
        c0=$variant_name extra=$variant_extra cbin=$variant_bin
        [ "$cbin" = "$bin" ] || lab_use_bin "$cbin"
        case $c0 in
          packet) lab_configure "$set" packet "$extra"; out=$(flow_cpu $cc) ;;
          gso*) lab_configure "$set" packet "gso-max-size ${c0#gso};$extra"; out=$(flow_cpu $cc) ;;
          script)
            lab_configure "$set" packet "$extra"
            for h in A B; do
              ip netns exec $P$h "$cbin/linkagg" --interfaces "$work/etc-$h/interfaces" --confdir "$work/none" --run-dir "$work/etc-$h/run-linkagg" plan > "$work/plan$h.sh"
              "$lab/ifupdown-netns.sh" $P$h "$work/etc-$h" ifdown tun0 >/dev/null
              ip netns exec $P$h bash "$work/plan$h.sh" >/dev/null 2>&1
            done
            out=$(flow_cpu $cc)
            for h in A B; do ip netns exec $P$h nft delete table ip linkagg_tun0; ip -n $P$h link del tun0; ip netns exec $P$h bash -c 'ip rule flush; ip rule add pref 32766 lookup main; ip rule add pref 32767 lookup default; sysctl -qw net.ipv4.tcp_min_rtt_wlen=300'; done ;;
          hyb-tcp) lab_configure "$set" hybrid "$extra"; out=$(flow_cpu $cc) ;;
          hyb-mptcp) lab_configure "$set" hybrid "$extra"; out=$(flow_cpu $cc "mptcpize run") ;;
          mptcp) lab_configure "$set" mptcp "$extra"; out=$(flow_cpu $cc "mptcpize run") ;;
        esac
        [ "$cbin" = "$bin" ] || lab_use_bin "$bin"
        read -r m cpu s rcv x _ <<<"$out"
        res[$cc,$c]+=" $m"; res[$cc,$c,cpu]+=" $cpu"; res[$cc,$c,snd]+=" $s"; res[$cc,$c,rcv]+=" $rcv"; res[$cc,$c,rtx]+=" $x"
        echo "   ${set} run $rep $cc $c: $out (Mbit/s, machine busy % of a core, sender %, receiver %, retransmits, MB sent per link by A, MB received per link by B)" >&2
      done
    done
  done
  lab_cleanup
  echo "-- links ${rates// //} Mbit/s"
  for cc in $CCS; do
    s=$(median ${res[$cc,alone]})
    line=$(printf '  %-5s alone %6s' $cc "$s")
    for c in $CONFIGS; do
      m=$(median ${res[$cc,$c]})
      line+=$(printf ' | %s %6s (%s)' $c "$m" "$(ratio "$m" "$s")")
    done
    echo "$line"
    for c in $CONFIGS; do
      case $c in packet*|gso*)
        printf '  %-5s   %-7s CPU: machine %5s%% of a core, iperf3 sender %5s%%, receiver %5s%%, retransmits %s\n' $cc $c \
          "$(median ${res[$cc,$c,cpu]})" "$(median ${res[$cc,$c,snd]})" "$(median ${res[$cc,$c,rcv]})" "$(median ${res[$cc,$c,rtx]})" ;;
      esac
    done
  done
  unset res
done
