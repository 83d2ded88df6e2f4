package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	nlconn "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// maxNft is the largest table a group can have in each dimension: the longest interface name (so the
// longest table name and rule tag), inet6 (longer rules and keys), hybrid (one more rule), and peerMaps
// groups of peers with sequences of their own, peerVIPs peers in all.
func maxNft(paths, fakenets, entries, peerMaps, peerVIPs int) *plan.Nft {
	n := &plan.Nft{Family: parser.Inet6, Table: plan.NftTablePrefix + "tun0123456789ab", Mask: 0xff000000, SkipMPTCP: true}
	for i := range fakenets {
		n.Fakenets = append(n.Fakenets, netip.MustParsePrefix(fmt.Sprintf("fd%02x:%x::/64", i/256, i%256)))
	}
	for i := range entries {
		n.Sequence = append(n.Sequence, uint32(1+i%paths)<<24)
	}
	for g := range peerMaps {
		p := plan.PeerSequence{}
		for i := range entries {
			p.Sequence = append(p.Sequence, uint32(1+(g+i)%paths)<<24)
		}
		n.Peers = append(n.Peers, p)
	}
	for v := range peerVIPs {
		vip := netip.MustParseAddr(fmt.Sprintf("fd00:ffff:ffff:ffff:ffff:ffff:%x:%x", 0x8000+v/65536, v%65536+1))
		n.Peers[v%peerMaps].VIPs = append(n.Peers[v%peerMaps].VIPs, vip)
	}
	return n
}

// batchOf encodes the transaction that replaces a table by n (as replaceNft sends it) without a kernel:
// the size of the whole batch and of the largest element list (the attribute holding a map's elements,
// whose 16-bit length must not wrap).
func batchOf(t *testing.T, n *plan.Nft) (total, maxList int, err error) {
	t.Helper()
	c, err := nftables.New(nftables.WithTestDial(func(req []nlconn.Message) ([]nlconn.Message, error) {
		var acks []nlconn.Message
		for _, m := range req {
			b, err := m.MarshalBinary()
			if err != nil {
				return nil, err
			}
			total += len(b)
			if m.Header.Type == nlconn.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM) {
				// after the headers (netlink 16, nfgenmsg 4): table, set, set id, then the element list,
				// which runs to the end of the message whatever its length field says
				for off := 20; off+4 <= len(b); {
					l, typ := int(binary.NativeEndian.Uint16(b[off:])), binary.NativeEndian.Uint16(b[off+2:])&^unix.NLA_F_NESTED
					if typ == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
						maxList = max(maxList, len(b)-off)
						break
					}
					off += (l + 3) &^ 3
				}
			}
			acks = append(acks, nlconn.Message{Header: nlconn.Header{Type: nlconn.Error, Sequence: m.Header.Sequence, PID: m.Header.PID}, Data: make([]byte, 4)})
		}
		return acks, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Name: n.Table, Family: nftFamily(n.Family)})
	if err := buildNft(c, "tun0123456789ab/inet6", n); err != nil {
		return 0, 0, err
	}
	return total, maxList, c.Flush()
}

// The validate limit rests on parser.NftBatchBytes bounding the real encoding of our table, and on every
// map of parser.MaxSequence entries (and the peers' map of parser.MaxPeers) fitting one netlink attribute
// (16-bit length). Checked against the bytes google/nftables really writes, for the largest names.
func TestNftBatchEstimate(t *testing.T) {
	check := func(paths, fakenets, entries, peerMaps, peerVIPs int) {
		t.Helper()
		total, _, err := batchOf(t, maxNft(paths, fakenets, entries, peerMaps, peerVIPs))
		if err != nil {
			t.Fatalf("%d paths %d fakenets %d entries %d peer maps %d peers: %v", paths, fakenets, entries, peerMaps, peerVIPs, err)
		}
		if est := parser.NftBatchBytes(paths, fakenets, entries, peerMaps, peerVIPs); total > est {
			t.Errorf("%d paths %d fakenets %d entries %d peer maps %d peers: the batch has %d bytes, the estimate says %d", paths, fakenets, entries, peerMaps, peerVIPs, total, est)
		}
	}
	for _, paths := range []int{2, 8, 64, 255} {
		for _, fakenets := range []int{1, 4, 64} {
			for _, entries := range []int{paths, parser.MaxSequence} {
				check(paths, fakenets, entries, 0, 0)
			}
		}
	}
	for _, c := range [][3]int{{1, 1, 2}, {1, 254, 100}, {3, 3, 1000}, {10, 254, 1024}, {246, 254, 230}, {40, parser.MaxPeers, 8}} {
		check(8, 1, c[2], c[0], c[1])
	}
	for _, c := range []struct {
		what string
		n    *plan.Nft
		fits bool
	}{
		{"a map of MaxSequence entries", maxNft(2, 1, parser.MaxSequence, 0, 0), true},
		{"the peers' map of MaxPeers", maxNft(2, 1, 2, 1, parser.MaxPeers), true},
		{"a map of the most that fits", maxNft(2, 1, maxMapElements, 0, 0), true},
		{"the peers' map of the most that fits", maxNft(2, 1, 2, 1, maxPeerElements), true},
	} {
		if _, list, err := batchOf(t, c.n); err != nil || list > 0xffff {
			t.Errorf("%s: largest element list %d bytes (must fit 65535): %v", c.what, list, err)
		}
	}
	// beyond, the length would wrap and the kernel keep a truncated map: buildNft refuses instead
	if _, _, err := batchOf(t, maxNft(2, 1, maxMapElements+1, 0, 0)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("a map of %d entries: %v, want buildNft to refuse it", maxMapElements+1, err)
	}
	if _, _, err := batchOf(t, maxNft(2, 1, maxMapElements+1, 1, 1)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("a peer map of %d entries: %v, want buildNft to refuse it", maxMapElements+1, err)
	}
	if _, _, err := batchOf(t, maxNft(2, 1, 2, 1, maxPeerElements+1)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("%d peers in the peers' map: %v, want buildNft to refuse it", maxPeerElements+1, err)
	}
}

// mapSizes reads back how many elements each numgen map of the group's table holds.
func mapSizes(t testing.TB, s *Session, table string, fam parser.Family) []int {
	t.Helper()
	c, err := s.nft()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := findTable(c, nftFamily(fam), table)
	if err != nil || tab == nil {
		t.Fatalf("table %s: %v", table, err)
	}
	sets, err := c.GetSets(tab)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, st := range sets {
		el, err := c.GetSetElements(st)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, len(el))
	}
	return out
}

// planned parses a stanza and plans it against the namespace's links, as the engine does.
func planned(t testing.TB, s *Session, text string) plan.Desired {
	t.Helper()
	gs, err := parser.ParseInterfaces("interfaces", []byte(text))
	if err == nil {
		err = parser.Validate(gs)
	}
	if err != nil {
		t.Fatal(err)
	}
	links, err := s.Links()
	if err != nil {
		t.Fatal(err)
	}
	d, err := plan.Build(plan.Input{Group: gs[0], Links: links})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNftSizeLimit applies groups at the validate limit on the kernel and reads every map back whole: the
// longest sequence with one fakenet, the longest with four, and 255 paths (one mark chain each: 520
// messages in one batch, whose acknowledgements overflowed the socket's default receive buffer). With the
// default buffers too (s.nftDefaultBuffers), where the acknowledgements are lost but the batch was
// committed: the table is read back instead of the run failing with the table left behind.
func TestNftSizeLimit(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	pre := e.snapshot()
	many := func(paths int) string { // every path on la0: one own address and one gateway, cycled
		var tables []string
		for i := 1; i <= paths; i++ {
			tables = append(tables, fmt.Sprint(10240+i)) // default marks 0x01000000..0xff000000
		}
		return "iface tun0 inet static\n    address 10.99.255.10/32\n    fakenet 10.99.255.0/24\n    table " + strings.Join(tables, " ") +
			"\n    rspec 10.99.255.10:10.99.0.10\n    rspec 10.99.255.20:10.99.0.20\n"
	}
	two := "iface tun0 inet static\n    address 10.99.255.10/32\n    fakenet %s\n    table 10000 10001\n    weight %s\n" +
		"    rspec 10.99.255.10:10.99.0.10:10.99.1.10\n    rspec 10.99.255.20:10.99.0.20:10.99.1.20\n"
	four := "10.99.255.0/26 10.99.255.64/26 10.99.255.128/26 10.99.255.192/26"
	for _, tc := range []struct {
		name    string
		text    string
		maps    int
		entries int
		small   bool // the socket's default buffers
		lost    bool // and so the acknowledgements overflow them
	}{
		{"1024 entries, 1 fakenet", fmt.Sprintf(two, "10.99.255.0/24", "999 25"), 1, 1024, false, false},
		{"764 entries, 4 fakenets", fmt.Sprintf(two, four, "401 363"), 4, 764, false, false},
		{"255 paths", many(255), 1, 255, false, false},
		{"255 paths, default socket buffers", many(255), 1, 255, true, true},
		{"1024 entries, default socket buffers", fmt.Sprintf(two, "10.99.255.0/24", "999 25"), 1, 1024, true, false},
	} {
		// no t.Run: a subtest runs on another goroutine, and so on a thread outside the test's namespace
		func() {
			t := &labelled{t, tc.name}
			var log []string
			o := e.opts()
			o.Logf = func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }
			s, err := Open(o)
			e.must(err)
			defer s.Close()
			s.nftDefaultBuffers = tc.small
			d := planned(t, s, tc.text)
			if d.Nft == nil || len(d.Nft.Sequence) != tc.entries {
				t.Fatalf("the plan has no table of %d entries: %+v (paths %+v)", tc.entries, d.Nft, d.Paths[:1])
			}
			if _, err := s.Apply(d); err != nil {
				t.Fatalf("apply: %v", err)
			}
			if lost := strings.Contains(strings.Join(log, "\n"), "acknowledgements overflowed"); lost != tc.lost {
				t.Errorf("acknowledgements lost: %v, want %v", lost, tc.lost)
			}
			got := mapSizes(t, s, d.Nft.Table, d.Family)
			if len(got) != tc.maps {
				t.Errorf("%d maps, want %d", len(got), tc.maps)
			}
			for i, n := range got {
				if n != tc.entries {
					t.Errorf("map %d holds %d elements, want %d", i, n, tc.entries)
				}
			}
			if res, err := s.Apply(d); err != nil || res.Writes != 0 {
				t.Errorf("second apply: %d writes, %v", res.Writes, err)
			}
			if _, err := s.Down(d, false); err != nil {
				t.Fatalf("down: %v", err)
			}
			if post := e.snapshot(); post != pre {
				t.Errorf("down left:\n%s", diffLines(pre, post))
			}
		}()
	}
}

// TestNftWorstCase applies, by hand, the largest table validate admits for 254 peers on 8 paths: the
// fakenet's map and one map for each of the 246 subsets of the paths that some peers may be left with, all
// of 230 entries (parser.MaxSequenceFor), and the peers' map of 254 VIPs: 3 MB in one transaction, which
// needs the 4 MiB socket buffers; with the default ones the kernel refuses the batch (EMSGSIZE) and
// nothing is left.
func TestNftWorstCase(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	k := parser.MaxSequenceFor(8, 1, 254)
	n := maxNft(8, 1, k, 246, 254)
	n.Family, n.Fakenets, n.Table = parser.Inet, []netip.Prefix{netip.MustParsePrefix("10.99.255.0/24")}, "linkagg_tun0"
	// one VIP per peer: 254 distinct addresses, spread over the 246 groups
	vips := 0
	for i := range n.Peers {
		for j := range n.Peers[i].VIPs {
			n.Peers[i].VIPs[j] = netip.AddrFrom4([4]byte{10, 99, byte(vips / 250), byte(vips%250 + 2)})
			vips++
		}
	}
	total, _, err := batchOf(t, n)
	e.must(err)
	t.Logf("%d entries per map, %d maps, a batch of %d bytes", k, 1+len(n.Peers), total)
	fam := nftFamily(parser.Inet)
	for _, small := range []bool{true, false} {
		s, err := Open(e.opts())
		e.must(err)
		s.nftDefaultBuffers = small
		err = s.replaceNft("tun0", fam, n.Table, false, n)
		if small {
			if err == nil || !errors.Is(err, unix.EMSGSIZE) {
				t.Errorf("default buffers: %v, want EMSGSIZE", err)
			}
			if out := e.nft("list", "tables"); strings.Contains(out, n.Table) {
				t.Errorf("default buffers: a refused batch left %s", out)
			}
			s.Close()
			continue
		}
		if err != nil {
			t.Fatalf("4 MiB buffers: %v", err)
		}
		sizes := mapSizes(t, s, n.Table, parser.Inet)
		counts := map[int]int{}
		for _, c := range sizes {
			counts[c]++
		}
		if counts[k] != 1+len(n.Peers) || counts[254] != 1 || len(sizes) != 2+len(n.Peers) {
			t.Errorf("maps read back: %d maps, by size %v; want %d of %d and the peers' map of 254", len(sizes), counts, 1+len(n.Peers), k)
		}
		e.must(s.replaceNft("tun0", fam, n.Table, true, nil))
		s.Close()
	}
}

// labelled prefixes a case's name to its failures.
type labelled struct {
	*testing.T
	name string
}

func (l *labelled) Fatal(args ...any) {
	l.T.Helper()
	l.T.Fatal(append([]any{l.name + ":"}, args...)...)
}
func (l *labelled) Fatalf(f string, args ...any) {
	l.T.Helper()
	l.T.Fatalf(l.name+": "+f, args...)
}
func (l *labelled) Errorf(f string, args ...any) {
	l.T.Helper()
	l.T.Errorf(l.name+": "+f, args...)
}
