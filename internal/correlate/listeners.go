package correlate

import (
	"net/netip"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

type nsPort struct {
	netns uint32
	port  uint16
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
		c.owners.add(old, -1)
	}
	c.listeners[key] = l
	c.byPort[l.Port] = append(c.byPort[l.Port], key)
	c.owners.add(l, 1)
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
	c.owners.add(l, -1)
	return l
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

func (c *Correlator) listen(r *record.Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	l := &events.Listener{
		Process: c.procOf(r),
		Addr:    record.Addr(r.Family, &r.Daddr),
		Port:    r.Dport,
		Netns:   r.Netns,
		Backlog: r.Backlog,
		V6Only:  r.Flags&record.FlagV6Only != 0,
		Since:   c.Wall(r.Ts),

		BacklogRequested: requestedBacklog(r.BacklogReq),
	}
	if l.Port == 0 && r.Ino != 0 {
		// listen() without bind(): the port is chosen after the state
		// change the kernel reported. It is in /proc by now.
		l.Port = c.Host.SocketPort(l.Pid, r.Ino)
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
func (c *Correlator) listenUpdate(r *record.Record, emit func(*events.Event) error) error {
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

func (c *Correlator) listenClose(r *record.Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	closer := c.procOf(r)
	l := c.removeListener(key)
	if l == nil {
		// A listener we never saw open (it was closed while the tracer
		// started): whoever closed it is the best owner we have.
		l = &events.Listener{
			Process: closer,
			Addr:    record.Addr(r.Family, &r.Daddr),
			Port:    r.Dport,
			Netns:   r.Netns,
			Backlog: r.Backlog,
		}
	}
	l.ClosedAt = c.Wall(r.Ts)
	if closer.Pid != l.Pid {
		l.ClosedBy = &closer
	}
	if r.Flags&record.FlagExiting != 0 {
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
