package netfilter

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// synTo is the query for a SYN from a remote client to port on the
// input hook.
func synTo(port uint16, verdict string) Query {
	return Query{Family: 4, Hook: "input", Proto: 6, SYN: true, Verdict: verdict,
		Src: netip.MustParseAddrPort("10.201.0.1:40000"), Dst: netip.AddrPortFrom(netip.MustParseAddr("10.201.0.2"), port)}
}

func wantRule(t *testing.T, got *events.Firewall, err error, want events.Firewall, ruleHas string) {
	t.Helper()
	if err != nil {
		t.Fatalf("FindRule: %v", err)
	}
	if got.TableName != want.TableName || got.Family != want.Family || got.Chain != want.Chain ||
		got.Handle != want.Handle || got.Comment != want.Comment || got.Hook != want.Hook || got.Table != "nftables" {
		t.Fatalf("FindRule = %+v, want %+v", *got, want)
	}
	if !strings.Contains(got.Rule, ruleHas) {
		t.Fatalf("rule text %q does not contain %q", got.Rule, ruleHas)
	}
	t.Logf("found %s %s %s handle %d comment %q: %s", got.Family, got.TableName, got.Chain, got.Handle, got.Comment, got.Rule)
}

func wantNoRule(t *testing.T, got *events.Firewall, err error) {
	t.Helper()
	if !errors.Is(err, ErrNoRule) {
		t.Fatalf("FindRule = %+v, %v; want ErrNoRule", got, err)
	}
}

func TestPrivFindRulePlainNft(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	ns.nft(t, `
table inet filter {
	set blocked { type inet_service; elements = { 8084 } }
	chain input {
		type filter hook input priority 0; policy accept;
		ct state established,related accept
		iifname "lo" accept
		tcp dport 8080 reject with tcp reset comment "block 8080"
		tcp dport 8090 drop comment "drop 8090"
		tcp dport { 8082, 8083 } drop
		tcp dport @blocked reject comment "named set"
		tcp dport 9000-9100 drop
		ip saddr 10.201.7.0/24 tcp dport 7000 drop comment "from 10.201.7.0/24"
	}
}`)
	hook := func(family, table, chain, substr string) uint64 { return ns.handle(t, family, table, chain, substr) }

	got, err := FindRule(ns.fd, synTo(8080, "reject"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "8080"), Comment: "block 8080"}, "tcp dport 8080 reject with tcp reset")
	if got.Rule != "tcp dport 8080 reject with tcp reset" {
		t.Errorf("rule text = %q", got.Rule)
	}

	got, err = FindRule(ns.fd, synTo(8090, "drop"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "8090"), Comment: "drop 8090"}, "tcp dport 8090 drop")

	// The verdict kind must fit: port 8080 is rejected, not dropped.
	got, err = FindRule(ns.fd, synTo(8080, "drop"))
	wantNoRule(t, got, err)

	got, err = FindRule(ns.fd, synTo(8083, "drop"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "8082")}, "tcp dport { 8082, 8083 } drop")

	got, err = FindRule(ns.fd, synTo(8084, ""))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "@blocked"), Comment: "named set"}, "tcp dport @blocked reject")

	got, err = FindRule(ns.fd, synTo(9050, "drop"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "9000-9100")}, "tcp dport 9000-9100 drop")

	// The saddr prefix excludes 10.201.0.1 and admits 10.201.7.9.
	got, err = FindRule(ns.fd, synTo(7000, "drop"))
	wantNoRule(t, got, err)
	q := synTo(7000, "drop")
	q.Src = netip.MustParseAddrPort("10.201.7.9:40000")
	got, err = FindRule(ns.fd, q)
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "7000"), Comment: "from 10.201.7.0/24"}, "ip saddr 10.201.7.0/24 tcp dport 7000 drop")

	// Another port, another hook, another family's table: nothing.
	got, err = FindRule(ns.fd, synTo(8081, ""))
	wantNoRule(t, got, err)
	q = synTo(8080, "")
	q.Hook = "forward"
	got, err = FindRule(ns.fd, q)
	wantNoRule(t, got, err)
	// An inet table sees IPv6 too.
	q6 := Query{Family: 6, Hook: "input", Proto: 6, SYN: true, Verdict: "reject",
		Src: netip.MustParseAddrPort("[fd00:201::1]:40000"), Dst: netip.MustParseAddrPort("[fd00:201::2]:8080")}
	got, err = FindRule(ns.fd, q6)
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "inet", Chain: "input",
		Handle: hook("inet", "filter", "input", "8080"), Comment: "block 8080"}, "reject with tcp reset")
}

// The shapes kube-proxy's nftables mode writes for a Service without
// endpoints: a verdict map keyed by address . protocol . port whose
// element (commented with the Service's name) goes to a chain that
// rejects; and a rule in a regular chain reached from the output hook.
func TestPrivFindRuleKubeProxy(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	ns.nft(t, `
table ip kube-proxy {
	comment "rules for kube-proxy"
	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.96.0.10 . tcp . 80 comment "default/web:http has no endpoints" : goto reject-chain,
			     10.96.0.11 . tcp . 443 comment "default/api:https has no endpoints" : goto reject-chain }
	}
	chain reject-chain {
		reject
	}
	chain filter-output {
		type filter hook output priority -110; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump services
	}
	chain service-endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}
	chain services {
		ip daddr 10.96.0.12 tcp dport 8080 reject with icmp port-unreachable comment "default/old:http has no endpoints"
	}
}`)
	q := Query{Family: 4, Hook: "output", Proto: 6, SYN: true, Verdict: "reject",
		Src: netip.MustParseAddrPort("10.201.0.1:40000"), Dst: netip.MustParseAddrPort("10.96.0.10:80")}
	got, err := FindRule(ns.fd, q)
	wantRule(t, got, err, events.Firewall{Hook: "output", TableName: "kube-proxy", Family: "ip", Chain: "reject-chain",
		Handle: ns.handle(t, "ip", "kube-proxy", "reject-chain", "reject #"), Comment: "default/web:http has no endpoints"}, "reject with icmp port-unreachable")

	q.Dst = netip.MustParseAddrPort("10.96.0.11:443")
	got, err = FindRule(ns.fd, q)
	if err != nil || got.Comment != "default/api:https has no endpoints" {
		t.Fatalf("FindRule(10.96.0.11:443) = %+v, %v", got, err)
	}

	q.Dst = netip.MustParseAddrPort("10.96.0.12:8080")
	got, err = FindRule(ns.fd, q)
	wantRule(t, got, err, events.Firewall{Hook: "output", TableName: "kube-proxy", Family: "ip", Chain: "services",
		Handle: ns.handle(t, "ip", "kube-proxy", "services", "8080"), Comment: "default/old:http has no endpoints"},
		"ip daddr 10.96.0.12 tcp dport 8080 reject with icmp port-unreachable")

	// A Service with endpoints (not in the map) is not rejected.
	q.Dst = netip.MustParseAddrPort("10.96.0.10:81")
	got, err = FindRule(ns.fd, q)
	wantNoRule(t, got, err)

	// Cost of one lookup on this ruleset (a new netlink socket each time).
	const n = 50
	start := time.Now()
	q.Dst = netip.MustParseAddrPort("10.96.0.12:8080")
	for range n {
		if _, err := FindRule(ns.fd, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("FindRule: %v per lookup", time.Since(start)/n)
}

// iptables-nft writes rules as nftables rules with xtables matches and
// targets; Docker's DOCKER-USER is a regular chain reached by a jump.
func TestPrivFindRuleIptablesNft(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("iptables-nft"); err != nil {
		t.Fatalf("iptables-nft is needed (apt-get install iptables): %v", err)
	}
	ns := newNetns(t)
	ns.run(t, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "8081", "-m", "comment", "--comment", "docker-ish", "-j", "REJECT")
	ns.run(t, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "8086", "-m", "comment", "--comment", "reset 8086", "-j", "REJECT", "--reject-with", "tcp-reset")
	ns.run(t, "iptables-nft", "-N", "DOCKER-USER")
	ns.run(t, "iptables-nft", "-A", "FORWARD", "-j", "DOCKER-USER")
	ns.run(t, "iptables-nft", "-A", "DOCKER-USER", "-p", "tcp", "-m", "multiport", "--dports", "8087,8088", "-j", "DROP")
	ns.run(t, "iptables-nft", "-A", "DOCKER-USER", "-p", "tcp", "-m", "tcp", "--dport", "8085", "-m", "comment", "--comment", "block published 8085", "-j", "DROP")
	t.Log(ns.run(t, "nft", "-a", "list", "ruleset"))

	got, err := FindRule(ns.fd, synTo(8081, "reject"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "ip", Chain: "INPUT",
		Handle: ns.handle(t, "ip", "filter", "INPUT", "8081"), Comment: "docker-ish"}, "tcp dport 8081 reject with icmp port-unreachable")

	got, err = FindRule(ns.fd, synTo(8086, "reject"))
	wantRule(t, got, err, events.Firewall{Hook: "input", TableName: "filter", Family: "ip", Chain: "INPUT",
		Handle: ns.handle(t, "ip", "filter", "INPUT", "8086"), Comment: "reset 8086"}, "reject with tcp reset")

	q := synTo(8085, "drop")
	q.Hook = "forward"
	got, err = FindRule(ns.fd, q)
	wantRule(t, got, err, events.Firewall{Hook: "forward", TableName: "filter", Family: "ip", Chain: "DOCKER-USER",
		Handle: ns.handle(t, "ip", "filter", "DOCKER-USER", "8085"), Comment: "block published 8085"}, "tcp dport 8085 drop")

	// multiport (an xtables match nft prints as a set) is decoded.
	q.Dst = netip.MustParseAddrPort("10.201.0.2:8087")
	got, err = FindRule(ns.fd, q)
	wantRule(t, got, err, events.Firewall{Hook: "forward", TableName: "filter", Family: "ip", Chain: "DOCKER-USER",
		Handle: ns.handle(t, "ip", "filter", "DOCKER-USER", "8087")}, "tcp dport { 8087, 8088 } drop")

	// A different port is not any of these rules.
	got, err = FindRule(ns.fd, synTo(8082, ""))
	wantNoRule(t, got, err)
}
