#!/bin/sh
# deb-deps.sh: install what building the Debian package needs, only what is missing (`make deb-deps`).
#
# The Build-Depends of debian/control (debhelper, dh-golang, golang-go >= 2:1.23~), plus the tools `make deb`
# and `make deb-lint` run (dpkg-dev, fakeroot, lintian, git). Debian 12's own golang-go is 1.19: Go 1.23
# comes from bookworm-backports (golang-go 2:1.23~2~bpo12+1, which installs golang-1.23-go). When a
# configured apt source offers it, it is installed from there. When none does (a Debian 12 host whose
# sources have no backports line), it is installed from ${codename}-backports of the Debian mirror the
# host's sources already name, through a one-shot source list given to apt-get on the command line: the
# host's /etc/apt is not changed, and a later plain `apt-get update` forgets the backports index again.
set -eu

GO_MIN=2:1.23~
tools="debhelper dpkg-dev dh-golang fakeroot lintian git"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q "install ok installed"; }
go_ok() {
	v=$(dpkg-query -W -f='${Version}' golang-go 2>/dev/null) || return 1
	installed golang-go && dpkg --compare-versions "$v" ge "$GO_MIN"
}

missing=
for p in $tools; do installed "$p" || missing="$missing $p"; done
updated=
if [ -n "$missing" ]; then
	echo "installing:$missing"
	apt-get update -qq
	updated=1
	apt-get install -y -qq --no-install-recommends $missing
fi

if ! go_ok; then
	[ -n "$updated" ] || apt-get update -qq
	# the first configured suite that has golang-go >= GO_MIN
	suite=$(apt-cache madison golang-go | while IFS='|' read -r _ ver src; do
		ver=$(echo "$ver" | tr -d ' ')
		if dpkg --compare-versions "$ver" ge "$GO_MIN"; then
			echo "$src" | awk '{print $2}' | cut -d/ -f1
			break
		fi
	done)
	if [ -n "$suite" ]; then
		echo "installing golang-go (>= $GO_MIN) from $suite"
		apt-get install -y -qq --no-install-recommends -t "$suite" golang-go
	else
		. /etc/os-release
		codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
		# the mirror of the configured Debian source for this release, e.g. the URI of debian.sources
		mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 'Created-By: Packages' |
			awk -v s="$codename" '$2 == s { print $1; exit }')
		[ -n "$mirror" ] || { echo "no apt source for $codename: cannot find a mirror for $codename-backports" >&2; exit 1; }
		list=$(mktemp --suffix=.list)
		trap 'rm -f "$list"' EXIT
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename-backports main" >"$list"
		echo "installing golang-go (>= $GO_MIN) from $codename-backports of $mirror (one-shot source, /etc/apt unchanged)"
		apt-get -o Dir::Etc::SourceList="$list" update -qq
		apt-get -o Dir::Etc::SourceList="$list" install -y -qq --no-install-recommends -t "$codename-backports" golang-go
		# drop the backports index again: apt's lists match the host's own sources
		apt-get update -qq
	fi
	go_ok || { echo "golang-go >= $GO_MIN is still not installed" >&2; exit 1; }
fi
echo "Debian's Go: $(/usr/lib/go/bin/go version)"
dpkg-checkbuilddeps
echo "build dependencies: ok"
