package tracer

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

// Every record names its own network namespace when refusals alternate
// between namespaces and namespaces come and go (a struct net may be
// reused at the same address): exactly one refused event per attempt, in
// the attempt's namespace, with its client.
func TestPrivNetnsAlternating(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	s := startTracer(t, Config{}, a, b)
	dst := netip.MustParseAddrPort("127.0.0.1:2093")

	type attempt struct {
		n     *netns
		local netip.AddrPort
	}
	var tries []attempt
	try := func(n *netns) {
		err, local := n.connect(t, dst)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect to %v: got %v, want ECONNREFUSED", dst, err)
		}
		tries = append(tries, attempt{n, local})
	}
	for i := 0; i < 10; i++ {
		try(a)
		try(b)
	}
	// New namespaces, each used once and gone before the next: a struct
	// net may be reused at the same address, and an inode number too.
	for i := 0; i < 4; i++ {
		c := newNetns(t)
		s.mu.Lock()
		s.watch[c.ino] = true
		s.mu.Unlock()
		try(c)
		local := tries[len(tries)-1].local
		s.waitFor("refused from "+local.String(), func(e *events.Event) bool {
			return e.Type == events.TypeRefused && e.Netns == c.ino && e.Src != nil && e.Src.AddrPort() == local
		})
		c.close(t)
		try(a)
	}

	for _, tr := range tries {
		n, local := tr.n, tr.local
		s.waitFor("refused from "+local.String(), func(e *events.Event) bool {
			return e.Type == events.TypeRefused && e.Netns == n.ino && e.Src != nil && e.Src.AddrPort() == local
		})
	}
	got := s.all(func(e *events.Event) bool {
		return e.Type == events.TypeRefused && e.Dst != nil && e.Dst.AddrPort() == dst
	})
	if len(got) != len(tries) {
		t.Errorf("%d refused events to %v in the watched namespaces, want %d (one per attempt)", len(got), dst, len(tries))
	}
	for _, e := range got {
		if e.Cause != events.CauseNoListener || e.Client == nil {
			t.Errorf("event %+v: want cause %s with the client known", e, events.CauseNoListener)
		}
	}
}
