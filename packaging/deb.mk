# Debian packaging targets, included by the main Makefile.
#   make deb-deps   install what building the .deb needs (only what is missing) and check `go version`
#   make vendor     refresh vendor/ from go.mod (commit the result; the package build never downloads)
#   make deb        build build/linkagg-hooks_<version>_<arch>.deb (binary package only)
#   make deb-lint   make deb, then lintian: no error and no warning allowed
# See debian/README.source.

DEB_BUILD_DEBS := debhelper dpkg-dev lintian fakeroot
DEB_PKG        := linkagg-hooks
DEB_VERSION     = $(shell dpkg-parsechangelog -S Version)
DEB_ARCH        = $(shell dpkg --print-architecture)
DEB_FILE        = build/$(DEB_PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb
# go.mod's go line, e.g. 1.26.8
GO_MIN         := $(shell sed -n 's/^go \([0-9.]*\).*/\1/p' go.mod)

.PHONY: deb deb-deps deb-check-go deb-lint vendor

deb-deps:
	@missing=$$(for p in $(DEB_BUILD_DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	@$(MAKE) --no-print-directory deb-check-go

deb-check-go:
	@v=$$($(GO) env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//'); \
	if [ -z "$$v" ]; then echo "no go on PATH: Go >= $(GO_MIN) is needed (e.g. /usr/local/go/bin; Debian 12's golang-go is too old)"; exit 1; fi; \
	if [ "$$(printf '%s\n%s\n' "$(GO_MIN)" "$$v" | sort -V | head -n1)" != "$(GO_MIN)" ]; then \
	  echo "go $$v on PATH is older than go.mod's go $(GO_MIN) (Debian 12's golang-go is too old; see debian/README.source)"; exit 1; fi; \
	echo "go $$v >= $(GO_MIN): ok"

vendor:
	$(GO) mod vendor

# dpkg-buildpackage writes into the parent folder; the results are moved to build/. The pre-clean of
# dpkg-buildpackage is replaced by dh_clean (which does not run `make clean`, so build/ of a concurrent
# `make test` survives); debian/rules builds into build/deb/. -d: golang-go is not a Debian package here
# (deb-check-go checks the go on PATH instead). GOCACHE is kept, as debhelper points HOME elsewhere.
deb: deb-check-go
	@test -f vendor/modules.txt || { echo "vendor/ is missing: run 'make vendor' (see debian/README.source)"; exit 1; }
	@dpkg-checkbuilddeps -d 'debhelper-compat (= 13), dpkg-dev' || { echo "run 'make deb-deps'"; exit 1; }
	rm -f build/$(DEB_PKG)_*.deb build/$(DEB_PKG)_*.changes build/$(DEB_PKG)_*.buildinfo
	dh_clean
	GOCACHE=$$($(GO) env GOCACHE) dpkg-buildpackage -b -us -uc -d -nc
	mkdir -p build
	v=$(DEB_VERSION); a=$(DEB_ARCH); \
	for f in $(DEB_PKG)_$${v}_$${a}.deb $(DEB_PKG)_$${v}_$${a}.buildinfo $(DEB_PKG)_$${v}_$${a}.changes; do \
	  mv -f ../$$f build/; done
	@echo "built $(DEB_FILE)"

deb-lint: deb
	lintian --fail-on error,warning --info $(DEB_FILE)
