package tracer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Listen-queue overflow. No tracepoint reports a SYN dropped because a
// listener's queue is full (the SYN is freed with consume_skb), so exact
// numbers come from the kernel's own counters, per network namespace:
//
//   - TcpExtListenDrops moves by one for every dropped SYN or final ACK
//     (tcp_listendrop()); it is the total rsttrace reports, exactly.
//   - TcpExtListenOverflows counts the drops due to a full accept queue.
//   - Each listener's sk_drops (sock_diag SK_MEMINFO_DROPS) moves too, so
//     when several listeners share a namespace it says whose drops they
//     were. It is only a weight: other drops (deferred ACKs, a final-ACK
//     overflow counted twice) move it as well.
//
// Per-packet hooks, where the kernel allows them, split the total by stage:
// fentry/kprobe on tcp_conn_request (SYNs) and tcp_v{4,6}_syn_recv_sock
// (final ACKs), or on 6.15+ skb:kfree_skb TCP_LISTEN_OVERFLOW (final ACKs).
// They count into the listener_stats map, by listener inode.
//
// The poller reads only the namespaces whose counters moved, so an idle
// host costs one pread of /proc/net/netstat per namespace per interval.

// DefaultOverflowInterval is how often listen-queue overflow is reported.
const DefaultOverflowInterval = time.Second

// stageCounts are one listener's per-packet counts (struct listen_stats).
type stageCounts struct {
	synAcceptQ, synReqQ, finalAck uint64
	lastAccept                    uint64 // CLOCK_MONOTONIC ns, 0 if never seen
}

// overflowSource is what the poller needs from the rest of the tracer;
// tests substitute it.
type overflowSource interface {
	// open returns the handles of netns, entered through process pid.
	open(pid, netns uint32) (nsHandle, error)
	// stages returns the per-packet counts of listener ino.
	stages(ino uint64) stageCounts
}

// nsHandle is one namespace's counters and listener dump.
type nsHandle interface {
	counters() (listenCounters, error)
	listeners() ([]diagListener, error)
	sysctls() (somaxconn, syncookies int)
	Close() error
}

type watchedNetns struct {
	h       nsHandle
	last    listenCounters
	skDrops map[uint64]uint32      // listener inode -> sk_drops at the last dump
	stages  map[uint64]stageCounts // listener inode -> per-packet counts at the last poll
	retired bool                   // poll once more, then let go
}

// overflowPoller turns counter movements into listen_overflow events.
type overflowPoller struct {
	src      overflowSource
	log      *slog.Logger
	perSYN   bool // a per-packet hook sees SYN drops
	perFinal bool // a per-packet hook sees final-ACK drops
	ns       map[uint32]*watchedNetns
	failed   map[uint32]bool
	keep     map[uint32]bool // never retired (the tracer's own)
	lastPoll time.Time
}

func newOverflowPoller(src overflowSource, log *slog.Logger, perSYN, perFinal bool) *overflowPoller {
	return &overflowPoller{
		src: src, log: log, perSYN: perSYN, perFinal: perFinal,
		ns: map[uint32]*watchedNetns{}, failed: map[uint32]bool{}, keep: map[uint32]bool{},
	}
}

// watch starts polling netns (entered through process pid), taking its
// counters now as the baseline. Watching an already watched or
// unreachable namespace does nothing.
func (p *overflowPoller) watch(netns, pid uint32) {
	if w, ok := p.ns[netns]; ok {
		w.retired = false
		return
	}
	if netns == 0 || pid == 0 {
		return
	}
	h, err := p.src.open(pid, netns)
	if err != nil {
		if !p.failed[netns] {
			p.failed[netns] = true
			p.log.Warn("cannot watch listen-queue overflow in netns", "netns", netns, "pid", pid, "error", err)
		}
		return
	}
	w := &watchedNetns{h: h, skDrops: map[uint64]uint32{}, stages: map[uint64]stageCounts{}}
	if w.last, err = h.counters(); err != nil {
		p.log.Warn("reading listen counters", "netns", netns, "error", err)
		h.Close()
		return
	}
	if ls, err := h.listeners(); err == nil {
		for _, l := range ls {
			w.skDrops[l.ino] = l.drops
			w.stages[l.ino] = p.src.stages(l.ino)
		}
	}
	delete(p.failed, netns)
	p.ns[netns] = w
}

// retire polls netns one last time at the next poll, then unwatches it,
// unless a listener appears in it before.
func (p *overflowPoller) retire(netns uint32) {
	if w, ok := p.ns[netns]; ok && !p.keep[netns] {
		w.retired = true
	}
}

// unwatch stops polling netns and releases its handles (which would keep
// a namespace alive after its last process is gone).
func (p *overflowPoller) unwatch(netns uint32) {
	if w, ok := p.ns[netns]; ok {
		w.h.Close()
		delete(p.ns, netns)
	}
}

// Close releases every namespace.
func (p *overflowPoller) Close() {
	for n := range p.ns {
		p.unwatch(n)
	}
}

// listenerInfo names a listener by inode: owner, address, since when,
// backlog requested. ok is false when the tracer does not know it.
type listenerInfo func(ino uint64) (events.Listener, bool)

// poll compares every namespace's counters with the last poll and emits a
// listen_overflow event for every listener that dropped connections.
// mono is the CLOCK_MONOTONIC time in ns (for accept idleness), now the
// wall time of the events.
func (p *overflowPoller) poll(now time.Time, mono uint64, info listenerInfo, emit func(*events.Event) error) error {
	interval := time.Duration(0)
	if !p.lastPoll.IsZero() {
		interval = now.Sub(p.lastPoll)
	}
	p.lastPoll = now
	for netns, w := range p.ns {
		if w.retired {
			defer p.unwatch(netns)
		}
		c, err := w.h.counters()
		if err != nil {
			p.log.Warn("reading listen counters", "netns", netns, "error", err)
			continue
		}
		d := listenCounters{drops: c.drops - w.last.drops, overflows: c.overflows - w.last.overflows}
		w.last = c
		if d.drops == 0 {
			continue
		}
		ls, err := w.h.listeners()
		if err != nil {
			p.log.Warn("dumping listeners", "netns", netns, "error", err)
			ls = nil
		}
		for _, ev := range p.attribute(netns, w, d, ls, now, interval, mono, info) {
			if err := emit(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// share is one listener's part of a namespace's drops.
type share struct {
	l      diagListener
	weight uint64
	stages stageCounts // per-packet counts in this interval
	drops  uint64      // its part of ListenDrops
	ovf    uint64      // its part of ListenOverflows
}

// attribute splits one namespace's counter deltas between its listeners
// and builds their events. The parts always add up to the deltas.
func (p *overflowPoller) attribute(netns uint32, w *watchedNetns, d listenCounters, ls []diagListener,
	now time.Time, interval time.Duration, mono uint64, info listenerInfo) []*events.Event {
	shares := make([]share, 0, len(ls))
	skDrops := make(map[uint64]uint32, len(ls))
	stages := make(map[uint64]stageCounts, len(ls))
	for _, l := range ls {
		skDrops[l.ino] = l.drops
		cur := p.src.stages(l.ino)
		stages[l.ino] = cur
		prev := w.stages[l.ino]
		s := share{l: l, stages: stageCounts{
			synAcceptQ: cur.synAcceptQ - prev.synAcceptQ,
			synReqQ:    cur.synReqQ - prev.synReqQ,
			finalAck:   cur.finalAck - prev.finalAck,
			lastAccept: cur.lastAccept,
		}}
		// A listener new since the last dump started from zero.
		moved := uint64(l.drops - w.skDrops[l.ino])
		// A dropped final ACK moves sk_drops twice (tcp_listendrop, then
		// the discard path): count it once.
		if f := s.stages.finalAck; moved > f {
			moved -= f
		}
		s.weight = moved
		shares = append(shares, s)
	}
	w.skDrops, w.stages = skDrops, stages

	var total uint64
	for _, s := range shares {
		total += s.weight
	}
	if total == 0 { // no sk_drops moved: fall back to what the hooks saw
		for i := range shares {
			st := shares[i].stages
			shares[i].weight = st.synAcceptQ + st.synReqQ + st.finalAck
			total += shares[i].weight
		}
	}
	var out []*events.Event
	if total == 0 {
		// Counted by the kernel, but no listener's counter says whose: a
		// listener closed since the last poll, for example.
		out = append(out, &events.Event{
			Time: now, Type: events.TypeListenOverflow, Netns: netns, Cause: events.CauseBacklogFull,
			Dropped:    &events.Drops{Total: d.drops, SynAcceptQueueFull: 0, Other: d.drops},
			IntervalMs: interval.Milliseconds(),
			Explanation: fmt.Sprintf("the kernel dropped %d connection attempts at full listen queues in netns %d (TcpExtListenDrops), "+
				"but no remaining listener's drop counter moved: the listener was closed since", d.drops, netns),
		})
		return out
	}
	split(shares, d.drops, func(s *share) *uint64 { return &s.drops })
	split(shares, d.overflows, func(s *share) *uint64 { return &s.ovf })

	sysctlsRead, somaxconn, cookies := false, -1, -1
	readSysctls := func() {
		if !sysctlsRead {
			sysctlsRead = true
			somaxconn, cookies = w.h.sysctls()
		}
	}
	for i := range shares {
		s := &shares[i]
		if s.drops == 0 {
			continue
		}
		dr := p.stagesOf(s, func() bool { readSysctls(); return cookies == 0 })
		l, known := info(s.l.ino)
		if !known {
			l = events.Listener{Netns: netns}
		}
		l.Addr, l.Port, l.Netns = s.l.local.Addr(), s.l.local.Port(), netns
		l.Backlog = s.l.backlog
		q := s.l.queued
		l.Queued = &q
		ev := &events.Event{
			Time: now, Type: events.TypeListenOverflow, Netns: netns, Cause: events.CauseBacklogFull,
			Listener: &l, Dropped: dr, IntervalMs: interval.Milliseconds(),
		}
		switch {
		case s.stages.lastAccept != 0 && mono > s.stages.lastAccept:
			idle := int64(time.Duration(mono - s.stages.lastAccept).Milliseconds())
			ev.AcceptIdleMs = &idle
		case !l.Since.IsZero():
			// Not one accept() since it started listening.
			idle := now.Sub(l.Since).Milliseconds()
			ev.AcceptIdleMs = &idle
			ev.NeverAccepted = true
		}
		if l.BacklogRequested > l.Backlog {
			readSysctls()
			if somaxconn > 0 {
				ev.Somaxconn = uint32(somaxconn)
			}
		}
		ev.Explanation = events.Explain(ev)
		out = append(out, ev)
	}
	return out
}

// stagesOf splits a listener's drops by stage. Per-packet counts are used
// where a hook saw them, capped so the stages always add up to the total;
// what no hook saw is split with the namespace's ListenOverflows (accept
// queue full); the rest is SYN-queue drops when syncookies are off (the
// only listen drop that does not overflow the accept queue, bar memory
// failures), else "other".
func (p *overflowPoller) stagesOf(s *share, noCookies func() bool) *events.Drops {
	dr := &events.Drops{Total: s.drops}
	left := s.drops
	take := func(n uint64) uint64 {
		n = min(n, left)
		left -= n
		return n
	}
	dr.FinalAck = take(s.stages.finalAck)
	if p.perSYN {
		dr.SynAcceptQueueFull = take(s.stages.synAcceptQ)
		dr.SynQueueFull = take(s.stages.synReqQ)
	} else {
		// Accept-queue drops not seen as final ACKs were SYNs.
		acc := s.ovf
		if acc > dr.FinalAck {
			acc -= dr.FinalAck
		} else {
			acc = 0
		}
		dr.SynAcceptQueueFull = take(acc)
		if left > 0 && noCookies() {
			dr.SynQueueFull = take(left)
		}
	}
	dr.Other = left
	return dr
}

// split divides n between the shares in proportion to their weights,
// largest remainder first, so the parts add up to n exactly.
func split(shares []share, n uint64, part func(*share) *uint64) {
	var total uint64
	for _, s := range shares {
		total += s.weight
	}
	if total == 0 || n == 0 {
		return
	}
	var given uint64
	rem := make([]uint64, len(shares))
	for i := range shares {
		hi, lo := mulDiv(n, shares[i].weight, total)
		*part(&shares[i]) = hi
		rem[i] = lo
		given += hi
	}
	for given < n {
		best := -1
		for i := range shares {
			if shares[i].weight == 0 {
				continue
			}
			if best < 0 || rem[i] > rem[best] {
				best = i
			}
		}
		*part(&shares[best])++
		rem[best] = 0
		given++
	}
}

// mulDiv returns a*b/c and the remainder, without overflow for the
// counter sizes seen here (float for the rare huge products).
func mulDiv(a, b, c uint64) (q, r uint64) {
	if a == 0 || b <= ^uint64(0)/a {
		return a * b / c, a * b % c
	}
	f := float64(a) * float64(b) / float64(c)
	return uint64(f), 0
}
