#!/bin/bash
# bench-apps.sh (make bench): real programs moving one file VIP -> VIP over the aggregate, each against the
# same program over the fastest link alone (to the peer's address on that link, no TUN involved), under
# cubic and bbr (net.ipv4.tcp_congestion_control of both hosts), two hosts of tests/lab/twohost.sh
# configured through the real ifupdown with linkagg's defaults (benchlib.sh lab_configure):
#   scp     OpenSSH's scp (SFTP protocol, the default since 9.0) of the file to /dev/null
#   rsync   rsync over ssh of the file to a new file on tmpfs (whole file: no destination to diff against)
#   http    curl fetching the file from nginx (sendfile), the server on the sending host
# Each figure is the median of REPEAT transfers of a FILE_MB file held in /dev/shm (no disk on either end).
# It prints, per program: Mbit/s alone and aggregated, the ratio, what the links allow (their sum over the
# fastest, e.g. 4x on 4x250), the share of that possible gain the program gets ((ratio-1)/(possible-1)),
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
  for f in "$work/sshd.pid" "$work/nginx.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
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
PidFile $work/sshd.pid
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

# servers: sshd in B (its privilege separation folder on a /run of its own: `ip netns exec` gives a
# private mount namespace), nginx in A
start_servers() {
  stop_servers
  ip netns exec ${P}B sh -c 'mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -f "$1"' sh "$work/sshd_config"
  ip netns exec ${P}A nginx -c "$work/nginx.conf" -p "$work" >/dev/null
  local i
  for i in $(seq 50); do
    ip netns exec ${P}B ss -ltn 'sport = :2222' | grep -q LISTEN && ip netns exec ${P}A ss -ltn 'sport = :8080' | grep -q LISTEN && return
    sleep 0.1
  done
  echo "sshd or nginx did not start" >&2; exit 1
}

# transfer APP TO_B FROM_A -> "MBIT MACHINE_BUSY_% A_TX_MB B_RX_MB": APP moves the file from A to B, B's
# address TO_B (scp, rsync) or A's address FROM_A (http, fetched by B)
transfer() {
  local app=$1 to=$2 from=$3 t0 t1 b0 b1 tx0 rx0 mbit
  rm -f "$shm/dst"
  tx0=$(nic_bytes ${P}A tx "${dev_a[@]}"); rx0=$(nic_bytes ${P}B rx "${dev_b[@]}")
  b0=$(busy); t0=$(date +%s%N)
  case $app in
    scp) ip netns exec ${P}A scp -q -F /dev/null -i "$work/id" -P 2222 -o BatchMode=yes -o StrictHostKeyChecking=no \
           -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$shm/file" "root@$to:/dev/null" ;;
    rsync) ip netns exec ${P}A rsync -e "$SSH" "$shm/file" "root@$to:$shm/dst" ;;
    http) ip netns exec ${P}B curl -sf -o /dev/null "http://$from:8080/file" ;;
  esac
  t1=$(date +%s%N); b1=$(busy)
  mbit=$(python3 -c "print(round($FILE_MB * 8 * 1.048576 / (($t1 - $t0) / 1e9), 1))")
  python3 -c "import sys,os
b0=[int(x) for x in sys.argv[1].split()]; b1=[int(x) for x in sys.argv[2].split()]
print(sys.argv[3], round(100.0*(b1[0]-b0[0])/(b1[1]-b0[1])*os.cpu_count(),1), end=' ')" "$b0" "$b1" "$mbit"
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
      for cc in $CCS; do
        for h in A B; do ip netns exec $P$h sysctl -qw net.ipv4.tcp_congestion_control=$cc; done
        for app in $APPS; do
          read -r a acpu _ <<<"$(transfer $app 10.$NET.$fast.20 10.$NET.$fast.10)"
          out=$(transfer $app 10.$NET.255.20 10.$NET.255.10)
          read -r m mcpu _ <<<"$out"
          res[$c,$cc,$app,alone]+=" $a"; res[$c,$cc,$app,agg]+=" $m"; res[$c,$cc,$app,acpu]+=" $acpu"; res[$c,$cc,$app,cpu]+=" $mcpu"
          echo "   $set run $rep $c $cc $app: alone $a Mbit/s (machine $acpu %), aggregate $out (Mbit/s, machine busy % of a core, MB sent per link by A, MB received per link by B)" >&2
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
        a=$(median ${res[$c,$cc,$app,alone]}); m=$(median ${res[$c,$cc,$app,agg]})
        x=$(ratio "$m" "$a")
        printf '  %-14s %-5s %-5s alone %7s Mbit/s (machine %5s%%) | aggregate %7s Mbit/s (machine %5s%%) | %5sx of %sx, %s of the possible gain\n' \
          "$c" $cc $app "$a" "$(median ${res[$c,$cc,$app,acpu]})" "$m" "$(median ${res[$c,$cc,$app,cpu]})" "$x" "$possible" \
          "$(python3 -c "print('%.2f' % (($x - 1) / ($possible - 1)))")"
      done
    done
  done
  unset res
done
