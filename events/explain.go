package events

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SignalName returns "SIGSEGV" for 11, "signal 99" for unknown numbers.
func SignalName(sig int) string {
	if n := unix.SignalName(syscall.Signal(sig)); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(sig)
}

// ErrnoName returns "EADDRINUSE" for 98.
func ErrnoName(errno int) string {
	if n := unix.ErrnoName(syscall.Errno(errno)); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(errno)
}

func (p Process) String() string { return string(appendProcessText(nil, p)) }

// appendAgo appends how long before t the past moment was: "250ms ago",
// "1.5s ago", "3m0s ago".
func appendAgo(b []byte, past, t time.Time) []byte {
	b = appendDuration(b, t.Sub(past))
	return append(b, " ago"...)
}

func (x *Exit) String() string { return string(appendExit(nil, x)) }

// appendExit appends how a process ended, as Exit.String says it.
func appendExit(b []byte, x *Exit) []byte {
	switch {
	case x == nil:
		return b
	case x.Signal != "":
		b = append(b, "was killed by "...)
		b = append(b, x.Signal...)
		if x.CoreDumped {
			b = append(b, " (core dumped)"...)
		}
		return b
	case x.Code != nil:
		b = append(b, "exited with code "...)
		return strconv.AppendInt(b, int64(*x.Code), 10)
	}
	return append(b, "exited"...)
}

// Explain returns the one plain sentence that says why a refusal happened,
// from the fields the classifier filled in. It is called for every
// refusal: it appends to a buffer on the stack, and allocates only the
// string it returns.
func Explain(e *Event) string {
	if s, ok := explainIssue5(e); ok {
		return s
	}
	if e.Type == TypeListenOverflow && e.Cause == CauseBacklogFull {
		return explainOverflow(e)
	}
	var buf [256]byte
	return string(appendExplain(buf[:0], e))
}

func appendExplain(s []byte, e *Event) []byte {
	port := 0
	if e.Dst != nil {
		port = int(e.Dst.Port)
	}
	l, b := e.Listener, e.Bind
	switch e.Cause {
	case CauseNoListener:
		s = appendNothingOn(s, port)
		s = append(s, " in netns "...)
		s = strconv.AppendUint(s, uint64(e.Netns), 10)
		return append(s, ", and nothing has since rsttrace started"...)
	case CauseListenerClosed:
		if l == nil {
			break
		}
		s = appendNothingOn(s, port)
		s = append(s, "; "...)
		s = appendProcessText(s, l.Process)
		other := l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid
		switch {
		case other && l.Exit != nil:
			// Exit is the closer's: the last holder of the socket died.
			s = append(s, " listened on it until "...)
			s = appendProcessText(s, *l.ClosedBy)
			s = append(s, ' ')
			s = appendExit(s, l.Exit)
			s = append(s, ", closing the socket "...)
		case l.Exit != nil:
			s = append(s, ' ')
			s = appendExit(s, l.Exit)
			s = append(s, ", closing its listener "...)
		case other:
			s = append(s, " listened on it until "...)
			s = appendProcessText(s, *l.ClosedBy)
			s = append(s, " closed the socket "...)
		default:
			s = append(s, " closed its listener "...)
		}
		return appendAgo(s, l.ClosedAt, e.Time)
	case CauseWrongAddress:
		if l == nil {
			break
		}
		s = appendProcessText(s, l.Process)
		s = append(s, " listens on port "...)
		s = strconv.AppendInt(s, int64(port), 10)
		s = append(s, " at "...)
		s = appendAddrText(s, l.Addr)
		if l.V6Only {
			s = append(s, " (IPv6 only)"...)
		}
		s = append(s, ", not at "...)
		if e.Dst != nil {
			s = appendAddrText(s, e.Dst.Addr)
		}
		return s
	case CauseOtherNetns:
		if l == nil {
			break
		}
		s = append(s, "port "...)
		s = strconv.AppendInt(s, int64(port), 10)
		s = append(s, " is listened on by "...)
		s = appendProcessText(s, l.Process)
		s = append(s, " in netns "...)
		s = strconv.AppendUint(s, uint64(l.Netns), 10)
		s = append(s, ", not in netns "...)
		s = strconv.AppendUint(s, uint64(e.Netns), 10)
		return append(s, " where the connection arrived"...)
	case CauseBindFailed:
		if b == nil {
			break
		}
		s = appendNothingOn(s, port)
		s = append(s, ": "...)
		s = appendProcessText(s, b.Process)
		s = append(s, " failed to bind it with "...)
		s = append(s, b.Errno...)
		s = append(s, ' ')
		s = appendAgo(s, b.Time, e.Time)
		if b.Holder != nil {
			s = append(s, "; "...)
			s = appendProcessText(s, *b.Holder)
			s = append(s, " holds the port"...)
		}
		return s
	case CauseBacklogFull:
		s = append(s, "the accept queue of "...)
		if l != nil && l.Pid != 0 {
			s = appendProcessText(s, l.Process)
		} else {
			s = append(s, "the listener"...)
		}
		s = append(s, " on port "...)
		s = strconv.AppendInt(s, int64(port), 10)
		return append(s, " was full and net.ipv4.tcp_abort_on_overflow=1: "+
			"the kernel answered the handshake with a RST (the client sees ECONNRESET)"...)
	case CauseUnknown:
		if e.KernelReason != "" {
			s = append(s, "the kernel refused it ("...)
			s = append(s, e.KernelReason...)
			return append(s, ") and rsttrace knows no more"...)
		}
		return append(s, "rsttrace knows nothing that explains this refusal"...)
	}
	return append(s, e.Cause...)
}

func appendNothingOn(s []byte, port int) []byte {
	s = append(s, "nothing listens on port "...)
	return strconv.AppendInt(s, int64(port), 10)
}

// appendAddrText appends what Addr.String returns ("invalid IP" for the
// zero Addr).
func appendAddrText(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "invalid IP"...)
	}
	return a.AppendTo(b)
}

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
