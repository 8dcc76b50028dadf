package tracer

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// kernelWarnings starts reading the kernel log at its end; the function
// it returns gives the warnings logged since (WARN, BUG, verifier
// complaints about run-time allocation).
func kernelWarnings(t *testing.T) func() []string {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening the kernel log: %v", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		t.Fatalf("seeking the kernel log: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func() []string {
		var out []string
		buf := make([]byte, 8192)
		for range 100000 { // bounded: the log is read to its end (EAGAIN)
			n, err := unix.Read(fd, buf)
			if err == unix.EPIPE {
				continue // records overwritten before we read them
			}
			if err != nil || n <= 0 {
				break
			}
			// "prio,seq,usec,flags;message"
			msg := string(buf[:n])
			if i := strings.IndexByte(msg, ';'); i >= 0 {
				msg = msg[i+1:]
			}
			for _, w := range []string{"WARNING:", "BUG:", "run-time allocation", "run-time allocated"} {
				if strings.Contains(msg, w) {
					out = append(out, strings.TrimSpace(msg))
					break
				}
			}
		}
		return out
	}
}

// With Config.Summary the kernel counts refusals instead of writing them:
// every refusal of a burst is in a summary record (IPv4 and IPv6, one
// destination each), classified, and none is a refused event.
//
// Summary counts go to hash maps allocated on demand where the kernel has
// the BPF memory allocator: loading and counting must not make the kernel
// warn (before 6.1 the verifier WARNs for a tracing program using such a
// map, which would take a panic_on_warn host down). Where the kernel has
// per-CPU summary cells (256 a CPU), 700 more destinations fill them and
// spill to the maps: every one is still counted once.
func TestPrivSummary(t *testing.T) {
	requireRoot(t)
	warnings := kernelWarnings(t)
	n := newNetns(t)
	s := startTracer(t, Config{Summary: true}, n)
	dsts := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2095"), netip.MustParseAddrPort("[::1]:2096")}
	want := map[netip.AddrPort]uint64{dsts[0]: 300, dsts[1]: 120}
	for p := range uint16(700) {
		d := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 21000+p)
		dsts = append(dsts, d)
		want[d] = 1
	}
	for _, d := range dsts {
		for range want[d] {
			if err, _ := n.connect(t, d); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connect %v: %v, want ECONNREFUSED", d, err)
			}
		}
	}
	if lost, err := s.tr.Lost(); err != nil || lost != 0 {
		t.Errorf("lost %d (%v), want 0", lost, err)
	}
	s.stop() // the last poll writes what the kernel counted
	for _, w := range warnings() {
		t.Errorf("kernel warned while the tracer ran: %s", w)
	}
	got := map[netip.AddrPort]uint64{}
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
		switch e.Type {
		case events.TypeRefused:
			t.Errorf("refused event in summary mode: %+v", e)
		case events.TypeSummary:
			got[e.Dst.AddrPort()] += e.Refusals
			if e.Cause != events.CauseNoListener || !strings.Contains(e.Explanation, "(--summary)") {
				t.Errorf("summary %+v: want cause no_listener, explanation naming --summary", e)
			}
		}
	}
	for _, d := range dsts {
		if got[d] != want[d] {
			t.Errorf("summarized refusals to %v = %d, want %d (every connect)", d, got[d], want[d])
		}
	}
}
