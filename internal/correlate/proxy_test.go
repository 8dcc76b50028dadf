package correlate

import (
	"testing"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

var (
	ctProxy      = events.Process{Pid: 500, Comm: "socat"}
	ctProxyChild = events.Process{Pid: 501, Comm: "socat"}
)

// ctRst: a RST on an established connection; out: local sent it to
// remote (owner p), else local received it from remote (owner p).
func ctRst(ts uint64, netns uint32, out bool, local, remote string, p events.Process) *record.Record {
	typ := record.ResetIn
	if out {
		typ = record.ResetOut
	}
	r := &record.Record{Type: typ, Ts: ts, Netns: netns, State: 1,
		Flags: record.FlagProcKnown | record.FlagOwnerKnown}
	r.Family = ctSetAP(&r.Saddr, &r.Sport, local)
	ctSetAP(&r.Daddr, &r.Dport, remote)
	return ctWithProc(r, p)
}

// proxyRefusal: a proxy (socat, forking: the child connects) listening on
// 127.0.0.1:9000 in A has its connection to a backend in B refused.
func proxyRefusal(t *testing.T, c *Correlator, s *ctSink) {
	ctFeed(t, c, s,
		ctListen(1, ctNsA, "127.0.0.1:9000", 42, ctProxy, 0),
		ctReset(10*ctMs, ctNsB, "10.202.0.1:41000", "10.202.0.2:80"),
		ctClient(10*ctMs+1000, ctNsA, "10.202.0.1:41000", "10.202.0.2:80", &ctProxyChild))
}

// The proxy's refusal and the reset it sends its own client are one
// refused event: Proxy the process whose connect was refused, Client the
// one that received the reset, Src its address, DstOriginal the proxy's.
func TestProxyJoinsReset(t *testing.T) {
	for _, order := range []string{"out-first", "in-first"} {
		t.Run(order, func(t *testing.T) {
			c := New(nil)
			s := &ctSink{}
			proxyRefusal(t, c, s)
			if n := len(s.of(events.TypeRefused)); n != 0 {
				t.Fatalf("refusal written before its proxy's reset could come (%d)", n)
			}
			out := ctRst(11*ctMs, ctNsA, true, "127.0.0.1:9000", "127.0.0.1:50000", ctProxy)
			in := ctRst(11*ctMs+500, ctNsA, false, "127.0.0.1:50000", "127.0.0.1:9000", ctClientProc)
			if order == "in-first" {
				in.Ts, out.Ts = out.Ts, in.Ts
				ctFeed(t, c, s, in, out)
			} else {
				ctFeed(t, c, s, out, in)
			}
			if err := c.FlushAll(s.emit); err != nil {
				t.Fatal(err)
			}
			if n := len(s.of(events.TypeReset)); n != 0 {
				t.Errorf("%d reset events, want none (joined to the refusal)", n)
			}
			ref := s.of(events.TypeRefused)
			if len(ref) != 1 {
				t.Fatalf("%d refused events, want 1", len(ref))
			}
			e := ref[0]
			if e.Proxy == nil || *e.Proxy != ctProxyChild {
				t.Errorf("proxy = %+v, want %+v", e.Proxy, ctProxyChild)
			}
			if e.Client == nil || *e.Client != ctClientProc {
				t.Errorf("client = %+v, want %+v", e.Client, ctClientProc)
			}
			checkEP(t, "src", e.Src, "127.0.0.1:50000")
			checkEP(t, "dst", e.Dst, "10.202.0.2:80")
			checkEP(t, "dst_original", e.DstOriginal, "127.0.0.1:9000")
			if e.Netns != ctNsB || e.ClientNetns != ctNsA || e.Cause != events.CauseNoListener {
				t.Errorf("netns %d client_netns %d cause %q, want %d %d no_listener", e.Netns, e.ClientNetns, e.Cause, ctNsB, ctNsA)
			}
		})
	}
}

// No reset from the proxy (it closed with nothing unread: a FIN): the
// refusal is written as before, after ProxyHold, naming the proxy as its
// client.
func TestProxyNoReset(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	proxyRefusal(t, c, s)
	if err := c.Expire(10*ctMs+1000+uint64(ProxyHold)-1, s.emit); err != nil {
		t.Fatal(err)
	}
	if n := len(s.of(events.TypeRefused)); n != 0 {
		t.Fatalf("written before ProxyHold: %d", n)
	}
	if err := c.Expire(10*ctMs+1000+uint64(ProxyHold), s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].Proxy != nil || ref[0].Client == nil || *ref[0].Client != ctProxyChild || ref[0].DstOriginal != nil {
		t.Fatalf("refused = %+v, want one with the proxy as client", ref)
	}
}

// A reset from another process, or from the proxy on a connection it did
// not accept, is its own event; the refusal is written alone.
func TestProxyUnrelatedReset(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	proxyRefusal(t, c, s)
	ctFeed(t, c, s,
		ctRst(11*ctMs, ctNsA, true, "127.0.0.1:7000", "127.0.0.1:50001", ctOther),
		ctRst(11*ctMs+100, ctNsA, true, "127.0.0.1:41000", "127.0.0.1:7001", ctProxy))
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	if n := len(s.of(events.TypeReset)); n != 2 {
		t.Errorf("%d reset events, want 2", n)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].Proxy != nil {
		t.Fatalf("refused = %+v, want one without a proxy", ref)
	}
}

// A client that owns no listener is not held for a proxy's reset.
func TestProxyOnlyListenerOwners(t *testing.T) {
	c := New(nil)
	s := &ctSink{}
	ctFeed(t, c, s,
		ctReset(10*ctMs, ctNsB, "10.202.0.1:41000", "10.202.0.2:80"),
		ctClient(10*ctMs+1000, ctNsA, "10.202.0.1:41000", "10.202.0.2:80", &ctClientProc))
	if n := len(s.of(events.TypeRefused)); n != 1 {
		t.Fatalf("%d refused events at once, want 1", n)
	}
}
