package events

import (
	"strconv"
)

// Explain returns the one plain sentence that says why a refusal happened,
// from the fields the classifier filled in. It is called for every
// refusal: it appends to a buffer on the stack, and allocates only the
// string it returns.
func Explain(e *Event) string {
	switch {
	case e.Type == TypeReset:
		return explainReset(e)
	case e.Type == TypeListenOverflow && e.Cause == CauseBacklogFull:
		return explainOverflow(e)
	}
	if s, ok := explainAttempt(e); ok {
		return s
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
