# Debian packaging targets, included by the main Makefile.
#   make deb-deps   install what building the package needs, only what is missing (packaging/deb-deps.sh:
#                   debhelper, dh-golang, Go >= 1.23 as golang-go from bookworm-backports, lintian, ...)
#   make vendor     refresh vendor/ from go.mod (commit the result; the package build never downloads)
#   make deb        the source package (.dsc, .orig.tar.gz without debian/, .debian.tar.xz) and the binary
#                   packages (linkagg-hooks, linkagg-hooks-dbgsym), all in build/ (or DEB_OUT=DIR)
#   make deb-lint   make deb, then lintian --pedantic on all of it: no tag allowed but the overridden ones
# See debian/README.source.

DEB_PKG         := linkagg-hooks
DEB_VERSION      = $(shell dpkg-parsechangelog -S Version)
DEB_UPSTREAM     = $(shell dpkg-parsechangelog -S Version | sed 's/-[^-]*$$//')
DEB_ARCH         = $(shell dpkg --print-architecture)
DEB_OUT         ?= build
DEB_FILE         = $(DEB_OUT)/$(DEB_PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_CHANGES      = $(DEB_OUT)/$(DEB_PKG)_$(DEB_VERSION)_$(DEB_ARCH).changes
DEB_SRCDIR       = $(DEB_OUT)/deb/src
# the .orig.tar.gz: tar's mtime is the changelog's date, so the same tree gives the same tarball
DEB_EPOCH        = $(shell dpkg-parsechangelog -S Timestamp)

.PHONY: deb deb-deps deb-lint deb-orig vendor

deb-deps:
	sh packaging/deb-deps.sh

vendor:
	$(GO) mod vendor

# deb-orig: the upstream tarball from the files git tracks (as they are in the work tree), less debian/.
deb-orig:
	@command -v git >/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "make deb needs a git work tree (the .orig.tar.gz is made from the files git tracks)"; exit 1; }
	@test -f vendor/modules.txt || { echo "vendor/ is missing: run 'make vendor' (see debian/README.source)"; exit 1; }
	rm -rf $(DEB_SRCDIR) && mkdir -p $(DEB_SRCDIR)
	git ls-files -z -- . ':!:debian' | while IFS= read -r -d '' f; do \
	  if [ -e "$$f" ] || [ -L "$$f" ]; then printf '%s\0' "$$f"; fi; done > $(DEB_SRCDIR)/files
	tar --null -T $(DEB_SRCDIR)/files --sort=name --mtime=@$(DEB_EPOCH) --owner=0 --group=0 --numeric-owner \
	  --mode=u+rw,go+r,go-w --transform 's,^,$(DEB_PKG)-$(DEB_UPSTREAM)/,' -cf - \
	  | gzip -9n > $(DEB_SRCDIR)/$(DEB_PKG)_$(DEB_UPSTREAM).orig.tar.gz
	rm -f $(DEB_SRCDIR)/files

# deb: unpack the .orig in build/deb/src, add debian/ and run dpkg-buildpackage there (source and binary, with
# its usual clean), so the package is built from exactly what the source package holds; the developers'
# build/ outside build/deb is not touched. No -d: the Build-Depends must be installed (make deb-deps).
# -sa: the .changes lists the .orig too. GOCACHE is passed on, as debhelper points HOME elsewhere;
# DEB_BUILD_OPTIONS (nocheck, nostrip, ...) too.
deb:
	@dpkg-checkbuilddeps || { echo "run 'make deb-deps'"; exit 1; }
	$(MAKE) --no-print-directory deb-orig
	tar -xzf $(DEB_SRCDIR)/$(DEB_PKG)_$(DEB_UPSTREAM).orig.tar.gz -C $(DEB_SRCDIR)
	cp -a debian $(DEB_SRCDIR)/$(DEB_PKG)-$(DEB_UPSTREAM)/
	cd $(DEB_SRCDIR)/$(DEB_PKG)-$(DEB_UPSTREAM) && \
	  GOCACHE="$${GOCACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/go-build}" dpkg-buildpackage -us -uc -sa
	rm -f $(DEB_OUT)/$(DEB_PKG)_* $(DEB_OUT)/$(DEB_PKG)-dbgsym_*
	for f in $(DEB_SRCDIR)/$(DEB_PKG)_* $(DEB_SRCDIR)/$(DEB_PKG)-dbgsym_*; do [ ! -e "$$f" ] || mv -f "$$f" $(DEB_OUT)/; done
	rm -rf $(DEB_SRCDIR)
	@echo "built $(DEB_FILE) and the source package $(DEB_PKG)_$(DEB_VERSION).dsc in $(DEB_OUT)/"

deb-lint: deb
	lintian --pedantic --info --fail-on error,warning,info,pedantic $(DEB_CHANGES)
