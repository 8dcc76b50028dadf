package events

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestExplainAttempt(t *testing.T) {
	dst := &Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080}
	src := &Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 5000}
	fw := &Firewall{Hook: "input", Table: "nftables", SYNs: 3}
	cases := []struct {
		e    Event
		want []string
	}{
		{Event{Type: TypeRefused, Cause: CauseFirewallReject, Answer: "tcp_reset", Dst: dst, Firewall: fw,
			Listener: &Listener{Process: Process{Pid: 9, Comm: "nginx"}}},
			[]string{"packet filter refused", "input hook", "TCP reset", "nginx (pid 9) listens", "nft -a list ruleset", "dport 8080"}},
		{Event{Type: TypeTimeout, Cause: CauseFirewallDrop, Dst: dst, Firewall: fw, Attempt: &Attempt{Errno: "ETIMEDOUT", Retransmits: 2, WaitedMs: 3000}},
			[]string{"got no answer after 3 SYNs in 3s", "dropped its SYNs", "input"}},
		{Event{Type: TypeTimeout, Cause: CauseNoResponse, Dst: dst, Attempt: &Attempt{Retransmits: 1, WaitedMs: 1500}},
			[]string{"client gave up", "did not drop", "ip route get 10.0.0.2"}},
		{Event{Type: TypeTimeout, Cause: CauseUnknown, Dst: dst, Attempt: &Attempt{Errno: "ETIMEDOUT", Retransmits: 1, WaitedMs: 3000}},
			[]string{"got no answer after 2 SYNs in 3s", "firewall is not ruled out", "nft list ruleset", "port 8080", "ip route get 10.0.0.2"}},
		{Event{Type: TypeRefused, Cause: CauseUnknown, Answer: "icmp", Dst: dst},
			[]string{"ICMP error refused the connection to 10.0.0.2:8080", "cannot tell", "reject on port 8080"}},
		{Event{Type: TypeRefused, Cause: CauseRemote, Answer: "icmp", Dst: dst},
			[]string{"10.0.0.2:8080 refused", "ICMP", "nothing on this host sent it"}},
		{Event{Type: TypeFiltered, Cause: CauseFirewallDrop, Dst: dst, Firewall: &Firewall{Hook: "prerouting", SYNs: 1}},
			[]string{"discarded 1 SYN(s)", "iptables-save", "prerouting"}},
		{Event{Type: TypeReset, Src: dst, Dst: src, KernelReason: "TCP_ABORT_ON_CLOSE", Process: &Process{Pid: 9, Comm: "srv"}, PeerProcess: &Process{Pid: 3, Comm: "curl"}},
			[]string{"srv (pid 9) closed its socket with unread data", "curl (pid 3) gets ECONNRESET"}},
		{Event{Type: TypeReset, Src: dst, Dst: src, KernelReason: "TCP_STATE", Unaccepted: true, Process: &Process{Pid: 9, Comm: "srv"}},
			[]string{"accept queue"}},
	}
	for _, c := range cases {
		got := Explain(&c.e)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s/%s: %q lacks %q", c.e.Type, c.e.Cause, got, w)
			}
		}
	}
}

func TestTextReset(t *testing.T) {
	var buf bytes.Buffer
	enc, _ := NewEncoder("text", &buf)
	e := &Event{Time: time.Unix(0, 0), Type: TypeReset, Netns: 5,
		Src:     &Endpoint{Addr: netip.MustParseAddr("::1"), Port: 80},
		Dst:     &Endpoint{Addr: netip.MustParseAddr("::1"), Port: 5000},
		Process: &Process{Pid: 9, Comm: "srv"}, PeerProcess: &Process{Pid: 3, Comm: "curl"},
		KernelReason: "TCP_STATE", Explanation: "x"}
	enc.Encode(e)
	enc.Flush()
	want := "RESET [::1]:80 -> [::1]:5000 netns 5 from [srv (pid 9)] to [curl (pid 3)] x (kernel: TCP_STATE)\n"
	if got := buf.String(); !strings.HasSuffix(got, want) {
		t.Errorf("text = %q, want suffix %q", got, want)
	}
}
