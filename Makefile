# linkagg-hooks. `make demo` shows the job, `make test` runs every test (installs what the tests need).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED := 0
# Developer builds are stripped (-s -w) and carry an empty build id. debian/rules sets GO_LDFLAGS=-B gobuildid
# instead: unstripped binaries with a GNU build id derived from Go's (content-hash) build id, for dh_strip's
# -dbgsym package and DEB_BUILD_OPTIONS=nostrip.
GO_LDFLAGS ?= -s -w -buildid=
GOFLAGS_BUILD := -trimpath -buildvcs=false $(if $(wildcard vendor/modules.txt),-mod=vendor) -ldflags "$(GO_LDFLAGS) -X main.version=$(VERSION)"
BIN := build/bin
DESTDIR ?=
PREFIX ?= /usr

# Debian packages the tests, the demo and the benchmarks run against (real tools, no mocks; ethtool makes the
# NIC-like lab links of tests/lab/twohost.sh NICLIKE=1); qemu, cpio and kmod run the
# kernel tests that need a kernel other than this one (tests/vm/run.sh: Debian's 6.12 for mptcp-transparent);
# debootstrap and systemd-container (systemd-nspawn) boot two Debian 12 hosts with the built package
# (tests/boot_test.go). The Debian build's own dependencies (dh-golang, Go >= 1.23 from bookworm-backports)
# come from `make deb-deps`, which the package tests run.
TEST_DEBS := iproute2 nftables iperf3 ethtool ifupdown systemd networkd-dispatcher dbus mptcpize util-linux procps python3 iputils-ping \
	qemu-system-x86 cpio kmod bpftool \
	debhelper dpkg-dev lintian fakeroot debootstrap systemd-container
# and the real programs tests/bench-apps.sh moves files with (make bench only: their own daemons run inside the
# lab's namespaces with private keys and configuration; the packages' own services are never used)
BENCH_DEBS := $(TEST_DEBS) openssh-server openssh-client rsync nginx-light curl

.PHONY: all build test unit kernel e2e demo bench fuzz install deps clean vet

all: build

build:
	mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' ':!vendor'))" || { gofmt -l $$(git ls-files '*.go' ':!vendor'); echo "gofmt needed"; exit 1; }

# deps: install the Debian packages the tests need, only those missing
DEPS ?= $(TEST_DEBS)
deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

unit:
	$(GO) test -count=1 ./parser/ ./plan/ ./hooks/ ./health/ ./cmd/...

kernel:
	$(GO) test -count=1 -p 1 ./apply/

e2e: build
	$(GO) test -count=1 -p 1 -timeout 30m ./tests/ -v -run 'E2E'

test: deps vet build
	set -o pipefail; $(GO) test -count=1 -p 1 -timeout 60m ./... 2>&1 | tee build/test.log

demo: deps build
	./tests/demo.sh

bench: build
	$(MAKE) deps DEPS="$(BENCH_DEBS)"
	./tests/bench.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseInterfaces -fuzztime 30s ./parser/
	$(GO) test -run '^$$' -fuzz FuzzParseRspecEntry -fuzztime 30s ./parser/
	$(GO) test -run '^$$' -fuzz FuzzParseTOML -fuzztime 30s ./parser/

# install lays out exactly the files the Debian package ships (debian/rules calls it; tests/package_test.go
# checks the result). Vendor files live under /usr and /lib; /etc holds only what the admin may edit (the
# rt_protos name) and the ifupdown hook links, which ifupdown reads from /etc/network/if-*.d only.
# Debian 12 keeps systemd's vendor folders in /lib (merged into /usr on a merged-/usr root).
DISPATCHER_STATES := routable degraded carrier no-carrier off
install: build
	install -D -m 0755 $(BIN)/linkagg $(DESTDIR)$(PREFIX)/sbin/linkagg
	install -D -m 0755 $(BIN)/linkagg-ifupdown $(DESTDIR)$(PREFIX)/lib/linkagg/linkagg-ifupdown
	for d in if-pre-up.d if-up.d if-down.d if-post-down.d; do \
	  install -d -m 0755 $(DESTDIR)/etc/network/$$d; \
	  ln -sfn $(PREFIX)/lib/linkagg/linkagg-ifupdown $(DESTDIR)/etc/network/$$d/linkagg; done
	install -D -m 0644 packaging/rt_protos.d/linkagg.conf $(DESTDIR)/etc/iproute2/rt_protos.d/linkagg.conf
	install -D -m 0755 $(BIN)/linkagg-networkd $(DESTDIR)$(PREFIX)/lib/linkagg/linkagg-networkd
	for s in $(DISPATCHER_STATES); do \
	  install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/networkd-dispatcher/$$s.d; \
	  ln -sfn ../../linkagg/linkagg-networkd $(DESTDIR)$(PREFIX)/lib/networkd-dispatcher/$$s.d/50-linkagg; done
	install -D -m 0644 packaging/networkd/linkagg.conf $(DESTDIR)/lib/systemd/networkd.conf.d/linkagg.conf
	install -D -m 0644 packaging/systemd/linkagg-watch.service $(DESTDIR)/lib/systemd/system/linkagg-watch.service
	install -D -m 0644 packaging/networkd/linkagg-tun0.netdev.example $(DESTDIR)$(PREFIX)/share/doc/linkagg-hooks/examples/linkagg-tun0.netdev.example
	for f in README two-nic/10-eth0.network two-nic/10-eth1.network two-nic/tun0.toml two-nic/tun0-v6.toml \
	  four-nic/10-eth0.network four-nic/10-eth1.network four-nic/10-eth2.network four-nic/10-eth3.network \
	  four-nic/tun0.toml four-nic/tun0-v6.toml; do \
	  install -D -m 0644 packaging/examples/networkd/$$f $(DESTDIR)$(PREFIX)/share/doc/linkagg-hooks/examples/networkd/$$f; done
	install -d -m 0755 $(DESTDIR)/etc/linkagg
	install -D -m 0644 packaging/examples/linkagg.toml.example $(DESTDIR)$(PREFIX)/share/doc/linkagg-hooks/examples/linkagg.toml.example
	install -D -m 0644 packaging/examples/interfaces.example $(DESTDIR)$(PREFIX)/share/doc/linkagg-hooks/examples/interfaces.example
	install -D -m 0644 packaging/interfaces-linkagg.5 $(DESTDIR)$(PREFIX)/share/man/man5/interfaces-linkagg.5
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/man/man8
	$(BIN)/linkagg --man > $(DESTDIR)$(PREFIX)/share/man/man8/linkagg.8

-include packaging/deb.mk

clean:
	rm -rf build
