package status

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/plan"
)

// JSON writes r as the `status --json` document.
func JSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Text writes the `linkagg status` view: per group the read-back of its kernel objects, a table of its paths
// (state and since when, weight and share, what each carried, the member NIC's counters), and whether it
// is converged.
func Text(w io.Writer, r Report) {
	for _, g := range r.Groups {
		if !g.Running {
			fmt.Fprintf(w, "%s: down (%s is not up)\n", g.Group, g.Iface)
			continue
		}
		fmt.Fprint(w, g.report)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  PATH\tTABLE\tLINK\tSPEED\tSTATE\tWEIGHT\tSHARE\tPACKETS\tBYTES\tNIC TX\tNIC RX\tERR/DROP\tGATEWAYS\t")
		for _, p := range g.Paths {
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%s\t%s\t%d (%.2f)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Path, p.Table, dash(p.Link), speed(p.Speed), state(p, r.Time),
				p.Weight, p.WeightShare, share(p.Share, p.ShareDrift), count(p.Packets), humanBytes(p.Bytes), nicTx(p.NIC), nicRx(p.NIC), errDrop(p.NIC), gateways(p.Gateways))
		}
		tw.Flush()
		for _, p := range g.Paths {
			if p.State != "up" && p.Reason != "" {
				fmt.Fprintf(w, "  path %d: %s\n", p.Path, p.Reason)
			}
			if p.State == "up" && !p.Carrier && p.Link != "" {
				fmt.Fprintf(w, "  path %d: %s has no carrier, but the path stays in the sequence: no watcher counts carrier here (linkagg watch)\n", p.Path, p.Link)
			}
			if p.Subflows != nil {
				fmt.Fprintf(w, "  path %d: %d MPTCP subflows, %s sent, %s received\n", p.Path, p.Subflows.Subflows, humanBytes(p.Subflows.BytesSent), humanBytes(p.Subflows.BytesReceived))
			}
			for _, gw := range p.Gateways.Down {
				if gw.Since != nil {
					fmt.Fprintf(w, "  path %d: gateway %s of peer %s on %s: %s since %s: carries nothing to that peer\n", p.Path, gw.Gateway, gw.Peer, gw.Link, gw.State, gw.Since.Format(time.RFC3339))
				} else {
					fmt.Fprintf(w, "  path %d: peer %s: %s, %s: carries nothing to that peer\n", p.Path, gw.Peer, gw.State, gw.Reason)
				}
			}
			if f := p.ShareDrift; f != nil {
				fmt.Fprintf(w, "  path %d: DRIFT: carries %.2f of the group's bytes since %s, its weight says %.2f\n", p.Path, f.Share, f.Since.Format(time.RFC3339), f.WeightShare)
			}
		}
		if g.Tuning.Weights != "" {
			fmt.Fprintf(w, "  weights: %s\n", g.Tuning.Weights)
		}
		if g.Tuning.Unit != "" {
			fmt.Fprintf(w, "  unit: gso_max_size %d: %s\n", g.Tuning.GSOMaxSize, g.Tuning.Unit)
		}
		if g.Converged {
			fmt.Fprintf(w, "  state: converged\n")
		} else {
			fmt.Fprintf(w, "  state: DRIFT (%d differences; linkagg apply %s converges)\n", len(g.Drift), g.Iface)
		}
	}
	if len(r.Orphans) > 0 {
		fmt.Fprintf(w, "not configured, but linkagg's (linkagg apply removes them):\n")
		for _, l := range r.Orphans {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	fmt.Fprintln(w, watcherLine(r.Watcher))
}

func watcherLine(wt Watcher) string {
	switch {
	case !wt.Running:
		return "watcher: not running (paths follow ifup/ifdown; carrier counts only on networkd hosts)"
	case wt.Probes == nil:
		return "watcher: running"
	case wt.Probes.Off != "":
		return "watcher: running, counting carrier; probes off: " + wt.Probes.Off
	}
	p := wt.Probes
	return fmt.Sprintf("watcher: running, probing %d gateways every %s (%.0f echo requests/s, budget %d/s, out after %d misses)",
		p.Targets, time.Duration(p.PeriodSec*float64(time.Second)).Round(time.Millisecond), p.RatePPS, p.BudgetPPS, p.Misses)
}

func state(p Path, now time.Time) string {
	if p.Since == nil {
		return p.State
	}
	return fmt.Sprintf("%s %s (%s)", p.State, p.Since.Format("15:04:05"), ago(now.Sub(*p.Since)))
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// speed is a path's speed as ethtool would say it; "-" when unknown.
func speed(mbit int) string {
	switch {
	case mbit == 0:
		return "-"
	case mbit%1000 == 0:
		return fmt.Sprintf("%dG", mbit/1000)
	}
	return fmt.Sprintf("%dM", mbit)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func share(s *float64, drift *health.Flag) string {
	out := "-"
	if s != nil {
		out = fmt.Sprintf("%.2f", *s)
	}
	if drift != nil {
		out += " DRIFT"
	}
	return out
}

func gateways(g Gateways) string {
	if g.Probed == 0 {
		if len(g.Down) > 0 {
			return fmt.Sprintf("%d/%d peers", g.Peers-len(g.Down), g.Peers)
		}
		return fmt.Sprintf("%d peers", g.Peers)
	}
	return fmt.Sprintf("%d/%d answer", g.Probed-silent(g.Down), g.Probed)
}

// silent counts the peers whose gateway stopped answering probes (not those on no subnet of ours).
func silent(ds []GatewayDown) int {
	n := 0
	for _, d := range ds {
		if d.State == plan.DownProbeFailed {
			n++
		}
	}
	return n
}

func nicTx(n *NIC) string {
	if n == nil {
		return "-"
	}
	return humanBytes(n.TxBytes)
}

func nicRx(n *NIC) string {
	if n == nil {
		return "-"
	}
	return humanBytes(n.RxBytes)
}

func errDrop(n *NIC) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", n.RxErrors+n.TxErrors, n.RxDropped+n.TxDropped)
}

func humanBytes(b uint64) string { return si(float64(b), "B") }
func count(n uint64) string {
	if n < 1000 {
		return fmt.Sprint(n)
	}
	return si(float64(n), "")
}

func si(v float64, unit string) string {
	for _, p := range []string{"", "k", "M", "G", "T", "P"} {
		if v < 1000 || p == "P" {
			if p == "" {
				return fmt.Sprintf("%.0f %s", v, unit)
			}
			return strings.TrimSpace(fmt.Sprintf("%.1f %s%s", v, p, unit))
		}
		v /= 1000
	}
	return ""
}

// Frame writes one screen of `status --watch`: per path the rates between prev and cur (Mbit/s, like bmon
// or ifstat), the share of the interval's bytes against the weight, and the member NIC's rates. drift
// holds the paths flagged by status itself (or by the watcher, through cur).
func Frame(w io.Writer, prev, cur Report, interval time.Duration, drift []health.Flag) {
	dt := cur.Time.Sub(prev.Time).Seconds()
	fmt.Fprintf(w, "linkagg status --watch %s    %s    Ctrl-C quits\n", interval, cur.Time.Format("2006-01-02 15:04:05 MST"))
	old := map[string]Path{}
	for _, g := range prev.Groups {
		for _, p := range g.Paths {
			old[fmt.Sprint(g.Group, "/", p.Path)] = p
		}
	}
	flagged := map[string]bool{}
	for _, f := range drift {
		flagged[fmt.Sprint(f.Group, "/", f.Path)] = true
	}
	for _, g := range cur.Groups {
		if !g.Running {
			fmt.Fprintf(w, "\n%s: down (%s is not up)\n", g.Group, g.Iface)
			continue
		}
		conv := "converged"
		if !g.Converged {
			conv = fmt.Sprintf("DRIFT: %d differences", len(g.Drift))
		}
		fmt.Fprintf(w, "\n%s  mode %s  %s\n", g.Group, g.Mode, conv)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "PATH\tLINK\tSTATE\tWEIGHT\tSHARE\tMbit/s\tpkt/s\tNIC TX Mbit/s\tNIC RX Mbit/s\tERR/DROP\t")
		var rates []float64
		var total float64
		for _, p := range g.Paths {
			r := rate(pathBytes(p), pathBytes(old[fmt.Sprint(g.Group, "/", p.Path)]), dt)
			rates = append(rates, r)
			total += r
		}
		var totalPkts float64
		for i, p := range g.Paths {
			o, had := old[fmt.Sprint(g.Group, "/", p.Path)]
			sh := "-"
			if total > 0 {
				sh = fmt.Sprintf("%.2f", rates[i]/total)
			}
			if p.ShareDrift != nil || flagged[fmt.Sprint(g.Group, "/", p.Path)] {
				sh += " DRIFT"
			}
			pkts := rate(p.Packets, o.Packets, dt) / 8
			totalPkts += pkts
			tx, rx, ed := "-", "-", "-"
			if p.NIC != nil && had && o.NIC != nil && o.NIC.Name == p.NIC.Name {
				tx = mbit(rate(p.NIC.TxBytes, o.NIC.TxBytes, dt))
				rx = mbit(rate(p.NIC.RxBytes, o.NIC.RxBytes, dt))
				ed = fmt.Sprintf("+%d/+%d", delta(p.NIC.RxErrors+p.NIC.TxErrors, o.NIC.RxErrors+o.NIC.TxErrors), delta(p.NIC.RxDropped+p.NIC.TxDropped, o.NIC.RxDropped+o.NIC.TxDropped))
			}
			st := p.State
			if p.Since != nil {
				st += " " + ago(cur.Time.Sub(*p.Since))
			}
			if dt <= 0 { // the first screen: no interval yet
				fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f\t-\t-\t-\t-\t-\t-\t\n", p.Path, dash(p.Link), st, p.WeightShare)
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f\t%s\t%s\t%.0f\t%s\t%s\t%s\t\n", p.Path, dash(p.Link), st, p.WeightShare, sh, mbit(rates[i]), pkts, tx, rx, ed)
		}
		if dt > 0 {
			fmt.Fprintf(tw, "\ttotal\t\t\t\t%s\t%.0f\t\t\t\t\n", mbit(total), totalPkts)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, watcherLine(cur.Watcher))
}

// rate is bytes per second times 8 (bits per second) between two readings; a counter that went back (our
// table was replaced) counts from zero.
func rate(cur, prev uint64, dt float64) float64 {
	if dt <= 0 {
		return 0
	}
	if cur < prev {
		prev = 0
	}
	return float64(cur-prev) * 8 / dt
}

func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func mbit(bps float64) string { return fmt.Sprintf("%.1f", bps/1e6) }

// Prometheus writes r in the Prometheus text format, for node_exporter's textfile collector.
func Prometheus(w io.Writer, r Report) {
	type metric struct{ name, typ, help string }
	var lines []string
	metrics := []metric{
		{"linkagg_group_running", "gauge", "1 when the group's TUN is up."},
		{"linkagg_group_converged", "gauge", "1 when the kernel holds exactly the group's plan."},
		{"linkagg_watcher_running", "gauge", "1 when linkagg watch runs."},
		{"linkagg_probe_targets", "gauge", "Peer gateways the watcher probes."},
		{"linkagg_probe_period_seconds", "gauge", "How often each peer gateway is probed."},
		{"linkagg_mptcp_transparent_attached", "gauge", "1 when the group's mptcp-transparent program is attached with the configured scope."},
		{"linkagg_path_up", "gauge", "1 when the path is in the group's sequence."},
		{"linkagg_path_state", "gauge", "1 for the path's state (up, pending, no-carrier, probe-failed)."},
		{"linkagg_path_state_since_seconds", "gauge", "Unix time since when a path is no-carrier or probe-failed."},
		{"linkagg_path_weight_share", "gauge", "The path's weight over the sum of the active paths' weights."},
		{"linkagg_path_share", "gauge", "The path's share of the group's counted bytes since the table was made."},
		{"linkagg_path_share_drift", "gauge", "1 while the path's share is flagged as far from its weight."},
		{"linkagg_path_packets_total", "counter", "Packets the path's mark chain marked (restarts when the table is replaced)."},
		{"linkagg_path_bytes_total", "counter", "Bytes the path's mark chain marked (restarts when the table is replaced)."},
		{"linkagg_path_subflows", "gauge", "Established MPTCP subflows on the path."},
		{"linkagg_path_subflow_bytes_sent_total", "counter", "Bytes sent by the path's open MPTCP subflows."},
		{"linkagg_path_gateways_down", "gauge", "Peer gateways of the path that stopped answering probes."},
		{"linkagg_nic_receive_bytes_total", "counter", "Bytes received by the path's member NIC."},
		{"linkagg_nic_transmit_bytes_total", "counter", "Bytes sent by the path's member NIC."},
		{"linkagg_nic_receive_errors_total", "counter", "Receive errors of the path's member NIC."},
		{"linkagg_nic_transmit_errors_total", "counter", "Transmit errors of the path's member NIC."},
		{"linkagg_nic_receive_drop_total", "counter", "Received packets the path's member NIC dropped."},
		{"linkagg_nic_transmit_drop_total", "counter", "Packets the path's member NIC dropped on transmit."},
	}
	add := func(name, labels string, v float64) {
		lines = append(lines, fmt.Sprintf("%s{%s} %s", name, labels, num(v)))
	}
	b := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	add("linkagg_watcher_running", "", b(r.Watcher.Running))
	if p := r.Watcher.Probes; p != nil && p.Off == "" {
		add("linkagg_probe_targets", "", float64(p.Targets))
		add("linkagg_probe_period_seconds", "", p.PeriodSec)
	}
	for _, g := range r.Groups {
		gl := fmt.Sprintf(`group=%q`, g.Group)
		add("linkagg_group_running", gl, b(g.Running))
		add("linkagg_group_converged", gl, b(g.Converged))
		if tr := g.Transparent; tr != nil && tr.Scope != "" {
			add("linkagg_mptcp_transparent_attached", gl+fmt.Sprintf(`,scope=%q`, tr.Scope), b(tr.Attached))
		}
		for _, p := range g.Paths {
			pl := fmt.Sprintf(`group=%q,path="%d",table="%d",link=%q`, g.Group, p.Path, p.Table, p.Link)
			add("linkagg_path_up", pl, b(p.State == "up"))
			for _, s := range []string{"up", "pending", "no-carrier", "probe-failed"} {
				add("linkagg_path_state", pl+fmt.Sprintf(`,state=%q`, s), b(p.State == s))
			}
			if p.Since != nil {
				add("linkagg_path_state_since_seconds", pl, float64(p.Since.Unix()))
			}
			add("linkagg_path_weight_share", pl, p.WeightShare)
			if p.Share != nil {
				add("linkagg_path_share", pl, *p.Share)
			}
			add("linkagg_path_share_drift", pl, b(p.ShareDrift != nil))
			if g.Mode != "mptcp" {
				add("linkagg_path_packets_total", pl, float64(p.Packets))
				add("linkagg_path_bytes_total", pl, float64(p.Bytes))
			}
			if p.Subflows != nil {
				add("linkagg_path_subflows", pl, float64(p.Subflows.Subflows))
				add("linkagg_path_subflow_bytes_sent_total", pl, float64(p.Subflows.BytesSent))
			}
			if p.Gateways.Probed > 0 {
				add("linkagg_path_gateways_down", pl, float64(silent(p.Gateways.Down)))
			}
			if n := p.NIC; n != nil {
				add("linkagg_nic_receive_bytes_total", pl, float64(n.RxBytes))
				add("linkagg_nic_transmit_bytes_total", pl, float64(n.TxBytes))
				add("linkagg_nic_receive_errors_total", pl, float64(n.RxErrors))
				add("linkagg_nic_transmit_errors_total", pl, float64(n.TxErrors))
				add("linkagg_nic_receive_drop_total", pl, float64(n.RxDropped))
				add("linkagg_nic_transmit_drop_total", pl, float64(n.TxDropped))
			}
		}
	}
	// the exposition format wants each metric's samples together, under its HELP and TYPE
	sort.SliceStable(lines, func(i, j int) bool { return metricName(lines[i]) < metricName(lines[j]) })
	byName := map[string][]string{}
	for _, l := range lines {
		byName[metricName(l)] = append(byName[metricName(l)], strings.Replace(l, "{}", "", 1))
	}
	for _, m := range metrics {
		if len(byName[m.name]) == 0 {
			continue
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, l := range byName[m.name] {
			fmt.Fprintln(w, l)
		}
	}
}

func metricName(line string) string {
	if i := strings.IndexAny(line, "{ "); i >= 0 {
		return line[:i]
	}
	return line
}

func num(v float64) string {
	if v == float64(int64(v)) && v < 1e15 && v > -1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%g", v)
}
