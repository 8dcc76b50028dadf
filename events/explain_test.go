package events

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The wording of explanations and text lines is kept in testdata/*.golden,
// one scenario per file: its explanation and its text line (without the
// clock). `go test ./events/ -run TestGolden -update` rewrites them; the
// diff is the review of a wording change.
var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestExplainAllocs(t *testing.T) {
	for _, c := range []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown} {
		e := refusedEvent(c)
		if n := testing.AllocsPerRun(100, func() { _ = Explain(e) }); n > 1 {
			t.Errorf("Explain(%s): %v allocations, want 1 (the string)", c, n)
		}
	}
}

// goldenScenarios returns one event per scenario, by the name of its file.
func goldenScenarios() map[string]*Event {
	addr := netip.MustParseAddr
	lo := addr("127.0.0.1")
	const ns, otherNs = 4026531840, 4026532177
	web := &Container{ID: "3f2a9c1b2d4e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a", Runtime: "docker", Name: "web"}
	pod := &Pod{UID: "0b7c8e2a-1f3d-4c5b-9a6e-7d8f9e0a1b2c", Namespace: "shop", Name: "web-7f9c"}
	nginx := Process{Pid: 812, Comm: "nginx", Unit: "nginx.service"}
	httpd := Process{Pid: 5, Comm: "httpd", Container: web}
	app := Process{Pid: 7, Comm: "app", Container: &Container{ID: web.ID, Runtime: "containerd"}, Pod: pod}
	curl := &Process{Pid: 777, Comm: "curl"}
	refused := func(dst netip.Addr, port uint16, c Cause) *Event {
		return &Event{Time: t0, Type: TypeRefused, Netns: ns, Src: &Endpoint{Addr: lo, Port: 54321},
			Dst: &Endpoint{Addr: dst, Port: port}, Cause: c, KernelReason: "NO_SOCKET", Client: curl}
	}
	attempt := func(typ Type, c Cause, a *Attempt, f *Firewall) *Event {
		return &Event{Time: t0, Type: typ, Netns: ns, Src: &Endpoint{Addr: addr("10.0.0.1"), Port: 40000},
			Dst: &Endpoint{Addr: addr("10.0.0.2"), Port: 8080}, Cause: c, Client: curl, Attempt: a, Firewall: f}
	}
	kubeRule := &Firewall{Hook: "prerouting", Table: "nftables", SYNs: 1, TableName: "kube-proxy", Family: "ip",
		Chain: "services", Handle: 12, Comment: "default/web:http has no endpoints",
		Rule: `ip daddr 10.96.0.10 tcp dport 80 reject with tcp reset comment "default/web:http has no endpoints"`}
	dropRule := &Firewall{Hook: "input", Table: "nftables", SYNs: 3, TableName: "filter", Family: "inet", Chain: "input", Handle: 7}
	timedOut := &Attempt{Errno: "ETIMEDOUT", Retransmits: 2, WaitedMs: 3012}

	s := map[string]*Event{}
	e := refused(lo, 8080, CauseNoListener)
	s["refused_no_listener"] = e
	e = refused(lo, 8080, CauseNoListener)
	e.Netns, e.NetnsNames = otherNs, &NetnsNames{Name: "blue"}
	s["refused_no_listener_named_netns"] = e
	e = refused(lo, 8080, CauseListenerClosed)
	e.Listener = &Listener{Process: nginx, Addr: lo, Port: 8080, Netns: ns, ClosedAt: t0.Add(-1500 * time.Millisecond),
		Exit: &Exit{Signal: "SIGSEGV", CoreDumped: true}}
	s["refused_listener_closed_crash"] = e
	e = refused(lo, 8080, CauseListenerClosed)
	e.Listener = &Listener{Process: Process{Pid: 4242, Comm: "nginx"}, Addr: lo, Port: 8080, Netns: ns,
		ClosedAt: t0.Add(-3 * time.Minute), ClosedBy: &Process{Pid: 5000, Comm: "worker"}}
	s["refused_listener_closed_by_other"] = e
	e = refused(lo, 8080, CauseListenerClosed)
	e.Listener = &Listener{Process: app, Addr: lo, Port: 8080, Netns: ns, ClosedAt: t0.Add(-250 * time.Millisecond), Exit: &Exit{Code: intp(1)}}
	s["refused_listener_closed_in_pod"] = e
	e = refused(lo, 8080, CauseWrongAddress)
	e.Listener = &Listener{Process: nginx, Addr: addr("::"), Port: 8080, Netns: ns, V6Only: true}
	s["refused_wrong_address"] = e
	e = refused(lo, 8080, CauseOtherNetns)
	e.Listener = &Listener{Process: httpd, Addr: addr("0.0.0.0"), Port: 8080, Netns: otherNs,
		NetnsNames: &NetnsNames{Container: web}}
	s["refused_other_netns_container"] = e
	e = refused(lo, 8080, CauseOtherNetns)
	e.Listener = &Listener{Process: Process{Pid: 4242, Comm: "nginx"}, Addr: addr("0.0.0.0"), Port: 8080, Netns: otherNs}
	s["refused_other_netns"] = e
	e = refused(lo, 8080, CauseBindFailed)
	e.Bind = &Bind{Process: nginx, Addr: addr("0.0.0.0"), Port: 8080, Errno: "EADDRINUSE", Time: t0.Add(-2 * time.Second),
		Holder: &Process{Pid: 99, Comm: "squatter", Container: web}}
	s["refused_bind_failed_holder"] = e
	e = refused(lo, 8080, CauseBacklogFull)
	e.Listener = &Listener{Process: nginx, Addr: lo, Port: 8080, Netns: ns, Backlog: 128}
	s["refused_backlog_full"] = e
	e = refused(lo, 8080, CauseUnknown)
	e.KernelReason = "TCP_ABORT_ON_DATA"
	s["refused_unknown_kernel_reason"] = e
	e = refused(lo, 8080, CauseUnknown)
	e.KernelReason = ""
	s["refused_unknown"] = e
	e = attempt(TypeRefused, CauseFirewallReject, nil, kubeRule)
	e.Answer, e.Dst = "tcp_reset", &Endpoint{Addr: addr("10.96.0.10"), Port: 80}
	s["refused_firewall_reject_named_rule"] = e
	e = attempt(TypeRefused, CauseFirewallReject, nil, &Firewall{Hook: "input", Table: "nftables", SYNs: 1})
	e.Answer = "icmp"
	e.Listener = &Listener{Process: nginx, Addr: addr("0.0.0.0"), Port: 8080, Netns: ns}
	s["refused_firewall_reject"] = e
	s["timeout_firewall_drop_named_rule"] = attempt(TypeTimeout, CauseFirewallDrop, timedOut, dropRule)
	s["timeout_firewall_drop"] = attempt(TypeTimeout, CauseFirewallDrop, timedOut, &Firewall{Hook: "output", SYNs: 3})
	s["timeout_still_waiting"] = attempt(TypeTimeout, CauseFirewallDrop, &Attempt{Retransmits: 5, WaitedMs: 600000, StillWaiting: true}, &Firewall{Hook: "input", Table: "nftables", SYNs: 6})
	s["timeout_no_response"] = attempt(TypeTimeout, CauseNoResponse, &Attempt{Retransmits: 1, WaitedMs: 1500}, nil)
	s["timeout_unknown_old_kernel"] = attempt(TypeTimeout, CauseUnknown, timedOut, nil)
	e = attempt(TypeFiltered, CauseFirewallDrop, nil, &Firewall{Hook: "prerouting", SYNs: 2})
	e.Client = nil
	s["filtered_firewall_drop"] = e
	e = attempt(TypeFiltered, CauseFirewallDrop, nil, kubeRule)
	e.Client = nil
	s["filtered_firewall_drop_named_rule"] = e
	e = attempt(TypeRefused, CauseRemote, nil, nil)
	e.Answer = "tcp_reset"
	s["refused_remote"] = e
	e = attempt(TypeRefused, CauseUnknown, nil, nil)
	e.Answer = "icmp"
	s["refused_icmp_old_kernel"] = e
	reset := func(reason string, unaccepted bool) *Event {
		return &Event{Time: t0, Type: TypeReset, Netns: ns, Src: &Endpoint{Addr: lo, Port: 8080}, Dst: &Endpoint{Addr: lo, Port: 54321},
			KernelReason: reason, Unaccepted: unaccepted, State: "ESTABLISHED", Process: &nginx, PeerProcess: curl}
	}
	s["reset_abort_on_close"] = reset("TCP_ABORT_ON_CLOSE", false)
	s["reset_unaccepted"] = reset("TCP_STATE", true)
	e = reset("", false)
	e.Process = nil
	s["reset_remote_peer"] = e
	e = refused(addr("10.244.1.5"), 8080, CauseNoListener)
	e.DstOriginal, e.ClientNetns, e.NetnsNames = &Endpoint{Addr: addr("10.96.0.10"), Port: 80}, otherNs, &NetnsNames{Pod: pod}
	s["refused_nat_no_listener"] = e
	e = refused(addr("172.17.0.2"), 80, CauseNoListener)
	e.Proxy = &Process{Pid: 900, Comm: "docker-proxy", Exe: "/usr/bin/docker-proxy"}
	e.NetnsNames = &NetnsNames{Container: web}
	s["refused_proxy"] = e
	s["listen_overflow"] = &Event{Time: t0, Type: TypeListenOverflow, Netns: ns, Cause: CauseBacklogFull,
		Listener: &Listener{Process: nginx, Addr: lo, Port: 8080, Netns: ns, Backlog: 128, BacklogRequested: 511, Queued: u32p(129)},
		Dropped:  &Drops{Total: 312, SynAcceptQueueFull: 300, FinalAck: 12}, IntervalMs: 1000, AcceptIdleMs: i64p(4100), Somaxconn: 128}
	s["summary"] = &Event{Time: t0, Type: TypeSummary, Netns: ns, Dst: &Endpoint{Addr: lo, Port: 1}, Cause: CauseNoListener,
		Refusals: 12000, IntervalMs: 1000}
	s["start_all_traced"] = &Event{Time: t0, Type: TypeStart, Version: SchemaVersion, Kernel: "6.18.0",
		Plan: []Attach{{Capability: "refusals", Hook: "tp_btf/tcp_send_reset"}, {Capability: "listeners", Hook: "tp_btf/inet_sock_set_state"}}}
	s["start_degraded"] = &Event{Time: t0, Type: TypeStart, Version: SchemaVersion, Kernel: "5.10.0-28-amd64", Ports: []uint16{80, 443},
		Plan: []Attach{{Capability: "refusals", Hook: "tp_btf/tcp_send_reset"}, {Capability: "listeners", Hook: "tp_btf/inet_sock_set_state"},
			{Capability: "firewall", Degraded: "no drop reason before 5.17", Fallback: "timeouts say the firewall is not ruled out"},
			{Capability: "resets", Degraded: "tcp_send_reset has no reason before 6.1"},
			{Capability: "overflow", Degraded: strings.Repeat("a very long reason that goes on ", 4)},
			{Capability: "binds", Degraded: "no tracefs"}}}
	many := &Event{Time: t0, Type: TypeStart, Version: SchemaVersion, Kernel: "5.4.0"}
	for _, c := range []string{"refusals", "listeners", "binds", "overflow", "firewall", "timeouts", "resets", "remote",
		"summaries", "identity", "nat", "proxies", "exits", "backlog", "accept", "netns names", "containers", "pods", "units", "rules"} {
		many.Plan = append(many.Plan, Attach{Capability: c, Degraded: "this kernel has no tp_btf for " + c})
	}
	s["start_nothing_traced"] = many
	s["stop"] = &Event{Time: t0, Type: TypeStop, Lost: u64p(3), Events: 1200, Summarized: 12000}
	s["lost"] = &Event{Time: t0, Type: TypeLost, Lost: u64p(5)}
	s["listen_in_container"] = &Event{Time: t0, Type: TypeListen, Netns: otherNs,
		Listener: &Listener{Process: httpd, Addr: addr("0.0.0.0"), Port: 80, Netns: otherNs, NetnsNames: &NetnsNames{Container: web}, Backlog: 511}}
	s["listen_close_killed"] = &Event{Time: t0, Type: TypeListenClose, Netns: ns,
		Listener: &Listener{Process: nginx, Addr: addr("::"), Port: 8080, Netns: ns, ClosedAt: t0,
			ClosedBy: &Process{Pid: 5000, Comm: "worker"}, Exit: &Exit{Signal: "SIGKILL"}}}
	s["bind_failed"] = &Event{Time: t0, Type: TypeBindFailed, Netns: ns,
		Bind: &Bind{Process: nginx, Addr: addr("0.0.0.0"), Port: 8080, Errno: "EADDRINUSE", Time: t0, Holder: &Process{Pid: 99, Comm: "squatter"}}}
	e = refused(lo, 8080, CauseListenerClosed)
	e.Client = &Process{Pid: 6, Comm: "evil\n12:00:00.000000 REFUSED \x1b[2J\u202e"}
	e.Listener = &Listener{Process: Process{Pid: 8, Comm: `q"b\s` + "\n" + `n` + "\xff" + `z`}, Addr: lo, Port: 8080, Netns: ns, ClosedAt: t0}
	s["refused_forged_names"] = e
	for _, e := range s {
		switch e.Type {
		case TypeStart, TypeStop, TypeLost, TypeListen, TypeListenClose, TypeBindFailed:
		default:
			e.Explanation = Explain(e)
		}
	}
	return s
}

func TestGolden(t *testing.T) {
	scenarios := goldenScenarios()
	for name, e := range scenarios {
		t.Run(name, func(t *testing.T) {
			line := ourText(t, e)
			checkTextLine(t, e, line)
			if body := len(line) - len("15:04:05.000000 \n"); e.Type == TypeStart && body > maxStartText {
				t.Errorf("START line of %d bytes, want at most %d: %q", body, maxStartText, line)
			}
			var got strings.Builder
			if e.Explanation != "" {
				got.WriteString("explanation: " + string(appendTextEscaped(nil, []byte(e.Explanation))) + "\n")
			}
			got.WriteString("text: " + line[len("15:04:05.000000 "):])
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got.String() != string(want) {
				t.Errorf("%s changed (run with -update to accept):\n got %s\nwant %s", path, got.String(), want)
			}
		})
	}
	// A golden file no scenario writes is a scenario lost.
	files, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	for _, f := range files {
		if _, ok := scenarios[strings.TrimSuffix(filepath.Base(f), ".golden")]; !ok {
			t.Errorf("%s has no scenario", f)
		}
	}
}
