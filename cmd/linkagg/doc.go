package main

import (
	"fmt"
	"io"
	"strings"
)

// The manual is written once here and rendered two ways: `linkagg --help` prints it as text, and
// `linkagg --man` prints the same as roff for linkagg(8).

type section struct {
	title string
	body  []string // paragraphs; lines starting with two spaces are shown as-is (definitions, examples)
}

var manual = []section{
	{"NAME", []string{"linkagg - aggregate several links into one virtual address for single-flow goodput"}},
	{"SYNOPSIS", []string{"  linkagg [OPTIONS] validate [FILE...]\n  linkagg [OPTIONS] plan [GROUP...]\n  linkagg [OPTIONS] apply [GROUP...]\n  linkagg [OPTIONS] down [GROUP...]\n  linkagg [OPTIONS] status [--json | --prometheus | --watch [INTERVAL]] [GROUP...]\n  linkagg [OPTIONS] watch [--debounce D] [--resync D] [--probe-interval D] [--probe-budget N]"}},
	{"DESCRIPTION", []string{
		"linkagg reads aggregation groups from iface stanzas in /etc/network/interfaces (options fakenet, table, rspec, weight, mode, fwmark, fwmark-mask, rule-priority, arp-isolation on|off, gso-max-size BYTES, tcp-min-rtt-wlen SECONDS, speed MBIT...; see interfaces-linkagg(5)) and from TOML drop-ins in /etc/linkagg/*.toml, and makes the kernel state that spreads every packet to the fakenet prefixes over all paths in a smooth weighted order: a TUN device holding the virtual address (VIP), a route for each fakenet via the TUN, an nftables table linkagg_IFACE that marks packets with numgen, one fwmark rule per path and, per path table, a route to each peer VIP via that peer's gateway.",
		"The ifupdown hooks in /etc/network/if-*.d/linkagg do the same on every interface event, and so does the networkd-dispatcher hook (/usr/lib/networkd-dispatcher/*.d/50-linkagg) on hosts run by systemd-networkd; this command is for inspecting and for hosts without either.",
		"With `mode mptcp` a group uses the kernel's Multipath TCP instead of packet marks: net.mptcp.enabled=1, one in-kernel path manager endpoint per active path on this host's address for it (ids 200..254 are ours; other endpoints are never touched), the MPTCP limits raised (never lowered; restored at teardown) and a rule `from ADDRESS lookup TABLE` per path, so each subflow stays on its link; the first subflow (from the VIP) follows the heaviest path or the one named by mptcp-primary, and no nftables marks are set. Options (stanza words, TOML keys of the same names): mptcp-flags F... (per path: comma-separated subflow, signal, backup, fullmesh, laminar; none; off = no endpoint), multipath on|off|backup... (per path, as MPTCP v0.95), mptcp-primary N, mptcp-scheduler NAME (net.mptcp.scheduler; must be in available_schedulers), mptcp-path-manager kernel|fullmesh|userspace (ndiffports and binder are refused: upstream Linux has none), mptcp-checksum on|off (net.mptcp.checksum_enabled), mptcp-syn-retries N (net.mptcp.syn_retrans_before_tcp_fallback), mptcp-transparent off|all|UNIT... (a BPF program on the kernel's update_socket_protocol hook, Linux 6.6 and later, makes the TCP sockets of every process, or of those in the named systemd units and slices, MPTCP ones; pinned under /sys/fs/bpf/linkagg/, env LINKAGG_BPFFS names another BPF file system; apply refuses it with one line where the kernel cannot run it). With `mode hybrid` the packet-mode striping stays for every other packet, and TCP segments carrying an MPTCP option leave the nftables chain unmarked, so MPTCP connections go by subflows.",
		"A GROUP is named by its TUN interface (tun0) for the inet stanza and tun0/inet6 for the inet6 one; a bare interface name selects both. Without GROUP every configured group is meant.",
	}},
	{"COMMANDS", []string{
		"  validate [FILE...]\n      Parse the configuration (or only the FILEs: .toml files as drop-ins, others as interfaces files) and\n      check it. Prints one line per error, naming file:line. Touches nothing.",
		"  plan [GROUP...]\n      Print the kernel state the groups need now, as the equivalent ip, sysctl and nft commands.",
		"  apply [GROUP...]\n      Converge the kernel to the plan: add what is missing, remove what is ours and no longer planned. A\n      second apply makes no kernel change. An error undoes what this run changed.",
		"  down [GROUP...]\n      Remove everything the groups own (found by the kernel tags: route/rule protocol 76, nft table\n      linkagg_IFACE, TUN alias \"linkagg\"), restore the sysctls they changed. Foreign objects are kept.",
		"  status [--json | --prometheus | --watch [INTERVAL]] [GROUP...]\n      Show per group the kernel objects present against the plan and a table of its paths: state (up,\n      pending with the reason, no-carrier, probe-failed) and since when, weight and share, the packets\n      and bytes its nftables mark chain counted, the member NIC's tx/rx bytes, errors and drops, MPTCP\n      subflows, the peer gateways that stopped answering, and a DRIFT flag while the path's share of\n      the bytes stays far from its weight. Exit status 4 when a running group differs from its plan.\n      --json prints the same as a versioned JSON document (field names in the README); --prometheus\n      prints metrics for node_exporter's textfile collector (linkagg_path_up,\n      linkagg_path_bytes_total{group,path,table,link}, ...); --watch redraws per-path Mbit/s every\n      INTERVAL (default 1s) like bmon or ifstat until Ctrl-C (exit status 0).",
		"  watch [--debounce D] [--resync D] [--probe-interval D] [--probe-budget N]\n      Run as a daemon (linkagg-watch.service, Type=notify) that decides which member links and peer\n      gateways count as down, and re-plans every running group (TUN up) when that changes: a dead path\n      leaves the mark sequence in one nftables transaction and rejoins when it works again. Carrier: on\n      every netlink link or address change, after at most D (--debounce, default 50ms, at most 100ms), a\n      member link without carrier is no-carrier; also every --resync (default 30s). Probes (on by\n      default): one ICMP echo to EVERY peer gateway of every path, through the link its route takes, every\n      --probe-interval (default 200ms, at least 50ms, 0 = off) or slower, so that all of them together stay\n      within --probe-budget echo requests per second (default 1000: 254 peers x 4 paths = 1016 gateways are\n      probed every 1.016s). 3 unanswered in a row take that (link, gateway) pair out, one answer puts it\n      back; a link whose every gateway is silent is probe-failed. Needs CAP_NET_RAW, or\n      net.ipv4.ping_group_range admitting its group; without either, probes are off and carrier still\n      counts. It takes the same lock and makes the same plan as the hooks; while it runs\n      (RUN-DIR/watch.pid, its verdicts in RUN-DIR/health.json) the hooks count carrier and its verdicts too.",
	}},
	{"OPTIONS", []string{
		"  --interfaces FILE   interfaces file to read (default /etc/network/interfaces; env LINKAGG_INTERFACES)\n  --confdir DIR       TOML drop-in folder (default /etc/linkagg; env LINKAGG_CONFDIR)\n  --run-dir DIR       lock and state folder (default /run/linkagg; env LINKAGG_RUNDIR)\n                      (env LINKAGG_LOCK_TIMEOUT, e.g. 60s: how long to wait for another run's lock; default 15s)\n                      (env LINKAGG_TIMEOUT, e.g. 60s: the deadline of apply, down and every hook run; default\n                      20s; both also in /etc/default/linkagg, which the hooks read)\n  -v, --verbose       print what changes\n  --version           print the version\n  -h, --help          print this text",
	}},
	{"EXIT STATUS", []string{
		"  0   success\n  1   the configuration is invalid (nothing was changed)\n  2   bad usage\n  3   a kernel operation failed (what this run changed was undone), or the run gave up at its deadline\n  4   status: a group's kernel state differs from its plan",
	}},
	{"FILES", []string{
		"  /etc/network/interfaces, /etc/linkagg/*.toml   configuration\n  /etc/default/linkagg                           LINKAGG_TIMEOUT, LINKAGG_LOCK_TIMEOUT (NAME=VALUE lines)\n  /run/linkagg/                                  lock and state (sysctl values to restore, footprints,\n                                                 the watcher's watch.pid and health.json)\n  /etc/network/if-*.d/linkagg                    the ifupdown hooks (links to /usr/lib/linkagg/linkagg-ifupdown)\n  /usr/lib/networkd-dispatcher/*.d/50-linkagg    the networkd-dispatcher hook, for the routable, degraded,\n                                                 carrier, no-carrier and off states (links to\n                                                 /usr/lib/linkagg/linkagg-networkd)\n  /lib/systemd/networkd.conf.d/linkagg.conf      systemd-networkd drop-in: networkd leaves foreign rules and\n                                                 routes (ours) alone on reload\n  /lib/systemd/system/linkagg-watch.service      runs `linkagg watch` (shipped disabled)\n  /etc/iproute2/rt_protos.d/linkagg.conf         names protocol 76 \"linkagg\" for ip(8)",
	}},
	{"SEE ALSO", []string{"interfaces-linkagg(5), interfaces(5), ifup(8), networkd-dispatcher(8), networkd.conf(5), ip-rule(8), ip-mptcp(8), nft(8)"}},
}

func writeHelp(w io.Writer) {
	for _, s := range manual {
		fmt.Fprintln(w, s.title)
		for _, p := range s.body {
			if strings.HasPrefix(p, "  ") {
				for _, l := range strings.Split(p, "\n") {
					fmt.Fprintln(w, "  "+l)
				}
			} else {
				fmt.Fprintln(w, wrap(p, 100, "    "))
			}
			fmt.Fprintln(w)
		}
	}
}

func writeMan(w io.Writer, version string) {
	fmt.Fprintf(w, ".TH LINKAGG 8 \"\" \"linkagg-hooks %s\" \"System Administration\"\n", version)
	for _, s := range manual {
		fmt.Fprintf(w, ".SH %s\n", s.title)
		for _, p := range s.body {
			if strings.HasPrefix(p, "  ") {
				fmt.Fprintln(w, ".PP\n.nf")
				for _, l := range strings.Split(p, "\n") {
					fmt.Fprintln(w, roffEscape(l))
				}
				fmt.Fprintln(w, ".fi")
			} else {
				fmt.Fprintf(w, ".PP\n%s\n", roffEscape(p))
			}
		}
	}
}

func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func wrap(p string, width int, indent string) string {
	var lines []string
	line := indent
	for _, w := range strings.Fields(p) {
		if len(line)+len(w)+1 > width && line != indent {
			lines = append(lines, line)
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
