package tracer

// Issue 5, user side: SYNs the packet filter dropped, local connect()
// attempts that failed without a RST from this host's TCP stack, and RSTs
// on established connections. Each becomes one event that names both ends
// when both are on this host.

import (
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"net/netip"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Record tags and flags of issue 5, as generated from the C enums.
const (
	recFwDrop        = uint8(bpfobj.RsttraceRecordTypeRECORD_FW_DROP)
	recConnectFailed = uint8(bpfobj.RsttraceRecordTypeRECORD_CONNECT_FAILED)
	recSynRetrans    = uint8(bpfobj.RsttraceRecordTypeRECORD_SYN_RETRANS)
	recRstOut        = uint8(bpfobj.RsttraceRecordTypeRECORD_RST_OUT)
	recRstIn         = uint8(bpfobj.RsttraceRecordTypeRECORD_RST_IN)

	flagFwICMP  = uint32(bpfobj.RsttraceRecordFlagRECORD_F_FW_ICMP)
	flagFwNFT   = uint32(bpfobj.RsttraceRecordFlagRECORD_F_FW_NFT)
	flagCurrent = uint32(bpfobj.RsttraceRecordFlagRECORD_F_CURRENT)
	flagNoSkb   = uint32(bpfobj.RsttraceRecordFlagRECORD_F_NO_SKB)
)

func isIssue5Record(t uint8) bool { return t >= recFwDrop && t <= recRstIn }

const (
	econnrefused = 111
	etimedout    = 110
)

// How long a firewall drop waits for a local connect() to claim it: the
// first SYN retransmit comes after the initial RTO (1 s, TCP_TIMEOUT_INIT).
const fwClaimHold = 2 * time.Second

// How long a claimed drop waits for its connect() to end (tcp_syn_retries
// 6 gives up after 127 s); then it is written as still waiting.
const fwMaxWait = 10 * time.Minute

// How long a reported RST refusal suppresses the connect failure record
// of the same attempt (they come together).
const refusedMemory = 5 * time.Second

// issue5 is the correlator's state for issue 5.
type issue5 struct {
	// dropsKnown: the firewall capability is served, so a SYN this
	// host's packet filter dropped would have been seen (skb:kfree_skb
	// has a drop reason from 5.17).
	dropsKnown bool
	// remoteKnown: a RST or ICMP error sent by this host would have been
	// seen (the refusals and firewall capabilities are served), so one
	// that was not came from another host.
	remoteKnown bool
	// owner finds the process holding socket inode ino; nil: unknown.
	owner func(ino uint64) *events.Process

	fw      map[tuple]*fwEntry
	fwQueue []tsKey
	refused map[tuple]uint64
	refQ    []tsKey
	resets  map[tuple]*events.Event // one side of a RST, waiting for the other
	rstQ    []pendingRef
}

type tsKey struct {
	key tuple
	ts  uint64
}

// fwEntry is one connection attempt whose SYNs the packet filter dropped.
type fwEntry struct {
	first, last uint64
	netns       uint32
	fw          events.Firewall
	icmp        bool
	client      *events.Process
	claimed     bool // a local connect() retransmitted: wait for its end
}

func newIssue5(choices []choice, proc string) issue5 {
	return issue5{
		dropsKnown:  chosen(choices, CapFirewall),
		remoteKnown: chosen(choices, CapRefusals) && chosen(choices, CapFirewall),
		owner: func(ino uint64) *events.Process {
			if p, ok := socketOwners(proc, map[uint64]bool{ino: true})[ino]; ok {
				return &p
			}
			return nil
		},
	}
}

func (x *issue5) init() {
	if x.fw == nil {
		x.fw = map[tuple]*fwEntry{}
		x.refused = map[tuple]uint64{}
		x.resets = map[tuple]*events.Event{}
	}
}

// noteRefused remembers that the attempt key was reported as refused by a
// RST, so its connect failure record is not a second event.
func (x *issue5) noteRefused(key tuple, ts uint64) {
	x.init()
	// Bounded by count, not only by age: under a refusal flood five
	// seconds of refusals are millions, while the connect failure record
	// comes microseconds after its RST.
	if len(x.refQ) >= maxRemembered {
		old := x.refQ[0]
		x.refQ = x.refQ[1:]
		if x.refused[old.key] == old.ts {
			delete(x.refused, old.key)
		}
	}
	x.refused[key] = ts
	x.refQ = append(x.refQ, tsKey{key, ts})
}

func (c *Correlator) handleIssue5(r *Record, emit func(*events.Event) error) error {
	c.x5.init()
	switch r.Type {
	case recFwDrop:
		return c.fwDrop(r)
	case recSynRetrans:
		return c.synRetrans(r)
	case recConnectFailed:
		return c.connectFailed(r, emit)
	case recRstOut, recRstIn:
		return c.reset(r, emit)
	}
	return nil
}

// sockTuple is the attempt of a client-side record: local -> remote.
func sockTuple(r *Record) tuple {
	return refusalKey(r)
}

// makeTuple is the key of the attempt src -> dst.
func makeTuple(src, dst netip.AddrPort) tuple {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	return tuple{src: s.As16(), dst: d.As16(), sport: src.Port(), dport: dst.Port(), src4: s.Is4(), dst4: d.Is4()}
}

func (t *tuple) dstAddrPort() netip.AddrPort { return netip.AddrPortFrom(t.dstAddr(), t.dport) }

// pendingRef is one side of a RST waiting for the other, in arrival order.
type pendingRef struct {
	key tuple
	ev  *events.Event
	ts  uint64
}

func (c *Correlator) fwDrop(r *Record) error {
	x := &c.x5
	key := sockTuple(r)
	e := x.fw[key]
	if e == nil {
		if len(x.fw) >= maxRemembered {
			return nil
		}
		e = &fwEntry{first: r.Ts, netns: r.Netns}
		x.fw[key] = e
		x.fwQueue = append(x.fwQueue, tsKey{key, r.Ts})
	}
	e.last = r.Ts
	e.fw.SYNs++
	if h := hookName(r.Aux); h != "" {
		e.fw.Hook = h
	}
	if r.Flags&flagFwNFT != 0 {
		e.fw.Table = "nftables"
	}
	if r.Flags&flagFwICMP != 0 {
		e.icmp = true
	}
	if r.Flags&flagProcKnown != 0 {
		p := c.procOf(r)
		e.client, e.claimed = &p, true
	}
	return nil
}

func (c *Correlator) synRetrans(r *Record) error {
	if e := c.x5.fw[sockTuple(r)]; e != nil {
		p := c.procOf(r)
		e.client, e.claimed = &p, true
	}
	return nil
}

// attemptEvent starts an issue 5 event about the attempt key.
func (c *Correlator) attemptEvent(typ events.Type, key tuple, ts uint64, netns uint32) *events.Event {
	return &events.Event{
		Time:  c.Wall(ts),
		Type:  typ,
		Netns: netns,
		Src:   &events.Endpoint{Addr: key.srcAddr(), Port: key.sport},
		Dst:   &events.Endpoint{Addr: key.dstAddr(), Port: key.dport},
	}
}

// firewallRefusal fills ev as refused by this host's packet filter.
func (c *Correlator) firewallRefusal(ev *events.Event, e *fwEntry, answer string) {
	fw := e.fw
	ev.Cause, ev.Firewall, ev.Answer = events.CauseFirewallReject, &fw, answer
	ev.Netns = e.netns
	ev.Listener = c.listenerFor(ev.Netns, ev.Dst.AddrPort())
	ev.Explanation = events.Explain(ev)
}

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

// refusedByFirewallOrRemote completes a client-side RST refusal that this
// host's TCP stack did not send: the packet filter's `reject with tcp
// reset` (nf_send_reset fires no tracepoint; the dropped SYN tells), or
// another host.
func (c *Correlator) refusedByFirewallOrRemote(r *Record, key tuple, ev *events.Event, client *events.Process, emit func(*events.Event) error) (bool, error) {
	x := &c.x5
	x.init()
	ev.Client = client
	if e := x.fw[key]; e != nil {
		delete(x.fw, key)
		c.firewallRefusal(ev, e, "tcp_reset")
		return true, emit(ev)
	}
	if !x.remoteKnown {
		return false, nil
	}
	ev.Cause, ev.Answer = events.CauseRemote, "tcp_reset"
	ev.Explanation = events.Explain(ev)
	return true, emit(ev)
}

func errnoOf(ret int32) string {
	if ret >= 0 {
		return ""
	}
	return events.ErrnoName(int(-ret))
}

// connectFailed ends a local connect() that failed without a RST: an ICMP
// refusal, a timeout, or a client that gave up after retransmitting.
func (c *Correlator) connectFailed(r *Record, emit func(*events.Event) error) error {
	x := &c.x5
	key := sockTuple(r)
	if _, ok := x.refused[key]; ok {
		delete(x.refused, key) // reported as refused by its RST
		return nil
	}
	client := c.procOf(r)
	attempt := &events.Attempt{Errno: errnoOf(r.Ret), Retransmits: r.Aux >> 24, WaitedMs: int64(r.Aux & 0xffffff)}
	e := x.fw[key]
	delete(x.fw, key)
	switch {
	case -r.Ret == econnrefused:
		// No RST reached the socket (that is clientRefused): an ICMP error.
		ev := c.attemptEvent(events.TypeRefused, key, r.Ts, r.Netns)
		ev.Client, ev.Attempt = &client, attempt
		if e != nil {
			c.firewallRefusal(ev, e, "icmp")
			return emit(ev)
		}
		ev.Answer = "icmp"
		ev.Cause = events.CauseUnknown
		if x.remoteKnown {
			ev.Cause = events.CauseRemote
		}
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	case -r.Ret == etimedout || r.Ret == 0 || e != nil:
		ev := c.attemptEvent(events.TypeTimeout, key, r.Ts, r.Netns)
		ev.Client, ev.Attempt = &client, attempt
		ev.Cause = events.CauseNoResponse
		if e != nil {
			fw := e.fw
			ev.Cause, ev.Firewall, ev.Netns = events.CauseFirewallDrop, &fw, e.netns
		} else if !x.dropsKnown {
			// No drop seen, but none could be: this host's packet
			// filter is not ruled out.
			ev.Cause = events.CauseUnknown
		}
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	return nil // EHOSTUNREACH and the like: not a refusal nor a timeout
}

// fwUnclaimed writes a drop no local connect() claimed: the sender is
// remote (or gave up before retransmitting), or still waiting.
func (c *Correlator) fwUnclaimed(key tuple, e *fwEntry, emit func(*events.Event) error) error {
	fw := e.fw
	if e.claimed {
		// A local connect() still retransmitting at shutdown or after
		// fwMaxWait.
		ev := c.attemptEvent(events.TypeTimeout, key, e.last, e.netns)
		ev.Client, ev.Cause, ev.Firewall = e.client, events.CauseFirewallDrop, &fw
		ev.Attempt = &events.Attempt{WaitedMs: time.Duration(e.last - e.first).Milliseconds(), Retransmits: fw.SYNs - 1, StillWaiting: true}
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	if e.icmp {
		ev := c.attemptEvent(events.TypeRefused, key, e.first, e.netns)
		c.firewallRefusal(ev, e, "icmp")
		return emit(ev)
	}
	ev := c.attemptEvent(events.TypeFiltered, key, e.first, e.netns)
	ev.Cause, ev.Firewall = events.CauseFirewallDrop, &fw
	ev.Listener = c.listenerFor(e.netns, key.dstAddrPort())
	ev.Explanation = events.Explain(ev)
	return emit(ev)
}

// reset pairs the two sides of a RST on this host (sender and receiver),
// waiting up to Hold for the other side: on loopback the receiver's record
// comes first.
func (c *Correlator) reset(r *Record, emit func(*events.Event) error) error {
	x := &c.x5
	local := netip.AddrPortFrom(addr(r.Family, &r.Saddr).Unmap(), r.Sport)
	remote := netip.AddrPortFrom(addr(r.Family, &r.Daddr).Unmap(), r.Dport)
	ev := &events.Event{Time: c.Wall(r.Ts), Type: events.TypeReset, Netns: r.Netns}
	var key tuple // sender -> receiver
	if r.Type == recRstOut {
		key = makeTuple(local, remote)
		ev.KernelReason = c.RSTReason(r.Reason)
		if r.Flags&flagCurrent != 0 && senderIsCurrent(ev.KernelReason) {
			p := c.procOf(r)
			ev.Process = &p
		}
		ev.State = tcpStateName(r.State)
		ev.Unaccepted = r.Flags&flagNoSkb != 0 && r.Ino == 0
	} else {
		key = makeTuple(remote, local)
		var peer *events.Process
		if x.owner != nil && r.Ino != 0 {
			peer = x.owner(r.Ino)
		}
		// A refusal the core holds for this connection (a listener's RST
		// to a final ACK, tcp_abort_on_overflow): the client thought it
		// was connected. Name it there instead of a second event.
		if p, ok := c.pending[makeTuple(local, remote)]; ok {
			c.unhold(p)
			p.ev.Client = peer
			return emit(&p.ev)
		}
		ev.PeerProcess = peer
		ev.State = tcpStateName(r.State)
	}
	ev.Src = &events.Endpoint{Addr: key.srcAddr(), Port: key.sport}
	ev.Dst = &events.Endpoint{Addr: key.dstAddr(), Port: key.dport}
	if other, ok := x.resets[key]; ok {
		delete(x.resets, key)
		if r.Type == recRstOut {
			ev.PeerProcess = other.PeerProcess
		} else {
			other.PeerProcess = ev.PeerProcess
			ev = other
		}
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	if len(x.resets) >= maxRemembered {
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	x.resets[key] = ev
	x.rstQ = append(x.rstQ, pendingRef{key: key, ev: ev, ts: r.Ts})
	return nil
}

// senderIsCurrent: for these reasons the RST is sent from the socket
// owner's own call (close(), SO_LINGER {1,0}, disconnect), so the current
// task is the sender. Others run in timers or softirq. Without a reason
// (before 6.10) the task is not trusted.
func senderIsCurrent(reason string) bool {
	switch reason {
	case "TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_LINGER", "TCP_STATE":
		return true
	}
	return false
}

func tcpStateName(s uint8) string {
	names := [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
		"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}
	if int(s) < len(names) {
		return names[s]
	}
	return ""
}

// expireIssue5 writes what waited long enough at record time now.
func (c *Correlator) expireIssue5(now uint64, emit func(*events.Event) error) error {
	x := &c.x5
	if x.fw == nil {
		return nil
	}
	hold := uint64(c.Hold)
	for len(x.rstQ) > 0 && x.rstQ[0].ts+hold <= now {
		p := x.rstQ[0]
		x.rstQ = x.rstQ[1:]
		if x.resets[p.key] != p.ev {
			continue
		}
		delete(x.resets, p.key)
		p.ev.Explanation = events.Explain(p.ev)
		if err := emit(p.ev); err != nil {
			return err
		}
	}
	for len(x.refQ) > 0 && x.refQ[0].ts+uint64(refusedMemory) <= now {
		if x.refused[x.refQ[0].key] == x.refQ[0].ts {
			delete(x.refused, x.refQ[0].key)
		}
		x.refQ = x.refQ[1:]
	}
	// Claimed entries stay (re-queued) until their connect() ends.
	var keep []tsKey
	for len(x.fwQueue) > 0 && x.fwQueue[0].ts+uint64(fwClaimHold) <= now {
		q := x.fwQueue[0]
		x.fwQueue = x.fwQueue[1:]
		e := x.fw[q.key]
		if e == nil || e.first != q.ts {
			continue
		}
		if e.claimed && e.first+uint64(fwMaxWait) > now {
			keep = append(keep, q)
			continue
		}
		delete(x.fw, q.key)
		if err := c.fwUnclaimed(q.key, e, emit); err != nil {
			return err
		}
	}
	x.fwQueue = append(keep, x.fwQueue...)
	return nil
}
