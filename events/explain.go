package events

import (
	"fmt"
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

func (p Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Comm, p.Pid) }

// ago formats how long before t the past moment was.
func ago(past, t time.Time) string {
	d := t.Sub(past)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms ago", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	default:
		return d.Round(time.Second).String() + " ago"
	}
}

func (x *Exit) String() string {
	switch {
	case x == nil:
		return ""
	case x.Signal != "" && x.CoreDumped:
		return "was killed by " + x.Signal + " (core dumped)"
	case x.Signal != "":
		return "was killed by " + x.Signal
	case x.Code != nil:
		return "exited with code " + strconv.Itoa(*x.Code)
	}
	return "exited"
}

// Explain returns the one plain sentence that says why a refusal happened,
// from the fields the classifier filled in.
func Explain(e *Event) string {
	if s, ok := explainIssue5(e); ok {
		return s
	}
	port := 0
	if e.Dst != nil {
		port = int(e.Dst.Port)
	}
	l, b := e.Listener, e.Bind
	switch e.Cause {
	case CauseNoListener:
		return fmt.Sprintf("nothing listens on port %d in netns %d, and nothing has since rsttrace started", port, e.Netns)
	case CauseListenerClosed:
		if l == nil {
			break
		}
		s := fmt.Sprintf("nothing listens on port %d; %s", port, l.Process)
		other := l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid
		switch {
		case other && l.Exit != nil:
			// Exit is the closer's: the last holder of the socket died.
			s += fmt.Sprintf(" listened on it until %s %s, closing the socket %s", l.ClosedBy, l.Exit, ago(l.ClosedAt, e.Time))
		case l.Exit != nil:
			s += " " + l.Exit.String() + ", closing its listener " + ago(l.ClosedAt, e.Time)
		case other:
			s += fmt.Sprintf(" listened on it until %s closed the socket %s", l.ClosedBy, ago(l.ClosedAt, e.Time))
		default:
			s += " closed its listener " + ago(l.ClosedAt, e.Time)
		}
		return s
	case CauseWrongAddress:
		if l == nil {
			break
		}
		only := ""
		if l.V6Only {
			only = " (IPv6 only)"
		}
		dst := ""
		if e.Dst != nil {
			dst = e.Dst.Addr.String()
		}
		return fmt.Sprintf("%s listens on port %d at %s%s, not at %s", l.Process, port, l.Addr, only, dst)
	case CauseOtherNetns:
		if l == nil {
			break
		}
		return fmt.Sprintf("port %d is listened on by %s in netns %d, not in netns %d where the connection arrived", port, l.Process, l.Netns, e.Netns)
	case CauseBindFailed:
		if b == nil {
			break
		}
		s := fmt.Sprintf("nothing listens on port %d: %s failed to bind it with %s %s", port, b.Process, b.Errno, ago(b.Time, e.Time))
		if b.Holder != nil {
			s += fmt.Sprintf("; %s holds the port", b.Holder)
		}
		return s
	case CauseBacklogFull:
		if e.Type == TypeListenOverflow {
			return explainOverflow(e)
		}
		who := "the listener"
		if l != nil && l.Pid != 0 {
			who = l.Process.String()
		}
		return fmt.Sprintf("the accept queue of %s on port %d was full and net.ipv4.tcp_abort_on_overflow=1: "+
			"the kernel answered the handshake with a RST (the client sees ECONNRESET)", who, port)
	case CauseUnknown:
		if e.KernelReason != "" {
			return "the kernel refused it (" + e.KernelReason + ") and rsttrace knows no more"
		}
		return "rsttrace knows nothing that explains this refusal"
	}
	return string(e.Cause)
}

// explainOverflow says who is not accepting, how full the queue is, what
// was dropped, and whether net.core.somaxconn cut the backlog.
func explainOverflow(e *Event) string {
	l := e.Listener
	if l == nil || e.Dropped == nil {
		return "connection attempts were dropped at a full listen queue"
	}
	var b strings.Builder
	where := hostPort(l.Addr.String(), l.Port)
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
