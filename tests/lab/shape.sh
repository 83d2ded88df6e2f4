# shape.sh: how the labs (twohost.sh, switch.sh) shape a link; sourced, not run.
# shape NS DEV MBIT: the device's egress limited to MBIT, by $SHAPER:
#   htb  (default) htb with a large r2q so quantum stays sane at high rates; its default class carries
#        everything. htb sends a GSO packet (up to 64 KB) as one unit, at once when it has the tokens;
#   tbf  a token bucket of 4 frames: GSO packets are cut into frames at enqueue and leave at the link's rate,
#        one frame after the other, as a real NIC serializes a TSO burst; 1000 frames of queue, as htb's
#        default pfifo (txqueuelen 1000);
#   none no shaping: the veth as fast as this machine's CPU moves it (MBIT is only what `speed` will say).
shape() {
  case ${SHAPER:-htb} in
  htb) ip netns exec "$1" tc qdisc add dev "$2" root handle 1: htb default 1 r2q 1000
       ip netns exec "$1" tc class add dev "$2" parent 1: classid 1:1 htb rate "$3"mbit ceil "$3"mbit ;;
  tbf) ip netns exec "$1" tc qdisc add dev "$2" root handle 1: tbf rate "$3"mbit burst 6056 limit 1514000 ;;
  none) ;;
  *) echo "SHAPER is htb, tbf or none" >&2; exit 2 ;;
  esac
}
# niclike NS DEV (NICLIKE=1): make a veth behave more like a NIC on a LAN than like a pipe with no delay.
# A veth hands a TCP super-packet to its peer whole and at once: the round trip is ~5 us, so TCP's minimum
# RTT (and with it RACK's reordering window, min_rtt/4) is 10-20 times smaller than on a 1 Gbit LAN. Here
# the sender cuts packets into frames (TSO off: software GSO at the device, as a NIC's TSO puts frames on
# the wire) and the receiver takes them through NAPI with GRO and an interrupt moderation of
# $NIC_USECS us (50: a common rx-usecs default): napi_defer_hard_irqs + gro_flush_timeout hold a poll
# back until the timer. Ping between two such hosts: ~0.04 ms min, ~0.1 ms average (0.01 / 0.04 without).
niclike() {
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro on >/dev/null
  ip netns exec "$1" sh -c "echo $((${NIC_USECS:-50} * 1000)) > /sys/class/net/$2/gro_flush_timeout; echo 1000 > /sys/class/net/$2/napi_defer_hard_irqs"
}
# shape_link NS DEV MBIT: shape, and niclike when NICLIKE=1
shape_link() {
  shape "$@"
  [ "${NICLIKE:-0}" = 0 ] || niclike "$1" "$2"
}
