package tracer

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/probe"
)

// Privileged tests: the real programs, real sockets and real processes, each
// case in fresh network namespaces. Names start with TestPriv so the VM
// runs (make test-kernels: -test.run Priv) can select them.

// families runs f once for IPv4 and once for IPv6 loopback.
func families(t *testing.T, f func(t *testing.T, lo netip.Addr)) {
	for _, c := range []struct{ name, addr string }{{"ipv4", "127.0.0.1"}, {"ipv6", "::1"}} {
		t.Run(c.name, func(t *testing.T) { f(t, netip.MustParseAddr(c.addr)) })
	}
}

var selfComm = func() string {
	b, _ := os.ReadFile("/proc/self/comm")
	return strings.TrimSpace(string(b))
}()

func refusedTo(n *netns, dst netip.AddrPort) func(*events.Event) bool {
	return func(e *events.Event) bool {
		return e.Type == events.TypeRefused && e.Netns == n.ino && e.Dst != nil && e.Dst.AddrPort() == dst
	}
}

func ofType(n *netns, typ events.Type, port uint16) func(*events.Event) bool {
	return func(e *events.Event) bool {
		if e.Type != typ || e.Netns != n.ino {
			return false
		}
		switch {
		case e.Listener != nil:
			return e.Listener.Port == port
		case e.Bind != nil:
			return e.Bind.Port == port
		}
		return false
	}
}

// mustRefuse connects to dst from n, requires ECONNREFUSED, and returns the
// refused event, checked for the fields every refusal has.
func mustRefuse(t *testing.T, s *session, n *netns, dst netip.AddrPort, cause events.Cause) *events.Event {
	t.Helper()
	err, local := n.connect(t, dst)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %v: got %v, want ECONNREFUSED", dst, err)
	}
	e := s.waitFor("refused to "+dst.String(), refusedTo(n, dst))
	if e.Cause != cause {
		t.Errorf("cause = %q (%s), want %q", e.Cause, e.Explanation, cause)
	}
	// Only the 6.10+ tracepoint gives a reason; the older hooks have none.
	wantReason := ""
	if s.hook(probe.CapRefusals) == "tp_btf/tcp_send_reset" {
		wantReason = "NO_SOCKET"
	}
	if e.KernelReason != wantReason {
		t.Errorf("kernel_reason = %q, want %q (hook %s)", e.KernelReason, wantReason, s.hook(probe.CapRefusals))
	}
	if e.Src == nil || e.Src.AddrPort() != local || local.Port() == 0 {
		t.Errorf("src = %+v, want the client's %v", e.Src, local)
	}
	if e.Client == nil || e.Client.Pid != uint32(os.Getpid()) || e.Client.Comm != selfComm {
		t.Errorf("client = %+v, want pid %d comm %q", e.Client, os.Getpid(), selfComm)
	}
	if e.Explanation == "" {
		t.Error("no explanation")
	}
	s.settle(n) // a second event for the same refusal would be out by now
	if n := len(s.all(refusedTo(n, dst))); n != 1 {
		t.Errorf("%d refused events for one refusal, want 1", n)
	}
	return e
}

func TestPrivNoListener(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		n := newNetns(t)
		s := startTracer(t, Config{}, n)
		dst := netip.AddrPortFrom(lo, 2080)
		e := mustRefuse(t, s, n, dst, events.CauseNoListener)
		if e.Listener != nil || e.Bind != nil {
			t.Errorf("no_listener with listener %+v bind %+v", e.Listener, e.Bind)
		}
	})
}

// checkListener compares a reported listener with the helper that owns it.
func checkListener(t *testing.T, l *events.Listener, h *helperProc, n *netns, ap netip.AddrPort) {
	t.Helper()
	if l == nil {
		t.Fatal("no listener")
	}
	if l.Pid != h.pid || l.Comm != h.comm || l.Addr != ap.Addr() || l.Port != ap.Port() || l.Netns != n.ino {
		t.Errorf("listener = pid %d comm %q %v:%d netns %d; want pid %d comm %q %v netns %d",
			l.Pid, l.Comm, l.Addr, l.Port, l.Netns, h.pid, h.comm, ap, n.ino)
	}
}

func TestPrivListenerClosed(t *testing.T) {
	cases := []struct {
		name  string
		close func(h *helperProc)
		check func(t *testing.T, l *events.Listener, h *helperProc)
	}{
		{"close", func(h *helperProc) { h.send("close"); h.line() }, func(t *testing.T, l *events.Listener, h *helperProc) {
			if l.Exit != nil || l.ClosedBy != nil {
				t.Errorf("closed by its owner: exit %+v closed_by %+v, want neither", l.Exit, l.ClosedBy)
			}
		}},
		{"exit3", func(h *helperProc) { h.send("exit 3"); h.cmd.Wait() }, func(t *testing.T, l *events.Listener, h *helperProc) {
			if l.Exit == nil || l.Exit.Code == nil || *l.Exit.Code != 3 {
				t.Errorf("exit = %+v, want exit_code 3", l.Exit)
			}
		}},
		{"sigkill", func(h *helperProc) { h.cmd.Process.Kill(); h.cmd.Wait() }, func(t *testing.T, l *events.Listener, h *helperProc) {
			if l.Exit == nil || l.Exit.Signal != "SIGKILL" {
				t.Errorf("exit = %+v, want signal SIGKILL", l.Exit)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			families(t, func(t *testing.T, lo netip.Addr) {
				n := newNetns(t)
				s := startTracer(t, Config{}, n)
				ap := netip.AddrPortFrom(lo, 2081)
				h := n.mustStart(t, "fakesrv", "listen", ap)
				le := s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))
				checkListener(t, le.Listener, h, n, ap)
				if le.Listener.Backlog != 16 {
					t.Errorf("backlog = %d, want 16", le.Listener.Backlog)
				}
				c.close(h)
				ce := s.waitFor("listen_close", ofType(n, events.TypeListenClose, ap.Port()))
				checkListener(t, ce.Listener, h, n, ap)
				c.check(t, ce.Listener, h)

				e := mustRefuse(t, s, n, ap, events.CauseListenerClosed)
				checkListener(t, e.Listener, h, n, ap)
				c.check(t, e.Listener, h)
				if e.Listener.ClosedAt.IsZero() || e.Listener.ClosedAt.After(e.Time) {
					t.Errorf("closed_at = %v, want before the refusal at %v", e.Listener.ClosedAt, e.Time)
				}
				if !strings.Contains(e.Explanation, "fakesrv") {
					t.Errorf("explanation %q does not name the process", e.Explanation)
				}
			})
		})
	}
}

func TestPrivWrongAddress(t *testing.T) {
	cases := []struct{ name, listen, dst string }{
		{"other-ipv4-address", "127.0.0.1:2082", "127.0.0.2:2082"},
		{"ipv6-only-listener", "[::1]:2082", "127.0.0.1:2082"},
		{"ipv4-only-listener", "127.0.0.1:2082", "[::1]:2082"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNetns(t)
			s := startTracer(t, Config{}, n)
			ap := netip.MustParseAddrPort(c.listen)
			h := n.mustStart(t, "fakesrv", "listen", ap)
			s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))
			e := mustRefuse(t, s, n, netip.MustParseAddrPort(c.dst), events.CauseWrongAddress)
			checkListener(t, e.Listener, h, n, ap)
		})
	}
}

func TestPrivOtherNetns(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		here, there := newNetns(t), newNetns(t)
		s := startTracer(t, Config{}, here, there)
		ap := netip.AddrPortFrom(lo, 2083)
		h := there.mustStart(t, "fakesrv", "listen", ap)
		s.waitFor("listen", ofType(there, events.TypeListen, ap.Port()))
		e := mustRefuse(t, s, here, ap, events.CauseOtherNetns)
		checkListener(t, e.Listener, h, there, ap)
		if e.Netns != here.ino {
			t.Errorf("netns = %d, want %d (where the SYN arrived)", e.Netns, here.ino)
		}
	})
}

func TestPrivBindFailed(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		n := newNetns(t)
		s := startTracer(t, Config{}, n)
		t.Logf("bind errors from %s", s.hook(probe.CapBindErrors))
		held := netip.AddrPortFrom(lo, 2084)
		// The holder binds the port without listening: the port is taken
		// but nothing accepts connections on it.
		holder := n.mustStart(t, "holder", "hold", held)
		any := netip.IPv4Unspecified()
		if lo.Is6() {
			any = netip.IPv6Unspecified()
		}
		victim, res := n.start(t, "victim", "listen", netip.AddrPortFrom(any, held.Port()))
		if res != "EADDRINUSE" {
			t.Fatalf("victim bind: %s, want EADDRINUSE", res)
		}
		be := s.waitFor("bind_failed", ofType(n, events.TypeBindFailed, held.Port()))
		checkBind := func(b *events.Bind) {
			t.Helper()
			if b == nil {
				t.Fatal("no bind")
			}
			if b.Pid != victim.pid || b.Comm != "victim" || b.Errno != "EADDRINUSE" || b.Addr != any {
				t.Errorf("bind = %+v, want victim pid %d EADDRINUSE on %v", b, victim.pid, any)
			}
			if b.Holder == nil || b.Holder.Pid != holder.pid || b.Holder.Comm != "holder" {
				t.Errorf("holder = %+v, want holder pid %d", b.Holder, holder.pid)
			}
		}
		checkBind(be.Bind)
		e := mustRefuse(t, s, n, held, events.CauseBindFailed)
		checkBind(e.Bind)
		if !strings.Contains(e.Explanation, "EADDRINUSE") || !strings.Contains(e.Explanation, "holder") {
			t.Errorf("explanation %q does not name the errno and the holder", e.Explanation)
		}
	})
}

// Listeners that exist before the tracer starts are learned, with their
// owners, from the start-up snapshot.
func TestPrivSnapshot(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		n := newNetns(t)
		ap := netip.AddrPortFrom(lo, 2085)
		h := n.mustStart(t, "oldsrv", "listen", ap)
		s := startTracer(t, Config{}, n)
		other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), ap.Port())
		if lo.Is6() {
			other = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port())
		}
		e := mustRefuse(t, s, n, other, events.CauseWrongAddress)
		checkListener(t, e.Listener, h, n, ap)

		h.send("close")
		h.line()
		ce := s.waitFor("listen_close", ofType(n, events.TypeListenClose, ap.Port()))
		checkListener(t, ce.Listener, h, n, ap)
		e = mustRefuse(t, s, n, ap, events.CauseListenerClosed)
		checkListener(t, e.Listener, h, n, ap)
	})
}

func TestPrivPortFilter(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{Ports: []uint16{2087}}, n)
	lo := netip.MustParseAddr("127.0.0.1")
	// Refused first on an untraced port, then on the traced one: the
	// traced refusal is the only one that may come out.
	if err, _ := n.connect(t, netip.AddrPortFrom(lo, 2086)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect: %v", err)
	}
	h := n.mustStart(t, "fakesrv", "listen", netip.AddrPortFrom(lo, 2088))
	h.send("close")
	h.line()
	mustRefuse(t, s, n, netip.AddrPortFrom(lo, 2087), events.CauseNoListener)
	s.stop() // drains everything the kernel wrote
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
		if e.Dst != nil && e.Dst.Port != 2087 {
			t.Errorf("event for untraced port: %+v", e)
		}
		if e.Listener != nil {
			t.Errorf("listener event for untraced port: %+v", e.Listener)
		}
	}
}

// Every hook kind that can serve refusals on this kernel does; the ones the
// kernel refuses are reported degraded with its reason, and the tracer
// still starts.
func TestPrivRefusalHooks(t *testing.T) {
	for _, kind := range []string{"tp_btf", "fentry", "kprobe"} {
		t.Run(kind, func(t *testing.T) {
			n := newNetns(t)
			s := startTracer(t, Config{Force: map[string]string{probe.CapRefusals: kind}}, n)
			for _, a := range s.tr.Plan() {
				if a.Capability != probe.CapRefusals {
					continue
				}
				if a.Degraded != "" {
					if a.Hook != "" || !strings.Contains(a.Degraded, kind+":") {
						t.Fatalf("degraded plan %+v does not say why %s cannot be used", a, kind)
					}
					t.Skipf("this kernel cannot serve refusals with %s: %s", kind, a.Degraded)
				}
				if !strings.HasPrefix(a.Hook, kind+"/") {
					t.Fatalf("forced %s, plan uses %q", kind, a.Hook)
				}
			}
			families(t, func(t *testing.T, lo netip.Addr) {
				mustRefuse(t, s, n, netip.AddrPortFrom(lo, 2089), events.CauseNoListener)
			})
		})
	}
}

// A metrics scrape asks how full the ring is from its own goroutine, also
// while the tracer shuts down: RingFill during and after Close answers
// instead of reading the ring Close unmapped.
func TestPrivRingFillDuringClose(t *testing.T) {
	s := startTracer(t, Config{})
	tr := s.tr
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				if f := tr.RingFill(); f < 0 || f > 1 {
					t.Errorf("RingFill = %v, want a fraction", f)
				}
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	s.stop()
	close(stop)
	<-done
	if f := tr.RingFill(); f != 0 {
		t.Errorf("RingFill after Close = %v, want 0", f)
	}
}

// TestPrivPauseResume: paused, the tracer sees nothing (its programs are
// detached); resumed, the next refusal is reported as before.
func TestPrivPauseResume(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	if err := s.tr.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	paused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 2081)
	if err, _ := n.connect(t, paused); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %v while paused: %v, want ECONNREFUSED", paused, err)
	}
	if err := s.tr.Resume(); err != nil {
		if errors.Is(err, syscall.ENOENT) && s.hook(probe.CapRefusals) != "tp_btf/tcp_send_reset" {
			t.Skipf("this kernel attaches a fentry/fexit program only once (bpf_tracing_prog_attach returns ENOENT before 5.13, commit f3a95075549e), and refusals come from one: %v", err)
		}
		t.Fatalf("Resume: %v", err)
	}
	mustRefuse(t, s, n, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 2082), events.CauseNoListener)
	if got := s.all(refusedTo(n, paused)); len(got) != 0 {
		t.Errorf("%d refused events for the refusal made while paused, want none: %+v", len(got), got[0])
	}
}
