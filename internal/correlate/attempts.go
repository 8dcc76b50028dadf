package correlate

// Connection attempts that end without a RST from this host's TCP stack:
// SYNs the packet filter dropped (answered with an ICMP error or a RST by a
// reject rule, or not at all), and local connect() calls that failed with
// an ICMP error or timed out. Each becomes one event that names the client
// when it is on this host.

import (
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

const (
	econnrefused = 111
	etimedout    = 110
)

// How long a firewall drop waits for a local connect() to claim it: the
// first SYN retransmit comes after the initial RTO (1 s, TCP_TIMEOUT_INIT).
const fwClaimHold = 2 * time.Second

// How long a claimed drop waits for its connect() to end (tcp_syn_retries
// 6 gives up after 127 s); then it is written as still waiting, and the
// attempt's end (and its later drops) are absorbed, not a second event.
const fwMaxWait = 15 * time.Second

// How long an attempt written before its connect() ended is remembered,
// so that its end is not a second event: past the longest SYN retry
// schedule (tcp_syn_retries 6: 127 s), bounded by count too.
const reportedMemory = 3 * time.Minute

// attempts is what the correlator remembers about attempts in flight.
type attempts struct {
	// fw: attempts whose SYNs the packet filter dropped, by attempt;
	// fwDue re-checks each after fwClaimHold.
	fw    map[tuple]*fwEntry
	fwDue deadlines[tsKey]
	// reported: attempts written before their connect() ended (a
	// local client's SYN rejected with ICMP, or still waiting after
	// fwMaxWait): their later drops, retransmits and end are absorbed.
	reported    map[tuple]uint64
	reportedDue deadlines[tsKey]
}

func newAttempts() attempts {
	return attempts{fw: map[tuple]*fwEntry{}, reported: map[tuple]uint64{}}
}

// noteReported remembers that the attempt key was written before its
// connect() ended.
func (c *Correlator) noteReported(key tuple, ts uint64) {
	a := &c.attempts
	if a.reportedDue.len() >= maxRemembered {
		if old, ok := a.reportedDue.oldest(); ok && a.reported[old.key] == old.ts {
			delete(a.reported, old.key)
		}
	}
	a.reported[key] = ts
	a.reportedDue.add(ts+uint64(reportedMemory), tsKey{key, ts})
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

// sockTuple is the attempt of a client-side record: local -> remote.
func sockTuple(r *record.Record) tuple {
	return refusalKey(r)
}

func (c *Correlator) firewallDrop(r *record.Record, emit func(*events.Event) error) error {
	a := &c.attempts
	key := sockTuple(r)
	if _, ok := a.reported[key]; ok {
		return nil // a retransmit of an attempt already written
	}
	e := a.fw[key]
	if e == nil {
		if len(a.fw) >= maxRemembered {
			// Full: the drop is not reported, so it is counted lost.
			c.lost.Add(1)
			return nil
		}
		e = &fwEntry{first: r.Ts, netns: r.Netns}
		a.fw[key] = e
		a.fwDue.add(r.Ts+uint64(fwClaimHold), tsKey{key, r.Ts})
	}
	e.last = r.Ts
	e.fw.SYNs++
	if h := record.HookID(r.Aux).Name(); h != "" {
		e.fw.Hook = h
	}
	if r.Flags&record.FlagFirewallNFT != 0 {
		e.fw.Table = "nftables"
	}
	if r.Flags&record.FlagFirewallICMP != 0 {
		e.icmp = true
	}
	if r.Flags&record.FlagProcKnown != 0 {
		p := c.procOf(r)
		e.client, e.claimed = &p, true
		if e.icmp {
			// A local connect()'s SYN rejected with an ICMP error: the
			// client has its ECONNREFUSED now (on the output hook
			// without an error report or a state change: connect()
			// owned the socket, the error went to sk_err_soft). Write
			// it at once; what the attempt does later is absorbed.
			delete(a.fw, key)
			c.noteReported(key, r.Ts)
			ev := c.attemptEvent(events.TypeRefused, key, e.first, e.netns)
			ev.Client = e.client
			c.firewallRefusal(ev, e, "icmp")
			return emit(ev)
		}
	}
	return nil
}

func (c *Correlator) synRetransmit(r *record.Record) {
	if _, ok := c.attempts.reported[sockTuple(r)]; ok {
		return
	}
	if e := c.attempts.fw[sockTuple(r)]; e != nil {
		p := c.procOf(r)
		e.client, e.claimed = &p, true
	}
}

// attemptEvent starts an event about the attempt key.
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

// refusedByFirewallOrRemote completes a client-side RST refusal that this
// host's TCP stack did not send: the packet filter's `reject with tcp
// reset` (nf_send_reset fires no tracepoint; the dropped SYN tells), or
// another host.
func (c *Correlator) refusedByFirewallOrRemote(r *record.Record, key tuple, ev *events.Event, client *events.Process, emit func(*events.Event) error) (bool, error) {
	a := &c.attempts
	ev.Client = client
	if e := a.fw[key]; e != nil {
		delete(a.fw, key)
		c.firewallRefusal(ev, e, "tcp_reset")
		return true, emit(ev)
	}
	if !c.SeesLocalAnswers {
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
// refusal, a timeout, or a client that gave up after retransmitting. An
// attempt refused by a RST has no such record: the kernel program that
// reports the refusal (client_refused) deletes the attempt's entry, and a
// connect failure is written only for an attempt that has one.
func (c *Correlator) connectFailed(r *record.Record, emit func(*events.Event) error) error {
	a := &c.attempts
	key := sockTuple(r)
	if _, ok := a.reported[key]; ok {
		delete(a.reported, key) // written before it ended
		return nil
	}
	client := c.procOf(r)
	attempt := &events.Attempt{Errno: errnoOf(r.Ret), Retransmits: r.Aux >> 24, WaitedMs: int64(r.Aux & 0xffffff)}
	e := a.fw[key]
	delete(a.fw, key)
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
		if c.SeesLocalAnswers {
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
		} else if !c.SeesFirewallDrops {
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
		// fwMaxWait: its end is not a second event.
		c.noteReported(key, e.last)
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

// expireAttempts forgets attempts reported past reportedMemory and writes
// the dropped attempts that waited long enough at record time now.
func (c *Correlator) expireAttempts(now uint64, emit func(*events.Event) error) error {
	a := &c.attempts
	for {
		q, ok := a.reportedDue.next(now)
		if !ok {
			break
		}
		if a.reported[q.key] == q.ts {
			delete(a.reported, q.key)
		}
	}
	for {
		q, ok := a.fwDue.next(now)
		if !ok {
			break
		}
		e := a.fw[q.key]
		if e == nil || e.first != q.ts {
			continue
		}
		if e.claimed && e.first+uint64(fwMaxWait) > now {
			// A local connect() is still trying: look again later,
			// at the latest when fwMaxWait is up.
			a.fwDue.add(min(now+uint64(fwClaimHold), e.first+uint64(fwMaxWait)), q)
			continue
		}
		delete(a.fw, q.key)
		if err := c.fwUnclaimed(q.key, e, emit); err != nil {
			return err
		}
	}
	return nil
}
