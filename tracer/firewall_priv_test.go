package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/probe"
)

// Privileged tests of firewalls, timeouts and resets: real nft rules and real clients in fresh
// network namespaces, each asserting the one event the attempt makes.

// runAttemptHelper: "acceptsrv": listen on RSTTRACE_TEST_ADDR, print "ok",
// then obey stdin: "accept" (prints "accepted"), "linger" (SO_LINGER {1,0}
// on the accepted socket), "close" (closes it, prints "closed").
func runAttemptHelper(mode string) (int, bool) {
	if mode != "acceptsrv" {
		return 0, false
	}
	ap := netip.MustParseAddrPort(os.Getenv("RSTTRACE_TEST_ADDR"))
	fd, err := bindSocket(ap)
	if err == nil {
		err = unix.Listen(fd, 16)
	}
	if err != nil {
		fmt.Println(events.ErrnoName(int(err.(syscall.Errno))))
		return 1, true
	}
	fmt.Println("ok")
	conn := -1
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "accept":
			conn, _, err = unix.Accept(fd)
			if err != nil {
				fmt.Println(err)
				return 1, true
			}
			fmt.Println("accepted")
		case "linger":
			unix.SetsockoptLinger(conn, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		case "close":
			unix.Close(conn)
			fmt.Println("closed")
		}
	}
	return 0, true
}

// nft loads a ruleset in the namespace (nft forked from its thread).
func (n *netns) nft(t *testing.T, ruleset string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft not installed: make test-deps installs nftables")
	}
	var out []byte
	var err error
	n.run(func() {
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(ruleset)
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("nft -f: %v: %s\nruleset:\n%s", err, out, ruleset)
	}
}

// rule is an nft ruleset with one rule in a filter chain on hook.
func rule(hook, r string) string {
	return fmt.Sprintf("table inet rsttrace_test {\n chain c {\n  type filter hook %s priority 0;\n  %s\n }\n}\n", hook, r)
}

// dialSyn connects from the namespace to dst with TCP_SYNCNT synRetries (0:
// the default) and returns connect's error and the client's address.
func (n *netns) dialSyn(t *testing.T, dst netip.AddrPort, synRetries int) (error, netip.AddrPort, int) {
	t.Helper()
	var cerr error
	var local netip.AddrPort
	fd := -1
	n.run(func() {
		fam, sa := sockaddr(dst)
		fd, cerr = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if cerr != nil {
			return
		}
		if synRetries > 0 {
			if cerr = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, synRetries); cerr != nil {
				return
			}
		}
		_, self := sockaddr(netip.AddrPortFrom(dst.Addr(), 0))
		if cerr = unix.Bind(fd, self); cerr != nil {
			return
		}
		if ls, err := unix.Getsockname(fd); err == nil {
			local = sockaddrAddrPort(ls)
		}
		cerr = unix.Connect(fd, sa)
	})
	return cerr, local, fd
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// requireCap skips when the plan cannot serve capability c, with the
// kernel's reason from the plan.
func requireCap(t *testing.T, s *session, c string) {
	t.Helper()
	for _, a := range s.tr.Plan() {
		if a.Capability == c && a.Degraded != "" {
			t.Skipf("this kernel cannot serve %s: %s", c, a.Degraded)
		}
	}
}

func toDst(n *netns, typ events.Type, dst netip.AddrPort) func(*events.Event) bool {
	return func(e *events.Event) bool {
		return e.Type == typ && e.Netns == n.ino && e.Dst != nil && e.Dst.AddrPort() == dst
	}
}

// checkClient asserts the event names this test process as the client
// at local.
func checkClient(t *testing.T, e *events.Event, local netip.AddrPort) {
	t.Helper()
	if e.Client == nil || e.Client.Pid != uint32(os.Getpid()) || e.Client.Comm != selfComm {
		t.Errorf("client = %+v, want pid %d comm %q", e.Client, os.Getpid(), selfComm)
	}
	if e.Src == nil || e.Src.AddrPort() != local || local.Port() == 0 {
		t.Errorf("src = %+v, want the client's %v", e.Src, local)
	}
}

// onlyOne asserts exactly one event of any attempt, reset or refusal type went to
// dst (after the tracer drained).
func onlyOne(t *testing.T, s *session, n *netns, dst netip.AddrPort) {
	t.Helper()
	s.stop()
	var got []string
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino && e.Dst != nil && e.Dst.AddrPort() == dst }) {
		got = append(got, fmt.Sprintf("%s/%s", e.Type, e.Cause))
	}
	if len(got) != 1 {
		t.Errorf("%d events for one attempt, want 1: %v", len(got), got)
	}
}

func checkFirewall(t *testing.T, e *events.Event, hook string, syns uint32) {
	t.Helper()
	if e.Firewall == nil {
		t.Fatalf("no firewall in %+v", e)
	}
	if e.Firewall.Hook != hook {
		t.Errorf("firewall hook = %q, want %q", e.Firewall.Hook, hook)
	}
	if syns != 0 && e.Firewall.SYNs != syns {
		t.Errorf("firewall syns = %d, want %d", e.Firewall.SYNs, syns)
	}
	if e.Firewall.Table != "nftables" && e.Firewall.Table != "" {
		t.Errorf("firewall table = %q", e.Firewall.Table)
	}
	if !strings.Contains(e.Explanation, "nft") || !strings.Contains(e.Explanation, hook) {
		t.Errorf("explanation %q does not say where to look", e.Explanation)
	}
}

// nft `reject with tcp reset` while a service listens: the firewall is the
// cause, not the service; no tcp_send_reset fires (nf_send_reset).
func TestPrivFirewallRejectTCPReset(t *testing.T) {
	for _, hook := range []string{"input", "output"} {
		t.Run(hook, func(t *testing.T) {
			families(t, func(t *testing.T, lo netip.Addr) {
				n := newNetns(t)
				s := startTracer(t, Config{}, n)
				requireCap(t, s, probe.CapFirewall)
				dst := netip.AddrPortFrom(lo, 2090)
				h := n.mustStart(t, "fakesrv", "listen", dst)
				s.waitFor("listen", ofType(n, events.TypeListen, dst.Port()))
				n.nft(t, rule(hook, "tcp dport 2090 reject with tcp reset"))

				err, local, fd := n.dialSyn(t, dst, 0)
				unix.Close(fd)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("connect: %v, want ECONNREFUSED", err)
				}
				e := s.waitFor("refused", toDst(n, events.TypeRefused, dst))
				if e.Cause != events.CauseFirewallReject || e.Answer != "tcp_reset" {
					t.Errorf("cause %q answer %q (%s), want firewall_reject tcp_reset", e.Cause, e.Answer, e.Explanation)
				}
				checkClient(t, e, local)
				checkFirewall(t, e, hook, 1)
				checkListener(t, e.Listener, h, n, dst)
				if e.KernelReason != "" {
					t.Errorf("kernel_reason %q: the TCP stack sent no RST", e.KernelReason)
				}
				onlyOne(t, s, n, dst)
			})
		})
	}
}

// Plain `reject`: ICMP port unreachable, no RST; connect() still fails
// with ECONNREFUSED (after one SYN retransmit on loopback: the first ICMP
// arrives while connect() holds the socket lock, tcp_v4_err keeps it as a
// soft error).
func TestPrivFirewallRejectICMP(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		n := newNetns(t)
		s := startTracer(t, Config{}, n)
		requireCap(t, s, probe.CapFirewall)
		requireCap(t, s, probe.CapConnectFailures)
		dst := netip.AddrPortFrom(lo, 2091)
		n.nft(t, rule("input", "tcp dport 2091 reject"))

		err, local, fd := n.dialSyn(t, dst, 0)
		unix.Close(fd)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect: %v, want ECONNREFUSED", err)
		}
		e := s.waitFor("refused", toDst(n, events.TypeRefused, dst))
		if e.Cause != events.CauseFirewallReject || e.Answer != "icmp" {
			t.Errorf("cause %q answer %q (%s), want firewall_reject icmp", e.Cause, e.Answer, e.Explanation)
		}
		checkClient(t, e, local)
		checkFirewall(t, e, "input", 0)
		if e.Attempt == nil || e.Attempt.Errno != "ECONNREFUSED" {
			t.Errorf("attempt = %+v, want errno ECONNREFUSED", e.Attempt)
		}
		onlyOne(t, s, n, dst)
	})
}

// `drop`: the client retransmits its SYN and times out. TCP_SYNCNT 1 gives
// up after about 3 s: two SYNs with exponential backoff, three on kernels
// with linear SYN timeouts (net.ipv4.tcp_syn_linear_timeouts, 6.18 here).
func TestPrivFirewallDropTimeout(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		n := newNetns(t)
		s := startTracer(t, Config{}, n)
		requireCap(t, s, probe.CapFirewall)
		requireCap(t, s, probe.CapConnectFailures)
		dst := netip.AddrPortFrom(lo, 2092)
		n.nft(t, rule("input", "tcp dport 2092 drop"))

		start := time.Now()
		err, local, fd := n.dialSyn(t, dst, 1)
		unix.Close(fd)
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("connect: %v, want ETIMEDOUT", err)
		}
		e := s.waitFor("timeout", toDst(n, events.TypeTimeout, dst))
		if e.Cause != events.CauseFirewallDrop {
			t.Errorf("cause %q (%s), want firewall_drop", e.Cause, e.Explanation)
		}
		checkClient(t, e, local)
		checkFirewall(t, e, "input", 0)
		// Every SYN the client sent was dropped here: the two sides agree.
		// waited_ms is measured in kernel ticks: up to one (10 ms at
		// HZ=100) more than the test's own clock.
		if a := e.Attempt; a == nil || a.Errno != "ETIMEDOUT" || a.Retransmits < 1 || e.Firewall.SYNs != a.Retransmits+1 ||
			a.WaitedMs < 2000 || a.WaitedMs > time.Since(start).Milliseconds()+10 {
			t.Errorf("attempt = %+v, firewall %+v; want ETIMEDOUT, syns = retransmits+1, 2s..%v", e.Attempt, e.Firewall, time.Since(start))
		}
		onlyOne(t, s, n, dst)
	})
}

// rstReasonExists: this kernel's enum sk_rst_reason has name.
func rstReasonExists(t *testing.T, name string) bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	_, err = probe.EnumValue(spec, "sk_rst_reason", "SK_RST_REASON_"+name)
	return err == nil
}

// A server aborts an established connection: SO_LINGER {1,0} then close,
// or close with unread data. One reset event names the sender (the
// server, when the kernel gives a close-type reason) and the receiver.
func TestPrivReset(t *testing.T) {
	cases := []struct{ name, reason string }{
		{"linger", "TCP_STATE"},
		{"unread", "TCP_ABORT_ON_CLOSE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNetns(t)
			s := startTracer(t, Config{}, n)
			requireCap(t, s, probe.CapResets)
			srv := netip.MustParseAddrPort("127.0.0.1:2093")
			h, local, fd := n.acceptedConn(t, "abortsrv", srv)
			if c.name == "linger" {
				h.send("linger")
			} else if _, err := unix.Write(fd, []byte("unread")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the data reaches the server
			h.send("close")
			h.line()
			buf := make([]byte, 16)
			_, rerr := unix.Read(fd, buf)
			if !errors.Is(rerr, syscall.ECONNRESET) {
				t.Fatalf("client read: %v, want ECONNRESET", rerr)
			}
			e := s.waitFor("reset", toDst(n, events.TypeReset, local))
			if e.Src == nil || e.Src.AddrPort() != srv {
				t.Errorf("src = %+v, want the server %v", e.Src, srv)
			}
			if e.PeerProcess == nil || e.PeerProcess.Pid != uint32(os.Getpid()) || e.PeerProcess.Comm != selfComm {
				t.Errorf("peer_process = %+v, want pid %d comm %q", e.PeerProcess, os.Getpid(), selfComm)
			}
			withReason := strings.HasPrefix(s.hook(probe.CapResets), "tp_btf/tcp_send_reset+tcp_receive_reset") && rstReasonExists(t, c.reason)
			if withReason && e.KernelReason != c.reason {
				t.Errorf("kernel_reason = %q, want %q", e.KernelReason, c.reason)
			}
			// The server's close() sent it: named by the close-type
			// reason (6.10+), or before 6.10 by the socket being in
			// CLOSE already when its RST went out.
			if e.Process == nil || e.Process.Pid != h.pid || e.Process.Comm != "abortsrv" {
				t.Errorf("process = %+v, want abortsrv pid %d (kernel reason %q)", e.Process, h.pid, e.KernelReason)
			}
			if !strings.Contains(e.Explanation, "ECONNRESET") {
				t.Errorf("explanation %q", e.Explanation)
			}
			s.stop()
			if got := s.all(toDst(n, events.TypeReset, local)); len(got) != 1 {
				t.Errorf("%d reset events, want 1", len(got))
			}
		})
	}
}

// A client aborts (SO_LINGER {1,0}, close) a connection a server accepted:
// the RST reaches the server's socket in softirq, where the CPU may run
// anyone. The reset names the server process as its receiver, from the
// owner recorded when accept() returned the socket (fexit on
// inet_csk_accept, or the accept syscalls' exit), and this test as sender.
func TestPrivResetReachesAcceptor(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	requireCap(t, s, probe.CapResets)
	t.Logf("resets and owners from %s", s.hook(probe.CapResets))
	srv := netip.MustParseAddrPort("127.0.0.1:2094")
	h, local, fd := n.acceptedConn(t, "acceptor", srv)
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	e := s.waitFor("reset", toDst(n, events.TypeReset, srv))
	if e.Src == nil || e.Src.AddrPort() != local {
		t.Errorf("src = %+v, want the client %v", e.Src, local)
	}
	if e.PeerProcess == nil || e.PeerProcess.Pid != h.pid || e.PeerProcess.Comm != "acceptor" {
		t.Errorf("peer_process = %+v, want acceptor pid %d (hook %s)", e.PeerProcess, h.pid, s.hook(probe.CapResets))
	}
	if e.Process == nil || e.Process.Pid != uint32(os.Getpid()) {
		t.Errorf("process = %+v, want this test, pid %d", e.Process, os.Getpid())
	}
	s.stop()
	if got := s.all(toDst(n, events.TypeReset, srv)); len(got) != 1 {
		t.Errorf("%d reset events, want 1", len(got))
	}
}

// A segment of a connection that is gone reaches a port that still has a
// listener (the client missed the server's RST, a NAT entry expired): the
// listener answers it with a RST. That is a reset of a dead connection,
// not a refusal: before this test, every RST a listener sent was taken for
// an accept-queue overflow (backlog_full). The client is a TCP_REPAIR
// socket, established without a handshake, so its first segment finds
// only the listener.
func TestPrivListenerResetsGoneConnection(t *testing.T) {
	const tcpRecvQueue, tcpSendQueue = 1, 2 // TCP_REPAIR_QUEUE values (include/uapi/linux/tcp.h)
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	requireCap(t, s, probe.CapResets)
	srv := netip.MustParseAddrPort("127.0.0.1:2097")
	n.mustStart(t, "listensrv", "acceptsrv", srv)
	local := netip.MustParseAddrPort("127.0.0.1:40097")
	var werr error
	n.run(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			werr = err
			return
		}
		defer unix.Close(fd)
		steps := []func() error{
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1) },
			func() error {
				return unix.Bind(fd, &unix.SockaddrInet4{Port: int(local.Port()), Addr: local.Addr().As4()})
			},
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue) },
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, 1000) },
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue) },
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, 5000) },
			func() error {
				return unix.Connect(fd, &unix.SockaddrInet4{Port: int(srv.Port()), Addr: srv.Addr().As4()})
			},
			func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0) },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				werr = fmt.Errorf("repair step %d: %w", i, err)
				return
			}
		}
		// Leaving repair mode sends a window probe, the first segment:
		// the listener's RST to it may already be in when this writes.
		if _, err := unix.Write(fd, []byte("gone")); errors.Is(err, syscall.ECONNRESET) {
			return
		} else if err != nil {
			werr = err
			return
		}
		// The listener's RST arrives: the next read says so.
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
		buf := make([]byte, 16)
		if _, err := unix.Read(fd, buf); !errors.Is(err, syscall.ECONNRESET) {
			werr = fmt.Errorf("read after the segment: %v, want ECONNRESET (the listener's RST)", err)
		}
	})
	if werr != nil {
		t.Fatal(werr)
	}
	oneReset(t, s, n, srv, local, "TCP_FLAGS")
	if got := s.all(func(e *events.Event) bool { return e.Netns == n.ino && e.Type == events.TypeRefused }); len(got) != 0 {
		t.Errorf("%d refused events, want none (a listener's RST for a dead connection is no refusal): %+v", len(got), got[0])
	}
}

// Data reaches a connection the server's application closed: the server
// side is a TIME_WAIT (FIN_WAIT2) minisock by then, and it answers with a
// RST (tcp_timewait_state_process: TCP_TW_RST). That RST is a reset of this
// host's: it was not reported before (the RST comes with a socket that is
// neither a listener nor a full socket).
func TestPrivTimewaitReset(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	requireCap(t, s, probe.CapResets)
	srv := netip.MustParseAddrPort("127.0.0.1:2098")
	h, local, fd := n.acceptedConn(t, "twsrv", srv)
	h.send("close") // FIN; our ACK turns the orphan into a FIN_WAIT2 timewait sock
	h.line()
	time.Sleep(50 * time.Millisecond)
	var werr error
	for range 20 { // bounded: the RST comes after the first write
		if _, werr = unix.Write(fd, []byte("late")); werr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("write after the server closed: %v, want ECONNRESET or EPIPE (the timewait sock's RST)", werr)
	}
	oneReset(t, s, n, srv, local, "TCP_TIMEWAIT_SOCKET")
}

// Data reaches a socket whose application shut it down for reading: the
// kernel kills the socket and answers with a RST (TCP_ABORT_ON_DATA). On
// the way, tcp_reset() fires tcp:tcp_receive_reset on the killed socket
// although no RST came in. One reset is reported, sent by the shut-down
// side; none "received" by it.
func TestPrivAbortOnData(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	requireCap(t, s, probe.CapResets)
	srv := netip.MustParseAddrPort("127.0.0.1:2099")
	client := n.abortOnData(t, srv)
	oneReset(t, s, n, client, srv, "TCP_ABORT_ON_DATA")
}

// The same where every reset is counted (--summary): the killed socket's
// tcp:tcp_receive_reset is counted first, as a reset received from the
// server; the RST the kernel then sends from that socket takes it back. The
// summaries add up to the one RST sent.
func TestPrivAbortOnDataSummarized(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{Summary: true}, n)
	requireCap(t, s, probe.CapResets)
	srv := netip.MustParseAddrPort("127.0.0.1:2099")
	client := n.abortOnData(t, srv)
	if lost, err := s.tr.Lost(); err != nil || lost != 0 {
		t.Errorf("lost %d (%v), want 0", lost, err)
	}
	s.stop() // the last poll writes what the kernel counted
	var total uint64
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
		switch {
		case e.Type == events.TypeReset:
			t.Errorf("reset event in summary mode: %+v", e)
		case e.Type == events.TypeSummary && e.SummaryOf == "reset":
			t.Logf("summary: %d to %v", e.Refusals, e.Dst)
			if e.Dst.AddrPort() != client {
				t.Errorf("reset summary to %v, want %v (the side that sent the RST)", e.Dst, client)
			}
			total += e.Refusals
		}
	}
	if total != 1 {
		t.Errorf("summarized resets = %d, want 1 (the RST %v sent)", total, client)
	}
}

// abortOnData connects to a listener on srv in n, shuts the client down and
// writes to it from the accepted side until the kernel kills the client
// socket (TCP_ABORT_ON_DATA) and the write fails; returns the client's
// address.
func (n *netns) abortOnData(t *testing.T, srv netip.AddrPort) netip.AddrPort {
	t.Helper()
	var client netip.AddrPort
	var werr error
	n.run(func() {
		lfd, err := bindSocket(srv)
		if err == nil {
			err = unix.Listen(lfd, 4)
		}
		if err != nil {
			werr = err
			return
		}
		defer unix.Close(lfd)
		cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			werr = err
			return
		}
		defer unix.Close(cfd)
		if err := unix.Connect(cfd, &unix.SockaddrInet4{Port: int(srv.Port()), Addr: srv.Addr().As4()}); err != nil {
			werr = err
			return
		}
		sa, _ := unix.Getsockname(cfd)
		a := sa.(*unix.SockaddrInet4)
		client = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		afd, _, err := unix.Accept(lfd)
		if err != nil {
			werr = err
			return
		}
		defer unix.Close(afd)
		if err := unix.Shutdown(cfd, unix.SHUT_RDWR); err != nil {
			werr = err
			return
		}
		time.Sleep(20 * time.Millisecond)
		for range 20 { // bounded: the RST comes after the first write
			if _, err = unix.Write(afd, []byte("late")); err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			werr = fmt.Errorf("server write after the client's shutdown: %v, want ECONNRESET or EPIPE", err)
		}
	})
	if werr != nil {
		t.Fatal(werr)
	}
	return client
}

// oneReset waits for the reset from src to dst in n, checks its kernel
// reason where the kernel names reasons, stops the session, and checks
// that it was the only reset in n: a RST is one event, never two.
func oneReset(t *testing.T, s *session, n *netns, src, dst netip.AddrPort, reason string) {
	t.Helper()
	e := s.waitFor("reset", toDst(n, events.TypeReset, dst))
	if e.Src == nil || e.Src.AddrPort() != src {
		t.Errorf("src = %+v, want %v", e.Src, src)
	}
	if strings.HasPrefix(s.hook(probe.CapResets), "tp_btf/tcp_send_reset+tcp_receive_reset") && rstReasonExists(t, reason) &&
		e.KernelReason != reason {
		t.Errorf("kernel_reason = %q, want %s", e.KernelReason, reason)
	}
	s.stop()
	all := s.all(func(e *events.Event) bool { return e.Netns == n.ino && e.Type == events.TypeReset })
	if len(all) != 1 {
		for _, e := range all {
			t.Logf("reset %v -> %v: %s", e.Src, e.Dst, e.Explanation)
		}
		t.Errorf("%d reset events, want 1 (sent by %v)", len(all), src)
	}
}

// acceptedConn starts an acceptsrv helper named comm on srv in n and makes
// one connection to it that the helper accepted: the helper, the client's
// address and its socket (closed when the test ends).
func (n *netns) acceptedConn(t *testing.T, comm string, srv netip.AddrPort) (*helperProc, netip.AddrPort, int) {
	t.Helper()
	h := n.mustStart(t, comm, "acceptsrv", srv)
	err, local, fd := n.dialSyn(t, srv, 0)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	h.send("accept")
	if l := h.line(); l != "accepted" {
		t.Fatalf("helper: %s", l)
	}
	return h, local, fd
}
