package correlate

import (
	"net/netip"
	"testing"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// ctNATReset: the stack in netns refused src -> dst, a SYN that netns
// natNetns translated from origSrc -> origDst.
func ctNATReset(ts uint64, netns uint32, src, dst, origSrc, origDst string, natNetns uint32) *record.Record {
	r := ctReset(ts, netns, src, dst)
	ctSetAP(&r.OrigSaddr, &r.OrigSport, origSrc)
	ctSetAP(&r.OrigDaddr, &r.OrigDport, origDst)
	r.NatNetns = natNetns
	r.Flags |= record.FlagNAT
	return r
}

func ep(s string) events.Endpoint {
	ap := netip.MustParseAddrPort(s)
	return events.Endpoint{Addr: ap.Addr(), Port: ap.Port()}
}

func checkEP(t *testing.T, what string, got *events.Endpoint, want string) {
	t.Helper()
	if want == "" {
		if got != nil {
			t.Errorf("%s = %v, want none", what, *got)
		}
		return
	}
	if got == nil || *got != ep(want) {
		t.Errorf("%s = %v, want %s", what, got, want)
	}
}

// A refusal through DNAT (and masquerade): the backend's record, keyed by
// the original tuple, joins the client's record, whose socket says client
// -> service. One event: Dst and cause at the backend, DstOriginal the
// service, Src the client as it connected, ClientNetns the client's.
func TestNATJoinsClient(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		src, dst, origSrc, origDst string
	}{
		{"dnat", "10.202.0.1:40000", "10.202.0.2:80", "10.202.0.1:40000", "10.202.9.9:8080"},
		{"masquerade", "10.202.0.254:61000", "10.202.0.2:80", "10.202.1.1:40000", "10.202.9.9:8080"},
		{"ipv6", "[fd00:202::1]:40000", "[fd00:202::2]:80", "[fd00:202::1]:40000", "[fd00:202:9::9]:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil)
			s := &ctSink{}
			ctFeed(t, c, s,
				ctNATReset(1*ctMs, ctNsB, tc.src, tc.dst, tc.origSrc, tc.origDst, ctNsA),
				ctClient(1*ctMs+1000, ctNsA, tc.origSrc, tc.origDst, &ctClientProc))
			if err := c.FlushAll(s.emit); err != nil {
				t.Fatal(err)
			}
			ref := s.of(events.TypeRefused)
			if len(ref) != 1 {
				t.Fatalf("%d refused events, want 1: %+v", len(ref), ref)
			}
			e := ref[0]
			checkEP(t, "src", e.Src, tc.origSrc)
			checkEP(t, "dst", e.Dst, tc.dst)
			checkEP(t, "dst_original", e.DstOriginal, tc.origDst)
			if e.Netns != ctNsB || e.ClientNetns != ctNsA {
				t.Errorf("netns %d client_netns %d, want %d and %d", e.Netns, e.ClientNetns, ctNsB, ctNsA)
			}
			if e.Cause != events.CauseNoListener {
				t.Errorf("cause = %q, want no_listener", e.Cause)
			}
			if e.Client == nil || *e.Client != ctClientProc {
				t.Errorf("client = %+v, want %+v", e.Client, ctClientProc)
			}
			if e.Explanation == "" {
				t.Error("no explanation")
			}
		})
	}
}

// The cause is classified at the backend, as without translation: a
// listener on the backend's port bound to another address.
func TestNATClassifiesAtBackend(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	ctFeed(t, c, s,
		ctListen(1, ctNsB, "127.0.0.1:80", 42, ctOwner, 0),
		ctNATReset(1*ctMs, ctNsB, "10.202.0.1:40000", "10.202.0.2:80", "10.202.0.1:40000", "10.202.9.9:8080", ctNsA),
		ctClient(1*ctMs+1000, ctNsA, "10.202.0.1:40000", "10.202.9.9:8080", &ctClientProc))
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].Cause != events.CauseWrongAddress || ref[0].Listener == nil || ref[0].Listener.Pid != ctOwner.Pid {
		t.Fatalf("refused = %+v, want one wrong_address naming the listener", ref)
	}
}

// The client is not on this host: the event still says where it connected.
func TestNATRemoteClient(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	ctFeed(t, c, s, ctNATReset(1*ctMs, ctNsB, "10.202.0.254:61000", "10.202.0.2:80", "192.0.2.7:40000", "10.202.9.9:8080", ctNsA))
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 {
		t.Fatalf("%d refused events, want 1", len(ref))
	}
	checkEP(t, "dst_original", ref[0].DstOriginal, "10.202.9.9:8080")
	checkEP(t, "src", ref[0].Src, "192.0.2.7:40000")
	if ref[0].Client != nil || ref[0].ClientNetns != 0 {
		t.Errorf("client %+v client_netns %d, want none", ref[0].Client, ref[0].ClientNetns)
	}
}

// Without translation nothing changes: no DstOriginal, no ClientNetns,
// even when client and server are in different namespaces.
func TestNoNATNoOriginal(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	ctFeed(t, c, s,
		ctReset(1*ctMs, ctNsB, "10.202.0.1:40000", "10.202.0.2:80"),
		ctClient(1*ctMs+1000, ctNsA, "10.202.0.1:40000", "10.202.0.2:80", &ctClientProc))
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].DstOriginal != nil || ref[0].ClientNetns != 0 {
		t.Fatalf("refused = %+v, want one without dst_original", ref)
	}
}

// other_netns names a listener in another namespace only for a connection
// made inside the namespace where it was refused: one routed in from
// elsewhere (a bridge, a proxy) or translated is no_listener there.
func TestOtherNetnsOnlyForLocalConnections(t *testing.T) {
	for _, tc := range []struct {
		name        string
		clientNetns uint32
		want        events.Cause
	}{
		{"client in the same namespace", ctNsA, events.CauseOtherNetns},
		{"client routed in from another namespace", ctNsB, events.CauseNoListener},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := newTestCorrelator(), &ctSink{}
			ctFeed(t, c, s,
				ctListen(1*ctMs, ctNsB, "0.0.0.0:8080", 10, ctOwner, 0),
				ctReset(2*ctMs, ctNsA, "10.0.0.1:40000", "10.0.0.2:8080"),
				ctClient(3*ctMs, tc.clientNetns, "10.0.0.1:40000", "10.0.0.2:8080", &ctClientProc))
			c.FlushAll(s.emit)
			var got []*events.Event
			for _, e := range s.evs {
				if e.Type == events.TypeRefused {
					got = append(got, e)
				}
			}
			if len(got) != 1 || got[0].Cause != tc.want {
				t.Fatalf("refusals %+v, want one with cause %s", got, tc.want)
			}
			if tc.want == events.CauseNoListener && got[0].Listener != nil {
				t.Errorf("no_listener names listener %+v", got[0].Listener)
			}
		})
	}
}
