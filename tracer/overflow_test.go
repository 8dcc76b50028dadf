package tracer

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

const netstatSample = `TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPBacklogDrop
TcpExt: 0 0 17 23 0
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
`

func TestParseNetstat(t *testing.T) {
	c, err := parseNetstat([]byte(netstatSample))
	if err != nil {
		t.Fatal(err)
	}
	if c.overflows != 17 || c.drops != 23 {
		t.Errorf("got %+v, want overflows 17 drops 23", c)
	}
	for name, in := range map[string]string{
		"empty":          "",
		"no TcpExt":      "IpExt: A B\nIpExt: 1 2\n",
		"missing fields": "TcpExt: ListenDrops\nTcpExt: 5\n",
		"bad number":     "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 x\n",
		"short values":   "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
	} {
		if _, err := parseNetstat([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// diagMsg builds one SOCK_DIAG_BY_FAMILY message as the kernel sends it.
func diagMsg(family uint8, state uint8, ap netip.AddrPort, ino, rq, wq, drops uint32) []byte {
	ne := binary.NativeEndian
	m := make([]byte, sizeofInetDiagMsg)
	m[0], m[1] = family, state
	binary.BigEndian.PutUint16(m[4:], ap.Port())
	a := ap.Addr().AsSlice()
	copy(m[8:], a)
	ne.PutUint32(m[56:], rq)
	ne.PutUint32(m[60:], wq)
	ne.PutUint32(m[68:], ino)
	// An attribute before SKMEMINFO, odd-sized (padded), as the kernel
	// sends INET_DIAG_SHUTDOWN.
	m = append(m, 5, 0, 8, 0, 0, 0, 0, 0)
	mem := make([]byte, 4+9*4)
	ne.PutUint16(mem[0:], uint16(len(mem)))
	ne.PutUint16(mem[2:], inetDiagSkmeminfo)
	ne.PutUint32(mem[4+unix.SK_MEMINFO_DROPS*4:], drops)
	m = append(m, mem...)
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, m)
}

func nlmsg(typ uint16, payload []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestParseDiag(t *testing.T) {
	v4 := netip.MustParseAddrPort("127.0.0.1:8080")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:443")
	var b []byte
	b = append(b, diagMsg(unix.AF_INET, tcpListenState, v4, 111, 3, 2, 9)...)
	b = append(b, diagMsg(unix.AF_INET6, tcpListenState, v6, 222, 0, 4096, 0)...)
	b = append(b, diagMsg(unix.AF_INET, 1, v4, 333, 0, 0, 0)...) // not a listener
	b = append(b, nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0})...)
	ls, done, err := parseDiag(b)
	if err != nil || !done {
		t.Fatalf("done %v err %v", done, err)
	}
	want := []diagListener{
		{local: v4, ino: 111, queued: 3, backlog: 2, drops: 9},
		{local: v6, ino: 222, queued: 0, backlog: 4096, drops: 0},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %d listeners %+v, want %d", len(ls), ls, len(want))
	}
	for i := range want {
		if ls[i] != want[i] {
			t.Errorf("listener %d: got %+v, want %+v", i, ls[i], want[i])
		}
	}

	// A reply that continues in the next datagram.
	if _, done, err := parseDiag(diagMsg(unix.AF_INET, tcpListenState, v4, 1, 0, 0, 0)); done || err != nil {
		t.Errorf("partial reply: done %v err %v", done, err)
	}
	// An error reply.
	e := make([]byte, 4)
	eperm := -int32(unix.EPERM)
	binary.NativeEndian.PutUint32(e, uint32(eperm))
	if _, _, err := parseDiag(nlmsg(unix.NLMSG_ERROR, e)); !errors.Is(err, unix.EPERM) {
		t.Errorf("error reply: %v, want EPERM", err)
	}
	// A length that runs past the datagram.
	bad := diagMsg(unix.AF_INET, tcpListenState, v4, 1, 0, 0, 0)
	binary.NativeEndian.PutUint32(bad[0:], 4096)
	if _, _, err := parseDiag(bad); err == nil {
		t.Error("no error for a message longer than the datagram")
	}
}

// FuzzParseDiag: any datagram parses without panicking, and what it
// returns are listeners.
func FuzzParseDiag(f *testing.F) {
	f.Add(diagMsg(unix.AF_INET, tcpListenState, netip.MustParseAddrPort("127.0.0.1:1"), 1, 2, 3, 4))
	f.Add(nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, _, _ := parseDiag(b)
		for _, l := range ls {
			if !l.local.IsValid() {
				t.Errorf("invalid address in %+v", l)
			}
		}
	})
}

// fakeNetns is a namespace whose counters and listeners the test sets.
type fakeNetns struct {
	c         listenCounters
	ls        []diagListener
	somaxconn int
	cookies   int
	closed    bool
}

func (f *fakeNetns) counters() (listenCounters, error) { return f.c, nil }
func (f *fakeNetns) listeners() ([]diagListener, error) {
	return append([]diagListener(nil), f.ls...), nil
}
func (f *fakeNetns) sysctls() (int, int) { return f.somaxconn, f.cookies }
func (f *fakeNetns) Close() error        { f.closed = true; return nil }

type fakeSource struct {
	ns     map[uint32]*fakeNetns
	counts map[uint64]stageCounts
}

func (s *fakeSource) open(_, netns uint32) (nsHandle, error) {
	if f, ok := s.ns[netns]; ok {
		return f, nil
	}
	return nil, errors.New("no such netns")
}
func (s *fakeSource) stages(ino uint64) stageCounts { return s.counts[ino] }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// overflowRig is a poller on fake namespaces, with a clock.
type overflowRig struct {
	t    *testing.T
	src  *fakeSource
	p    *overflowPoller
	now  time.Time
	info map[uint64]events.Listener
}

func newRig(t *testing.T, perSYN, perFinal bool) *overflowRig {
	src := &fakeSource{ns: map[uint32]*fakeNetns{}, counts: map[uint64]stageCounts{}}
	r := &overflowRig{t: t, src: src, p: newOverflowPoller(src, quietLog(), perSYN, perFinal),
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
	if err := r.p.poll(r.now, mono, info, func(e *events.Event) error { out = append(out, e); return nil }); err != nil {
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
	ns := &fakeNetns{c: listenCounters{drops: 100, overflows: 90}, somaxconn: 128, cookies: 1,
		ls: []diagListener{{local: lnA, ino: 7, queued: 129, backlog: 128, drops: 500}}}
	r.src.ns[42] = ns
	r.info[7] = events.Listener{Process: events.Process{Pid: 812, Comm: "nginx"}, BacklogRequested: 511}
	r.p.watch(42, 1)
	if evs := r.poll(); len(evs) != 0 {
		t.Fatalf("events with no counter movement: %+v", evs)
	}
	// 312 drops: 300 SYNs at a full accept queue, 12 final ACKs (which
	// move sk_drops twice).
	ns.c = listenCounters{drops: 412, overflows: 402}
	ns.ls[0].drops = 500 + 300 + 2*12
	r.src.counts[7] = stageCounts{finalAck: 12, lastAccept: uint64(100*time.Second - 4100*time.Millisecond)}
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
	ns := &fakeNetns{cookies: 0, ls: []diagListener{
		{local: lnA, ino: 1, backlog: 10, drops: 0},
		{local: lnB, ino: 2, backlog: 10, drops: 0},
	}}
	r.src.ns[9] = ns
	r.p.watch(9, 1)
	ns.c = listenCounters{drops: 10, overflows: 7}
	ns.ls[0].drops, ns.ls[1].drops = 2, 1 // 2:1
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
	ns := &fakeNetns{ls: []diagListener{{local: lnA, ino: 5, backlog: 1}}}
	r.src.ns[3] = ns
	r.p.watch(3, 1)
	ns.c = listenCounters{drops: 5, overflows: 5}
	ns.ls[0].drops = 5
	// The hooks saw more than the counter moved (a race at the poll):
	// stages are capped to the exact total.
	r.src.counts[5] = stageCounts{synAcceptQ: 4, synReqQ: 1, finalAck: 2}
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
	ns := &fakeNetns{ls: []diagListener{{local: lnA, ino: 5, backlog: 1}}}
	r.src.ns[3] = ns
	r.p.watch(3, 1)
	ns.c = listenCounters{drops: 4, overflows: 4}
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
	r.p.watch(3, 1)
	r.p.watch(4, 1) // cannot be opened: ignored
	if len(r.p.ns) != 1 {
		t.Fatalf("watching %d namespaces", len(r.p.ns))
	}
	r.p.retire(3)
	r.p.watch(3, 1) // a new listener: stays
	r.poll()
	if ns.closed {
		t.Fatal("unwatched although a listener came back")
	}
	r.p.retire(3)
	r.poll()
	if !ns.closed || len(r.p.ns) != 0 {
		t.Error("retired namespace still watched after a poll")
	}
	r.p.keep[5] = true
	r.src.ns[5] = &fakeNetns{}
	r.p.watch(5, 1)
	r.p.retire(5)
	r.poll()
	if len(r.p.ns) != 1 {
		t.Error("the tracer's own namespace was retired")
	}
}

func TestSplitExact(t *testing.T) {
	for _, c := range []struct {
		weights []uint64
		n       uint64
	}{{[]uint64{1, 1, 1}, 10}, {[]uint64{0, 5}, 3}, {[]uint64{3, 3, 3}, 1}, {[]uint64{1 << 40, 1}, 1 << 40}} {
		shares := make([]share, len(c.weights))
		for i, w := range c.weights {
			shares[i].weight = w
		}
		split(shares, c.n, func(s *share) *uint64 { return &s.drops })
		var sum uint64
		for i, s := range shares {
			sum += s.drops
			if c.weights[i] == 0 && s.drops != 0 {
				t.Errorf("%v: zero weight got %d", c.weights, s.drops)
			}
		}
		if sum != c.n {
			t.Errorf("%v: parts add up to %d, want %d", c.weights, sum, c.n)
		}
	}
}
