#!/bin/sh
# nspawn.sh NAME NSPAWN-ARGS...   run systemd-nspawn in a cgroup of its own (the boot test's containers)
# nspawn.sh --cleanup NAME        remove that cgroup again (after the container has exited)
#
# systemd-nspawn puts the container's payload into a "payload" cgroup below its own. Two containers started
# from the same cgroup would share it, and a container shutting down would then stop the other's processes
# (ifupdown's `ifdown -a` at shutdown fails). On a host whose PID 1 is systemd the caller wraps this in
# `systemd-run --scope` (LB_SCOPE=1): the scope is that cgroup. On a host without systemd (a container or
# microVM init), this script makes linkagg-boot-NAME in every cgroup hierarchy nspawn uses (the cgroup2
# mount and the v1 name=systemd one, where present) and moves itself there before exec'ing nspawn.
# Never registers with machined (--register=no) and keeps the unit/cgroup it runs in (--keep-unit).
set -eu

cgroup_dirs() {
	# mount points of cgroup2 and of the v1 "name=systemd" hierarchy
	awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break
		if ($(i+1) == "cgroup2" || ($(i+1) == "cgroup" && $(i+3) ~ /(^|,)name=systemd(,|$)/)) print $5 }' /proc/self/mountinfo
}

if [ "${1:-}" = --cleanup ]; then
	name=${2:?}
	for m in $(cgroup_dirs); do
		d=$m/linkagg-boot-$name
		[ -d "$d" ] || continue
		# deepest first; a cgroup with processes left cannot be removed, which is reported
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[ ! -d "$d" ] || { echo "nspawn.sh: $d still exists: $(cat "$d/cgroup.procs" 2>/dev/null | tr '\n' ' ')" >&2; exit 1; }
	done
	exit 0
fi

name=${1:?usage: nspawn.sh NAME NSPAWN-ARGS...}
shift
if [ "${LB_SCOPE:-0}" != 1 ]; then
	for m in $(cgroup_dirs); do
		d=$m/linkagg-boot-$name
		mkdir -p "$d"
		echo $$ >"$d/cgroup.procs"
	done
fi
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_NSPAWN_API_VFS_WRITABLE=network
exec systemd-nspawn --register=no --keep-unit "$@"
