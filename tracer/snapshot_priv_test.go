package tracer

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// Listeners that existed before the tracer are written as listen records
// when it starts, with the backlog and IPV6_V6ONLY sock_diag reports
// (/proc/net/tcp has neither), and no start time.
func TestPrivSnapshotListenRecords(t *testing.T) {
	n := newNetns(t)
	v4 := netip.MustParseAddrPort("127.0.0.1:2161")
	v6 := netip.MustParseAddrPort("[::]:2162")
	nginx := n.mustStart(t, "nginx", "listen", v4, "RSTTRACE_TEST_BACKLOG=511")
	// The IPv6-only listener is this test process's own socket.
	var ferr error
	n.run(func() {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			ferr = err
			return
		}
		t.Cleanup(func() { unix.Close(fd) })
		if ferr = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); ferr != nil {
			return
		}
		_, sa := sockaddr(v6)
		if ferr = unix.Bind(fd, sa); ferr == nil {
			ferr = unix.Listen(fd, 7)
		}
	})
	if ferr != nil {
		t.Fatalf("IPv6-only listener on %v: %v", v6, ferr)
	}
	six := &helperProc{pid: uint32(os.Getpid()), comm: selfComm}

	s := startTracer(t, Config{}, n)
	for _, tc := range []struct {
		h       *helperProc
		ap      netip.AddrPort
		backlog uint32
		v6only  bool
	}{{nginx, v4, 511, false}, {six, v6, 7, true}} {
		e := s.waitFor("snapshot listen on "+tc.ap.String(), func(e *events.Event) bool {
			return e.Type == events.TypeListen && e.Listener != nil && e.Listener.Port == tc.ap.Port()
		})
		l := e.Listener
		if l.Addr != tc.ap.Addr() || l.Netns != n.ino || l.Pid != tc.h.pid || l.Comm != tc.h.comm {
			t.Errorf("listener %+v: want %v in netns %d owned by %s (pid %d)", l, tc.ap, n.ino, tc.h.comm, tc.h.pid)
		}
		if l.Backlog != tc.backlog || l.V6Only != tc.v6only {
			t.Errorf("listener %v: backlog %d v6only %v, want backlog %d v6only %v", tc.ap, l.Backlog, l.V6Only, tc.backlog, tc.v6only)
		}
		if !l.Since.IsZero() || e.Explanation == "" {
			t.Errorf("listener %v: since %v explanation %q: want no start time and an explanation", tc.ap, l.Since, e.Explanation)
		}
		if time.Since(e.Time) > waitTimeout {
			t.Errorf("listen record time %v is not the tracer's start", e.Time)
		}
	}
	if got := len(s.all(func(e *events.Event) bool { return e.Type == events.TypeListen })); got != 2 {
		t.Errorf("%d listen records in the namespace, want 2 (one per listener)", got)
	}
}
