package netfilter

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// dial connects from local to dst in ns, giving up after timeout.
func dial(t *testing.T, ns *testNetns, local, dst netip.AddrPort, timeout time.Duration) error {
	t.Helper()
	var err error
	inNetns(t, ns, func() {
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(local)}
		var c net.Conn
		c, err = d.Dial("tcp", dst.String())
		if c != nil {
			c.Close()
		}
	})
	return err
}

func TestPrivNAT(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name                      string
		family                    string
		client, masq, svc, backnd string
		addrsA, addrsB            []string
		clientAddr                string
	}{
		{name: "ipv4", family: "ip", client: "10.201.0.11", masq: "10.201.0.1", svc: "10.201.9.9", backnd: "10.201.0.2",
			addrsA: []string{"10.201.0.1/24"}, addrsB: []string{"10.201.0.2/24"}},
		{name: "ipv6", family: "ip6", client: "fd00:201::11", masq: "fd00:201::1", svc: "fd00:201::9:9", backnd: "fd00:201::2",
			addrsA: []string{"fd00:201::1/64"}, addrsB: []string{"fd00:201::2/64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newNetns(t), newNetns(t)
			ifA, _ := veth(t, a, b, tc.addrsA, tc.addrsB)
			// The client's own address is a second one, on lo, so
			// masquerade (to the veth's address) shows in the reply tuple.
			bits := "/32"
			daddr := "ip daddr"
			if tc.family == "ip6" {
				bits, daddr = "/128", "ip6 daddr"
				a.run(t, "ip", "addr", "add", tc.client+bits, "dev", "lo", "nodad")
				a.run(t, "ip", "-6", "route", "add", "default", "dev", ifA)
			} else {
				a.run(t, "ip", "addr", "add", tc.client+bits, "dev", "lo")
				a.run(t, "ip", "route", "add", "default", "dev", ifA)
			}
			backend := netip.AddrPortFrom(netip.MustParseAddr(tc.backnd), 80)
			a.nft(t, `
table `+tc.family+` nat {
	chain output {
		type nat hook output priority -100; policy accept;
		`+daddr+` `+tc.svc+` tcp dport 8080 dnat to `+backend.String()+` comment "svc to backend"
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		`+daddr+` `+tc.backnd+` masquerade
	}
}`)
			svc := netip.AddrPortFrom(netip.MustParseAddr(tc.svc), 8080)
			client := netip.AddrPortFrom(netip.MustParseAddr(tc.client), 41234)

			// Refused by the backend's RST: conntrack deletes an entry
			// whose only answer was a RST at once (tcp_packet in
			// nf_conntrack_proto_tcp.c: no IPS_SEEN_REPLY and th->rst
			// -> nf_ct_kill_acct), so nothing is left to look up.
			refused := netip.AddrPortFrom(client.Addr(), 41233)
			if err := dial(t, a, refused, svc, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connecting to %s: %v, want ECONNREFUSED", svc, err)
			}
			if e, ok, err := LookupNAT(a.fd, 6, refused, svc); ok || err != nil {
				t.Fatalf("LookupNAT after a RST = %+v, %v, %v; want no entry", e, ok, err)
			}

			// The backend drops the SYNs: the entry stays (SYN_SENT).
			b.nft(t, "table inet f {\n chain input {\n type filter hook input priority 0;\n tcp dport 80 drop\n }\n}\n")
			if err := dial(t, a, client, svc, 300*time.Millisecond); err == nil {
				t.Fatalf("connecting to %s succeeded", svc)
			}

			e, ok, err := LookupNAT(a.fd, 6, client, svc)
			if err != nil || !ok {
				t.Fatalf("LookupNAT(%s -> %s) = %+v, %v, %v", client, svc, e, ok, err)
			}
			t.Logf("entry: %+v", e)
			masq := netip.MustParseAddr(tc.masq)
			if e.Backend() != backend || e.ClientAsSeen().Addr() != masq || !e.DstNAT || !e.SrcNAT || e.State != "SYN_SENT" {
				t.Fatalf("entry = %+v: want backend %s, client seen as %s, dnat and snat, SYN_SENT", e, backend, masq)
			}

			// The backend's view maps back to what the client used.
			r, ok, err := LookupNATReply(a.fd, 6, e.ClientAsSeen(), backend)
			if err != nil || !ok || r.Original != (Tuple{client, svc}) {
				t.Fatalf("LookupNATReply(%s -> %s) = %+v, %v, %v; want original %s -> %s", e.ClientAsSeen(), backend, r, ok, err, client, svc)
			}

			// No entry for a connection never made.
			if _, ok, err := LookupNAT(a.fd, 6, netip.AddrPortFrom(client.Addr(), 41235), svc); ok || err != nil {
				t.Fatalf("LookupNAT of an unknown connection: ok %v, err %v", ok, err)
			}

			rules, err := DNATRules(a.fd, svc)
			if err != nil || len(rules) != 1 {
				t.Fatalf("DNATRules(%s) = %+v, %v", svc, rules, err)
			}
			want := NATRule{Hook: "output", TableName: "nat", Family: tc.family, Chain: "output",
				Handle: a.handle(t, tc.family, "nat", "output", "dnat"), Comment: "svc to backend", To: backend, Addr: backend.Addr(),
				Rule: daddr + " " + tc.svc + " tcp dport 8080 dnat to " + backend.String()}
			if rules[0] != want {
				t.Fatalf("DNATRules = %+v, want %+v", rules[0], want)
			}
			if rules, err := DNATRules(a.fd, netip.AddrPortFrom(svc.Addr(), 8081)); err != nil || len(rules) != 0 {
				t.Fatalf("DNATRules for another port = %+v, %v", rules, err)
			}

			// Cost: one lookup on an open connection, and with the dial.
			ct, err := OpenConntrack(a.fd)
			if err != nil {
				t.Fatal(err)
			}
			defer ct.Close()
			const n = 200
			start := time.Now()
			for range n {
				if _, ok, err := ct.Lookup(6, client, svc); !ok || err != nil {
					t.Fatalf("lookup: %v %v", ok, err)
				}
			}
			t.Logf("Conntrack.Lookup: %v per lookup", time.Since(start)/n)
			start = time.Now()
			for range n {
				if _, ok, err := LookupNAT(a.fd, 6, client, svc); !ok || err != nil {
					t.Fatalf("lookup: %v %v", ok, err)
				}
			}
			t.Logf("LookupNAT (dial included): %v per lookup", time.Since(start)/n)
		})
	}
}
