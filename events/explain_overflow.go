package events

import (
	"fmt"
	"strconv"
	"strings"
)

// explainOverflow says who is not accepting, how full the queue is, what
// was dropped, and whether net.core.somaxconn cut the backlog.
func explainOverflow(e *Event) string {
	l := e.Listener
	if l == nil || e.Dropped == nil {
		return "connection attempts were dropped at a full listen queue"
	}
	var b strings.Builder
	where := string(appendHostPort(nil, l.Addr, l.Port))
	owner := "the listener on " + where
	if l.Pid != 0 {
		owner = l.Process.String() + " on " + where
	}
	b.WriteString(owner)
	switch {
	case e.AcceptIdleMs == nil:
		b.WriteString(" does not accept() connections fast enough")
	case e.NeverAccepted:
		fmt.Fprintf(&b, " has not called accept() since it started listening %s ago", ms(*e.AcceptIdleMs))
	case *e.AcceptIdleMs >= 1000:
		fmt.Fprintf(&b, " has not called accept() for %s", ms(*e.AcceptIdleMs))
	default:
		fmt.Fprintf(&b, " accepts, but too slowly (last accept() %s ago)", ms(*e.AcceptIdleMs))
	}
	if l.Queued != nil {
		fmt.Fprintf(&b, "; accept queue %d/%d (backlog %d)", *l.Queued, l.Backlog+1, l.Backlog)
	}
	d := e.Dropped
	fmt.Fprintf(&b, "; %d connection attempts dropped", d.Total)
	if e.IntervalMs > 0 {
		fmt.Fprintf(&b, " in %s", ms(e.IntervalMs))
	}
	var parts []string
	for _, p := range []struct {
		n    uint64
		what string
	}{{d.SynAcceptQueueFull, "SYNs"}, {d.SynQueueFull, "SYNs at a full SYN queue"}, {d.FinalAck, "final ACKs"}, {d.Other, "other"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	if len(parts) > 0 {
		b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	}
	if l.BacklogRequested > l.Backlog {
		fmt.Fprintf(&b, "; listen() asked for a backlog of %d but net.core.somaxconn", l.BacklogRequested)
		if e.Somaxconn > 0 {
			fmt.Fprintf(&b, "=%d", e.Somaxconn)
		}
		fmt.Fprintf(&b, " cut it to %d: raise net.core.somaxconn", l.Backlog)
	}
	return b.String()
}

// ms formats a duration in milliseconds as "850ms" or "4.1s".
func ms(v int64) string {
	if v < 1000 {
		return strconv.FormatInt(v, 10) + "ms"
	}
	return strconv.FormatFloat(float64(v)/1000, 'f', 1, 64) + "s"
}
