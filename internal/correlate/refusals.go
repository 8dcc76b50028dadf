package correlate

import (
	"net/netip"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

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
	// orig is DstOriginal's storage (address translation); clientNetns
	// the client-side record's namespace, once joined.
	orig        events.Endpoint
	clientNetns uint32
	// written: joined by its client (or replaced by a retransmit's) and
	// written; the held queue skips it.
	written bool
}

// hold keeps a refusal until its client record comes or Hold expires.
func (c *Correlator) hold(p *refusal, ts uint64) {
	c.pending[p.key] = p
	c.held.add(ts+uint64(c.Hold), p)
}

// unhold takes a held refusal out of pending, to be written now.
func (c *Correlator) unhold(p *refusal) {
	delete(c.pending, p.key)
	p.written = true
}

// refusalKey is the connection of a refusal record, src -> dst. An
// AF_INET6 client connecting to an IPv4 address has v4-mapped addresses
// while the wire (and the server side) says IPv4: both are unmapped, so
// the two sides of one connection get the same key.
func refusalKey(r *record.Record) tuple {
	src := record.Addr(r.Family, &r.Saddr).Unmap()
	dst := record.Addr(r.Family, &r.Daddr).Unmap()
	return tuple{
		src: src.As16(), dst: dst.As16(),
		sport: r.Sport, dport: r.Dport,
		src4: src.Is4(), dst4: dst.Is4(),
	}
}

// newRefusal starts the refused event of a record for connection key;
// this is the one place that builds it, for both sides.
func (c *Correlator) newRefusal(r *record.Record, key tuple) *refusal {
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
func (c *Correlator) setClient(p *refusal, r *record.Record) {
	if r.Flags&record.FlagProcKnown == 0 {
		p.ev.Client = nil
		return
	}
	p.client = c.procOf(r)
	p.ev.Client = &p.client
}

func (c *Correlator) resetSent(r *record.Record, emit func(*events.Event) error) error {
	key := refusalKey(r)
	nat := r.Flags&record.FlagNAT != 0
	if nat {
		key = natKey(r)
	}
	p := c.newRefusal(r, key)
	if nat {
		translated(p, r)
	}
	p.ev.KernelReason = c.RSTReason(r.Reason)
	c.Classify(&p.ev)
	if r.State == tcpListen && r.Flags&record.FlagHasSk != 0 {
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

func (c *Correlator) clientRefused(r *record.Record, emit func(*events.Event) error) error {
	key := refusalKey(r)
	if p, ok := c.pending[key]; ok {
		c.unhold(p)
		c.setClient(p, r)
		c.joinedClient(p, r)
		return c.emitRefusal(p, r.Ts, emit)
	}
	if r.Flags&record.FlagSenderSeen != 0 {
		// This host's TCP stack refused it and its record came first,
		// but was written without its client (it waited longer than
		// Hold): written once already, and not by another host.
		return nil
	}
	p := c.newRefusal(r, key)
	c.setClient(p, r)
	p.clientNetns = r.Netns
	viaProxy := func(*events.Event) error { return c.emitRefusal(p, r.Ts, emit) }
	if done, err := c.refusedByFirewallOrRemote(r, key, &p.ev, p.ev.Client, viaProxy); done {
		return err
	}
	// The RST did not come from this host's TCP stack: a remote host or a
	// packet filter answered. Say what is known and no more.
	p.ev.Cause = events.CauseUnknown
	p.ev.Explanation = "the RST was not sent by this host's TCP stack: a remote host or a packet filter refused the connection"
	return c.emitRefusal(p, r.Ts, emit)
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
	case elsewhere != nil && ev.DstOriginal == nil:
		// Only for a connection that was not translated: a DNAT to a
		// backend that has no listener is not about other namespaces
		// that listen on the backend's port (on a container host, most
		// of them do).
		l := *elsewhere
		ev.Cause, ev.Listener = events.CauseOtherNetns, &l
	default:
		ev.Cause = events.CauseNoListener
	}
	ev.Explanation = events.Explain(ev)
}

// makeTuple is the key of the attempt src -> dst.
func makeTuple(src, dst netip.AddrPort) tuple {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	return tuple{src: s.As16(), dst: d.As16(), sport: src.Port(), dport: dst.Port(), src4: s.Is4(), dst4: d.Is4()}
}

func (t *tuple) dstAddrPort() netip.AddrPort { return netip.AddrPortFrom(t.dstAddr(), t.dport) }

// listenerFor returns a copy of a listener that accepts dst in netns.
func (c *Correlator) listenerFor(netns uint32, dst netip.AddrPort) *events.Listener {
	for _, k := range c.byPort[dst.Port()] {
		if l := c.listeners[k]; l.Netns == netns && covers(l, dst.Addr()) {
			cp := *l
			return &cp
		}
	}
	return nil
}
