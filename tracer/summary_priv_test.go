package tracer

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

// With Config.Summary the kernel counts refusals instead of writing them:
// every refusal of a burst is in a summary record (IPv4 and IPv6, one
// destination each), classified, and none is a refused event.
func TestPrivSummary(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{Summary: true}, n)
	dsts := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2095"), netip.MustParseAddrPort("[::1]:2096")}
	want := map[netip.AddrPort]uint64{dsts[0]: 300, dsts[1]: 120}
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
