package correlate

import (
	"net/netip"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// resets holds one side of a RST on this host waiting for the other.
type resets struct {
	waiting map[tuple]*events.Event // by sender -> receiver
	due     deadlines[waitingReset]
	// received: the waiting events that came from the receiving side.
	received map[tuple]bool
}

type waitingReset struct {
	key tuple
	ev  *events.Event
}

// reset pairs the two sides of a RST on this host (sender and receiver),
// waiting up to Hold for the other side: on loopback the receiver's record
// comes first.
func (c *Correlator) reset(r *record.Record, emit func(*events.Event) error) error {
	x := &c.resets
	local := netip.AddrPortFrom(record.Addr(r.Family, &r.Saddr).Unmap(), r.Sport)
	remote := netip.AddrPortFrom(record.Addr(r.Family, &r.Daddr).Unmap(), r.Dport)
	ev := &events.Event{Time: c.Wall(r.Ts), Type: events.TypeReset, Netns: r.Netns}
	var key tuple // sender -> receiver
	if r.Type == record.ResetOut {
		key = makeTuple(local, remote)
		if r.Flags&record.FlagSelfAbort != 0 {
			// The sending socket was killed by the segment it answers;
			// the kernel reported that as a RST it received (tcp_reset
			// fires tcp:tcp_receive_reset): none was.
			if self := makeTuple(remote, local); x.received[self] {
				delete(x.waiting, self)
				delete(x.received, self)
			}
		}
		ev.KernelReason = c.RSTReason(r.Reason)
		// The socket's owner, recorded when it was made, sent it; without
		// one, the current task only for reasons that run in the owner's
		// own call.
		if r.Flags&record.FlagOwnerKnown != 0 || (r.Flags&record.FlagCurrent != 0 && senderIsCurrent(ev.KernelReason, r.State)) {
			p := c.procOf(r)
			ev.Process = &p
		}
		ev.State = tcpStateName(r.State)
		ev.Unaccepted = r.Flags&record.FlagNoSkb != 0 && r.Ino == 0
	} else {
		key = makeTuple(remote, local)
		// The receiver is the socket's owner, recorded in the kernel when
		// the socket was made: no /proc walk per reset. A socket older
		// than the tracer has none.
		var peer *events.Process
		if r.Flags&record.FlagOwnerKnown != 0 {
			p := c.procOf(r)
			peer = &p
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
	if other, ok := x.waiting[key]; ok {
		delete(x.waiting, key)
		delete(x.received, key)
		if r.Type == record.ResetOut {
			ev.PeerProcess = other.PeerProcess
		} else {
			other.PeerProcess = ev.PeerProcess
			ev = other
		}
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	if r.Type == record.ResetIn && r.Flags&record.FlagSenderSeen != 0 {
		// Its sender's record came first and was written alone (it
		// waited longer than Hold): one reset, written once.
		return nil
	}
	if len(x.waiting) >= maxRemembered {
		ev.Explanation = events.Explain(ev)
		return emit(ev)
	}
	x.waiting[key] = ev
	if r.Type == record.ResetIn {
		x.received[key] = true
	}
	x.due.add(r.Ts+uint64(c.Hold), waitingReset{key, ev})
	return nil
}

// senderIsCurrent: for these reasons the RST is sent from the socket
// owner's own call (close(), SO_LINGER {1,0}, disconnect), so the current
// task is the sender. Others run in timers or softirq. Without a reason
// (before 6.10) the task is trusted only when the state says close().
func senderIsCurrent(reason string, state uint8) bool {
	if reason == "" {
		// Before 6.10 there is no reason, but a socket already in CLOSE
		// when its RST goes out is in tcp_close() or tcp_disconnect(),
		// which set the state before sending: the closer's own call.
		// Timer resets (keepalive, FIN_WAIT2, out of resources) are sent
		// before the state changes.
		return state == tcpClose
	}
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

// expireResets writes the resets whose other side did not come in Hold.
func (c *Correlator) expireResets(now uint64, emit func(*events.Event) error) error {
	x := &c.resets
	for {
		w, ok := x.due.next(now)
		if !ok {
			return nil
		}
		if x.waiting[w.key] != w.ev {
			continue // paired already
		}
		delete(x.waiting, w.key)
		delete(x.received, w.key)
		w.ev.Explanation = events.Explain(w.ev)
		if err := emit(w.ev); err != nil {
			return err
		}
	}
}

// TCP states (include/net/tcp_states.h).
const (
	tcpClose  = 7  // TCP_CLOSE
	tcpListen = 10 // TCP_LISTEN
)
