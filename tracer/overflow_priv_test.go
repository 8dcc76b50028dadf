package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/correlate"
	"github.com/rsttrace/rsttrace/internal/host"
	"github.com/rsttrace/rsttrace/internal/probe"
)

// Listen-queue overflow, against the kernel's own count: in a fresh netns
// TcpExtListenDrops starts at zero, so the sum of what rsttrace reported
// must equal it exactly.

const testOverflowInterval = 200 * time.Millisecond

// nstat reads the namespace's TcpExt listen counters through a process in it.
func nstat(t *testing.T, pid uint32) correlate.ListenCounters {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/netstat", pid))
	if err != nil {
		t.Fatal(err)
	}
	c, err := host.ParseNetstat(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sysctlIn writes a sysctl of the namespace n (net.* sysctls are per netns).
func (n *netns) sysctl(t *testing.T, name, value string) {
	t.Helper()
	var err error
	n.run(func() {
		err = os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(value), 0)
	})
	if err != nil {
		t.Fatalf("sysctl %s=%s in netns: %v", name, value, err)
	}
}

// dial starts a non-blocking connect from n to dst and returns the socket.
func (n *netns) dial(t *testing.T, dst netip.AddrPort) int {
	t.Helper()
	fd := -1
	var err error
	n.run(func() {
		fam, sa := sockaddr(dst)
		if fd, err = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		if err = unix.Connect(fd, sa); errors.Is(err, unix.EINPROGRESS) {
			err = nil
		}
	})
	if err != nil {
		t.Fatalf("connect to %v: %v", dst, err)
	}
	return fd
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// abortAll closes with SO_LINGER {1, 0}: a RST instead of a FIN, so no
// client retransmits anything to the listener afterwards.
func abortAll(fds []int) {
	for _, fd := range fds {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
}

// waitQuiet waits until the namespace's ListenDrops stays still for a
// while (longer than a retransmission timeout).
func waitQuiet(t *testing.T, pid uint32) {
	t.Helper()
	last := nstat(t, pid).Drops
	for deadline := time.Now().Add(waitTimeout); ; {
		time.Sleep(500 * time.Millisecond)
		now := nstat(t, pid).Drops
		if now == last {
			return
		}
		last = now
		if time.Now().After(deadline) {
			t.Fatalf("listen drops still moving after %v", waitTimeout)
		}
	}
}

// waitCounter waits until the counter read by get reaches want.
func waitCounter(t *testing.T, what string, want uint64, get func() uint64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for get() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d after %v, want at least %d", what, get(), waitTimeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func overflowsOf(n *netns, port uint16) func(*events.Event) bool {
	return func(e *events.Event) bool {
		return e.Type == events.TypeListenOverflow && e.Netns == n.ino &&
			(e.Listener == nil || e.Listener.Port == port)
	}
}

// sumDrops adds up the listen_overflow events of port in n, checking the
// fields every one of them has; all must name listener h.
func sumDrops(t *testing.T, s *session, n *netns, port uint16, h *helperProc) events.Drops {
	t.Helper()
	var sum events.Drops
	for _, e := range s.all(overflowsOf(n, port)) {
		if e.Listener == nil || e.Dropped == nil {
			t.Fatalf("overflow event without listener or drops: %s", e.Explanation)
		}
		if e.Cause != events.CauseBacklogFull || e.Explanation == "" {
			t.Errorf("cause %q explanation %q", e.Cause, e.Explanation)
		}
		if e.Listener.Pid != h.pid || e.Listener.Comm != h.comm {
			t.Errorf("listener owner = %s, want %s (pid %d)", e.Listener.Process, h.comm, h.pid)
		}
		d := e.Dropped
		if d.SynAcceptQueueFull+d.SynQueueFull+d.FinalAck+d.Other != d.Total || d.Total == 0 {
			t.Errorf("stages %+v do not add up to a non-zero total", *d)
		}
		sum.Total += d.Total
		sum.SynAcceptQueueFull += d.SynAcceptQueueFull
		sum.SynQueueFull += d.SynQueueFull
		sum.FinalAck += d.FinalAck
		sum.Other += d.Other
	}
	return sum
}

// TestPrivOverflowSYN: a server that never accepts, backlog 1, 2 and 8,
// and backlog+4 clients: the accept queue takes backlog+1, the other SYNs
// are dropped. Every drop is reported, against its owner, exactly.
func TestPrivOverflowSYN(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		for _, backlog := range []int{1, 2, 8} {
			t.Run("backlog"+strconv.Itoa(backlog), func(t *testing.T) {
				n := newNetns(t)
				s := startTracer(t, Config{OverflowInterval: testOverflowInterval}, n)
				ap := netip.AddrPortFrom(lo, 8080)
				h := n.mustStart(t, "stuckserver", "listen", ap, "RSTTRACE_TEST_BACKLOG="+strconv.Itoa(backlog))
				s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))

				extra := 3
				var fds []int
				for i := 0; i < backlog+1+extra; i++ {
					fds = append(fds, n.dial(t, ap))
				}
				defer func() { closeAll(fds) }()
				// Each extra client's first SYN is dropped at once.
				waitCounter(t, "TcpExtListenDrops", uint64(extra), func() uint64 { return nstat(t, h.pid).Drops })
				first := s.waitFor("listen_overflow", overflowsOf(n, ap.Port()))

				// No more SYNs (retransmissions) once the clients are
				// gone; then the tracer's last poll sees the final count.
				closeAll(fds)
				fds = nil
				s.stop()
				kernel := nstat(t, h.pid)
				got := sumDrops(t, s, n, ap.Port(), h)
				if got.Total != kernel.Drops {
					t.Errorf("reported %d drops in all, TcpExtListenDrops says %d", got.Total, kernel.Drops)
					for _, e := range s.all(func(*events.Event) bool { return true }) {
						t.Logf("%s %s %s", e.Time.Format("15:04:05.000"), e.Type, e.Explanation)
					}
				}
				if got.SynAcceptQueueFull != got.Total {
					t.Errorf("stages %+v: want every drop a SYN at a full accept queue", got)
				}
				l := first.Listener
				if l.Backlog != uint32(backlog) || l.BacklogRequested != uint32(backlog) {
					t.Errorf("backlog %d requested %d, want %d", l.Backlog, l.BacklogRequested, backlog)
				}
				if l.Queued == nil || *l.Queued != uint32(backlog+1) {
					t.Errorf("queued = %v, want %d (backlog+1)", l.Queued, backlog+1)
				}
				if l.Addr != lo || l.Port != ap.Port() || l.Netns != n.ino {
					t.Errorf("listener %v:%d netns %d, want %v netns %d", l.Addr, l.Port, l.Netns, ap, n.ino)
				}
				if !first.NeverAccepted || first.AcceptIdleMs == nil {
					t.Errorf("never_accepted %v accept_idle_ms %v: the server never accepted", first.NeverAccepted, first.AcceptIdleMs)
				}
			})
		}
	})
}

// TestPrivOverflowSomaxconn: listen(64) in a netns whose net.core.somaxconn
// is 4: the effective backlog is 4, and the event says somaxconn cut it.
func TestPrivOverflowSomaxconn(t *testing.T) {
	n := newNetns(t)
	n.sysctl(t, "net.core.somaxconn", "4")
	s := startTracer(t, Config{OverflowInterval: testOverflowInterval}, n)
	t.Logf("listen calls from %s", s.hook(probe.CapListenCalls))
	ap := netip.MustParseAddrPort("127.0.0.1:8080")
	h := n.mustStart(t, "clamped", "listen", ap, "RSTTRACE_TEST_BACKLOG=64")
	lev := s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))
	if lev.Listener.Backlog != 4 || lev.Listener.BacklogRequested != 64 {
		t.Errorf("listen event: backlog %d requested %d, want 4 and 64", lev.Listener.Backlog, lev.Listener.BacklogRequested)
	}
	var fds []int
	for i := 0; i < 4+1+2; i++ {
		fds = append(fds, n.dial(t, ap))
	}
	defer func() { closeAll(fds) }()
	e := s.waitFor("listen_overflow", overflowsOf(n, ap.Port()))
	if e.Listener == nil {
		t.Fatalf("overflow event names no listener: %s", e.Explanation)
	}
	if e.Listener.Backlog != 4 || e.Listener.BacklogRequested != 64 || e.Somaxconn != 4 {
		t.Errorf("backlog %d requested %d somaxconn %d, want 4, 64, 4", e.Listener.Backlog, e.Listener.BacklogRequested, e.Somaxconn)
	}
	if !strings.Contains(e.Explanation, "net.core.somaxconn=4 cut it to 4") {
		t.Errorf("explanation does not name the clamp: %s", e.Explanation)
	}
	closeAll(fds)
	fds = nil
	s.stop()
	if got, want := sumDrops(t, s, n, ap.Port(), h).Total, nstat(t, h.pid).Drops; got != want {
		t.Errorf("reported %d drops, TcpExtListenDrops says %d", got, want)
	}
}

// finalAckOverflow makes handshake completions overflow: with
// TCP_DEFER_ACCEPT the clients' final ACKs leave their connections in the
// SYN queue; the server then shrinks its backlog to 1 and each client sends
// a byte, which completes the handshake: two fit the accept queue, the
// others are dropped (or reset) at the final-ACK stage.
func finalAckOverflow(t *testing.T, abort bool) {
	const clients = 5
	n := newNetns(t)
	if abort {
		n.sysctl(t, "net.ipv4.tcp_abort_on_overflow", "1")
	}
	s := startTracer(t, Config{OverflowInterval: testOverflowInterval}, n)
	ap := netip.MustParseAddrPort("127.0.0.1:8080")
	h := n.mustStart(t, "deferserver", "listen", ap, "RSTTRACE_TEST_BACKLOG=64", "RSTTRACE_TEST_DEFER=30")
	s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))
	var fds []int
	for i := 0; i < clients; i++ {
		fd := n.dial(t, ap)
		fds = append(fds, fd)
	}
	defer func() { closeAll(fds) }()
	// Each client is connected on its side once its final ACK went out.
	for _, fd := range fds {
		waitWritable(t, fd)
	}
	h.send("relisten 1")
	if l := h.line(); l != "ok" {
		t.Fatalf("relisten: %s", l)
	}
	upd := s.waitFor("listen update", func(e *events.Event) bool {
		return ofType(n, events.TypeListen, ap.Port())(e) && e.Listener.Backlog == 1
	})
	if upd.Listener.BacklogRequested != 1 {
		t.Errorf("backlog_requested after relisten = %d, want 1", upd.Listener.BacklogRequested)
	}
	for _, fd := range fds {
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			t.Fatalf("client write: %v", err)
		}
	}
	waitCounter(t, "TcpExtListenDrops", clients-2, func() uint64 { return nstat(t, h.pid).Drops })
	if abort {
		s.waitN("refused by abort_on_overflow", clients-2, func(e *events.Event) bool {
			return refusedTo(n, ap)(e) && e.Cause == events.CauseBacklogFull
		})
	}
	s.waitFor("listen_overflow", overflowsOf(n, ap.Port()))
	abortAll(fds)
	fds = nil
	waitQuiet(t, h.pid)
	s.stop()

	kernel := nstat(t, h.pid)
	got := sumDrops(t, s, n, ap.Port(), h)
	if got.Total != kernel.Drops {
		t.Errorf("reported %d drops in all, TcpExtListenDrops says %d", got.Total, kernel.Drops)
	}
	if s.hook(probe.CapOverflowFinalAck) != "" && got.FinalAck != got.Total {
		t.Errorf("stages %+v: want every drop a final ACK (hook %s)", got, s.hook(probe.CapOverflowFinalAck))
	}
	refused := s.all(refusedTo(n, ap))
	if !abort {
		if len(refused) != 0 {
			t.Errorf("%d refused events without tcp_abort_on_overflow", len(refused))
		}
		return
	}
	if uint64(len(refused)) != kernel.Drops {
		t.Errorf("%d refused events, want one per drop (%d)", len(refused), kernel.Drops)
	}
	for _, e := range refused {
		if e.Cause != events.CauseBacklogFull || e.Listener == nil || e.Listener.Pid != h.pid {
			t.Errorf("refused: cause %q listener %+v: %s", e.Cause, e.Listener, e.Explanation)
		}
		if !strings.Contains(e.Explanation, "tcp_abort_on_overflow") {
			t.Errorf("explanation: %s", e.Explanation)
		}
	}
}

func TestPrivOverflowFinalAck(t *testing.T)        { finalAckOverflow(t, false) }
func TestPrivOverflowAbortOnOverflow(t *testing.T) { finalAckOverflow(t, true) }

func waitWritable(t *testing.T, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, int(waitTimeout.Milliseconds())); err != nil || n != 1 {
		t.Fatalf("client never connected: poll %d %v", n, err)
	}
}

// TestPrivOverflowSlowAccept: a server that accepts, but slowly, under a
// burst of connections overflows while the burst lasts; when the load
// drops to what it can take, the overflow events stop.
func TestPrivOverflowSlowAccept(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{OverflowInterval: testOverflowInterval}, n)
	t.Logf("accept calls from %s", s.hook(probe.CapAcceptCalls))
	ap := netip.MustParseAddrPort("[::1]:8080")
	h := n.mustStart(t, "slowserver", "listen", ap, "RSTTRACE_TEST_BACKLOG=2")
	s.waitFor("listen", ofType(n, events.TypeListen, ap.Port()))
	h.send("acceptevery 50")
	if l := h.line(); l != "ok" {
		t.Fatalf("acceptevery: %s", l)
	}
	// Burst: 40 connection attempts at once, far more than 20/s.
	var fds []int
	for i := 0; i < 40; i++ {
		fds = append(fds, n.dial(t, ap))
	}
	// The first events may come before the helper's first accept() call;
	// later ones know it accepts.
	e := s.waitFor("listen_overflow after an accept()", func(e *events.Event) bool {
		return overflowsOf(n, ap.Port())(e) && !e.NeverAccepted
	})
	if e.AcceptIdleMs == nil || *e.AcceptIdleMs > 5000 {
		t.Errorf("never_accepted %v accept_idle_ms %v: the server accepts every 50ms", e.NeverAccepted, e.AcceptIdleMs)
	}
	if !strings.Contains(e.Explanation, "accepts, but too slowly") && !strings.Contains(e.Explanation, "has not called accept() for") {
		t.Errorf("explanation: %s", e.Explanation)
	}
	abortAll(fds) // the burst is over
	waitQuiet(t, h.pid)
	time.Sleep(2 * testOverflowInterval) // the last drops are reported
	// A load it can take: 5 connections a second, each accepted.
	before := len(s.all(overflowsOf(n, ap.Port())))
	for i := 0; i < 5; i++ {
		fd := n.dial(t, ap)
		waitWritable(t, fd)
		time.Sleep(200 * time.Millisecond)
		unix.Close(fd)
	}
	time.Sleep(3 * testOverflowInterval)
	if after := len(s.all(overflowsOf(n, ap.Port()))); after != before {
		t.Errorf("%d overflow events after the server recovered", after-before)
	}
	s.stop()
	if got, want := sumDrops(t, s, n, ap.Port(), h).Total, nstat(t, h.pid).Drops; got != want {
		t.Errorf("reported %d drops, TcpExtListenDrops says %d", got, want)
	}
}
