package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func intp(n int) *int       { return &n }
func u64p(n uint64) *uint64 { return &n }
func ep(a string, port uint16) *Endpoint {
	return &Endpoint{Addr: netip.MustParseAddr(a), Port: port}
}

func TestExitFromCode(t *testing.T) {
	tests := []struct {
		name string
		code int32
		want Exit
		str  string
	}{
		{"exit 0", 0, Exit{Code: intp(0)}, "exited with code 0"},
		{"exit 3", 3 << 8, Exit{Code: intp(3)}, "exited with code 3"},
		{"exit 255", 255 << 8, Exit{Code: intp(255)}, "exited with code 255"},
		{"SIGKILL", 9, Exit{Signal: "SIGKILL"}, "was killed by SIGKILL"},
		{"SIGSEGV core dumped", 0x8b, Exit{Signal: "SIGSEGV", CoreDumped: true}, "was killed by SIGSEGV (core dumped)"},
		{"SIGTERM", 15, Exit{Signal: "SIGTERM"}, "was killed by SIGTERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ExitFromCode(tt.code)
			if got == nil {
				t.Fatal("ExitFromCode returned nil")
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("ExitFromCode(%#x) = %+v (code %v), want %+v (code %v)", tt.code, *got, ptrInt(got.Code), tt.want, ptrInt(tt.want.Code))
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
		})
	}
}

func ptrInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestExitStringNil(t *testing.T) {
	var x *Exit
	if s := x.String(); s != "" {
		t.Errorf("nil Exit String() = %q, want empty", s)
	}
	if s := (&Exit{}).String(); s != "exited" {
		t.Errorf("empty Exit String() = %q, want %q", s, "exited")
	}
}

func TestSignalErrnoName(t *testing.T) {
	tests := []struct {
		name string
		fn   func(int) string
		in   int
		want string
	}{
		{"SIGKILL", SignalName, 9, "SIGKILL"},
		{"SIGSEGV", SignalName, 11, "SIGSEGV"},
		{"SIGTERM", SignalName, 15, "SIGTERM"},
		{"unknown signal", SignalName, 99, "signal 99"},
		{"EADDRINUSE", ErrnoName, 98, "EADDRINUSE"},
		{"EACCES", ErrnoName, 13, "EACCES"},
		{"EADDRNOTAVAIL", ErrnoName, 99, "EADDRNOTAVAIL"},
		{"unknown errno", ErrnoName, 9999, "errno 9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.fn(tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

var (
	t0     = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	server = Process{Pid: 4242, Comm: "nginx"}
	client = Process{Pid: 777, Comm: "curl"}
)

func TestExplain(t *testing.T) {
	tests := []struct {
		name    string
		ev      Event
		want    []string // substrings that must appear
		notWant []string
	}{
		{
			name: "no_listener",
			ev:   Event{Time: t0, Cause: CauseNoListener, Netns: 4026531840, Dst: ep("127.0.0.1", 8080)},
			want: []string{"nothing listens on port 8080", "netns 4026531840"},
		},
		{
			name: "listener_closed by owner",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("127.0.0.1", 8080),
				Listener: &Listener{Process: server, Port: 8080, ClosedAt: t0.Add(-1500 * time.Millisecond)}},
			want:    []string{"port 8080", "nginx (pid 4242)", "closed its listener", "1.5s ago"},
			notWant: []string{"killed", "exited"},
		},
		{
			name: "listener_closed by another process",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("127.0.0.1", 8080),
				Listener: &Listener{Process: server, Port: 8080, ClosedAt: t0.Add(-250 * time.Millisecond),
					ClosedBy: &Process{Pid: 5000, Comm: "worker"}}},
			want: []string{"port 8080", "nginx (pid 4242) listened on it until worker (pid 5000) closed the socket", "250ms ago"},
		},
		{
			name: "listener_closed killed by SIGKILL",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("10.0.0.1", 443),
				Listener: &Listener{Process: server, Port: 443, ClosedAt: t0.Add(-3 * time.Minute), Exit: &Exit{Signal: "SIGKILL"}}},
			want: []string{"port 443", "nginx (pid 4242) was killed by SIGKILL", "closing its listener", "3m0s ago"},
		},
		{
			name: "listener_closed by another process that was killed",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("10.0.0.1", 443),
				Listener: &Listener{Process: server, Port: 443, ClosedAt: t0.Add(-time.Second),
					ClosedBy: &Process{Pid: 5000, Comm: "worker"}, Exit: &Exit{Signal: "SIGKILL"}}},
			want:    []string{"nginx (pid 4242)", "worker (pid 5000) was killed by SIGKILL", "1.0s ago"},
			notWant: []string{"nginx (pid 4242) was killed"},
		},
		{
			name: "listener_closed exited with code",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("10.0.0.1", 443),
				Listener: &Listener{Process: server, Port: 443, ClosedAt: t0.Add(-10 * time.Millisecond), Exit: &Exit{Code: intp(3)}}},
			want: []string{"nginx (pid 4242) exited with code 3", "10ms ago"},
		},
		{
			name: "listener_closed SIGSEGV core",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("10.0.0.1", 443),
				Listener: &Listener{Process: server, Port: 443, ClosedAt: t0, Exit: &Exit{Signal: "SIGSEGV", CoreDumped: true}}},
			want: []string{"was killed by SIGSEGV (core dumped)", "0ms ago"},
		},
		{
			name: "listener_closed in the future clamps to 0",
			ev: Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("10.0.0.1", 443),
				Listener: &Listener{Process: server, Port: 443, ClosedAt: t0.Add(time.Second)}},
			want: []string{"0ms ago"},
		},
		{
			name: "wrong_address",
			ev: Event{Time: t0, Cause: CauseWrongAddress, Dst: ep("127.0.0.2", 8080),
				Listener: &Listener{Process: server, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080}},
			want:    []string{"nginx (pid 4242) listens on port 8080 at 127.0.0.1", "not at 127.0.0.2"},
			notWant: []string{"IPv6 only"},
		},
		{
			name: "wrong_address v6only",
			ev: Event{Time: t0, Cause: CauseWrongAddress, Dst: ep("127.0.0.1", 8080),
				Listener: &Listener{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, V6Only: true}},
			want: []string{"listens on port 8080 at :: (IPv6 only)", "not at 127.0.0.1"},
		},
		{
			name: "other_netns",
			ev: Event{Time: t0, Cause: CauseOtherNetns, Netns: 111, Dst: ep("127.0.0.1", 8080),
				Listener: &Listener{Process: server, Port: 8080, Netns: 222}},
			want: []string{"port 8080", "nginx (pid 4242)", "in netns 222", "not in netns 111"},
		},
		{
			name: "bind_failed with holder",
			ev: Event{Time: t0, Cause: CauseBindFailed, Dst: ep("127.0.0.1", 8080),
				Bind: &Bind{Process: server, Port: 8080, Errno: "EADDRINUSE", Time: t0.Add(-2 * time.Second),
					Holder: &Process{Pid: 99, Comm: "squatter"}}},
			want: []string{"port 8080", "nginx (pid 4242) failed to bind it with EADDRINUSE", "2.0s ago", "squatter (pid 99) holds the port"},
		},
		{
			name: "bind_failed without holder",
			ev: Event{Time: t0, Cause: CauseBindFailed, Dst: ep("127.0.0.1", 8080),
				Bind: &Bind{Process: server, Port: 8080, Errno: "EACCES", Time: t0}},
			want:    []string{"failed to bind it with EACCES"},
			notWant: []string{"holds the port"},
		},
		{
			name: "unknown with kernel reason",
			ev:   Event{Time: t0, Cause: CauseUnknown, Dst: ep("127.0.0.1", 8080), KernelReason: "TCP_ABORT_ON_DATA"},
			want: []string{"the kernel refused it (TCP_ABORT_ON_DATA)"},
		},
		{
			name: "unknown",
			ev:   Event{Time: t0, Cause: CauseUnknown, Dst: ep("127.0.0.1", 8080)},
			want: []string{"rsttrace knows nothing"},
		},
		{
			name: "listener_closed without listener falls back to cause",
			ev:   Event{Time: t0, Cause: CauseListenerClosed, Dst: ep("127.0.0.1", 8080)},
			want: []string{"listener_closed"},
		},
		{
			name: "bind_failed without bind falls back to cause",
			ev:   Event{Time: t0, Cause: CauseBindFailed},
			want: []string{"bind_failed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Explain(&tt.ev)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, missing %q", got, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("Explain = %q, must not contain %q", got, w)
				}
			}
		})
	}
}

// TestExplainEveryCause makes sure no cause falls through to the bare cause
// name when its sub-object is present.
func TestExplainEveryCause(t *testing.T) {
	for _, c := range []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown} {
		t.Run(string(c), func(t *testing.T) {
			ev := refusedEvent(c)
			got := Explain(ev)
			if got == "" || got == string(c) {
				t.Errorf("Explain(%s) = %q, want a sentence", c, got)
			}
		})
	}
}

// refusedEvent returns a fully populated refused event of a cause.
func refusedEvent(c Cause) *Event {
	ev := &Event{
		Time:         t0,
		Type:         TypeRefused,
		Netns:        4026531840,
		Src:          ep("::1", 54321),
		Dst:          ep("::1", 8080),
		Cause:        c,
		KernelReason: "NO_SOCKET",
		Client:       &Process{Pid: client.Pid, Comm: client.Comm},
	}
	switch c {
	case CauseListenerClosed:
		ev.Listener = &Listener{Process: server, Addr: netip.MustParseAddr("::1"), Port: 8080, Netns: 4026531840,
			ClosedAt: t0.Add(-time.Second), Exit: &Exit{Code: intp(0)}}
	case CauseWrongAddress:
		ev.Listener = &Listener{Process: server, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: 4026531840}
	case CauseOtherNetns:
		ev.Listener = &Listener{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: 4026532000}
	case CauseBindFailed:
		ev.Bind = &Bind{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, Errno: "EADDRINUSE",
			Time: t0.Add(-time.Second), Holder: &Process{Pid: 99, Comm: "squatter"}}
	case CauseUnknown:
		ev.Listener = &Listener{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: 4026531840}
	}
	ev.Explanation = Explain(ev)
	return ev
}

func TestNewEncoderUnknownFormat(t *testing.T) {
	for _, f := range []string{"", "yaml", "JSON"} {
		t.Run(f, func(t *testing.T) {
			enc, err := NewEncoder(f, &bytes.Buffer{})
			if err == nil || enc != nil {
				t.Fatalf("NewEncoder(%q) = %v, %v; want an error", f, enc, err)
			}
			if !strings.Contains(err.Error(), "text or json") {
				t.Errorf("error %q does not name the formats", err)
			}
		})
	}
}

// sampleEvents returns one event of every type, and a refused event of every
// cause. The name says what is checked.
func sampleEvents() []struct {
	name string
	ev   *Event
} {
	type ne = struct {
		name string
		ev   *Event
	}
	out := []ne{
		{"start", &Event{Time: t0, Type: TypeStart, Version: SchemaVersion, Kernel: "6.12.1",
			Plan:  []Attach{{Capability: "refusals", Hook: "tp_btf/tcp_send_reset"}, {Capability: "binds", Degraded: "no tracefs"}},
			Ports: []uint16{80, 443}}},
		{"stop", &Event{Time: t0, Type: TypeStop, Lost: u64p(0), Events: 12}},
		{"lost", &Event{Time: t0, Type: TypeLost, Lost: u64p(5)}},
		{"listen", &Event{Time: t0, Type: TypeListen, Netns: 4026531840,
			Listener: &Listener{Process: server, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: 4026531840, Backlog: 511, Since: t0}}},
		{"listen_close exit code", &Event{Time: t0, Type: TypeListenClose, Netns: 4026531840,
			Listener: &Listener{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: 4026531840,
				ClosedAt: t0, Exit: &Exit{Code: intp(3)}}}},
		{"listen_close signal", &Event{Time: t0, Type: TypeListenClose, Netns: 4026531840,
			Listener: &Listener{Process: server, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: 4026531840,
				ClosedAt: t0, ClosedBy: &Process{Pid: 5000, Comm: "worker"}, Exit: &Exit{Signal: "SIGKILL"}}}},
		{"bind_failed", &Event{Time: t0, Type: TypeBindFailed, Netns: 4026531840,
			Bind: &Bind{Process: server, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Errno: "EADDRINUSE", Time: t0,
				Holder: &Process{Pid: 99, Comm: "squatter"}}}},
	}
	for _, c := range []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown} {
		out = append(out, ne{"refused " + string(c), refusedEvent(c)})
	}
	return out
}

func keys(m map[string]any) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func obj(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("%q = %#v, want an object", key, m[key])
	}
	return v
}

func wantKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := keys(m); !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

func wantNum(t *testing.T, what string, v any, want float64) {
	t.Helper()
	if n, ok := v.(float64); !ok || n != want {
		t.Errorf("%s = %#v, want %v", what, v, want)
	}
}

func wantStr(t *testing.T, what string, v any, want string) {
	t.Helper()
	if s, ok := v.(string); !ok || s != want {
		t.Errorf("%s = %#v, want %q", what, v, want)
	}
}

func wantTime(t *testing.T, what string, v any, want time.Time) {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s = %#v, want a string", what, v)
	}
	got, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s = %q: %v", what, s, err)
	}
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v (nanoseconds kept)", what, got, want)
	}
}

func wantProc(t *testing.T, what string, v map[string]any, p Process) {
	t.Helper()
	wantKeys(t, what, v, "pid", "comm")
	wantNum(t, what+".pid", v["pid"], float64(p.Pid))
	wantStr(t, what+".comm", v["comm"], p.Comm)
}

func wantEndpoint(t *testing.T, what string, v map[string]any, e *Endpoint) {
	t.Helper()
	wantKeys(t, what, v, "addr", "port")
	wantStr(t, what+".addr", v["addr"], e.Addr.String())
	wantNum(t, what+".port", v["port"], float64(e.Port))
}

func TestJSONEncoderContract(t *testing.T) {
	samples := sampleEvents()
	var buf bytes.Buffer
	enc, err := NewEncoder("json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if err := enc.Encode(s.ev); err != nil {
			t.Fatalf("Encode(%s): %v", s.name, err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(samples) {
		t.Fatalf("got %d lines for %d events:\n%s", len(lines), len(samples), buf.String())
	}
	for i, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
				t.Fatalf("line %d %q: %v", i, lines[i], err)
			}
			wantTime(t, "time", m["time"], t0)
			wantStr(t, "type", m["type"], string(s.ev.Type))
			ev := s.ev
			switch ev.Type {
			case TypeStart:
				wantKeys(t, "start", m, "time", "type", "version", "kernel", "plan", "ports")
				wantNum(t, "version", m["version"], 1)
				wantStr(t, "kernel", m["kernel"], "6.12.1")
				plan, ok := m["plan"].([]any)
				if !ok || len(plan) != 2 {
					t.Fatalf("plan = %#v, want 2 entries", m["plan"])
				}
				p0, _ := plan[0].(map[string]any)
				wantKeys(t, "plan[0]", p0, "capability", "hook")
				wantStr(t, "plan[0].capability", p0["capability"], "refusals")
				wantStr(t, "plan[0].hook", p0["hook"], "tp_btf/tcp_send_reset")
				p1, _ := plan[1].(map[string]any)
				wantKeys(t, "plan[1]", p1, "capability", "degraded")
				if !reflect.DeepEqual(m["ports"], []any{80.0, 443.0}) {
					t.Errorf("ports = %#v", m["ports"])
				}
			case TypeStop:
				wantKeys(t, "stop", m, "time", "type", "lost", "events")
				wantNum(t, "lost", m["lost"], 0)
				wantNum(t, "events", m["events"], 12)
			case TypeLost:
				wantKeys(t, "lost", m, "time", "type", "lost")
				wantNum(t, "lost", m["lost"], 5)
			case TypeListen:
				wantKeys(t, "listen", m, "time", "type", "netns", "listener")
				wantNum(t, "netns", m["netns"], 4026531840)
				l := obj(t, m, "listener")
				wantKeys(t, "listener", l, "pid", "comm", "addr", "port", "netns", "backlog", "since")
				wantNum(t, "listener.pid", l["pid"], 4242)
				wantStr(t, "listener.comm", l["comm"], "nginx")
				wantStr(t, "listener.addr", l["addr"], "127.0.0.1")
				wantNum(t, "listener.port", l["port"], 8080)
				wantNum(t, "listener.netns", l["netns"], 4026531840)
				wantNum(t, "listener.backlog", l["backlog"], 511)
				wantTime(t, "listener.since", l["since"], t0)
			case TypeListenClose:
				wantNum(t, "netns", m["netns"], 4026531840)
				l := obj(t, m, "listener")
				wantTime(t, "listener.closed_at", l["closed_at"], t0)
				wantStr(t, "listener.addr", l["addr"], "::")
				if ev.Listener.ClosedBy == nil {
					wantKeys(t, "listener", l, "pid", "comm", "addr", "port", "netns", "closed_at", "exit_code")
					wantNum(t, "listener.exit_code", l["exit_code"], 3)
				} else {
					wantKeys(t, "listener", l, "pid", "comm", "addr", "port", "netns", "closed_at", "closed_by", "signal")
					wantStr(t, "listener.signal", l["signal"], "SIGKILL")
					wantProc(t, "listener.closed_by", obj(t, l, "closed_by"), Process{Pid: 5000, Comm: "worker"})
				}
			case TypeBindFailed:
				wantKeys(t, "bind_failed", m, "time", "type", "netns", "bind")
				b := obj(t, m, "bind")
				wantKeys(t, "bind", b, "pid", "comm", "addr", "port", "errno", "time", "holder")
				wantNum(t, "bind.pid", b["pid"], 4242)
				wantStr(t, "bind.comm", b["comm"], "nginx")
				wantStr(t, "bind.addr", b["addr"], "0.0.0.0")
				wantNum(t, "bind.port", b["port"], 8080)
				wantStr(t, "bind.errno", b["errno"], "EADDRINUSE")
				wantTime(t, "bind.time", b["time"], t0)
				wantProc(t, "bind.holder", obj(t, b, "holder"), Process{Pid: 99, Comm: "squatter"})
			case TypeRefused:
				top := []string{"time", "type", "netns", "src", "dst", "cause", "explanation", "kernel_reason", "client"}
				switch ev.Cause {
				case CauseBindFailed:
					top = append(top, "bind")
				case CauseNoListener:
				default:
					top = append(top, "listener")
				}
				wantKeys(t, "refused", m, top...)
				wantNum(t, "netns", m["netns"], 4026531840)
				wantEndpoint(t, "src", obj(t, m, "src"), ev.Src)
				wantEndpoint(t, "dst", obj(t, m, "dst"), ev.Dst)
				wantStr(t, "cause", m["cause"], string(ev.Cause))
				wantStr(t, "explanation", m["explanation"], ev.Explanation)
				wantStr(t, "kernel_reason", m["kernel_reason"], "NO_SOCKET")
				wantProc(t, "client", obj(t, m, "client"), client)
				switch ev.Cause {
				case CauseListenerClosed:
					l := obj(t, m, "listener")
					wantKeys(t, "listener", l, "pid", "comm", "addr", "port", "netns", "closed_at", "exit_code")
					wantNum(t, "listener.pid", l["pid"], 4242)
					wantStr(t, "listener.comm", l["comm"], "nginx")
					wantTime(t, "listener.closed_at", l["closed_at"], t0.Add(-time.Second))
					wantNum(t, "listener.exit_code", l["exit_code"], 0) // 0 is an exit code, kept
				case CauseWrongAddress, CauseOtherNetns, CauseUnknown:
					l := obj(t, m, "listener")
					wantKeys(t, "listener", l, "pid", "comm", "addr", "port", "netns")
					wantNum(t, "listener.netns", l["netns"], float64(ev.Listener.Netns))
					wantStr(t, "listener.addr", l["addr"], ev.Listener.Addr.String())
				case CauseBindFailed:
					b := obj(t, m, "bind")
					wantKeys(t, "bind", b, "pid", "comm", "addr", "port", "errno", "time", "holder")
					wantStr(t, "bind.errno", b["errno"], "EADDRINUSE")
					wantTime(t, "bind.time", b["time"], t0.Add(-time.Second))
					wantProc(t, "bind.holder", obj(t, b, "holder"), Process{Pid: 99, Comm: "squatter"})
				}
			default:
				t.Fatalf("sample of unexpected type %q", ev.Type)
			}
		})
	}
}

// TestJSONRoundTrip decodes every encoded line back into an Event.
func TestJSONRoundTrip(t *testing.T) {
	for _, s := range sampleEvents() {
		t.Run(s.name, func(t *testing.T) {
			var buf bytes.Buffer
			enc, _ := NewEncoder("json", &buf)
			if err := enc.Encode(s.ev); err != nil {
				t.Fatal(err)
			}
			if err := enc.Flush(); err != nil {
				t.Fatal(err)
			}
			var back Event
			if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(&back), normalize(s.ev)) {
				t.Errorf("round trip:\n got %+v\nwant %+v", back, *s.ev)
			}
		})
	}
}

// normalize makes times comparable with DeepEqual (location-free).
func normalize(e *Event) Event {
	c := *e
	c.Time = c.Time.UTC()
	if c.Listener != nil {
		l := *c.Listener
		l.Since, l.ClosedAt = l.Since.UTC(), l.ClosedAt.UTC()
		c.Listener = &l
	}
	if c.Bind != nil {
		b := *c.Bind
		b.Time = b.Time.UTC()
		c.Bind = &b
	}
	return c
}

func TestJSONNoHTMLEscape(t *testing.T) {
	var buf bytes.Buffer
	enc, _ := NewEncoder("json", &buf)
	ev := &Event{Time: t0, Type: TypeRefused, Cause: CauseUnknown, Explanation: "a <b> & c"}
	if err := enc.Encode(ev); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"a <b> & c"`) {
		t.Errorf("explanation escaped: %s", buf.String())
	}
}

func TestEncoderBuffersUntilFlush(t *testing.T) {
	for _, f := range []string{"text", "json"} {
		t.Run(f, func(t *testing.T) {
			var buf bytes.Buffer
			enc, _ := NewEncoder(f, &buf)
			if err := enc.Encode(&Event{Time: t0, Type: TypeLost, Lost: u64p(1)}); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before Flush", buf.Len())
			}
			if err := enc.Flush(); err != nil {
				t.Fatal(err)
			}
			if buf.Len() == 0 || !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
				t.Errorf("after Flush: %q", buf.String())
			}
		})
	}
}

func TestTextEncoder(t *testing.T) {
	want := map[string][]string{
		"start":                  {"START rsttrace on 6.12.1, ports 80,443: 1 of 2 capabilities fully traced; degraded: binds (no tracefs)"},
		"stop":                   {"STOP", "12 records written", "0 lost"},
		"lost":                   {"LOST 5 records"},
		"listen":                 {"LISTEN 127.0.0.1:8080", "netns 4026531840", "nginx (pid 4242)", "backlog 511"},
		"listen_close exit code": {"CLOSE [::]:8080", "nginx (pid 4242)", "exited with code 3"},
		"listen_close signal":    {"CLOSE [::]:8080", "closed by worker (pid 5000)", "was killed by SIGKILL"},
		"bind_failed":            {"BIND-FAILED 0.0.0.0:8080", "nginx (pid 4242)", "EADDRINUSE", "port held by squatter (pid 99)"},
	}
	for _, c := range []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown} {
		want["refused "+string(c)] = []string{"REFUSED [::1]:54321 -> [::1]:8080", "netns 4026531840", "[curl (pid 777)]", " " + string(c) + ": ", "(kernel: NO_SOCKET)"}
	}
	samples := sampleEvents()
	var buf bytes.Buffer
	enc, _ := NewEncoder("text", &buf)
	for _, s := range samples {
		if err := enc.Encode(s.ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != len(samples) {
		t.Fatalf("got %d lines for %d events: %q", len(lines), len(samples), lines)
	}
	stamp := t0.Local().Format("15:04:05.000000") + " "
	for i, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			line := lines[i]
			if !strings.HasPrefix(line, stamp) {
				t.Errorf("line %q does not start with time %q", line, stamp)
			}
			w, ok := want[s.name]
			if !ok {
				t.Fatalf("no expectation for %s", s.name)
			}
			for _, sub := range w {
				if !strings.Contains(line, sub) {
					t.Errorf("line %q missing %q", line, sub)
				}
			}
			if s.ev.Type == TypeRefused && !strings.Contains(line, s.ev.Explanation) {
				t.Errorf("line %q missing explanation %q", line, s.ev.Explanation)
			}
		})
	}
}

func TestTextEncoderRefusedIPv4NoClient(t *testing.T) {
	var buf bytes.Buffer
	enc, _ := NewEncoder("text", &buf)
	ev := &Event{Time: t0, Type: TypeRefused, Netns: 1, Src: ep("127.0.0.1", 40000), Dst: ep("127.0.0.2", 80), Cause: CauseNoListener}
	ev.Explanation = Explain(ev)
	if err := enc.Encode(ev); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, w := range []string{"REFUSED 127.0.0.1:40000 -> 127.0.0.2:80 netns 1 no_listener: nothing listens on port 80"} {
		if !strings.Contains(line, w) {
			t.Errorf("line %q missing %q", line, w)
		}
	}
	if strings.Contains(line, "[") || strings.Contains(line, "kernel:") {
		t.Errorf("line %q has a client or kernel reason it was not given", line)
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("line %q is not exactly one line", line)
	}
}
