package tracer

import (
	"bytes"
	"encoding/binary"
	"io"
	"maps"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/correlate"
	"github.com/rsttrace/rsttrace/internal/record"
)

// pipelineRecords returns raw ring buffer samples as the kernel writes them
// under a refusal flood on loopback (what bench/loadgen makes), in blocks
// of 100 events:
//   - 87 refusals to a closed port (no_listener) from ever new client
//     ports: the server's RESET_SENT, then the client's CLIENT_REFUSED
//     joining it, every other pair interleaved with the next one as two
//     CPUs write them; 5 of the 87 have no client record (a remote client,
//     or a lost record) and are written when Hold expires;
//   - a listener on 8080 killed by SIGKILL (listen_close) at the start of
//     the block, 10 refusals to 8080 (listener_closed, with a client), and
//     the listener back (listen) at the end;
//   - 1 CLIENT_REFUSED without a server side (a remote RST: unknown).
//
// Records are step apart in kernel time; the samples span span.
func pipelineRecords(blocks int) (raw [][]byte, events int, span uint64) {
	const (
		netns   = 4026532177
		step    = 1500 // ns between records: ~330k refusals/s, two records each
		reason  = 2    // NO_SOCKET, in rstReasons below
		srvPid  = 812
		loadPid = 24376
	)
	lo := [16]uint8{127, 0, 0, 1}
	comm := func(s string) (c [16]int8) {
		for i := range min(len(s), 15) {
			c[i] = int8(s[i])
		}
		return c
	}
	ts := uint64(1_000_000_000)
	add := func(r record.Record) {
		r.Ts = ts
		ts += step
		raw = append(raw, bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&r)), record.Size)))
	}
	sport := uint16(32768)
	nextPort := func() uint16 {
		sport++
		if sport == 0 || sport > 60999 {
			sport = 32768
		}
		return sport
	}
	reset := func(sp, dp uint16) record.Record {
		return record.Record{Type: record.ResetSent, Family: record.AFInet, TcpFlags: 0x02, Netns: netns, Reason: reason,
			Saddr: lo, Daddr: lo, Sport: sp, Dport: dp}
	}
	client := func(sp, dp uint16) record.Record {
		r := record.Record{Type: record.ClientRefused, Family: record.AFInet, State: 2, Flags: record.FlagProcKnown, Netns: netns,
			Saddr: lo, Daddr: lo, Sport: sp, Dport: dp, Sk: 0xffff888000000000 | uint64(sp)<<8}
		r.Proc.Pid, r.Proc.Tid, r.Proc.Comm = loadPid, loadPid+1, comm("loadgen")
		return r
	}
	listener := func(typ record.Type) record.Record {
		r := record.Record{Type: typ, Family: record.AFInet, State: 10, Netns: netns, Daddr: lo, Dport: 8080,
			Backlog: 511, BacklogReq: 511, Ino: 987654, Sk: 0xffff888012345678}
		r.Proc.Pid, r.Proc.Tid, r.Proc.Comm = srvPid, srvPid, comm("nginx")
		if typ == record.ListenClose {
			r.Flags, r.ExitCode = record.FlagExiting, 9 // SIGKILL
		}
		return r
	}
	type conn struct {
		sport, dport uint16
		client       bool
	}
	conns := make([]conn, 97)
	for range blocks {
		add(listener(record.ListenClose))
		for i := range conns {
			c := conn{sport: nextPort(), dport: 1, client: true}
			switch {
			case i%9 == 4 && i < 90: // 10 of them
				c.dport = 8080
			case i%19 == 7: // 5 of them
				c.client = false
			}
			conns[i] = c
		}
		for i := 0; i < len(conns); i += 2 {
			pair := conns[i:min(i+2, len(conns))]
			if i%4 == 0 {
				// Two connections on two CPUs: records interleaved.
				for _, c := range pair {
					add(reset(c.sport, c.dport))
				}
				for _, c := range pair {
					if c.client {
						add(client(c.sport, c.dport))
					}
				}
				continue
			}
			for _, c := range pair {
				add(reset(c.sport, c.dport))
				if c.client {
					add(client(c.sport, c.dport))
				}
			}
		}
		add(client(nextPort(), 9)) // a remote RST
		add(listener(record.Listen))
		events += 1 + len(conns) + 1 + 1
	}
	return raw, events, ts - 1_000_000_000
}

// BenchmarkPipeline runs what Tracer.Run does for every ring buffer sample
// (Decode, Correlator.Handle, counting and encoding each event) over
// pipelineRecords, into io.Discard. One op is one record; events/s is the
// number the performance target is about.
func BenchmarkPipeline(b *testing.B) {
	for _, format := range []string{"json", "text"} {
		b.Run(format, func(b *testing.B) { benchPipeline(b, format) })
	}
}

func benchPipeline(b *testing.B, format string) {
	raw, perCycle, span := pipelineRecords(150)
	out, err := events.NewEncoder(format, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	corr := correlate.New(nil)
	rstReasons := map[uint32]string{2: "NO_SOCKET"}
	corr.RSTReason = func(v uint32) string { return rstReasons[v] }
	wallOffset := time.Now().UnixNano() - 1_000_000_000
	corr.Wall = func(ns uint64) time.Time { return time.Unix(0, int64(ns)+wallOffset) }

	// As Run's count: a mutex-guarded counter, then the encoder.
	var mu sync.Mutex
	var written uint64
	count := func(e *events.Event) error {
		mu.Lock()
		written++
		mu.Unlock()
		return out.Encode(e)
	}
	var r record.Record
	var cycles uint64
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == len(raw) {
			// Next cycle: same records, later in kernel time.
			b.StopTimer()
			cycles++
			for _, s := range raw {
				binary.LittleEndian.PutUint64(s[unsafe.Offsetof(r.Ts):], binary.LittleEndian.Uint64(s[unsafe.Offsetof(r.Ts):])+span)
			}
			i = 0
			b.StartTimer()
		}
		if err := record.Decode(raw[i], &r); err != nil {
			b.Fatal(err)
		}
		if err := corr.Handle(&r, count); err != nil {
			b.Fatal(err)
		}
		i++
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(written)/sec, "events/s")
	b.ReportMetric(float64(cycles*uint64(len(raw))+uint64(i))/sec, "records/s")
	if cycles > 0 && written < cycles*uint64(perCycle)*9/10 {
		b.Errorf("wrote %d events in %d cycles of %d", written, cycles, perCycle)
	}
	if err := corr.FlushAll(count); err != nil {
		b.Fatal(err)
	}
	if err := out.Flush(); err != nil {
		b.Fatal(err)
	}
}

// TestPipelineRecords checks that the benchmark's records turn into the
// events its comment promises.
func TestPipelineRecords(t *testing.T) {
	raw, n, _ := pipelineRecords(3)
	c := correlate.New(nil)
	got := map[string]int{}
	emit := func(e *events.Event) error {
		k := string(e.Type)
		if e.Type == events.TypeRefused {
			k += "/" + string(e.Cause)
			if e.Client != nil {
				k += "/client"
			}
		}
		got[k]++
		return nil
	}
	var r record.Record
	for _, s := range raw {
		if err := record.Decode(s, &r); err != nil {
			t.Fatal(err)
		}
		if err := c.Handle(&r, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.FlushAll(emit); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"refused/no_listener/client":     3 * 82,
		"refused/no_listener":            3 * 5,
		"refused/listener_closed/client": 3 * 10,
		"refused/unknown/client":         3,
		"listen":                         3,
		"listen_close":                   3,
	}
	total := 0
	for _, v := range got {
		total += v
	}
	if !maps.Equal(got, want) || total != n {
		t.Errorf("events %v (%d), want %v (%d)", got, total, want, n)
	}
}
