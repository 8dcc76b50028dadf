package events

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

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
