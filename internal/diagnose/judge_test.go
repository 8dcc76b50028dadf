package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

func lst(ap string, netns uint32, v6only bool, queued, backlog uint32) Listener {
	a := netip.MustParseAddrPort(ap)
	return Listener{Listener: events.Listener{Process: events.Process{Pid: 812, Comm: "nginx"}, Addr: a.Addr(), Port: a.Port(),
		Netns: netns, Backlog: backlog, Queued: &queued, V6Only: v6only}, Full: queued > backlog}
}

// TestJudge: the static verdicts, and how a probe overrides them.
func TestJudge(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.5:8080")
	web := &events.NetnsNames{Name: "web"}
	tests := []struct {
		name    string
		facts   Facts
		target  Target
		cause   Cause
		verdict string
		has     string
	}{
		{"nothing", Facts{}, Target{}, CauseNoListener, "refused", "nothing listens on 10.0.0.5:8080 in netns web (7)"},
		{"wrong address", Facts{Listeners: []Listener{lst("127.0.0.1:8080", 7, false, 0, 511)}}, Target{}, CauseWrongAddress, "refused",
			"nginx (pid 812) listens on 127.0.0.1:8080 there (wrong address)"},
		{"v6only", Facts{Listeners: []Listener{lst("[::]:8080", 7, true, 0, 511)}}, Target{}, CauseIPv6Only, "refused", "IPV6_V6ONLY"},
		{"dual stack covers", Facts{Listeners: []Listener{lst("[::]:8080", 7, false, 0, 511)}}, Target{}, CauseReachable, "reachable", "listens on [::]:8080"},
		{"other netns", Facts{Listeners: []Listener{lst("0.0.0.0:8080", 9, false, 0, 511)}}, Target{}, CauseOtherNetns, "refused", "in netns 9 (other namespace)"},
		{"bound", Facts{Bound: []Bound{{Process: events.Process{Pid: 3, Comm: "app"}, Addr: dst.Addr(), Port: 8080, Netns: 7}}}, Target{}, CauseBoundNotListening, "refused", "app (pid 3) has bound"},
		{"bind failed", Facts{BindFailures: []*events.Event{{Type: events.TypeBindFailed, Netns: 7, Bind: &events.Bind{Process: events.Process{Pid: 4, Comm: "app"}, Port: 8080, Errno: "EADDRINUSE"}}}}, Target{}, CauseBindFailed, "refused", "EADDRINUSE"},
		{"full", Facts{Listeners: []Listener{lst("0.0.0.0:8080", 7, false, 2, 1)}}, Target{}, CauseBacklogFull, "dropped", "(2 queued, backlog 1)"},
		{"firewall", Facts{Listeners: []Listener{lst("0.0.0.0:8080", 7, false, 0, 1)}}, Target{Firewall: []Rule{{Hook: "input", Verdict: "drop", Firewall: events.Firewall{Family: "inet", TableName: "f", Chain: "in", Handle: 4, Rule: "tcp dport 8080 drop"}}}},
			CauseFirewallDrop, "dropped", "'inet f in handle 4'"},
		{"dead backend", Facts{}, Target{NAT: []NAT{{Table: "nat", Family: "ip", Chain: "out", Handle: 2, To: netip.MustParseAddrPort("127.0.0.1:9090"), Backend: "nothing listens"}}},
			CauseNATDeadBackend, "refused", "(dead backend)"},
		{"probe accepted wins", Facts{}, Target{Probe: &Probe{Outcome: "accepted"}}, CauseReachable, "reachable", "accepted the probe"},
		{"probe timeout names the verdict", Facts{}, Target{Probe: &Probe{Outcome: "timeout"}}, CauseNoListener, "dropped", "dropped: nothing listens"},
		{"kernel saw the firewall", Facts{Listeners: []Listener{lst("0.0.0.0:8080", 7, false, 0, 1)}},
			Target{Probe: &Probe{Outcome: "refused", Event: &events.Event{Cause: events.CauseFirewallReject, Explanation: "the firewall rejected it"}}},
			CauseFirewallReject, "refused", "refused: the firewall rejected it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := tt.target
			tg.Netns, tg.NetnsNames, tg.Dst = 7, web, dst
			Judge(&tt.facts, &tg)
			if tg.Cause != tt.cause || tg.Verdict != tt.verdict || !strings.Contains(tg.Summary, tt.has) {
				t.Errorf("cause %s verdict %s summary %q; want %s %s containing %q", tg.Cause, tg.Verdict, tg.Summary, tt.cause, tt.verdict, tt.has)
			}
			if tg.Cause != CauseReachable && Todo(&tg) == "" {
				t.Errorf("no todo for %s", tg.Cause)
			}
		})
	}
}
