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

// The counts are per interval: each update writes the keys that counted
// anything, classified as a refusal to that destination would be.
func TestSummarizer(t *testing.T) {
	c := newTestCorrelator()
	c.Wall = ctWall
	c.SeesLocalAnswers = true
	s := &ctSink{}
	ctFeed(t, c, s,
		ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
		ctClose(2*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner))
	t0 := time.Unix(100, 0)
	sum := NewSummarizer(false, 0, t0)
	closed, nothing, remote := sumKey(ctNsA, "127.0.0.1:8080"), sumKey(ctNsA, "[::1]:9"), sumKey(ctNsA, "10.1.2.3:443")
	keys := []SummaryKey{closed, nothing, remote}

	var got []*events.Event
	emit := func(e *events.Event) error { got = append(got, e); return nil }
	if err := sum.Update(c, keys, []SummaryCount{{Server: 700, ClientLocal: 700}, {Server: 5, ClientLocal: 5}, {Client: 3}}, t0.Add(time.Second), emit); err != nil {
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
	if err := sum.Update(c, keys, []SummaryCount{{Server: 50, ClientLocal: 50}, {}, {}}, t0.Add(3*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Refusals != 50 || got[0].IntervalMs != 2000 {
		t.Fatalf("second update: %+v, want one record of 50 in 2000ms", got)
	}
	if sum.Total() != 758 {
		t.Errorf("total %d, want 758", sum.Total())
	}
}

// Each kind is its own record, with its count and what it stands for; a
// key read twice in one update (both maps at shutdown) is one record; a
// destination with local and remote refusals gets one record of each.
func TestSummarizerKinds(t *testing.T) {
	c := newTestCorrelator()
	c.SeesLocalAnswers, c.SeesFirewallDrops = true, true
	t0 := time.Unix(100, 0)
	sum := NewSummarizer(false, 100, t0)
	k := sumKey(ctNsA, "127.0.0.1:8080")
	kf, kr, kt := k, k, k
	kf.Kind, kr.Kind, kt.Kind = KindFiltered, KindReset, KindTimeout
	var got []*events.Event
	emit := func(e *events.Event) error { got = append(got, e); return nil }
	err := sum.Update(c, []SummaryKey{k, kf, kr, kt, kf},
		[]SummaryCount{{Server: 4, Client: 2, ClientLocal: 4}, {Server: 10}, {Server: 6, Client: 1, ClientLocal: 6}, {Client: 3}, {Server: 5}},
		t0.Add(time.Second), emit)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		of    string
		n     uint64
		cause events.Cause
	}
	want := []rec{{"refused", 4, events.CauseNoListener}, {"refused", 2, events.CauseRemote},
		{"filtered", 15, events.CauseFirewallDrop}, {"reset", 7, ""}, {"timeout", 3, events.CauseNoResponse}}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if (rec{e.SummaryOf, e.Refusals, e.Cause}) != w || e.Type != events.TypeSummary {
			t.Errorf("record %d = %s %d %s, want %+v", i, e.SummaryOf, e.Refusals, e.Cause, w)
		}
		if !strings.Contains(e.Explanation, "more than 100 a second") {
			t.Errorf("explanation %q does not say why", e.Explanation)
		}
	}
	if tot := sum.Totals(); tot != (SummaryTotals{Refused: 6, Filtered: 15, Reset: 7, Timeout: 3}) {
		t.Errorf("totals %+v", tot)
	}
}
