#!/bin/bash
# bench-apps.sh (make bench): real programs moving one file VIP -> VIP over the aggregate, each against the
# same program over the fastest link alone (to the peer's address on that link, no TUN involved), under
# cubic and bbr (the sender's, set by route: sender_cc), two hosts of tests/lab/twohost.sh
# configured through the real ifupdown with linkagg's defaults (benchlib.sh lab_configure):
#   scp     OpenSSH's scp (SFTP protocol, the default since 9.0) of the file to /dev/null
#   rsync   rsync over ssh of the file to a new file on tmpfs (whole file: no destination to diff against)
#   http    curl fetching the file from nginx (sendfile), the server on the sending host
# Each figure is the median of REPEAT transfers of a FILE_MB file held in /dev/shm (no disk on either end).
# It prints, per program: Mbit/s alone and aggregated, the ratio, what the links allow (their sum over the
# fastest, e.g. 4x on 4x250), the share of that possible gain the program gets ((ratio-1)/(possible-1)), the
# program's own ceiling on this machine (A to itself over loopback: ssh's cipher is one core's work at each
# end), the rate at which it would keep the whole machine busy at the CPU per bit it costs over one link
# alone, and the share of the gain it could reach here (up to the least of the links, the ceiling and that),
# and the machine's CPU while it ran (both hosts share its cores; % of one core); per transfer (stderr) also
# the bytes each link carried, as A sent and B received them.
# CONFIGS: the linkagg configurations, as in bench-tcp.sh (default "packet"; e.g. "packet packet+w@/tmp/old"
# for an older build with the weights written out). APPS picks the programs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab=$top/tests/lab
bin=${BIN:-$top/build/bin}
REPEAT=${REPEAT:-3}
LINKSETS=${LINKSETS:-"1000,1000,1000,1000 250,250,250,250"}
CCS=${CCS:-"cubic bbr"}
APPS=${APPS:-"scp rsync http"}
CONFIGS=${CONFIGS:-"packet"}
FILE_MB=${FILE_MB:-1024}
P=lgapp
NET=92
# shellcheck source=lab/benchlib.sh
. "$lab/benchlib.sh"
[ "$(id -u)" = 0 ] || { echo "bench-apps needs root (network namespaces)" >&2; exit 1; }
for c in ssh sshd rsync curl nginx; do
  command -v $c >/dev/null || [ -x /usr/sbin/$c ] || { echo "bench-apps needs $c (make deps)" >&2; exit 1; }
done
work=$(mktemp -d)
chmod 755 "$work"
shm=$(mktemp -d /dev/shm/lgapp.XXXXXX)
chmod 755 "$shm"
stop_servers() {
  local f
  for f in "$work/sshd.A.pid" "$work/sshd.B.pid" "$work/nginx.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
}
trap 'stop_servers; lab_cleanup; rm -rf "$work" "$shm"' EXIT

head -c $((FILE_MB << 20)) /dev/urandom > "$shm/file"
chmod 644 "$shm/file"
ssh-keygen -q -t ed25519 -N '' -f "$work/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
cp "$work/id.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<EOF
Port 2222
HostKey $work/hostkey
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $work/sshd.HOST.pid
Subsystem sftp internal-sftp
EOF
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log;
events {}
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi;
  scgi_temp_path $work/nginx-scgi;
  server { listen 8080; root $shm; }
}
EOF
SSH="ssh -F /dev/null -i $work/id -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

# servers: sshd in B, and in A for the programs' own ceiling over A's loopback (each its privilege separation
# folder on a /run of its own: `ip netns exec` gives a private mount namespace), nginx in A
start_servers() {
  stop_servers
  local h i
  for h in A B; do
    sed "s/HOST/$h/" "$work/sshd_config" >"$work/sshd_config.$h"
    ip netns exec $P$h sh -c 'mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -f "$1"' sh "$work/sshd_config.$h"
  done
  ip netns exec ${P}A nginx -c "$work/nginx.conf" -p "$work" >/dev/null
  for i in $(seq 50); do
    ip netns exec ${P}B ss -ltn 'sport = :2222' | grep -q LISTEN && ip netns exec ${P}A ss -ltn 'sport = :2222' | grep -q LISTEN &&
      ip netns exec ${P}A ss -ltn 'sport = :8080' | grep -q LISTEN && return
    sleep 0.1
  done
  echo "sshd or nginx did not start" >&2; exit 1
}

# sender_cc CC ADDR...: A (the sender in every transfer) uses CC towards each ADDR, by a /32 route of the same
# attributes as the one it replaces (without its proto: it is no route of linkagg's) and `congctl CC`. Not the
# namespace's net.ipv4.tcp_congestion_control: a namespace other than the first may only make an algorithm of
# net.ipv4.tcp_allowed_congestion_control its default (Debian allows reno and cubic; bbr would be refused).
sender_cc() {
  local cc=$1 a r
  shift
  for a in "$@"; do
    ip netns exec ${P}A ip route del "$a/32" 2>/dev/null || true
    r=$(ip netns exec ${P}A ip -o route show match "$a" | grep -v '^default' | tail -1)
    [ -n "$r" ] || { echo "no route to $a in ${P}A" >&2; exit 1; }
    # shellcheck disable=SC2086
    ip netns exec ${P}A ip route add "$a/32" $(sed -E 's/^[^ ]+//; s/ proto [^ ]+//; s/ congctl( lock)? [^ ]+//; s/ (linkdown|dead|offload|trap|rt_offload)\b//g' <<<"$r") congctl "$cc"
  done
}

# transfer APP TO_B FROM_A [HTTP_CLIENT] -> "MBIT MACHINE_BUSY_% RTT_MS A_TX_MB B_RX_MB": APP moves the file from A
# to B, B's address TO_B (scp, rsync) or A's address FROM_A (http, fetched by HTTP_CLIENT, default B);
# `transfer APP 127.0.0.1 127.0.0.1 A` is the program's own ceiling on this machine: A to itself, no link
transfer() {
  local app=$1 to=$2 from=$3 client=${4:-B} t0 t1 b0 b1 tx0 rx0 mbit
  rm -f "$shm/dst"
  tx0=$(nic_bytes ${P}A tx "${dev_a[@]}"); rx0=$(nic_bytes ${P}B rx "${dev_b[@]}")
  # the sender's smoothed RTT of the transfer's connection, sampled every 0.2 s while it runs (ssh's own
  # channel window, 2 MiB, caps scp and rsync at 2 MiB per RTT whatever the links)
  : >"$work/rtt"
  (while :; do ip netns exec ${P}A ss -tinH state established '( dport = :2222 or sport = :8080 )' 2>/dev/null |
    grep -o ' rtt:[0-9.]*' | head -1 | cut -d: -f2 >>"$work/rtt"; sleep 0.2; done) &
  local sampler=$!
  b0=$(busy); t0=$(date +%s%N)
  case $app in
    scp) ip netns exec ${P}A scp -q -F /dev/null -i "$work/id" -P 2222 -o BatchMode=yes -o StrictHostKeyChecking=no \
           -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$shm/file" "root@$to:$shm/dst" ;;
    rsync) ip netns exec ${P}A rsync -e "$SSH" "$shm/file" "root@$to:$shm/dst" ;;
    http) ip netns exec $P$client curl -sf -o /dev/null "http://$from:8080/file" ;;
  esac
  t1=$(date +%s%N); b1=$(busy)
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  mbit=$(python3 -c "print(round($FILE_MB * 8 * 1.048576 / (($t1 - $t0) / 1e9), 1))")
  python3 -c "import sys,os
b0=[int(x) for x in sys.argv[1].split()]; b1=[int(x) for x in sys.argv[2].split()]
r=sorted(float(x) for x in open(sys.argv[4]).read().split())
print(sys.argv[3], round(100.0*(b1[0]-b0[0])/(b1[1]-b0[1])*os.cpu_count(),1), r[len(r)//2] if r else 'none', end=' ')" "$b0" "$b1" "$mbit" "$work/rtt"
  echo "$(mb_delta "$tx0" "$(nic_bytes ${P}A tx "${dev_a[@]}")") $(mb_delta "$rx0" "$(nic_bytes ${P}B rx "${dev_b[@]}")")"
  rm -f "$shm/dst"
}

echo "== one file of $FILE_MB MiB A -> B by real programs, VIP -> VIP against the fastest link alone, $REPEAT runs, median; $(nproc) cores, $(uname -r), $(date -u +%F)"
for set in $LINKSETS; do
  rates=${set//,/ }
  read -r -a r <<<"$rates"
  fast=0; sum=0
  for i in "${!r[@]}"; do [ "${r[$i]}" -gt "${r[$fast]}" ] && fast=$i; sum=$((sum + r[i])); done
  possible=$(python3 -c "print(round($sum / ${r[$fast]}, 2))")
  lab_up "$rates"
  declare -A res=()
  for c in $CONFIGS; do
    lab_variant "$c"
    [ "$variant_bin" = "$bin" ] || lab_use_bin "$variant_bin"
    lab_configure "$set" packet "$variant_extra"
    start_servers
    for rep in $(seq "$REPEAT"); do
      for app in $APPS; do
        read -r l lcpu lrtt _ <<<"$(transfer $app 127.0.0.1 127.0.0.1 A)"
        res[$c,$app,ceil]+=" $l"; res[$c,$app,ceilcpu]+=" $lcpu"
        echo "   $set run $rep $c $app: ceiling $l Mbit/s (machine $lcpu %, srtt $lrtt ms): the program A to itself over loopback" >&2
      done
      for cc in $CCS; do
        sender_cc $cc 10.$NET.255.20 10.$NET.$fast.20
        for app in $APPS; do
          read -r a acpu artt _ <<<"$(transfer $app 10.$NET.$fast.20 10.$NET.$fast.10)"
          out=$(transfer $app 10.$NET.255.20 10.$NET.255.10)
          read -r m mcpu mrtt _ <<<"$out"
          res[$c,$cc,$app,alone]+=" $a"; res[$c,$cc,$app,agg]+=" $m"; res[$c,$cc,$app,acpu]+=" $acpu"; res[$c,$cc,$app,cpu]+=" $mcpu"
          res[$c,$cc,$app,artt]+=" $artt"; res[$c,$cc,$app,rtt]+=" $mrtt"
          echo "   $set run $rep $c $cc $app: alone $a Mbit/s (machine $acpu %, srtt $artt ms), aggregate $out (Mbit/s, machine busy % of a core, sender's median srtt ms, MB sent per link by A, MB received per link by B)" >&2
        done
      done
    done
    [ "$variant_bin" = "$bin" ] || lab_use_bin "$bin"
  done
  stop_servers
  lab_cleanup
  echo "-- links ${rates// //} Mbit/s: the links allow ${possible}x the fastest alone"
  for c in $CONFIGS; do
    for cc in $CCS; do
      for app in $APPS; do
        a=$(median ${res[$c,$cc,$app,alone]}); m=$(median ${res[$c,$cc,$app,agg]}); l=$(median ${res[$c,$app,ceil]})
        x=$(ratio "$m" "$a")
        # reach: what this program could move over these links on this machine, the lesser of the links'
        # gain over its own speed alone and its ceiling
        # and the rate at which the whole machine (nproc cores, both hosts) would be busy at the CPU per bit
        # the program costs over one link alone
        acpu=$(median ${res[$c,$cc,$app,acpu]})
        mach=$(python3 -c "import os; print(round($a * os.cpu_count() * 100 / max($acpu, 1), 1))")
        reach=$(python3 -c "print(round(min($a * $possible, $l, $mach), 1))")
        printf '  %-14s %-5s %-5s alone %7s Mbit/s (machine %5s%%, srtt %s ms) | aggregate %7s Mbit/s (machine %5s%%, srtt %s ms) | %5sx of %sx, %s of the possible gain | ceiling %s Mbit/s (machine %s%%), machine-bound %s Mbit/s: %s of the reachable gain\n' \
          "$c" $cc $app "$a" "$(median ${res[$c,$cc,$app,acpu]})" "$(median ${res[$c,$cc,$app,artt]})" "$m" \
          "$(median ${res[$c,$cc,$app,cpu]})" "$(median ${res[$c,$cc,$app,rtt]})" "$x" "$possible" \
          "$(python3 -c "print('%.2f' % (($x - 1) / ($possible - 1)))")" "$l" "$(median ${res[$c,$app,ceilcpu]})" "$mach" \
          "$(python3 -c "print('%.2f' % (($m - $a) / ($reach - $a)) if $reach > $a else 'none')")"
      done
    done
  done
  unset res
done
