package events

import (
	"io"
	"net/netip"
	"testing"
	"time"
)

// benchEvents returns events as the correlator makes them under a refusal
// flood: times from time.Unix (local zone), nine in ten refusals to a
// closed port from a local client, the rest refusals naming a closed
// listener, and listen / listen_close records.
func benchEvents() []*Event {
	const n = 1000
	base := time.Unix(1763769600, 123456789)
	lo := netip.MustParseAddr("127.0.0.1")
	srv := Process{Pid: 812, Comm: "nginx"}
	out := make([]*Event, 0, n)
	for i := range n {
		at := base.Add(time.Duration(i) * 3127 * time.Nanosecond)
		var ev *Event
		switch {
		case i%100 == 50:
			ev = &Event{Time: at, Type: TypeListen, Netns: 4026532177,
				Listener: &Listener{Process: srv, Addr: lo, Port: 8080, Netns: 4026532177, Backlog: 511, Since: at}}
		case i%100 == 51:
			ev = &Event{Time: at, Type: TypeListenClose, Netns: 4026532177,
				Listener: &Listener{Process: srv, Addr: lo, Port: 8080, Netns: 4026532177, Backlog: 511,
					Since: at.Add(-time.Millisecond), ClosedAt: at, Exit: &Exit{Signal: "SIGKILL"}}}
		case i%10 == 9:
			ev = &Event{Time: at, Type: TypeRefused, Netns: 4026532177,
				Src: &Endpoint{Addr: lo, Port: uint16(32768 + i)}, Dst: &Endpoint{Addr: lo, Port: 8080},
				KernelReason: "NO_SOCKET", Client: &Process{Pid: 24376, Comm: "loadgen"}, Cause: CauseListenerClosed,
				Listener: &Listener{Process: srv, Addr: lo, Port: 8080, Netns: 4026532177, Backlog: 511,
					Since: base, ClosedAt: base.Add(time.Millisecond), Exit: &Exit{Signal: "SIGKILL"}}}
		default:
			ev = &Event{Time: at, Type: TypeRefused, Netns: 4026532177,
				Src: &Endpoint{Addr: lo, Port: uint16(32768 + i)}, Dst: &Endpoint{Addr: lo, Port: 1},
				KernelReason: "NO_SOCKET", Client: &Process{Pid: 24376, Comm: "loadgen"}, Cause: CauseNoListener}
		}
		if ev.Type == TypeRefused {
			ev.Explanation = Explain(ev)
		}
		out = append(out, ev)
	}
	return out
}

func benchEncode(b *testing.B, format string) { benchEncodeWith(b, format, Options{}) }

func benchEncodeWith(b *testing.B, format string, o Options) {
	evs := benchEvents()
	enc, err := NewEncoderWith(format, io.Discard, o)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := enc.Encode(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := enc.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkEncodeJSON(b *testing.B) { benchEncode(b, "json") }
func BenchmarkEncodeText(b *testing.B) { benchEncode(b, "text") }

// BenchmarkEncodeJSONOrigin writes host and node in every record.
func BenchmarkEncodeJSONOrigin(b *testing.B) {
	benchEncodeWith(b, "json", Options{Host: "web-1.example", Node: "node-a"})
}

var benchSink []byte

// BenchmarkAppendString escapes a typical explanation.
func BenchmarkAppendString(b *testing.B) {
	s := "nothing listens on port 1 in netns 4026532177, and nothing has since rsttrace started"
	buf := make([]byte, 0, 256)
	for b.Loop() {
		benchSink = appendString(buf[:0], s)
	}
}
