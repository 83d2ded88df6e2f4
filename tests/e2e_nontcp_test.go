package tests

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needTool skips a test whose tool is missing, except under CI where it fails (make deps installs it).
func needTool(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (make deps installs it)", what)
	}
	t.Skipf("%s is not installed (make deps installs it)", what)
}

// udpEcho sends one unconnected, unbound UDP datagram from A to dst:port (retrying for a few seconds) and
// returns the source address B saw and the source of B's reply as A saw it.
func udpEcho(l *Lab, dst string, port int) (atB, atA string) {
	l.t.Helper()
	srv := exec.Command("ip", "netns", "exec", l.NS("B"), "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", %d))
s.settimeout(10)
d, a = s.recvfrom(100)
s.sendto(b"pong", a)
print(a[0])
`, port))
	var out strings.Builder
	srv.Stdout = &out
	if err := srv.Start(); err != nil {
		l.t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	cli, _ := exec.Command("ip", "netns", "exec", l.NS("A"), "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(10):
    s.sendto(b"ping", (%q, %d))
    try:
        d, a = s.recvfrom(100)
        print(a[0])
        break
    except socket.timeout:
        pass
`, dst, port)).CombinedOutput()
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(12 * time.Second):
		srv.Process.Kill()
		<-done
	}
	return strings.TrimSpace(out.String()), strings.TrimSpace(string(cli))
}

// TestE2ENonTCP: ICMP echo and unconnected UDP between the VIPs work in every mode, through the real ifup,
// and leave from the VIP. In mode mptcp only TCP's second route lookup (with the VIP as source) used to
// reach the per-source rule: a ping or a UDP sendto without a bound source followed the fakenet route into
// the TUN and was lost.
func TestE2ENonTCP(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		needTool(t, "ping (iputils-ping)")
	}
	l := NewLab(t, "nt", 300, 200)
	for i, mode := range []string{"packet", "hybrid", "mptcp"} {
		for h, host := range map[string]int{"A": 10, "B": 20} {
			l.WriteInterfaces(h, strings.Replace(mptcpStanzas(l, h, host, 2, "    weight 3 2\n"), "mode mptcp", "mode "+mode, 1))
			l.MustIfupdown(h, "ifup", "-a")
		}
		out, err := exec.Command("ip", "netns", "exec", l.NS("A"), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "10.97.255.20").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " 0% packet loss") {
			t.Errorf("mode %s: ping 10.97.255.20 from A: %v\n%s", mode, err, out)
		}
		atB, atA := udpEcho(l, "10.97.255.20", 7000+i)
		if atB != "10.97.255.10" || atA != "10.97.255.20" {
			t.Errorf("mode %s: UDP to B's VIP: B saw it from %q (want A's VIP 10.97.255.10), A got the reply from %q (want 10.97.255.20)", mode, atB, atA)
		}
		t.Logf("mode %s: ping ok=%v; UDP B saw %q, A got reply from %q", mode, err == nil, atB, atA)
		for _, h := range []string{"A", "B"} {
			l.MustIfupdown(h, "ifdown", "-a")
		}
	}
}
