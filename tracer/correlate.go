package tracer

import (
	"net/netip"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Correlator turns kernel records into events and links each refusal to its
// cause. It keeps what the kernel told it about listeners and binds:
//   - the listeners alive now (from the start-up snapshot, then listen events),
//   - the last listener closed and the last failed bind per (netns, port),
//   - successful binds, to name who holds a port when another bind fails,
//   - server-side refusals waiting a moment for the client-side record of
//     the same connection, so that one event names both ends.
//
// It is not safe for concurrent use; the tracer's read loop owns it.
type Correlator struct {
	// Wall converts a record timestamp (CLOCK_MONOTONIC ns) to wall time.
	Wall func(ns uint64) time.Time
	// RSTReason names a kernel RST reason value ("NO_SOCKET"), or "".
	RSTReason func(uint32) string
	// HolderScan finds the process holding a local TCP port in the netns
	// of pid when no record says; nil disables it.
	HolderScan func(pid uint32, port uint16) *events.Process
	// Alive reports whether process pid still has socket inode ino open;
	// nil means "assume yes".
	Alive func(pid uint32, ino uint64) bool
	// PortOf finds the port of socket inode ino in the netns of pid, for
	// listeners whose port was not bound yet at listen() (autobind).
	PortOf func(pid uint32, ino uint64) uint16
	// Hold is how long (in record time) a server-side refusal waits for the
	// client-side record before it is written without a client.
	Hold time.Duration

	listeners map[uint64]*events.Listener // by socket key
	byPort    map[uint16][]uint64         // port -> socket keys
	closed    map[nsPort]*events.Listener
	bindFails map[nsPort]*events.Bind
	bound     map[uint64]boundSock // successful binds, by socket key

	pending map[tuple]*refusal
	// queue holds the refusals waiting for their client in arrival order
	// (and so in record time); queue[head:] are not expired yet, and
	// first is the sequence number of queue[0].
	queue []queued
	head  int
	first uint64

	comms commCache

	x5 issue5 // firewall, timeouts, resets (firewall_correlate.go)
}

type nsPort struct {
	netns uint32
	port  uint16
}

type boundSock struct {
	proc  events.Process
	netns uint32
	addr  netip.Addr
	port  uint16
	ino   uint64
}

// tuple identifies a connection attempt: client -> refused side. Each
// address is kept as its 16-byte form and whether it is IPv4, which is
// one-to-one for the unmapped, zoneless addresses records carry. The key
// has no pointers and no padding, so the pending map hashes it as plain
// memory (two netip.AddrPort were hashed field by field: ~7% of the CPU
// under a refusal flood).
type tuple struct {
	src, dst     [16]byte
	sport, dport uint16
	src4, dst4   bool
}

func (t *tuple) srcAddr() netip.Addr { return tupleAddr(t.src, t.src4) }
func (t *tuple) dstAddr() netip.Addr { return tupleAddr(t.dst, t.dst4) }

func tupleAddr(a [16]byte, is4 bool) netip.Addr {
	if is4 {
		return netip.AddrFrom4([4]byte(a[12:]))
	}
	return netip.AddrFrom16(a)
}

// refusal is a refused event with what it points to: its endpoints and its
// client are one allocation with it, and it carries what holding it back
// takes. Under a refusal flood these are most of what the correlator
// allocates.
type refusal struct {
	ev       events.Event
	src, dst events.Endpoint
	client   events.Process
	key      tuple
	seq      uint64 // in queue
}

// queued is a held refusal in the queue, with its record time: Expire
// reads only the queue, not the (by then cold) refusals it skips.
type queued struct {
	ts uint64
	p  *refusal // nil once written (joined by its client, or retransmitted)
}

// maxRemembered bounds each table of past facts (closed listeners, failed
// and successful binds); the oldest-looking entries go first.
const maxRemembered = 1 << 16

// NewCorrelator returns a Correlator with empty tables.
func NewCorrelator() *Correlator {
	return &Correlator{
		Wall:      func(ns uint64) time.Time { return time.Unix(0, int64(ns)) },
		RSTReason: func(uint32) string { return "" },
		Hold:      20 * time.Millisecond,
		listeners: map[uint64]*events.Listener{},
		byPort:    map[uint16][]uint64{},
		closed:    map[nsPort]*events.Listener{},
		bindFails: map[nsPort]*events.Bind{},
		bound:     map[uint64]boundSock{},
		pending:   map[tuple]*refusal{},
	}
}

// sockKey is the key of a socket in the tables: its inode when it has a
// file (what /proc shows too, so snapshot and events agree), else its
// kernel address with the top bit set so the two never collide.
func sockKey(ino, sk uint64) uint64 {
	if ino != 0 {
		return ino
	}
	return sk | 1<<63
}

// AddListener records a listener that exists now (start-up snapshot).
func (c *Correlator) AddListener(ino uint64, l events.Listener) {
	c.addListener(sockKey(ino, 0), &l)
}

// Listeners returns how many listeners the correlator knows alive.
func (c *Correlator) Listeners() int { return len(c.listeners) }

func (c *Correlator) addListener(key uint64, l *events.Listener) {
	if old, ok := c.listeners[key]; ok {
		c.unindex(key, old.Port)
	}
	c.listeners[key] = l
	c.byPort[l.Port] = append(c.byPort[l.Port], key)
}

func (c *Correlator) unindex(key uint64, port uint16) {
	keys := c.byPort[port]
	for i, k := range keys {
		if k == key {
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			break
		}
	}
	if len(keys) == 0 {
		delete(c.byPort, port)
	} else {
		c.byPort[port] = keys
	}
}

func (c *Correlator) removeListener(key uint64) *events.Listener {
	l, ok := c.listeners[key]
	if !ok {
		return nil
	}
	delete(c.listeners, key)
	c.unindex(key, l.Port)
	return l
}

func (c *Correlator) procOf(r *Record) events.Process {
	return events.Process{Pid: r.Proc.Pid, Comm: c.comms.get(&r.Proc.Comm)}
}

// Handle processes one kernel record, calling emit for every event that is
// complete. Refusals may be held back (see Hold) and come out of a later
// Handle or Expire call.
func (c *Correlator) Handle(r *Record, emit func(*events.Event) error) error {
	if err := c.Expire(r.Ts, emit); err != nil {
		return err
	}
	switch r.Type {
	case recResetSent:
		return c.resetSent(r, emit)
	case recClientRefused:
		return c.clientRefused(r, emit)
	case recListen:
		return c.listen(r, emit)
	case recListenUpdate:
		return c.listenUpdate(r, emit)
	case recListenClose:
		return c.listenClose(r, emit)
	case recBind:
		return c.bind(r, emit)
	}
	return c.handleIssue5(r, emit)
}

// Expire writes the held refusals older than Hold at record time now.
func (c *Correlator) Expire(now uint64, emit func(*events.Event) error) error {
	hold := uint64(c.Hold)
	for c.head < len(c.queue) {
		q := &c.queue[c.head]
		if q.ts+hold > now {
			break
		}
		p := q.p
		q.p = nil
		c.head++
		if p == nil {
			continue // already written with its client
		}
		delete(c.pending, p.key)
		if err := emit(&p.ev); err != nil {
			return err
		}
	}
	if c.head == len(c.queue) {
		c.first += uint64(len(c.queue))
		c.queue, c.head = c.queue[:0], 0
	}
	return c.expireIssue5(now, emit)
}

// hold queues a refusal until its client record comes or Hold expires.
// The queue's array is reused: when it is full and at least half of it
// has expired, the live part moves to the front instead of growing.
func (c *Correlator) hold(p *refusal, ts uint64) {
	c.pending[p.key] = p
	if len(c.queue) == cap(c.queue) && c.head > 0 && c.head >= len(c.queue)/2 {
		n := copy(c.queue, c.queue[c.head:])
		clear(c.queue[n:])
		c.first += uint64(c.head)
		c.queue, c.head = c.queue[:n], 0
	}
	p.seq = c.first + uint64(len(c.queue))
	c.queue = append(c.queue, queued{ts: ts, p: p})
}

// unhold takes a held refusal out of pending and the queue, to be written
// now.
func (c *Correlator) unhold(p *refusal) {
	delete(c.pending, p.key)
	c.queue[p.seq-c.first].p = nil
}

// FlushAll writes every held refusal (at shutdown).
func (c *Correlator) FlushAll(emit func(*events.Event) error) error {
	return c.Expire(^uint64(0)-uint64(c.Hold), emit)
}

// refusalKey is the connection of a refusal record, src -> dst. An
// AF_INET6 client connecting to an IPv4 address has v4-mapped addresses
// while the wire (and the server side) says IPv4: both are unmapped, so
// the two sides of one connection get the same key.
func refusalKey(r *Record) tuple {
	src := addr(r.Family, &r.Saddr).Unmap()
	dst := addr(r.Family, &r.Daddr).Unmap()
	return tuple{
		src: src.As16(), dst: dst.As16(),
		sport: r.Sport, dport: r.Dport,
		src4: src.Is4(), dst4: dst.Is4(),
	}
}

// newRefusal starts the refused event of a record for connection key;
// this is the one place that builds it, for both sides.
func (c *Correlator) newRefusal(r *Record, key tuple) *refusal {
	p := &refusal{key: key}
	p.src = events.Endpoint{Addr: key.srcAddr(), Port: key.sport}
	p.dst = events.Endpoint{Addr: key.dstAddr(), Port: key.dport}
	p.ev = events.Event{
		Time:  c.Wall(r.Ts),
		Type:  events.TypeRefused,
		Netns: r.Netns,
		Src:   &p.src,
		Dst:   &p.dst,
	}
	return p
}

// setClient names the client of a refusal from a client-side record, or
// none when the process was not known at connect().
func (c *Correlator) setClient(p *refusal, r *Record) {
	if r.Flags&flagProcKnown == 0 {
		p.ev.Client = nil
		return
	}
	p.client = c.procOf(r)
	p.ev.Client = &p.client
}

func (c *Correlator) resetSent(r *Record, emit func(*events.Event) error) error {
	key := refusalKey(r)
	p := c.newRefusal(r, key)
	p.ev.KernelReason = c.RSTReason(r.Reason)
	c.Classify(&p.ev)
	if r.State == tcpListenState && r.Flags&flagHasSk != 0 {
		// The RST came from a listener itself: a final ACK found its
		// accept queue full under net.ipv4.tcp_abort_on_overflow=1.
		p.ev.Cause = events.CauseBacklogFull
		p.ev.Explanation = events.Explain(&p.ev)
	}
	if old, ok := c.pending[key]; ok {
		// A retransmitted SYN refused again before the first was written.
		c.unhold(old)
		if err := emit(&old.ev); err != nil {
			return err
		}
	}
	c.hold(p, r.Ts)
	return nil
}

func (c *Correlator) clientRefused(r *Record, emit func(*events.Event) error) error {
	key := refusalKey(r)
	c.x5.noteRefused(key, r.Ts)
	if p, ok := c.pending[key]; ok {
		c.unhold(p)
		c.setClient(p, r)
		return emit(&p.ev)
	}
	p := c.newRefusal(r, key)
	c.setClient(p, r)
	if done, err := c.refusedByFirewallOrRemote(r, key, &p.ev, p.ev.Client, emit); done {
		return err
	}
	// The RST did not come from this host's TCP stack: a remote host or a
	// packet filter answered. Say what is known and no more.
	p.ev.Cause = events.CauseUnknown
	p.ev.Explanation = "the RST was not sent by this host's TCP stack: a remote host or a packet filter refused the connection"
	return emit(&p.ev)
}

// covers reports whether a listener bound to l accepts connections to dst.
func covers(l *events.Listener, dst netip.Addr) bool {
	la := l.Addr.Unmap()
	d := dst.Unmap()
	if la.IsUnspecified() {
		if la.Is4() {
			return d.Is4()
		}
		return d.Is6() || !l.V6Only
	}
	return la == d
}

// Classify fills in Cause, Listener, Bind and Explanation of a refusal to
// ev.Dst in ev.Netns, from what the correlator knows now.
func (c *Correlator) Classify(ev *events.Event) {
	port := ev.Dst.Port
	var here, elsewhere *events.Listener
	for _, k := range c.byPort[port] {
		l := c.listeners[k]
		if l.Netns == ev.Netns {
			if here == nil || covers(l, ev.Dst.Addr) {
				here = l
			}
		} else if elsewhere == nil {
			elsewhere = l
		}
	}
	ev.Cause = events.CauseUnknown
	np := nsPort{ev.Netns, port}
	switch {
	case here != nil && covers(here, ev.Dst.Addr):
		// A listener matches and the kernel refused anyway (it was
		// closing, or its queue forced a reset): not a cause we can name.
		l := *here
		ev.Listener = &l
	case here != nil:
		l := *here
		ev.Cause, ev.Listener = events.CauseWrongAddress, &l
	case c.closed[np] != nil || c.bindFails[np] != nil:
		cl, bf := c.closed[np], c.bindFails[np]
		if bf != nil && (cl == nil || bf.Time.After(cl.ClosedAt)) {
			b := *bf
			ev.Cause, ev.Bind = events.CauseBindFailed, &b
		} else {
			l := *cl
			ev.Cause, ev.Listener = events.CauseListenerClosed, &l
		}
	case elsewhere != nil:
		l := *elsewhere
		ev.Cause, ev.Listener = events.CauseOtherNetns, &l
	default:
		ev.Cause = events.CauseNoListener
	}
	ev.Explanation = events.Explain(ev)
}

func (c *Correlator) listen(r *Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	l := &events.Listener{
		Process: c.procOf(r),
		Addr:    addr(r.Family, &r.Daddr),
		Port:    r.Dport,
		Netns:   r.Netns,
		Backlog: r.Backlog,
		V6Only:  r.Flags&flagV6Only != 0,
		Since:   c.Wall(r.Ts),

		BacklogRequested: requestedBacklog(r.BacklogReq),
	}
	if l.Port == 0 && c.PortOf != nil && r.Ino != 0 {
		// listen() without bind(): the port is chosen after the state
		// change the kernel reported. It is in /proc by now.
		l.Port = c.PortOf(l.Pid, r.Ino)
	}
	c.addListener(key, l)
	delete(c.bound, key)
	cp := *l
	return emit(&events.Event{Time: l.Since, Type: events.TypeListen, Netns: l.Netns, Listener: &cp})
}

// requestedBacklog is listen()'s backlog argument as a count: a negative
// int asks for the most the kernel allows (net.core.somaxconn).
func requestedBacklog(v uint32) uint32 {
	if int32(v) < 0 {
		return 1<<31 - 1
	}
	return v
}

// listenUpdate: listen() again on a listener changed its backlog.
func (c *Correlator) listenUpdate(r *Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	l, ok := c.listeners[key]
	if !ok {
		return c.listen(r, emit) // a listener from before the tracer
	}
	l.Backlog = r.Backlog
	l.BacklogRequested = requestedBacklog(r.BacklogReq)
	cp := *l
	return emit(&events.Event{Time: c.Wall(r.Ts), Type: events.TypeListen, Netns: l.Netns, Listener: &cp})
}

// Listener returns the listener with socket inode ino, if it is alive.
func (c *Correlator) Listener(ino uint64) (events.Listener, bool) {
	l, ok := c.listeners[sockKey(ino, 0)]
	if !ok {
		return events.Listener{}, false
	}
	return *l, true
}

// ListenersIn counts the live listeners in netns.
func (c *Correlator) ListenersIn(netns uint32) int {
	n := 0
	for _, l := range c.listeners {
		if l.Netns == netns {
			n++
		}
	}
	return n
}

func (c *Correlator) listenClose(r *Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	closer := c.procOf(r)
	l := c.removeListener(key)
	if l == nil {
		// A listener we never saw open (it was closed while the tracer
		// started): whoever closed it is the best owner we have.
		l = &events.Listener{
			Process: closer,
			Addr:    addr(r.Family, &r.Daddr),
			Port:    r.Dport,
			Netns:   r.Netns,
			Backlog: r.Backlog,
		}
	}
	l.ClosedAt = c.Wall(r.Ts)
	if closer.Pid != l.Pid {
		l.ClosedBy = &closer
	}
	if r.Flags&flagExiting != 0 {
		l.Exit = events.ExitFromCode(r.ExitCode)
	}
	if l.Port != 0 {
		remember(c.closed, nsPort{l.Netns, l.Port}, l)
	}
	cp := *l
	return emit(&events.Event{Time: l.ClosedAt, Type: events.TypeListenClose, Netns: l.Netns, Listener: &cp})
}

func remember[V any](m map[nsPort]V, k nsPort, v V) {
	if _, ok := m[k]; !ok && len(m) >= maxRemembered {
		for old := range m { // evict an arbitrary entry
			delete(m, old)
			break
		}
	}
	m[k] = v
}

func (c *Correlator) bind(r *Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	a := addr(r.Family, &r.Daddr)
	if r.Ret == 0 {
		if len(c.bound) >= maxRemembered {
			for k := range c.bound {
				delete(c.bound, k)
				break
			}
		}
		c.bound[key] = boundSock{proc: c.procOf(r), netns: r.Netns, addr: a, port: r.Dport, ino: r.Ino}
		return nil
	}
	b := &events.Bind{
		Process: c.procOf(r),
		Addr:    a,
		Port:    r.Dport,
		Errno:   events.ErrnoName(int(-r.Ret)),
		Time:    c.Wall(r.Ts),
	}
	if -r.Ret == eaddrinuse || -r.Ret == eaccesErr {
		b.Holder = c.holder(r.Netns, r.Dport, a, b.Pid, key)
	}
	remember(c.bindFails, nsPort{r.Netns, r.Dport}, b)
	cp := *b
	return emit(&events.Event{Time: b.Time, Type: events.TypeBindFailed, Netns: r.Netns, Bind: &cp})
}

const (
	eaddrinuse = 98
	eaccesErr  = 13
)

// holder finds the process whose socket holds port in netns: a listener,
// then a socket bound since the tracer started, then /proc.
func (c *Correlator) holder(netns uint32, port uint16, a netip.Addr, failing uint32, self uint64) *events.Process {
	var best *events.Listener
	for _, k := range c.byPort[port] {
		l := c.listeners[k]
		if l.Netns != netns {
			continue
		}
		if best == nil || l.Addr == a || l.Addr.IsUnspecified() {
			best = l
		}
	}
	if best != nil {
		p := best.Process
		return &p
	}
	for k, b := range c.bound {
		if k == self || b.netns != netns || b.port != port {
			continue
		}
		if c.Alive != nil && !c.Alive(b.proc.Pid, b.ino) {
			delete(c.bound, k)
			continue
		}
		p := b.proc
		return &p
	}
	if c.HolderScan != nil {
		return c.HolderScan(failing, port)
	}
	return nil
}
