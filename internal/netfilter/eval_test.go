package netfilter

import (
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func TestPrefixLen(t *testing.T) {
	for _, c := range []struct {
		mask []byte
		n    int
		ok   bool
	}{{[]byte{255, 255, 255, 0}, 24, true}, {[]byte{255, 240, 0, 0}, 12, true}, {[]byte{255, 0, 255, 0}, 0, false}, {[]byte{0xf0 | 0x01, 0, 0, 0}, 0, false}} {
		n, ok := prefixLen(c.mask)
		if n != c.n || ok != c.ok {
			t.Errorf("prefixLen(%v) = %d, %v; want %d, %v", c.mask, n, ok, c.n, c.ok)
		}
	}
}

// An interval set as nft_rbtree holds it: starts, and ends one past.
func TestLookupIntervalSet(t *testing.T) {
	sd := &setData{set: &nftables.Set{Interval: true, KeyType: nftables.TypeInetService}, elems: []nftables.SetElement{
		{Key: []byte{0, 0}, IntervalEnd: true},
		{Key: []byte{0x23, 0x28}},                    // 9000
		{Key: []byte{0x23, 0x8d}, IntervalEnd: true}, // 9101
	}}
	for port, want := range map[uint16]int{8999: 0, 9000: 1, 9100: 1, 9101: 0} {
		v := []byte{byte(port >> 8), byte(port)}
		if got := len(lookupSet(sd, v, []bool{true, true})); got != want {
			t.Errorf("port %d: %d hits, want %d", port, got, want)
		}
	}
}

func TestEvalRuleRegisters(t *testing.T) {
	tbl := &nftables.Table{Name: "t", Family: nftables.TableFamilyIPv4}
	// ip daddr 10.1.0.0/16 tcp dport 80 drop
	r := &nftables.Rule{Table: tbl, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 1, 0, 0}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 80}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}}
	q := Query{Family: 4, Proto: 6, Src: netip.MustParseAddrPort("10.9.9.9:1234")}
	for dst, want := range map[string]tri{"10.1.2.3:80": triYes, "10.2.2.3:80": triNo, "10.1.2.3:81": triNo} {
		q.Dst = netip.MustParseAddrPort(dst)
		ev, err := evalRule(r, newPacket(q), nil)
		if err != nil || ev.match != want {
			t.Errorf("%s: match %v, %v; want %v", dst, ev.match, err, want)
		}
	}
	// The destination unknown: the rule may match.
	q.Dst = netip.AddrPortFrom(netip.Addr{}, 80)
	if ev, _ := evalRule(r, newPacket(q), nil); ev.match != triMaybe {
		t.Errorf("unknown daddr: match %v, want maybe", ev.match)
	}
	if got, want := RenderRule(r, nil), "ip daddr 10.1.0.0/16 tcp dport 80 drop"; got != want {
		t.Errorf("RenderRule = %q, want %q", got, want)
	}
}
