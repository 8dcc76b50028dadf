package correlate

import (
	"net/netip"
	"testing"

	"github.com/rsttrace/rsttrace/internal/record"
)

// TestCommCache: the cache returns what commString returns, whatever was
// cached before in the same slot.
func TestCommCache(t *testing.T) {
	var cc commCache
	names := []string{"", "curl", "nginx", "nginx: worker pr", "a\x00b", "\xc3\xa9", "loadgen"}
	for i := range 300 {
		names = append(names, string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	for round := range 3 {
		for _, n := range names {
			c := ctComm(n)
			if got, want := cc.get(&c), record.CommString(&c); got != want {
				t.Fatalf("round %d: get(%q) = %q, want %q", round, n, got, want)
			}
		}
	}
	c := ctComm("loadgen")
	cc.get(&c)
	if n := testing.AllocsPerRun(100, func() { cc.get(&c) }); n != 0 {
		t.Errorf("a cached name costs %v allocations", n)
	}
}

// TestTupleRoundTrip: a refusal key gives back the unmapped addresses it
// was made of, and two records have the same key exactly when their
// unmapped address/port pairs are equal.
func TestTupleRoundTrip(t *testing.T) {
	aps := []string{"127.0.0.1:1", "127.0.0.1:2", "[::ffff:127.0.0.1]:1", "[::1]:1", "[::]:1", "0.0.0.0:1",
		"[::ffff:0.0.0.0]:1", "[2001:db8::1]:443", "[::127.0.0.1]:1", "10.0.0.1:65535"}
	type pair struct{ src, dst netip.AddrPort }
	var recs []*record.Record
	var want []pair
	for _, s := range aps {
		for _, d := range aps {
			r := ctReset(1, ctNsA, s, d)
			src, dst := netip.MustParseAddrPort(s), netip.MustParseAddrPort(d)
			if src.Addr().Is4() != dst.Addr().Is4() {
				continue // one record has one family
			}
			recs = append(recs, r)
			want = append(want, pair{
				netip.AddrPortFrom(src.Addr().Unmap(), src.Port()),
				netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()),
			})
		}
	}
	for i, r := range recs {
		k := refusalKey(r)
		if got := (pair{netip.AddrPortFrom(k.srcAddr(), k.sport), netip.AddrPortFrom(k.dstAddr(), k.dport)}); got != want[i] {
			t.Errorf("key of %v gives %v", want[i], got)
		}
		for j, r2 := range recs {
			if (refusalKey(r2) == k) != (want[j] == want[i]) {
				t.Errorf("keys of %v and %v: equal %v", want[i], want[j], refusalKey(r2) == k)
			}
		}
	}
}
