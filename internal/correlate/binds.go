package correlate

import (
	"net/netip"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

type boundSock struct {
	proc  events.Process
	netns uint32
	addr  netip.Addr
	port  uint16
	ino   uint64
}

func (c *Correlator) bind(r *record.Record, emit func(*events.Event) error) error {
	key := sockKey(r.Ino, r.Sk)
	a := record.Addr(r.Family, &r.Daddr)
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
		if !c.Host.HasSocket(b.proc.Pid, b.ino) {
			delete(c.bound, k)
			continue
		}
		p := b.proc
		return &p
	}
	return c.Host.PortHolder(failing, port)
}

// Errnos of a failed bind() that mean another socket holds the port.
const (
	eaddrinuse = 98
	eaccesErr  = 13
)
