package events

import (
	"strings"
)

// explainReset: who reset the connection, why, and who got ECONNRESET.
func explainReset(e *Event) string {
	sender := "the peer"
	if e.Src != nil {
		sender = string(appendHostPort(nil, e.Src.Addr, e.Src.Port))
	}
	if e.Process != nil {
		sender = e.Process.String()
	}
	var why string
	switch e.KernelReason {
	case "TCP_ABORT_ON_CLOSE":
		why = " closed its socket with unread data, so the kernel aborted the connection with a RST instead of a FIN: the application should read (or shutdown()) before close()"
	case "TCP_STATE":
		if e.Unaccepted {
			why = " closed its listener (or exited) while this connection waited in the accept queue: the kernel reset every connection not yet accept()ed"
			break
		}
		why = " aborted the connection (close() with SO_LINGER {1, 0}, or a disconnect): the kernel sends a RST instead of a FIN"
	case "TCP_ABORT_ON_LINGER":
		why = " closed its socket and the FIN_WAIT2 linger time (TCP_LINGER2) ran out"
	case "TCP_ABORT_ON_MEMORY":
		why = "'s kernel ran out of memory for orphaned sockets (net.ipv4.tcp_mem, tcp_max_orphans) and reset the connection"
	case "TCP_ABORT_ON_DATA":
		why = " got data after the application closed its socket, and answered with a RST"
	case "TCP_KEEPALIVE_TIMEOUT":
		why = " reset the connection because keepalive probes got no answer: the peer is gone or unreachable"
	case "TCP_TIMEOUT":
		why = " gave up retransmitting and reset the connection"
	case "NO_SOCKET":
		why = " got a segment for a connection it no longer has (the socket was closed or the process restarted) and answered with a RST"
	case "":
		if e.Process == nil && e.PeerProcess != nil {
			why = " reset the connection (the process there crashed, closed with unread data or aborted, or a middlebox/load balancer timed the connection out)"
		} else {
			why = " reset the connection"
		}
	default:
		why = " reset the connection (kernel: " + e.KernelReason + ")"
	}
	s := sender + why
	if e.PeerProcess != nil {
		s += "; " + e.PeerProcess.String() + " gets ECONNRESET"
	}
	return strings.TrimSpace(s)
}
