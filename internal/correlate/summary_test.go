package correlate

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

func sumKey(netns uint32, ap string) SummaryKey {
	a := netip.MustParseAddrPort(ap)
	k := SummaryKey{Netns: netns, Dport: a.Port(), Family: record.AFInet6}
	if a.Addr().Is4() {
		k.Family = record.AFInet
		b := a.Addr().As4()
		copy(k.Daddr[:], b[:])
	} else {
		k.Daddr = a.Addr().As16()
	}
	return k
}

// The counters are cumulative: each update writes what moved since the
// last one, classified as a refusal to that destination would be.
func TestSummarizer(t *testing.T) {
	c := newTestCorrelator()
	c.Wall = ctWall
	c.SeesLocalAnswers = true
	s := &ctSink{}
	ctFeed(t, c, s,
		ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
		ctClose(2*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner))
	t0 := time.Unix(100, 0)
	sum := NewSummarizer(false, t0)
	closed, nothing, remote := sumKey(ctNsA, "127.0.0.1:8080"), sumKey(ctNsA, "[::1]:9"), sumKey(ctNsA, "10.1.2.3:443")
	keys := []SummaryKey{closed, nothing, remote}

	var got []*events.Event
	emit := func(e *events.Event) error { got = append(got, e); return nil }
	if err := sum.Update(c, keys, []SummaryCount{{Server: 700, Client: 700}, {Server: 5, Client: 5}, {Client: 3}}, t0.Add(time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d records, want 3", len(got))
	}
	want := []struct {
		n     uint64
		cause events.Cause
		dst   string
	}{{700, events.CauseListenerClosed, "127.0.0.1:8080"}, {5, events.CauseNoListener, "[::1]:9"}, {3, events.CauseRemote, "10.1.2.3:443"}}
	for i, w := range want {
		e := got[i]
		if e.Type != events.TypeSummary || e.Refusals != w.n || e.Cause != w.cause || e.Dst.AddrPort().String() != w.dst ||
			e.Netns != ctNsA || e.IntervalMs != 1000 {
			t.Errorf("record %d = %+v, want %d %s to %s in 1000ms", i, e, w.n, w.cause, w.dst)
		}
		if !strings.HasPrefix(e.Explanation, "counted in the kernel, not written one by one (the ring buffer was more than half full") {
			t.Errorf("explanation %q", e.Explanation)
		}
	}
	if got[0].Listener == nil || got[0].Listener.Pid != ctOwner.Pid {
		t.Errorf("listener_closed summary without its listener: %+v", got[0].Listener)
	}

	// Only what moved, by how much.
	got = nil
	if err := sum.Update(c, keys, []SummaryCount{{Server: 750, Client: 750}, {Server: 5, Client: 5}, {Client: 3}}, t0.Add(3*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Refusals != 50 || got[0].IntervalMs != 2000 {
		t.Fatalf("second update: %+v, want one record of 50 in 2000ms", got)
	}
	if sum.total != 758 {
		t.Errorf("total %d, want 758", sum.total)
	}
}
