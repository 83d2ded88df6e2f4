#!/bin/bash
# base.sh CACHEDIR: make (once) a minimal Debian 12 root for the boot test and print its path.
#
# debootstrap --variant=minbase plus what a booted ifupdown host with linkagg needs: systemd as init, dbus,
# ifupdown, iproute2, nftables, and iperf3 and ping for the test's traffic. The mirror is the one this
# machine's apt sources name for Debian (apt-get indextargets), so no host name is written here; the keyring
# is debian-archive-keyring's. The root is cached under CACHEDIR/bookworm-HASH (HASH of this script, so a
# change of the package list makes a new root) and made under a lock, into a temporary folder renamed into
# place when complete: an interrupted run leaves no half root behind for the next one. Roots of other
# hashes are removed. About 250 MB and 2-3 minutes on a fresh machine.
set -euo pipefail
cache=${1:?usage: base.sh CACHEDIR}
suite=bookworm
include=systemd,systemd-sysv,dbus,ifupdown,iproute2,nftables,iperf3,iputils-ping
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

hash=$(sha256sum "$0" | cut -c1-12)
root=$cache/$suite-$hash
mkdir -p "$cache"
exec 9>"$cache/lock"
flock -w 900 9 || { echo "base.sh: $cache/lock held for 15 minutes" >&2; exit 1; }
if [ -f "$root/.complete" ]; then
	echo "$root"
	exit 0
fi
for old in "$cache"/$suite-*; do
	[ -e "$old" ] && [ "$old" != "$root" ] && rm -rf --one-file-system "$old"
done

# the configured mirror of Debian: the site of the suite $suite, else of any Debian suite but -security
mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(ORIGIN)' 'Created-By: Packages' 2>/dev/null |
	awk -v s="$suite" '$2 == s { print $1; exit }')
if [ -z "$mirror" ]; then
	mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
		awk '$2 !~ /-security$/ && $1 ~ /debian\/?$/ { print $1; exit }')
fi
[ -n "$mirror" ] || { echo "base.sh: no Debian mirror in this machine's apt sources (apt-get indextargets)" >&2; exit 1; }
[ -f "$keyring" ] || { echo "base.sh: $keyring missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

tmp=$root.tmp.$$
trap 'rm -rf --one-file-system "$tmp"' EXIT
echo "base.sh: debootstrap $suite from $mirror into $root" >&2
start=$(date +%s)
debootstrap --variant=minbase --keyring="$keyring" --include="$include" "$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }

# what every booted test host shares. No hostname (nspawn's --machine names it); no apt timers, no
# console login, no e2scrub: nothing the test does not look at runs at boot.
rm -f "$tmp/etc/hostname"
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
	console-getty.service getty@.service systemd-timesyncd.service; do
	ln -sf /dev/null "$tmp/etc/systemd/system/$u"
done
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"* 2>/dev/null || true
echo "$mirror $suite $(date -u +%FT%TZ) $(($(date +%s) - start))s" >"$tmp/.complete"
mv "$tmp" "$root"
trap - EXIT
echo "base.sh: made $root in $(($(date +%s) - start))s" >&2
echo "$root"
