package correlate

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// fakeNetns is a namespace whose counters and listeners the test sets.
type fakeNetns struct {
	c         ListenCounters
	ls        []QueueListener
	somaxconn int
	cookies   int
	closed    bool
}

func (f *fakeNetns) Counters() (ListenCounters, error) { return f.c, nil }
func (f *fakeNetns) Listeners() ([]QueueListener, error) {
	return append([]QueueListener(nil), f.ls...), nil
}
func (f *fakeNetns) Sysctls() (int, int) { return f.somaxconn, f.cookies }
func (f *fakeNetns) Close() error        { f.closed = true; return nil }

type fakeSource struct {
	ns     map[uint32]*fakeNetns
	counts map[uint64]StageCounts
}

func (s *fakeSource) Open(_, netns uint32) (Netns, error) {
	if f, ok := s.ns[netns]; ok {
		return f, nil
	}
	return nil, errors.New("no such netns")
}
func (s *fakeSource) Stages(ino uint64) StageCounts { return s.counts[ino] }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// overflowRig is a poller on fake namespaces, with a clock.
type overflowRig struct {
	t    *testing.T
	src  *fakeSource
	p    *OverflowPoller
	now  time.Time
	info map[uint64]events.Listener
}

func newRig(t *testing.T, perSYN, perFinal bool) *overflowRig {
	src := &fakeSource{ns: map[uint32]*fakeNetns{}, counts: map[uint64]StageCounts{}}
	r := &overflowRig{t: t, src: src, p: NewOverflowPoller(src, quietLog(), perSYN, perFinal),
		now: time.Unix(1_700_000_000, 0), info: map[uint64]events.Listener{}}
	r.p.lastPoll = r.now
	return r
}

func (r *overflowRig) poll() []*events.Event {
	r.t.Helper()
	r.now = r.now.Add(time.Second)
	var out []*events.Event
	info := func(ino uint64) (events.Listener, bool) { l, ok := r.info[ino]; return l, ok }
	mono := uint64(100 * time.Second)
	if err := r.p.Poll(r.now, mono, info, func(e *events.Event) error { out = append(out, e); return nil }); err != nil {
		r.t.Fatal(err)
	}
	return out
}

var (
	lnA = netip.MustParseAddrPort("0.0.0.0:80")
	lnB = netip.MustParseAddrPort("[::]:443")
)

func TestOverflowOneListener(t *testing.T) {
	r := newRig(t, false, true)
	ns := &fakeNetns{c: ListenCounters{Drops: 100, Overflows: 90}, somaxconn: 128, cookies: 1,
		ls: []QueueListener{{Local: lnA, Ino: 7, Queued: 129, Backlog: 128, Drops: 500}}}
	r.src.ns[42] = ns
	r.info[7] = events.Listener{Process: events.Process{Pid: 812, Comm: "nginx"}, BacklogRequested: 511}
	r.p.Watch(42, 1)
	if evs := r.poll(); len(evs) != 0 {
		t.Fatalf("events with no counter movement: %+v", evs)
	}
	// 312 drops: 300 SYNs at a full accept queue, 12 final ACKs (which
	// move sk_drops twice).
	ns.c = ListenCounters{Drops: 412, Overflows: 402}
	ns.ls[0].Drops = 500 + 300 + 2*12
	r.src.counts[7] = StageCounts{FinalAck: 12, LastAccept: uint64(100*time.Second - 4100*time.Millisecond)}
	evs := r.poll()
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	e := evs[0]
	want := events.Drops{Total: 312, SynAcceptQueueFull: 300, FinalAck: 12}
	if *e.Dropped != want {
		t.Errorf("dropped %+v, want %+v", *e.Dropped, want)
	}
	if e.Listener.Pid != 812 || e.Listener.Backlog != 128 || *e.Listener.Queued != 129 || e.Listener.Netns != 42 {
		t.Errorf("listener %+v", e.Listener)
	}
	if e.AcceptIdleMs == nil || *e.AcceptIdleMs != 4100 || e.NeverAccepted {
		t.Errorf("accept idle %v never %v, want 4100", e.AcceptIdleMs, e.NeverAccepted)
	}
	if e.Somaxconn != 128 || e.IntervalMs != 1000 {
		t.Errorf("somaxconn %d interval %d", e.Somaxconn, e.IntervalMs)
	}
	for _, s := range []string{"nginx (pid 812) on 0.0.0.0:80 has not called accept() for 4.1s", "accept queue 129/129 (backlog 128)",
		"312 connection attempts dropped in 1.0s (300 SYNs, 12 final ACKs)", "asked for a backlog of 511 but net.core.somaxconn=128 cut it to 128"} {
		if !strings.Contains(e.Explanation, s) {
			t.Errorf("explanation lacks %q: %s", s, e.Explanation)
		}
	}
	if evs := r.poll(); len(evs) != 0 {
		t.Errorf("events after the overflow stopped: %d", len(evs))
	}
}

// Two listeners in one namespace share its drops by their sk_drops; the
// parts add up to the kernel's count exactly.
func TestOverflowSplitBetweenListeners(t *testing.T) {
	r := newRig(t, false, false)
	ns := &fakeNetns{cookies: 0, ls: []QueueListener{
		{Local: lnA, Ino: 1, Backlog: 10, Drops: 0},
		{Local: lnB, Ino: 2, Backlog: 10, Drops: 0},
	}}
	r.src.ns[9] = ns
	r.p.Watch(9, 1)
	ns.c = ListenCounters{Drops: 10, Overflows: 7}
	ns.ls[0].Drops, ns.ls[1].Drops = 2, 1 // 2:1
	evs := r.poll()
	if len(evs) != 2 {
		t.Fatalf("got %d events, want 2", len(evs))
	}
	var total, ovf uint64
	byIno := map[uint16]events.Drops{}
	for _, e := range evs {
		total += e.Dropped.Total
		ovf += e.Dropped.SynAcceptQueueFull
		byIno[e.Listener.Port] = *e.Dropped
	}
	if total != 10 || ovf != 7 {
		t.Errorf("parts add up to %d drops, %d accept-queue drops; want 10 and 7", total, ovf)
	}
	if a, b := byIno[80], byIno[443]; a.Total != 7 || b.Total != 3 {
		t.Errorf("split %d/%d, want 7/3 (2:1, largest remainder)", a.Total, b.Total)
	}
	// Syncookies off: drops that did not overflow the accept queue were
	// SYNs at a full SYN queue.
	for _, d := range byIno {
		if d.SynQueueFull != d.Total-d.SynAcceptQueueFull || d.Other != 0 {
			t.Errorf("stages %+v", d)
		}
	}
}

func TestOverflowPerPacketStagesCapped(t *testing.T) {
	r := newRig(t, true, true)
	ns := &fakeNetns{ls: []QueueListener{{Local: lnA, Ino: 5, Backlog: 1}}}
	r.src.ns[3] = ns
	r.p.Watch(3, 1)
	ns.c = ListenCounters{Drops: 5, Overflows: 5}
	ns.ls[0].Drops = 5
	// The hooks saw more than the counter moved (a race at the poll):
	// stages are capped to the exact total.
	r.src.counts[5] = StageCounts{SynAcceptQ: 4, SynReqQ: 1, FinalAck: 2}
	evs := r.poll()
	if len(evs) != 1 {
		t.Fatalf("got %d events", len(evs))
	}
	want := events.Drops{Total: 5, FinalAck: 2, SynAcceptQueueFull: 3}
	if *evs[0].Dropped != want {
		t.Errorf("dropped %+v, want %+v", *evs[0].Dropped, want)
	}
}

func TestOverflowNoListenerLeft(t *testing.T) {
	r := newRig(t, false, false)
	ns := &fakeNetns{ls: []QueueListener{{Local: lnA, Ino: 5, Backlog: 1}}}
	r.src.ns[3] = ns
	r.p.Watch(3, 1)
	ns.c = ListenCounters{Drops: 4, Overflows: 4}
	ns.ls = nil // closed since
	evs := r.poll()
	if len(evs) != 1 || evs[0].Listener != nil || evs[0].Dropped.Total != 4 || evs[0].Dropped.Other != 4 {
		t.Fatalf("got %+v, want one event of 4 unattributed drops", evs)
	}
}

func TestOverflowWatchRetire(t *testing.T) {
	r := newRig(t, false, false)
	ns := &fakeNetns{}
	r.src.ns[3] = ns
	r.p.Watch(3, 1)
	r.p.Watch(4, 1) // cannot be opened: ignored
	if len(r.p.ns) != 1 {
		t.Fatalf("watching %d namespaces", len(r.p.ns))
	}
	r.p.Retire(3)
	r.p.Watch(3, 1) // a new listener: stays
	r.poll()
	if ns.closed {
		t.Fatal("unwatched although a listener came back")
	}
	r.p.Retire(3)
	r.poll()
	if !ns.closed || len(r.p.ns) != 0 {
		t.Error("retired namespace still watched after a poll")
	}
	r.p.keep[5] = true
	r.src.ns[5] = &fakeNetns{}
	r.p.Watch(5, 1)
	r.p.Retire(5)
	r.poll()
	if len(r.p.ns) != 1 {
		t.Error("the tracer's own namespace was retired")
	}
}

func TestSplitExact(t *testing.T) {
	// want: each share's part, worked out by hand: the proportional
	// floor, then the remainders largest first (ties to the first).
	for _, c := range []struct {
		weights []uint64
		n       uint64
		want    []uint64
	}{
		{[]uint64{1, 1, 1}, 10, []uint64{4, 3, 3}},
		{[]uint64{0, 5}, 3, []uint64{0, 3}},
		{[]uint64{3, 3, 3}, 1, []uint64{1, 0, 0}},
		{[]uint64{1, 2, 7}, 10, []uint64{1, 2, 7}},
		{[]uint64{1, 2, 7}, 5, []uint64{1, 1, 3}},               // 0.5 1.0 3.5: the first .5 wins the spare
		{[]uint64{10, 1}, 4, []uint64{4, 0}},                    // 3.63.. and 0.36..: the larger remainder
		{[]uint64{1, 1, 2}, 0, []uint64{0, 0, 0}},               // nothing to split
		{[]uint64{0, 0}, 5, []uint64{0, 0}},                     // no weight: nothing is given
		{[]uint64{1 << 40, 1}, 1 << 40, []uint64{1<<40 - 1, 1}}, // 2^40-1 + 1/(2^40+1), and 0.99..: the spare to the second
	} {
		shares := make([]share, len(c.weights))
		for i, w := range c.weights {
			shares[i].weight = w
		}
		split(shares, c.n, func(s *share) *uint64 { return &s.drops })
		for i, s := range shares {
			if s.drops != c.want[i] {
				t.Errorf("split(%v, %d): share %d got %d, want %d", c.weights, c.n, i, s.drops, c.want[i])
			}
		}
	}
}

// A drop between reading the namespace's counter and dumping its
// listeners moves the listener's sk_drops one poll before the counter: the
// counter's movement at the next poll is that listener's, not a closed
// listener's.
func TestOverflowListenerAheadOfCounter(t *testing.T) {
	r := newRig(t, false, false)
	ns := &fakeNetns{ls: []QueueListener{{Local: lnA, Ino: 5, Backlog: 2}}}
	r.src.ns[3] = ns
	r.info[5] = events.Listener{Process: events.Process{Pid: 9, Comm: "slow"}}
	r.p.Watch(3, 1)
	ns.c = ListenCounters{Drops: 4, Overflows: 4}
	ns.ls[0].Drops = 5 // the fifth drop came after the counter was read
	evs := r.poll()
	if len(evs) != 1 || evs[0].Listener == nil || evs[0].Dropped.Total != 4 {
		t.Fatalf("first poll: %+v, want 4 drops of the listener", evs)
	}
	ns.c = ListenCounters{Drops: 5, Overflows: 5}
	evs = r.poll()
	if len(evs) != 1 || evs[0].Listener == nil || evs[0].Listener.Pid != 9 || evs[0].Dropped.Total != 1 {
		t.Fatalf("second poll: %+v, want the listener's fifth drop", evs)
	}
	if strings.Contains(evs[0].Explanation, "closed since") {
		t.Errorf("explanation: %s", evs[0].Explanation)
	}
}

// As above, with a per-packet hook: the final ACKs it counted with the
// drops that ran ahead go with those drops at the next poll.
func TestOverflowStagesAheadOfCounter(t *testing.T) {
	r := newRig(t, false, true)
	ns := &fakeNetns{ls: []QueueListener{{Local: lnA, Ino: 5, Backlog: 1}}}
	r.src.ns[3] = ns
	r.info[5] = events.Listener{Process: events.Process{Pid: 9, Comm: "deferred"}}
	r.p.Watch(3, 1)
	// Three final ACKs dropped; the counter was read after the first.
	ns.c = ListenCounters{Drops: 1, Overflows: 1}
	ns.ls[0].Drops = 2 * 3 // a dropped final ACK moves sk_drops twice
	r.src.counts[5] = StageCounts{FinalAck: 3}
	evs := r.poll()
	if len(evs) != 1 || *evs[0].Dropped != (events.Drops{Total: 1, FinalAck: 1}) {
		t.Fatalf("first poll: %+v", evs)
	}
	ns.c = ListenCounters{Drops: 3, Overflows: 3}
	evs = r.poll()
	if len(evs) != 1 || evs[0].Listener == nil || *evs[0].Dropped != (events.Drops{Total: 2, FinalAck: 2}) {
		t.Fatalf("second poll: %+v, want the listener's other 2 final ACKs", evs)
	}
}
