package correlate

import (
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Userland proxies (docker-proxy, socat, an ingress): the proxy accepts the
// client's connection itself and connects to the backend; when that
// connect is refused, the refusal's client is the proxy, and the proxy
// closes the client's connection. With the client's request still unread
// in the socket, that close sends a RST (tcp_close: data was lost), which
// the client sees as "connection reset". The two are one failure: a
// refusal whose client also owns a listener waits a moment for a reset
// sent by that process, and the two are written as one refused event that
// names the proxy (Proxy), the client that reached it (Client, Src) and
// the address it used (DstOriginal).
//
// A proxy that closes with nothing unread sends a FIN, not a RST: the
// client sees an empty reply, and nothing on the wire ties it to the
// refusal. So does one that shuts the connection down first (socat): its
// later close sends a RST only if the client has not closed its end in
// between (the proxy's socket is in TIME_WAIT by then). The refusal is then written alone after ProxyHold, naming the
// proxy as its client, as without a proxy.

// ProxyHold is how long a refusal whose client owns a listener waits for
// the reset its proxy sends to its own client. docker-proxy closes at
// once; socat shuts down, logs and exits first, which took over 100 ms on
// a loaded two-core machine.
const ProxyHold = 250 * time.Millisecond

// maxProxyHeld bounds the refusals waiting for a proxy's reset; past it
// they are written at once, as without a proxy.
const maxProxyHeld = 1024

// proxyHeld is a refusal waiting for its proxy's reset.
type proxyHeld struct {
	p    *refusal
	done bool
}

// proxies are the refusals waiting for a reset from their client (the
// proxy), by the proxy's namespace and command name: a forking proxy
// (socat fork) connects from a child, while the accepted connection's
// owner is the parent that accepted it.
type proxies struct {
	waiting map[nsComm][]*proxyHeld
	n       int
	due     deadlines[*proxyHeld]
}

type nsComm struct {
	netns uint32
	comm  string
}

// listenerOwners counts listeners by owner namespace and command name.
type listenerOwners map[nsComm]int

func (o listenerOwners) add(l *events.Listener, d int) {
	k := nsComm{l.Netns, l.Comm}
	if o[k] += d; o[k] <= 0 {
		delete(o, k)
	}
}

// emitRefusal writes a complete refusal, or holds it for its proxy's
// reset when its client owns a listener in its namespace.
func (c *Correlator) emitRefusal(p *refusal, ts uint64, emit func(*events.Event) error) error {
	cl := p.ev.Client
	x := &c.proxies
	if cl == nil || p.clientNetns == 0 || x.n >= maxProxyHeld || c.owners[nsComm{p.clientNetns, cl.Comm}] == 0 {
		return emit(&p.ev)
	}
	h := &proxyHeld{p: p}
	if x.waiting == nil {
		x.waiting = map[nsComm][]*proxyHeld{}
	}
	k := nsComm{p.clientNetns, cl.Comm}
	x.waiting[k] = append(x.waiting[k], h)
	x.n++
	x.due.add(ts+uint64(ProxyHold), h)
	return nil
}

// proxyEmit wraps emit: a reset sent by a proxy whose refusal waits is
// written as part of that refusal instead.
func (c *Correlator) proxyEmit(emit func(*events.Event) error) func(*events.Event) error {
	if c.proxies.n == 0 {
		return emit
	}
	return func(ev *events.Event) error {
		if ev.Type == events.TypeReset {
			if p := c.joinProxy(ev); p != nil {
				return emit(&p.ev)
			}
		}
		return emit(ev)
	}
}

// joinProxy takes the waiting refusal of the process that sent reset ev
// on a connection it accepted (its local end is a listener of that
// process) and merges ev into it; nil if none waits.
func (c *Correlator) joinProxy(ev *events.Event) *refusal {
	if ev.Process == nil || ev.Src == nil || ev.Dst == nil {
		return nil
	}
	x := &c.proxies
	k := nsComm{ev.Netns, ev.Process.Comm}
	list := x.waiting[k]
	if len(list) == 0 || !c.acceptedBy(ev.Netns, ev.Process.Comm, *ev.Src) {
		return nil
	}
	// The same process first (a proxy that does not fork), else the
	// oldest.
	i := 0
	for j, h := range list {
		if h.p.ev.Client.Pid == ev.Process.Pid {
			i = j
			break
		}
	}
	h := list[i]
	x.remove(k, i)
	p := h.p
	proxy := *p.ev.Client
	p.ev.Proxy = &proxy
	p.ev.Client = ev.PeerProcess
	p.src = *ev.Dst // the reset's receiver: the proxy's client
	p.orig = *ev.Src
	p.ev.DstOriginal = &p.orig
	if ev.Netns != p.ev.Netns {
		p.ev.ClientNetns = ev.Netns
	} else {
		p.ev.ClientNetns = 0
	}
	p.ev.Explanation = events.Explain(&p.ev)
	return p
}

// acceptedBy: local is the address of a listener of comm in netns, i.e. a
// connection accepted there.
func (c *Correlator) acceptedBy(netns uint32, comm string, local events.Endpoint) bool {
	for _, k := range c.byPort[local.Port] {
		if l := c.listeners[k]; l.Netns == netns && l.Comm == comm && covers(l, local.Addr) {
			return true
		}
	}
	return false
}

func (x *proxies) remove(k nsComm, i int) {
	list := x.waiting[k]
	list[i].done = true
	list = append(list[:i], list[i+1:]...)
	if len(list) == 0 {
		delete(x.waiting, k)
	} else {
		x.waiting[k] = list
	}
	x.n--
}

// expireProxies writes the refusals whose proxy sent no reset in time.
func (c *Correlator) expireProxies(now uint64, emit func(*events.Event) error) error {
	x := &c.proxies
	for {
		h, ok := x.due.next(now)
		if !ok {
			return nil
		}
		if h.done {
			continue
		}
		k := nsComm{h.p.clientNetns, h.p.ev.Client.Comm}
		for i, o := range x.waiting[k] {
			if o == h {
				x.remove(k, i)
				break
			}
		}
		if err := emit(&h.p.ev); err != nil {
			return err
		}
	}
}
