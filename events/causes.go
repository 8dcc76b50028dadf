package events

// Cause is why a connection was refused.
type Cause string

const (
	// Nothing has listened on the port in that network namespace since
	// the tracer knew of it.
	CauseNoListener Cause = "no_listener"
	// A listener on the port was closed; Listener says by whom and when.
	CauseListenerClosed Cause = "listener_closed"
	// A listener holds the port in that netns, on another address or
	// address family.
	CauseWrongAddress Cause = "wrong_address"
	// The port is listened on, but in another network namespace.
	CauseOtherNetns Cause = "other_netns"
	// A process tried to bind the port and failed; Bind says why and who
	// holds the port.
	CauseBindFailed Cause = "bind_failed"
	// The listener's accept queue (or SYN queue) was full: the owner does
	// not call accept() fast enough, or the backlog is too small.
	CauseBacklogFull Cause = "backlog_full"
	// Nothing the tracer knows explains the refusal.
	CauseUnknown Cause = "unknown"

	// This host's packet filter (nftables/iptables `reject`) refused the
	// connection, with a RST or an ICMP error; Firewall says where.
	CauseFirewallReject Cause = "firewall_reject"
	// This host's packet filter dropped the SYNs (timeout, filtered).
	CauseFirewallDrop Cause = "firewall_drop"
	// Nothing answered the SYNs, and this host did not drop them.
	CauseNoResponse Cause = "no_response"
	// Another host refused a local client: a RST or ICMP error arrived in
	// SYN_SENT and neither this host's TCP stack nor its packet filter
	// sent it.
	CauseRemote Cause = "remote"
)
