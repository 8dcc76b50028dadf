package correlate

import (
	"fmt"
	"log/slog"
	"net/netip"
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

// StageCounts are one listener's per-packet counts (struct listen_stats).
type StageCounts struct {
	SynAcceptQ, SynReqQ, FinalAck uint64
	LastAccept                    uint64 // CLOCK_MONOTONIC ns, 0 if never seen
}

// ListenCounters are a namespace's TcpExt counters of listen drops.
type ListenCounters struct {
	Drops, Overflows uint64
}

// QueueListener is one listening socket as sock_diag reports it.
type QueueListener struct {
	Local   netip.AddrPort
	Ino     uint64
	Queued  uint32 // accept queue length (sk_ack_backlog)
	Backlog uint32 // sk_max_ack_backlog
	Drops   uint32 // sk_drops (SK_MEMINFO_DROPS)
}

// NetnsSource is what the poller needs from the host and the kernel;
// tests substitute it.
type NetnsSource interface {
	// Open returns the handles of netns, entered through process pid.
	Open(pid, netns uint32) (Netns, error)
	// Stages returns the per-packet counts of listener ino.
	Stages(ino uint64) StageCounts
}

// Netns is one namespace's counters and listener dump.
type Netns interface {
	Counters() (ListenCounters, error)
	Listeners() ([]QueueListener, error)
	Sysctls() (somaxconn, syncookies int)
	Close() error
}

type watchedNetns struct {
	h       Netns
	last    ListenCounters
	skDrops map[uint64]uint32      // listener inode -> sk_drops at the last dump
	stages  map[uint64]StageCounts // listener inode -> per-packet counts at the last poll
	retired bool                   // poll once more, then let go
	// credit: listeners whose sk_drops ran ahead of the namespace's
	// counter at the last poll (a drop between reading the counter and
	// dumping the listeners): the counter's next movement is theirs.
	credit map[uint64]uint64
}

// OverflowPoller turns counter movements into listen_overflow events.
type OverflowPoller struct {
	src      NetnsSource
	log      *slog.Logger
	perSYN   bool // a per-packet hook sees SYN drops
	perFinal bool // a per-packet hook sees final-ACK drops
	ns       map[uint32]*watchedNetns
	failed   map[uint32]bool
	keep     map[uint32]bool // never retired (the tracer's own)
	lastPoll time.Time
}

func NewOverflowPoller(src NetnsSource, log *slog.Logger, perSYN, perFinal bool) *OverflowPoller {
	return &OverflowPoller{
		src: src, log: log, perSYN: perSYN, perFinal: perFinal,
		ns: map[uint32]*watchedNetns{}, failed: map[uint32]bool{}, keep: map[uint32]bool{},
	}
}

// Watch starts polling netns (entered through process pid), taking its
// counters now as the baseline. Watching an already watched or
// unreachable namespace does nothing.
func (p *OverflowPoller) Watch(netns, pid uint32) {
	if w, ok := p.ns[netns]; ok {
		w.retired = false
		return
	}
	if netns == 0 || pid == 0 {
		return
	}
	h, err := p.src.Open(pid, netns)
	if err != nil {
		if !p.failed[netns] {
			p.failed[netns] = true
			p.log.Warn("cannot watch listen-queue overflow in netns", "netns", netns, "pid", pid, "error", err)
		}
		return
	}
	w := &watchedNetns{h: h, skDrops: map[uint64]uint32{}, stages: map[uint64]StageCounts{}}
	if w.last, err = h.Counters(); err != nil {
		p.log.Warn("reading listen counters", "netns", netns, "error", err)
		h.Close()
		return
	}
	if ls, err := h.Listeners(); err == nil {
		for _, l := range ls {
			w.skDrops[l.Ino] = l.Drops
			w.stages[l.Ino] = p.src.Stages(l.Ino)
		}
	}
	delete(p.failed, netns)
	p.ns[netns] = w
}

// Retire polls netns one last time at the next poll, then unwatches it,
// unless a listener appears in it before.
func (p *OverflowPoller) Retire(netns uint32) {
	if w, ok := p.ns[netns]; ok && !p.keep[netns] {
		w.retired = true
	}
}

// unwatch stops polling netns and releases its handles (which would keep
// a namespace alive after its last process is gone).
func (p *OverflowPoller) unwatch(netns uint32) {
	if w, ok := p.ns[netns]; ok {
		w.h.Close()
		delete(p.ns, netns)
	}
}

// Keep watches netns for good: it is never retired (the tracer's own).
func (p *OverflowPoller) Keep(netns uint32) { p.keep[netns] = true }

// Due reports whether interval has passed since the last Poll (or since
// Start).
func (p *OverflowPoller) Due(now time.Time, interval time.Duration) bool {
	return now.Sub(p.lastPoll) >= interval
}

// Start sets the time the first interval is counted from.
func (p *OverflowPoller) Start(now time.Time) { p.lastPoll = now }

// Close releases every namespace.
func (p *OverflowPoller) Close() {
	for n := range p.ns {
		p.unwatch(n)
	}
}

// ListenerInfo names a listener by inode: owner, address, since when,
// backlog requested. ok is false when the tracer does not know it.
type ListenerInfo func(ino uint64) (events.Listener, bool)

// Poll compares every namespace's counters with the last poll and emits a
// listen_overflow event for every listener that dropped connections.
// mono is the CLOCK_MONOTONIC time in ns (for accept idleness), now the
// wall time of the events.
func (p *OverflowPoller) Poll(now time.Time, mono uint64, info ListenerInfo, emit func(*events.Event) error) error {
	interval := time.Duration(0)
	if !p.lastPoll.IsZero() {
		interval = now.Sub(p.lastPoll)
	}
	p.lastPoll = now
	for netns, w := range p.ns {
		if w.retired {
			defer p.unwatch(netns)
		}
		c, err := w.h.Counters()
		if err != nil {
			p.log.Warn("reading listen counters", "netns", netns, "error", err)
			continue
		}
		d := ListenCounters{Drops: c.Drops - w.last.Drops, Overflows: c.Overflows - w.last.Overflows}
		w.last = c
		if d.Drops == 0 {
			continue
		}
		ls, err := w.h.Listeners()
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
	l      QueueListener
	weight uint64
	stages StageCounts // per-packet counts in this interval
	drops  uint64      // its part of ListenDrops
	ovf    uint64      // its part of ListenOverflows
}

// attribute splits one namespace's counter deltas between its listeners
// and builds their events. The parts always add up to the deltas.
func (p *OverflowPoller) attribute(netns uint32, w *watchedNetns, d ListenCounters, ls []QueueListener,
	now time.Time, interval time.Duration, mono uint64, info ListenerInfo) []*events.Event {
	shares := make([]share, 0, len(ls))
	skDrops := make(map[uint64]uint32, len(ls))
	stages := make(map[uint64]StageCounts, len(ls))
	for _, l := range ls {
		skDrops[l.Ino] = l.Drops
		cur := p.src.Stages(l.Ino)
		stages[l.Ino] = cur
		prev := w.stages[l.Ino]
		s := share{l: l, stages: StageCounts{
			SynAcceptQ: cur.SynAcceptQ - prev.SynAcceptQ,
			SynReqQ:    cur.SynReqQ - prev.SynReqQ,
			FinalAck:   cur.FinalAck - prev.FinalAck,
			LastAccept: cur.LastAccept,
		}}
		// A listener new since the last dump started from zero.
		moved := uint64(l.Drops - w.skDrops[l.Ino])
		// A dropped final ACK moves sk_drops twice (tcp_listendrop, then
		// the discard path): count it once.
		if f := s.stages.FinalAck; moved > f {
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
	if total == 0 && len(w.credit) > 0 {
		// The drops this poll counts moved the listeners' counters
		// before the last poll's dump.
		for i := range shares {
			shares[i].weight = w.credit[shares[i].l.Ino]
			total += shares[i].weight
		}
		w.credit = nil
	} else if total > d.Drops {
		// Moved ahead of the counter: keep the surplus for its next
		// movement, by listener.
		w.credit = map[uint64]uint64{}
		surplus := total - d.Drops
		for _, s := range shares {
			if s.weight > 0 {
				w.credit[s.l.Ino] = max(1, s.weight*surplus/total)
			}
		}
	} else {
		w.credit = nil
	}
	if total == 0 { // no sk_drops moved: fall back to what the hooks saw
		for i := range shares {
			st := shares[i].stages
			shares[i].weight = st.SynAcceptQ + st.SynReqQ + st.FinalAck
			total += shares[i].weight
		}
	}
	var out []*events.Event
	if total == 0 {
		// Counted by the kernel, but no listener's counter says whose: a
		// listener closed since the last poll, for example.
		out = append(out, &events.Event{
			Time: now, Type: events.TypeListenOverflow, Netns: netns, Cause: events.CauseBacklogFull,
			Dropped:    &events.Drops{Total: d.Drops, SynAcceptQueueFull: 0, Other: d.Drops},
			IntervalMs: interval.Milliseconds(),
			Explanation: fmt.Sprintf("the kernel dropped %d connection attempts at full listen queues in netns %d (TcpExtListenDrops), "+
				"but no remaining listener's drop counter moved: the listener was closed since", d.Drops, netns),
		})
		return out
	}
	split(shares, d.Drops, func(s *share) *uint64 { return &s.drops })
	split(shares, d.Overflows, func(s *share) *uint64 { return &s.ovf })

	sysctlsRead, somaxconn, cookies := false, -1, -1
	readSysctls := func() {
		if !sysctlsRead {
			sysctlsRead = true
			somaxconn, cookies = w.h.Sysctls()
		}
	}
	for i := range shares {
		s := &shares[i]
		if s.drops == 0 {
			// Its per-packet counts wait for the drops they go with.
			w.stages[s.l.Ino] = StageCounts{SynAcceptQ: w.stages[s.l.Ino].SynAcceptQ - s.stages.SynAcceptQ,
				SynReqQ: w.stages[s.l.Ino].SynReqQ - s.stages.SynReqQ, FinalAck: w.stages[s.l.Ino].FinalAck - s.stages.FinalAck,
				LastAccept: w.stages[s.l.Ino].LastAccept}
			continue
		}
		dr := p.stagesOf(s, func() bool { readSysctls(); return cookies == 0 })
		// Per-packet counts beyond this share's drops ran ahead of the
		// namespace's counter with its sk_drops (see credit): they go
		// with its next drops.
		if cur, ok := w.stages[s.l.Ino]; ok {
			cur.FinalAck -= s.stages.FinalAck - dr.FinalAck
			if p.perSYN {
				cur.SynAcceptQ -= s.stages.SynAcceptQ - dr.SynAcceptQueueFull
				cur.SynReqQ -= s.stages.SynReqQ - dr.SynQueueFull
			}
			w.stages[s.l.Ino] = cur
		}
		l, known := info(s.l.Ino)
		if !known {
			l = events.Listener{Netns: netns}
		}
		l.Addr, l.Port, l.Netns = s.l.Local.Addr(), s.l.Local.Port(), netns
		l.Backlog = s.l.Backlog
		q := s.l.Queued
		l.Queued = &q
		ev := &events.Event{
			Time: now, Type: events.TypeListenOverflow, Netns: netns, Cause: events.CauseBacklogFull,
			Listener: &l, Dropped: dr, IntervalMs: interval.Milliseconds(),
		}
		switch {
		case s.stages.LastAccept != 0 && mono > s.stages.LastAccept:
			idle := int64(time.Duration(mono - s.stages.LastAccept).Milliseconds())
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
func (p *OverflowPoller) stagesOf(s *share, noCookies func() bool) *events.Drops {
	dr := &events.Drops{Total: s.drops}
	left := s.drops
	take := func(n uint64) uint64 {
		n = min(n, left)
		left -= n
		return n
	}
	dr.FinalAck = take(s.stages.FinalAck)
	if p.perSYN {
		dr.SynAcceptQueueFull = take(s.stages.SynAcceptQ)
		dr.SynQueueFull = take(s.stages.SynReqQ)
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
