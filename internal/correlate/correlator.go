// Package correlate turns kernel records into events: it links each refusal
// to its cause (the listener table, the binds, the packet filter, the
// client's own attempt), pairs the two sides of a refusal or a reset on this
// host, splits listen-queue overflow between listeners and classifies the
// refusals the kernel only counted.
//
// It is pure: it reads records and writes events, and asks the host only
// through the small Host and NetnsSource interfaces, so every rule here is
// tested without root.
package correlate

import (
	"sync/atomic"
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Host answers what the records do not say, from the host's state (/proc).
// The correlator asks it only off the hot path: when a bind fails, when a
// listener was made without a port.
type Host interface {
	// PortHolder finds the process holding local TCP port in the network
	// namespace of process pid, or nil.
	PortHolder(pid uint32, port uint16) *events.Process
	// HasSocket reports whether process pid still has socket inode ino.
	HasSocket(pid uint32, ino uint64) bool
	// SocketPort finds the local port of socket inode ino in the network
	// namespace of process pid, or 0.
	SocketPort(pid uint32, ino uint64) uint16
}

// NoHost knows nothing about the host: every lookup finds nothing.
type NoHost struct{}

func (NoHost) PortHolder(uint32, uint16) *events.Process { return nil }
func (NoHost) HasSocket(uint32, uint64) bool             { return true }
func (NoHost) SocketPort(uint32, uint64) uint16          { return 0 }

// Correlator turns kernel records into events and links each refusal to its
// cause. It keeps what the kernel told it about listeners and binds:
//   - the listeners alive now (from the start-up snapshot, then listen events),
//   - the last listener closed and the last failed bind per (netns, port),
//   - successful binds, to name who holds a port when another bind fails,
//   - server-side refusals waiting a moment for the client-side record of
//     the same connection, so that one event names both ends,
//   - connection attempts the packet filter dropped, waiting for their
//     client's connect() to end, and one side of a reset waiting for the
//     other (attempts.go, resets.go).
//
// It is not safe for concurrent use; the tracer's read loop owns it.
type Correlator struct {
	// Wall converts a record timestamp (CLOCK_MONOTONIC ns) to wall time.
	Wall func(ns uint64) time.Time
	// RSTReason names a kernel RST reason value ("NO_SOCKET"), or "".
	RSTReason func(uint32) string
	// Host answers lookups the records cannot.
	Host Host
	// Names names processes by unit, container and pod; nil: pid and
	// command name only.
	Names Names
	// Hold is how long (in record time) a server-side refusal waits for the
	// client-side record before it is written without a client.
	Hold time.Duration
	// SeesFirewallDrops: a SYN this host's packet filter dropped would
	// have been seen (skb:kfree_skb has a drop reason from 5.17).
	SeesFirewallDrops bool
	// SeesLocalAnswers: a RST or ICMP error this host sent would have been
	// seen, so one that was not came from another host.
	SeesLocalAnswers bool

	listeners map[uint64]*events.Listener // by socket key
	byPort    map[uint16][]uint64         // port -> socket keys
	closed    map[nsPort]*events.Listener
	bindFails map[nsPort]*events.Bind
	bound     map[uint64]boundSock // successful binds, by socket key

	pending map[tuple]*refusal // server-side refusals held for their client
	held    deadlines[*refusal]

	attempts attempts
	resets   resets

	// cookies: the cookie of the namespace each inode number was last
	// seen with. Inode numbers are reused after a namespace dies, cookies
	// never: a new cookie for a known inode means the namespace it named
	// is gone, and what was remembered about it goes with it.
	cookies map[uint32]uint64
	// Refusals whose client is a proxy, waiting for the reset it sends
	// its own client (proxy.go); listeners counted by owner, to tell
	// which clients are proxies.
	proxies proxies
	owners  listenerOwners

	comms commCache

	// lost counts records the correlator could not keep (a table at its
	// bound): read from other goroutines through Lost.
	lost atomic.Uint64
}

// Lost is how many records the correlator dropped because a table was at
// its bound; they are lost as records the kernel could not write are.
func (c *Correlator) Lost() uint64 { return c.lost.Load() }

// maxRemembered bounds each table of past facts (closed listeners, failed
// and successful binds, attempts); the oldest-looking entries go first.
const maxRemembered = 1 << 16

// DefaultHold is how long a server-side refusal waits for its client.
const DefaultHold = 20 * time.Millisecond

// New returns a Correlator with empty tables that asks host (nil: NoHost).
func New(host Host) *Correlator {
	if host == nil {
		host = NoHost{}
	}
	return &Correlator{
		Wall:      func(ns uint64) time.Time { return time.Unix(0, int64(ns)) },
		RSTReason: func(uint32) string { return "" },
		Host:      host,
		Hold:      DefaultHold,
		listeners: map[uint64]*events.Listener{},
		byPort:    map[uint16][]uint64{},
		closed:    map[nsPort]*events.Listener{},
		bindFails: map[nsPort]*events.Bind{},
		bound:     map[uint64]boundSock{},
		pending:   map[tuple]*refusal{},
		attempts:  newAttempts(),
		resets:    resets{waiting: map[tuple]*events.Event{}, received: map[tuple]bool{}},
		owners:    listenerOwners{},
		cookies:   map[uint32]uint64{},
	}
}

// noteNetns learns which namespace inode netns names now; when it named
// another (dead) namespace before, its listeners, closed listeners and
// binds are forgotten, so nothing of a dead container is blamed for a
// refusal in the one that got its inode number.
func (c *Correlator) noteNetns(netns uint32, cookie uint64) {
	if netns == 0 || cookie == 0 {
		return // kernels without net_cookie: inodes are all there is
	}
	old, ok := c.cookies[netns]
	if ok && old == cookie {
		return
	}
	if !ok && len(c.cookies) >= maxRemembered {
		for k := range c.cookies { // evict an arbitrary entry
			delete(c.cookies, k)
			break
		}
	}
	c.cookies[netns] = cookie
	if ok {
		c.forgetNetns(netns)
	}
}

// forgetNetns drops everything remembered about namespace inode netns.
func (c *Correlator) forgetNetns(netns uint32) {
	for k, l := range c.listeners {
		if l.Netns == netns {
			c.removeListener(k)
		}
	}
	for k := range c.closed {
		if k.netns == netns {
			delete(c.closed, k)
		}
	}
	for k := range c.bindFails {
		if k.netns == netns {
			delete(c.bindFails, k)
		}
	}
	for k, b := range c.bound {
		if b.netns == netns {
			delete(c.bound, k)
		}
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

// Handle processes one kernel record, calling emit for every event that is
// complete. Refusals may be held back (see Hold) and come out of a later
// Handle or Expire call.
func (c *Correlator) Handle(r *record.Record, emit func(*events.Event) error) error {
	if err := c.Expire(r.Ts, emit); err != nil {
		return err
	}
	c.noteNetns(r.Netns, r.NetnsCookie)
	switch r.Type {
	case record.ResetSent:
		return c.resetSent(r, emit)
	case record.ClientRefused:
		return c.clientRefused(r, emit)
	case record.Listen:
		return c.listen(r, emit)
	case record.ListenUpdate:
		return c.listenUpdate(r, emit)
	case record.ListenClose:
		return c.listenClose(r, emit)
	case record.Bind:
		return c.bind(r, emit)
	case record.FirewallDrop:
		return c.firewallDrop(r, emit)
	case record.SynRetransmit:
		c.synRetransmit(r)
	case record.ConnectFailed:
		return c.connectFailed(r, emit)
	case record.ResetOut, record.ResetIn:
		return c.reset(r, c.proxyEmit(emit))
	}
	return nil
}

// Expire writes what waited long enough at record time now: held
// refusals, unpaired resets, attempts whose client did not come.
func (c *Correlator) Expire(now uint64, emit func(*events.Event) error) error {
	for {
		p, ok := c.held.next(now)
		if !ok {
			break
		}
		if p.written {
			continue // written with its client, or retransmitted
		}
		delete(c.pending, p.key)
		if err := emit(&p.ev); err != nil {
			return err
		}
	}
	if err := c.expireResets(now, c.proxyEmit(emit)); err != nil {
		return err
	}
	if err := c.expireProxies(now, emit); err != nil {
		return err
	}
	return c.expireAttempts(now, emit)
}

// Holding reports whether anything waits on a deadline of Hold's order
// (a refusal for its client, one side of a reset, a proxy's refusal):
// Expire is due within milliseconds. The rest waits seconds or more.
func (c *Correlator) Holding() bool {
	return c.held.len() > 0 || c.resets.due.len() > 0 || c.proxies.due.len() > 0
}

// FlushAll writes everything still held (at shutdown).
func (c *Correlator) FlushAll(emit func(*events.Event) error) error {
	return c.Expire(^uint64(0)>>1, emit)
}
