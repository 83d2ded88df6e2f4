#!/bin/bash
# ifupdown-netns.sh: run the REAL ifup/ifdown/ifquery inside a network namespace with a private /etc/network
# and a private /run.
#   ifupdown-netns.sh NETNS ETCDIR ifup|ifdown|ifquery ARGS...
# ETCDIR holds `interfaces` and the hook folders if-pre-up.d, if-up.d, if-down.d, if-post-down.d. `ip netns exec`
# gives a private mount namespace, so the bind mount over /etc/network is seen by ifupdown and the hooks it
# runs, and by nothing outside. /run becomes a tmpfs with ETCDIR/run-linkagg bound on /run/linkagg, so the
# hooks keep their lock and state across calls without touching the host's /run (ifupdown passes no
# environment of ours to its hooks, so paths cannot be changed by variables). ifupdown state: ETCDIR/run.
# `ip netns exec` mounts a fresh /sys, without the bpffs at /sys/fs/bpf: a folder ETCDIR/bpffs (a bpffs the
# test mounted) is bound there, so mptcp-transparent's pins outlive each hook call as on a real host.
set -eu
[ $# -ge 3 ] || { echo "usage: ifupdown-netns.sh NETNS ETCDIR ifup|ifdown|ifquery ARGS..." >&2; exit 2; }
ns=$1; etc=$(cd "$2" && pwd); shift 2
mkdir -p "$etc/run" "$etc/run-linkagg" "$etc"/if-pre-up.d "$etc"/if-up.d "$etc"/if-down.d "$etc"/if-post-down.d
exec ip netns exec "$ns" sh -c '
  etc=$1; shift
  mount --bind "$etc" /etc/network
  mount -t tmpfs tmpfs /run && mkdir -p /run/linkagg /run/network && mount --bind "$etc/run-linkagg" /run/linkagg
  if [ -d "$etc/bpffs" ]; then mount --bind "$etc/bpffs" /sys/fs/bpf; fi
  exec "$@"' sh "$etc" "$@" --state-dir="$etc/run"
