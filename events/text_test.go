package events

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// oracleText is the text encoder as it was written with fmt, before it
// was made allocation-free: every line but OVERFLOW (new) must not change.
func oracleText(e *Event) string {
	hostPort := func(addr string, port uint16) string {
		if strings.Contains(addr, ":") {
			return fmt.Sprintf("[%s]:%d", addr, port)
		}
		return fmt.Sprintf("%s:%d", addr, port)
	}
	endpoint := func(e *Endpoint) string {
		if e == nil {
			return "?"
		}
		return hostPort(e.Addr.String(), e.Port)
	}
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("15:04:05.000000"))
	b.WriteByte(' ')
	switch e.Type {
	case TypeStart:
		fmt.Fprintf(&b, "START rsttrace schema %d on Linux %s:", e.Version, e.Kernel)
		for _, a := range e.Plan {
			if a.Degraded != "" && a.Fallback != "" {
				fmt.Fprintf(&b, " %s=PARTIAL(%s; %s)", a.Capability, a.Degraded, a.Fallback)
			} else if a.Degraded != "" {
				fmt.Fprintf(&b, " %s=DEGRADED(%s)", a.Capability, a.Degraded)
			} else {
				fmt.Fprintf(&b, " %s=%s", a.Capability, a.Hook)
			}
		}
	case TypeStop:
		fmt.Fprintf(&b, "STOP %d records written, %d lost", e.Events, deref(e.Lost))
		if e.Summarized != 0 {
			fmt.Fprintf(&b, ", %d refusals summarized", e.Summarized)
		}
	case TypeSummary:
		fmt.Fprintf(&b, "SUMMARY %d refused -> %s netns %d in %dms %s: %s", e.Refusals, endpoint(e.Dst), e.Netns, e.IntervalMs, e.Cause, e.Explanation)
	case TypeLost:
		fmt.Fprintf(&b, "LOST %d records (ring buffer full or output too slow)", deref(e.Lost))
	case TypeRefused:
		fmt.Fprintf(&b, "REFUSED %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
		if e.Client != nil {
			fmt.Fprintf(&b, " [%s %d]", e.Client.Comm, e.Client.Pid)
		}
		fmt.Fprintf(&b, " %s: %s", e.Cause, e.Explanation)
		if e.KernelReason != "" {
			fmt.Fprintf(&b, " (kernel: %s)", e.KernelReason)
		}
	case TypeListen:
		if l := e.Listener; l != nil {
			fmt.Fprintf(&b, "LISTEN %s netns %d %s backlog %d", hostPort(l.Addr.String(), l.Port), l.Netns, oracleProc(l.Process), l.Backlog)
		}
	case TypeListenClose:
		if l := e.Listener; l != nil {
			fmt.Fprintf(&b, "CLOSE %s netns %d %s", hostPort(l.Addr.String(), l.Port), l.Netns, oracleProc(l.Process))
			if l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid {
				fmt.Fprintf(&b, " closed by %s", oracleProc(*l.ClosedBy))
			}
			if l.Exit != nil {
				b.WriteString(" " + oracleExitString(l.Exit))
			}
		}
	case TypeBindFailed:
		if x := e.Bind; x != nil {
			fmt.Fprintf(&b, "BIND-FAILED %s netns %d %s %s", hostPort(x.Addr.String(), x.Port), e.Netns, oracleProc(x.Process), x.Errno)
			if x.Holder != nil {
				fmt.Fprintf(&b, "; port held by %s", oracleProc(*x.Holder))
			}
		}
	case TypeTimeout, TypeReset, TypeFiltered:
		switch e.Type {
		case TypeTimeout:
			fmt.Fprintf(&b, "TIMEOUT %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
			if e.Client != nil {
				fmt.Fprintf(&b, " [%s %d]", e.Client.Comm, e.Client.Pid)
			}
		case TypeFiltered:
			fmt.Fprintf(&b, "FILTERED %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
		case TypeReset:
			fmt.Fprintf(&b, "RESET %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
			if e.Process != nil {
				fmt.Fprintf(&b, " from [%s %d]", e.Process.Comm, e.Process.Pid)
			}
			if e.PeerProcess != nil {
				fmt.Fprintf(&b, " to [%s %d]", e.PeerProcess.Comm, e.PeerProcess.Pid)
			}
		}
		if e.Cause != "" {
			fmt.Fprintf(&b, " %s:", e.Cause)
		}
		fmt.Fprintf(&b, " %s", e.Explanation)
		if e.KernelReason != "" {
			fmt.Fprintf(&b, " (kernel: %s)", e.KernelReason)
		}
	default:
		fmt.Fprintf(&b, "%s", e.Type)
	}
	b.WriteByte('\n')
	return b.String()
}

func ourText(t testing.TB, e *Event) string {
	var buf bytes.Buffer
	enc, err := NewEncoder("text", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func sameTextAsOracle(t *testing.T, e *Event) {
	t.Helper()
	if e.Type == TypeListenOverflow {
		return // a new line: TestTextOverflow
	}
	if got, want := ourText(t, e), oracleText(e); got != want {
		t.Fatalf("text line changed:\n got %q\nwant %q", got, want)
	}
}

func TestTextMatchesFmt(t *testing.T) {
	var evs []*Event
	for _, s := range sampleEvents() {
		evs = append(evs, s.ev)
	}
	evs = append(evs, benchEvents()[:110]...)
	evs = append(evs,
		&Event{},
		&Event{Type: TypeRefused},
		&Event{Type: TypeListen}, // no listener: just the time
		&Event{Type: "something new"},
		&Event{Time: time.Date(10000, 1, 2, 3, 4, 5, 999999999, time.UTC), Type: TypeRefused,
			Src: &Endpoint{}, Dst: &Endpoint{Addr: netip.MustParseAddr("fe80::1%eth0"), Port: 80}},
		&Event{Time: time.Date(-3, 1, 2, 23, 59, 59, 1000, time.FixedZone("", -7200)), Type: TypeRefused,
			Src: &Endpoint{Addr: netip.MustParseAddr("::ffff:10.1.2.3"), Port: 1}},
		&Event{Time: t0, Type: TypeListenClose, Listener: &Listener{Process: server, ClosedBy: &Process{Pid: server.Pid}, Exit: &Exit{}}},
	)
	for i, e := range evs {
		t.Run(fmt.Sprintf("%d %s", i, e.Type), func(t *testing.T) { sameTextAsOracle(t, e) })
	}
	for i := range 200 {
		f := &filler{set: func(p string) bool { return (len(p)+i)%3 != 0 }, src: &richSource{n: i}}
		for _, typ := range []Type{TypeStart, TypeStop, TypeLost, TypeRefused, TypeListen, TypeListenClose, TypeBindFailed} {
			var e Event
			f.fill(t, reflect.ValueOf(&e).Elem(), "")
			e.Type = typ
			t.Run(fmt.Sprintf("filled %d %s", i, typ), func(t *testing.T) { sameTextAsOracle(t, &e) })
		}
	}
}

func TestTextClock(t *testing.T) {
	for _, tm := range []time.Time{t0, {}, time.Unix(0, 999999999), time.Unix(1763769600, 1000), time.Date(2025, 1, 1, 23, 59, 59, 999, time.UTC)} {
		if got, want := string(appendClock(nil, tm)), tm.Format("15:04:05.000000"); got != want {
			t.Errorf("appendClock(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestTextOverflow(t *testing.T) {
	stamp := t0.Local().Format("15:04:05.000000") + " "
	full := &Event{Time: t0, Type: TypeListenOverflow, Netns: 4026532, Cause: CauseBacklogFull,
		Explanation: "nginx (pid 812) does not accept() fast enough",
		Listener: &Listener{Process: Process{Pid: 812, Comm: "nginx"}, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080,
			Netns: 4026532, Backlog: 128, BacklogRequested: 511, Queued: u32p(129)},
		Dropped:    &Drops{Total: 312, SynAcceptQueueFull: 300, SynQueueFull: 0, FinalAck: 12, Other: 0},
		IntervalMs: 1000, AcceptIdleMs: i64p(4100)}
	tests := []struct {
		name string
		ev   *Event
		want string
	}{
		{"full", full, "OVERFLOW 127.0.0.1:8080 netns 4026532 nginx (pid 812) backlog 128 (requested 511) queued 129: " +
			"dropped 312 (syn 300, syn-queue 0, final-ack 12, other 0) in 1000ms; no accept() for 4.1s " +
			"backlog_full: nginx (pid 812) does not accept() fast enough"},
		{"not clamped, nothing known of accept()", &Event{Time: t0, Type: TypeListenOverflow, Cause: CauseBacklogFull,
			Listener: &Listener{Process: Process{Pid: 812, Comm: "nginx"}, Addr: netip.MustParseAddr("::"), Port: 80,
				Netns: 7, Backlog: 511, BacklogRequested: 511},
			Dropped: &Drops{Total: 3, FinalAck: 3}, IntervalMs: 250},
			"OVERFLOW [::]:80 netns 7 nginx (pid 812) backlog 511: dropped 3 (syn 0, syn-queue 0, final-ack 3, other 0) in 250ms backlog_full"},
		{"accept() idle under a second", &Event{Time: t0, Type: TypeListenOverflow,
			Listener: &Listener{Process: Process{Pid: 1, Comm: "a"}, Addr: netip.MustParseAddr("10.0.0.1"), Port: 1, Netns: 1},
			Dropped:  &Drops{Total: 1, Other: 1}, IntervalMs: 1000, AcceptIdleMs: i64p(999)},
			"OVERFLOW 10.0.0.1:1 netns 1 a (pid 1) backlog 0: dropped 1 (syn 0, syn-queue 0, final-ack 0, other 1) in 1000ms; no accept() for 999ms"},
		{"accept() idle for minutes", &Event{Time: t0, Type: TypeListenOverflow,
			Dropped: &Drops{Total: 1}, AcceptIdleMs: i64p(185_400)},
			"OVERFLOW: dropped 1 (syn 0, syn-queue 0, final-ack 0, other 0); no accept() for 3m5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ourText(t, tt.ev); got != stamp+tt.want+"\n" {
				t.Errorf("got  %q\nwant %q", got, stamp+tt.want+"\n")
			}
		})
	}
}

func TestTextRefusedAllocs(t *testing.T) {
	enc, _ := NewEncoder("text", &bytes.Buffer{})
	ev := refusedEvent(CauseListenerClosed)
	allocs := testing.AllocsPerRun(100, func() { _ = enc.Encode(ev) })
	if allocs != 0 {
		t.Errorf("a refused line costs %v allocations, want 0", allocs)
	}
}

func TestJSONAllocs(t *testing.T) {
	enc, _ := NewEncoderWith("json", &bytes.Buffer{}, Options{Host: "web-1", Node: "node-a"})
	for _, s := range sampleEvents() {
		if allocs := testing.AllocsPerRun(100, func() { _ = enc.Encode(s.ev) }); allocs != 0 {
			t.Errorf("%s: %v allocations, want 0", s.name, allocs)
		}
	}
}

func FuzzTextEncoder(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 600))
	f.Add(bytes.Repeat([]byte{0x03, 0x05, 0x07, '"', '\\', 0xe2, 0x80, 0xa8}, 200))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := fuzzEvent(t, data)
		if len(data) > 0 {
			types := []Type{TypeStart, TypeStop, TypeLost, TypeRefused, TypeListen, TypeListenClose, TypeBindFailed, TypeListenOverflow}
			e.Type = types[int(data[0])%len(types)]
		}
		if e.Type == TypeListenOverflow {
			if line := ourText(t, e); strings.Count(line, "\n") < 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("line %q", line)
			}
			return
		}
		sameTextAsOracle(t, e)
	})
}
