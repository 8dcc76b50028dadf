// Package diagnose answers "why is this port refused?" in one pass: the
// checklist an operator runs by hand at 3 a.m. (ss -ltnp in every network
// namespace, nft list ruleset, the NAT table, netstat -s, the logs), run
// at once and reduced to a verdict with its evidence.
//
// Gather reads the host (sock_diag in every network namespace, owners
// from /proc, the nftables ruleset, a recorded rsttrace output file) and
// makes one real connection attempt per target, traced by the same BPF
// programs the tracer runs; Judge, pure, turns those facts into a verdict.
package diagnose

import (
	"net/netip"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Cause says why a target is not reachable ("reachable" when it is).
type Cause string

const (
	CauseReachable Cause = "reachable"
	// Nothing listens on the port in the target's network namespace.
	CauseNoListener Cause = "no_listener"
	// Something listens on the port there, on another address.
	CauseWrongAddress Cause = "wrong_address"
	// An IPv6 listener with IPV6_V6ONLY holds [::]:PORT; the target is
	// an IPv4 address.
	CauseIPv6Only Cause = "ipv6_only"
	// The port is listened on, in another network namespace only.
	CauseOtherNetns Cause = "other_netns"
	// A socket is bound to the port there, but listen() was not called.
	CauseBoundNotListening Cause = "bound_not_listening"
	// A process failed to bind the port (recorded by a running rsttrace).
	CauseBindFailed Cause = "bind_failed"
	// A firewall rule rejects (RST or ICMP error) or drops the SYN.
	CauseFirewallReject Cause = "firewall_reject"
	CauseFirewallDrop   Cause = "firewall_drop"
	// Address translation (DNAT) sends the connection to a backend where
	// nothing listens.
	CauseNATDeadBackend Cause = "nat_dead_backend"
	// The listener's accept queue is full: its owner does not accept().
	CauseBacklogFull Cause = "backlog_full"
	// The probe failed and nothing found explains it.
	CauseUnknown Cause = "unknown"
)

// Report is the answer, and the JSON document `rsttrace why -o json`
// writes (one object). Fields may be added, none renamed.
type Report struct {
	// Time is when the diagnosis ran.
	Time time.Time `json:"time"`
	// Port is the port asked about; Addr the address, when one was given.
	Port uint16     `json:"port"`
	Addr netip.Addr `json:"addr,omitzero"`
	// Verdict is "reachable", "refused" (a RST or ICMP error), "dropped"
	// (the SYN went unanswered) or "unreachable" (the probe could not be
	// made). It is Targets[0]'s unless every target is reachable.
	Verdict string `json:"verdict"`
	Cause   Cause  `json:"cause"`
	// Summary is the verdict as one sentence (the first line of text).
	Summary string `json:"summary"`
	// Targets are the (namespace, address) pairs judged, worst first.
	Targets []Target `json:"targets"`
	// Listeners on the port in every network namespace.
	Listeners []Listener `json:"listeners"`
	// Bound are sockets bound to the port that do not listen.
	Bound []Bound `json:"bound,omitempty"`
	// Queues is the listen-queue health of each namespace with a listener.
	Queues []Queue `json:"queues,omitempty"`
	// History is what the recorded output file says about the port,
	// newest first (at most 10 records); HistoryFile is where it was read.
	History     []*events.Event `json:"history,omitempty"`
	HistoryFile string          `json:"history_file,omitempty"`
	// Todo is what to do, one line per cause found.
	Todo []string `json:"todo,omitempty"`
	// Notes are things that were not checked, and why.
	Notes []string `json:"notes,omitempty"`
	// Exit is the exit status: 0 reachable, 1 otherwise.
	Exit int `json:"exit"`
}

// Target is one destination as seen from one network namespace, and what
// was found on its path.
type Target struct {
	Netns      uint32             `json:"netns"`
	NetnsNames *events.NetnsNames `json:"netns_names,omitempty"`
	Dst        netip.AddrPort     `json:"dst"`
	Verdict    string             `json:"verdict"`
	Cause      Cause              `json:"cause"`
	Summary    string             `json:"summary"`
	// Listener is the listener the verdict names (the one that covers
	// Dst, or the nearest one: another address, another namespace).
	Listener *Listener `json:"listener,omitempty"`
	// Bound is the bound, not listening, socket the verdict names.
	Bound *Bound `json:"bound,omitempty"`
	// BindFailed is the recorded failed bind the verdict names.
	BindFailed *events.Event `json:"bind_failed,omitempty"`
	// Firewall are the rules on the input and output hooks that match a
	// SYN to Dst with a reject or drop verdict (the first of each).
	Firewall []Rule `json:"firewall,omitempty"`
	// NAT are the DNAT rules that may rewrite Dst, in evaluation order.
	NAT []NAT `json:"nat,omitempty"`
	// Probe is the connection attempt made, nil with --no-probe.
	Probe *Probe `json:"probe,omitempty"`
}

// Listener is a listening socket found now.
type Listener struct {
	events.Listener
	// Family is "ipv4" or "ipv6".
	Family string `json:"family"`
	// Drops is the socket's drop counter (sk_drops) since it was made.
	Drops uint32 `json:"drops"`
	// Somaxconn is net.core.somaxconn in its namespace, -1 if unknown.
	Somaxconn int `json:"somaxconn"`
	// Full: the accept queue holds Backlog+1 connections (Queued is set).
	Full bool   `json:"full,omitempty"`
	Ino  uint64 `json:"inode"`
}

// Bound is a socket bound to the port that neither listens nor connects.
type Bound struct {
	events.Process
	Addr  netip.Addr         `json:"addr"`
	Port  uint16             `json:"port"`
	Netns uint32             `json:"netns"`
	Names *events.NetnsNames `json:"netns_names,omitempty"`
	Ino   uint64             `json:"inode"`
}

// Rule is a packet filter rule on the path.
type Rule struct {
	// Hook is input or output; Verdict reject or drop.
	Hook    string `json:"hook"`
	Verdict string `json:"verdict"`
	events.Firewall
}

// NAT is a DNAT rule that may rewrite the destination.
type NAT struct {
	Hook    string `json:"hook"`
	Table   string `json:"table"`
	Family  string `json:"family"`
	Chain   string `json:"chain"`
	Handle  uint64 `json:"handle"`
	Comment string `json:"comment,omitempty"`
	Rule    string `json:"rule"`
	// To is the new destination, when the rule names it.
	To netip.AddrPort `json:"to,omitzero"`
	// Backend says whether something listens at To in the namespace:
	// "listening", "nothing listens", or "" when To is not known or not
	// on this host.
	Backend string `json:"backend,omitempty"`
}

// Queue is the listen-queue health of a network namespace.
type Queue struct {
	Netns uint32 `json:"netns"`
	// Overflows and Drops are TcpExtListenOverflows and TcpExtListenDrops
	// since the namespace was made.
	Overflows uint64 `json:"listen_overflows"`
	Drops     uint64 `json:"listen_drops"`
	Somaxconn int    `json:"somaxconn"`
}

// Probe is one real connection attempt and what the kernel did with it.
type Probe struct {
	Src netip.AddrPort `json:"src,omitzero"`
	Dst netip.AddrPort `json:"dst"`
	// Outcome is "accepted", "refused", "reset", "timeout" or "error".
	Outcome string `json:"outcome"`
	// Errno is what connect() reported (ECONNREFUSED), empty if accepted
	// or timed out.
	Errno    string `json:"errno,omitempty"`
	WaitedMs int64  `json:"waited_ms"`
	// Event is the tracer's record of the attempt (refused, timeout,
	// reset), with its cause and explanation; nil when accepted.
	Event *events.Event `json:"event,omitempty"`
	// Error is why the probe could not be made.
	Error string `json:"error,omitempty"`
}
