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
	var buf [320]byte
	s := appendRoute(buf[:0], e)
	if x, ok := explainAttempt(e); ok {
		if len(s) == 0 {
			return x
		}
		return string(append(s, x...))
	}
	return string(appendExplain(s, e))
}

// appendRoute says how the connection reached the place where it was
// refused, when that is not simply its destination: address translation
// (DNAT: a published port, a Kubernetes Service) rewrote the destination,
// or a userland proxy (docker-proxy) accepted the client and connected on
// its behalf. The cause that follows is the one found at Dst.
func appendRoute(s []byte, e *Event) []byte {
	if e.DstOriginal != nil && e.Proxy == nil {
		if e.Client != nil && e.Proxy == nil {
			s = appendProcessName(s, *e.Client)
		} else {
			s = append(s, "the client"...)
		}
		if e.ClientNetns != 0 && e.ClientNetns != e.Netns {
			s = append(s, " in netns "...)
			s = strconv.AppendUint(s, uint64(e.ClientNetns), 10)
		}
		s = append(s, " connected to "...)
		s = appendEndpointText(s, e.DstOriginal)
		s = append(s, ", which address translation (DNAT) rewrote to "...)
		s = appendEndpointText(s, e.Dst)
		s = append(s, "; there "...)
	}
	if p := e.Proxy; p != nil {
		s = appendProcessName(s, *p)
		s = append(s, " accepted the connection of "...)
		if e.Client != nil {
			s = appendProcessName(s, *e.Client)
		} else {
			s = append(s, "the client"...)
		}
		if e.DstOriginal != nil {
			s = append(s, " to "...)
			s = appendEndpointText(s, e.DstOriginal)
		}
		s = append(s, " and its own connection to "...)
		s = appendEndpointText(s, e.Dst)
		s = append(s, " was refused, so the client saw a reset or an empty reply: "...)
	}
	return s
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
		s = append(s, ' ')
		s = appendNetnsPlace(s, e.Netns, e.NetnsNames)
		return append(s, ", and nothing has since rsttrace started"...)
	case CauseListenerClosed:
		if l == nil {
			break
		}
		s = appendNothingOn(s, port)
		s = append(s, "; "...)
		s = appendProcessName(s, l.Process)
		other := l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid
		switch {
		case other && l.Exit != nil:
			// Exit is the closer's: the last holder of the socket died.
			s = append(s, " listened on it until "...)
			s = appendProcessName(s, *l.ClosedBy)
			s = append(s, ' ')
			s = appendExit(s, l.Exit)
			s = append(s, ", closing the socket "...)
		case l.Exit != nil:
			s = append(s, ' ')
			s = appendExit(s, l.Exit)
			s = append(s, ", closing its listener "...)
		case other:
			s = append(s, " listened on it until "...)
			s = appendProcessName(s, *l.ClosedBy)
			s = append(s, " closed the socket "...)
		default:
			s = append(s, " closed its listener "...)
		}
		return appendAgo(s, l.ClosedAt, e.Time)
	case CauseWrongAddress:
		if l == nil {
			break
		}
		s = appendProcessName(s, l.Process)
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
		// The listener's namespace names its container or pod: then
		// the process is named without them, once is enough.
		if n := l.NetnsNames; n != nil && (n.Container != nil || n.Pod != nil) {
			s = appendProcessBareName(s, l.Process)
		} else {
			s = appendProcessName(s, l.Process)
		}
		s = append(s, " listens on port "...)
		s = strconv.AppendInt(s, int64(port), 10)
		s = append(s, ' ')
		s = appendNetnsPlace(s, l.Netns, l.NetnsNames)
		s = append(s, ", not in "...)
		s = appendNetnsName(s, e.Netns, e.NetnsNames)
		return append(s, " where the connection arrived"...)
	case CauseBindFailed:
		if b == nil {
			break
		}
		s = appendNothingOn(s, port)
		s = append(s, ": "...)
		s = appendProcessName(s, b.Process)
		s = append(s, " failed to bind it with "...)
		s = append(s, b.Errno...)
		s = append(s, ' ')
		s = appendAgo(s, b.Time, e.Time)
		if b.Holder != nil {
			s = append(s, "; "...)
			s = appendProcessName(s, *b.Holder)
			s = append(s, " holds the port"...)
		}
		return s
	case CauseBacklogFull:
		s = append(s, "the accept queue of "...)
		if l != nil && l.Pid != 0 {
			s = appendProcessName(s, l.Process)
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
