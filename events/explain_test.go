package events

import (
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// Explain was rewritten without fmt (it runs for every refusal); the fmt
// version is kept here as the oracle: the sentences must not change.

// oracleAgo, oracleExplain: ago and Explain as they were written with fmt.
func oracleAgo(past, t time.Time) string {
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

// oracleExplain is Explain as it was written with fmt: the one plain sentence that says why a refusal happened,
// from the fields the classifier filled in.
func oracleExplain(e *Event) string {
	if s, ok := explainAttempt(e); ok {
		return s // not rewritten: its own code is the reference
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
		s := fmt.Sprintf("nothing listens on port %d; %s", port, oracleProc(l.Process))
		other := l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid
		switch {
		case other && l.Exit != nil:
			// Exit is the closer's: the last holder of the socket died.
			s += fmt.Sprintf(" listened on it until %s %s, closing the socket %s", oracleProc(*l.ClosedBy), oracleExitString(l.Exit), oracleAgo(l.ClosedAt, e.Time))
		case l.Exit != nil:
			s += " " + oracleExitString(l.Exit) + ", closing its listener " + oracleAgo(l.ClosedAt, e.Time)
		case other:
			s += fmt.Sprintf(" listened on it until %s closed the socket %s", oracleProc(*l.ClosedBy), oracleAgo(l.ClosedAt, e.Time))
		default:
			s += " closed its listener " + oracleAgo(l.ClosedAt, e.Time)
		}
		return s
	case CauseBacklogFull:
		if e.Type == TypeListenOverflow {
			return explainOverflow(e)
		}
		who := "the listener"
		if l != nil && l.Pid != 0 {
			who = oracleProc(l.Process)
		}
		return fmt.Sprintf("the accept queue of %s on port %d was full and net.ipv4.tcp_abort_on_overflow=1: "+
			"the kernel answered the handshake with a RST (the client sees ECONNRESET)", who, port)
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
		return fmt.Sprintf("%s listens on port %d at %s%s, not at %s", oracleProc(l.Process), port, l.Addr, only, dst)
	case CauseOtherNetns:
		if l == nil {
			break
		}
		return fmt.Sprintf("port %d is listened on by %s in netns %d, not in netns %d where the connection arrived", port, oracleProc(l.Process), l.Netns, e.Netns)
	case CauseBindFailed:
		if b == nil {
			break
		}
		s := fmt.Sprintf("nothing listens on port %d: %s failed to bind it with %s %s", port, oracleProc(b.Process), b.Errno, oracleAgo(b.Time, e.Time))
		if b.Holder != nil {
			s += fmt.Sprintf("; %s holds the port", oracleProc(*b.Holder))
		}
		return s
	case CauseUnknown:
		if e.KernelReason != "" {
			return "the kernel refused it (" + e.KernelReason + ") and rsttrace knows no more"
		}
		return "rsttrace knows nothing that explains this refusal"
	}
	return string(e.Cause)
}

// oracleProc and oracleExitString are Process.String and Exit.String as
// they were written.
func oracleProc(p Process) string { return fmt.Sprintf("%s (pid %d)", p.Comm, p.Pid) }

func oracleExitString(x *Exit) string {
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

func TestExplainMatchesFmt(t *testing.T) {
	causes := []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseBacklogFull, CauseUnknown, "", "new_cause"}
	var evs []*Event
	for _, c := range causes {
		evs = append(evs, refusedEvent(c), &Event{Cause: c})
	}
	evs = append(evs, benchEvents()[:100]...)
	ages := []time.Duration{-time.Hour, -1, 0, 1, 999 * time.Millisecond, 999999999, time.Second, 1500 * time.Millisecond,
		59949 * time.Millisecond, 59950 * time.Millisecond, time.Minute - 1, time.Minute, 90 * time.Minute, 1<<63 - 1}
	for _, d := range ages {
		for _, c := range []Cause{CauseListenerClosed, CauseBindFailed} {
			e := refusedEvent(c)
			if e.Listener != nil {
				e.Listener.ClosedAt = e.Time.Add(-d)
				for _, by := range []*Process{nil, {Pid: server.Pid}, {Pid: 5000, Comm: "worker"}} {
					for _, x := range []*Exit{nil, {}, {Code: intp(0)}, {Signal: "SIGKILL"}, {Signal: "SIGSEGV", CoreDumped: true}} {
						e := *e
						l := *e.Listener
						l.ClosedBy, l.Exit = by, x
						e.Listener = &l
						evs = append(evs, &e)
					}
				}
			} else {
				e.Bind.Time = e.Time.Add(-d)
				evs = append(evs, e)
			}
		}
	}
	for _, a := range []string{"", "127.0.0.1", "::", "::ffff:10.0.0.1", "fe80::1%eth0"} {
		e := refusedEvent(CauseWrongAddress)
		e.Listener.Addr = netip.Addr{}
		if a != "" {
			e.Listener.Addr = netip.MustParseAddr(a)
		}
		e.Dst.Addr = e.Listener.Addr
		evs = append(evs, e)
		e2 := *e
		e2.Dst = nil
		l := *e.Listener
		l.V6Only = true
		e2.Listener = &l
		evs = append(evs, &e2)
	}
	for i := range 300 {
		f := &filler{set: func(p string) bool { return (len(p)*7+i)%4 != 0 }, src: &richSource{n: i}}
		var e Event
		f.fill(t, reflect.ValueOf(&e).Elem(), "")
		e.Cause = causes[i%len(causes)]
		evs = append(evs, &e)
	}
	for i, e := range evs {
		if got, want := Explain(e), oracleExplain(e); got != want {
			t.Errorf("%d (%s): Explain = %q, want %q", i, e.Cause, got, want)
		}
		for _, p := range []*Process{e.Client, closedByOf(e.Listener), holderOf(e.Bind)} {
			if p != nil && p.String() != oracleProc(*p) {
				t.Errorf("Process.String() = %q, want %q", p.String(), oracleProc(*p))
			}
		}
		if e.Listener != nil && e.Listener.Exit.String() != oracleExitString(e.Listener.Exit) {
			t.Errorf("Exit.String() = %q, want %q", e.Listener.Exit.String(), oracleExitString(e.Listener.Exit))
		}
	}
}

func FuzzExplain(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		e := fuzzEvent(t, data)
		if len(data) > 0 {
			causes := []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown}
			e.Cause = causes[int(data[0])%len(causes)]
		}
		if got, want := Explain(e), oracleExplain(e); got != want {
			t.Fatalf("Explain = %q, want %q", got, want)
		}
	})
}

func TestExplainAllocs(t *testing.T) {
	for _, c := range []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed, CauseUnknown} {
		e := refusedEvent(c)
		if n := testing.AllocsPerRun(100, func() { _ = Explain(e) }); n > 1 {
			t.Errorf("Explain(%s): %v allocations, want 1 (the string)", c, n)
		}
	}
}

func closedByOf(l *Listener) *Process {
	if l == nil {
		return nil
	}
	return l.ClosedBy
}

func holderOf(b *Bind) *Process {
	if b == nil {
		return nil
	}
	return b.Holder
}
