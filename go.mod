module github.com/linkagg/linkagg-hooks

go 1.23.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/cilium/ebpf v0.19.0
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/google/nftables v0.3.0
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42
	github.com/spf13/pflag v1.1.0
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sys v0.35.0
)

require (
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/mdlayher/socket v0.5.0 // indirect
	golang.org/x/net v0.38.0 // indirect
	golang.org/x/sync v0.6.0 // indirect
)
