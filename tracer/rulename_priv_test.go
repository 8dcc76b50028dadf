package tracer

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

// A Service without endpoints, in the shape kube-proxy's nftables mode
// writes it: a reject in a regular chain of its own table, reached by a
// jump from a base chain on the output hook, the Service named in the
// rule's comment. The refusal names the table, chain, rule and comment.
func TestPrivFirewallRuleNamed(t *testing.T) {
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	requireCap(t, s, "firewall")
	n.nft(t, `table ip kube-proxy {
	chain services {
		tcp dport 2098 reject comment "default/web:http has no endpoints"
	}
	chain filter-output {
		type filter hook output priority -110; policy accept;
		ct state new jump services
	}
}
`)
	dst := netip.MustParseAddrPort("127.0.0.1:2098")
	if err, _ := n.connect(t, dst); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %v: %v, want ECONNREFUSED", dst, err)
	}
	e := s.waitFor("refused to "+dst.String(), toDst(n, events.TypeRefused, dst))
	f := e.Firewall
	if e.Cause != events.CauseFirewallReject || f == nil {
		t.Fatalf("event %+v: want firewall_reject with the rule", e)
	}
	if f.TableName != "kube-proxy" || f.Family != "ip" || f.Chain != "services" || f.Handle == 0 ||
		f.Comment != "default/web:http has no endpoints" || !strings.Contains(f.Rule, "tcp dport 2098 reject") {
		t.Errorf("firewall %+v: want table ip kube-proxy, chain services, a handle, the comment and the rule", f)
	}
	if !strings.Contains(e.Explanation, "default/web:http has no endpoints") {
		t.Errorf("explanation %q does not quote the rule's comment", e.Explanation)
	}
}
