// Package events defines what rsttrace reports: the record types, the causes
// of a refusal, and the text and JSON Lines encoders.
//
// The JSON field names are a contract (schema version 1, see the README):
// fields may be added, none renamed.
package events

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"time"
)

// SchemaVersion is the version of the JSON Lines schema in the start record.
const SchemaVersion = 1

// Type says what a record is.
type Type string

const (
	TypeStart       Type = "start"        // first record, once every program is attached
	TypeStop        Type = "stop"         // last record, with the loss count
	TypeLost        Type = "lost"         // records were lost since the previous one
	TypeRefused     Type = "refused"      // a connection attempt was refused
	TypeListen      Type = "listen"       // a process started listening
	TypeListenClose Type = "listen_close" // a listener was closed
	TypeBindFailed  Type = "bind_failed"  // bind() failed on a TCP socket
	// A listener's queue overflowed: connection attempts were dropped
	// (one record per listener per interval while it lasts).
	TypeListenOverflow Type = "listen_overflow"

	// A local connect() got no answer: its SYNs were retransmitted until
	// it gave up.
	TypeTimeout Type = "timeout"
	// A RST ended an established connection.
	TypeReset Type = "reset"
	// This host's packet filter discarded a SYN whose sender is not a
	// local process the tracer saw: the sender got a RST if the rule
	// rejects with tcp reset, nothing if it drops.
	TypeFiltered Type = "filtered"

	// Refusals counted in the kernel instead of written one event each:
	// with --summary, or automatically while the ring buffer is more than
	// half full (a flood the tracer would otherwise fall behind on). One
	// record per network namespace and destination per interval.
	TypeSummary Type = "summary"
)

// Firewall is where this host's packet filter discarded the SYNs of a
// connection attempt, as far as the kernel says.
type Firewall struct {
	// Hook is the netfilter hook: prerouting, input, forward, output,
	// postrouting; empty when the kernel stack did not show it.
	Hook string `json:"hook,omitempty"`
	// Table is "nftables" when nft_do_chain dropped it (iptables-nft
	// included), empty when the kernel does not say.
	Table string `json:"table,omitempty"`
	// SYNs dropped for this connection attempt (retransmits included).
	SYNs uint32 `json:"syns,omitempty"`
	// The rule that gave the verdict, when the ruleset names one: its
	// table (with the table's family: ip, ip6, inet), chain, handle,
	// comment (kube-proxy and Docker write theirs there) and its text.
	TableName string `json:"table_name,omitempty"`
	Family    string `json:"family,omitempty"`
	Chain     string `json:"chain,omitempty"`
	Handle    uint64 `json:"handle,omitempty"`
	Comment   string `json:"comment,omitempty"`
	Rule      string `json:"rule,omitempty"`
}

// Attempt is how a connect() that got no usable answer went.
type Attempt struct {
	// Errno is what connect() returned (ETIMEDOUT, ECONNREFUSED), empty
	// when the client gave up (closed the socket) first.
	Errno string `json:"errno,omitempty"`
	// Retransmits counts the SYNs sent again after the first.
	Retransmits uint32 `json:"retransmits"`
	// WaitedMs is the time from connect() to the end of the attempt, to
	// a kernel tick (1-10 ms).
	WaitedMs int64 `json:"waited_ms"`
	// StillWaiting: the attempt had not ended when the event was written
	// (at shutdown, or after 10 minutes).
	StillWaiting bool `json:"still_waiting,omitempty"`
}

// Endpoint is one side of a connection.
type Endpoint struct {
	Addr netip.Addr `json:"addr"`
	Port uint16     `json:"port"`
}

// AddrPort returns the endpoint as a netip.AddrPort.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Addr, e.Port) }

// Process identifies a process: its pid (thread group id) and command name,
// and, where they exist, the names operators use for it: its executable,
// systemd unit, container and pod. Those are captured when the process did
// what the event reports (the pid may be gone when the event is written).
type Process struct {
	Pid  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// CommRaw holds the bytes of Comm when Comm is not valid UTF-8 (a
	// process may name itself anything): JSON strings replace invalid
	// bytes by U+FFFD, so "comm" alone loses them. In JSON it is base64
	// (standard alphabet, padded, as encoding/json writes a []byte; see
	// RawBytes). The JSON encoder derives it from
	// Comm: it is written exactly when Comm is not valid UTF-8, and what
	// is set here is ignored when encoding.
	CommRaw RawBytes `json:"comm_raw,omitempty"`
	// Exe is the path of the executable (/proc/PID/exe).
	Exe string `json:"exe,omitempty"`
	// ExeRaw is to Exe what CommRaw is to Comm: paths are bytes too.
	ExeRaw RawBytes `json:"exe_raw,omitempty"`
	// Unit is the systemd service or scope ("nginx.service").
	Unit      string     `json:"unit,omitempty"`
	Container *Container `json:"container,omitempty"`
	Pod       *Pod       `json:"pod,omitempty"`
}

// RawBytes are bytes that need not be text, kept in a string so that
// Process stays comparable. In JSON they are base64 (standard alphabet,
// padded), as encoding/json writes a []byte.
type RawBytes string

// MarshalText returns r in base64.
func (r RawBytes) MarshalText() ([]byte, error) {
	return base64.StdEncoding.AppendEncode(nil, []byte(r)), nil
}

// UnmarshalText decodes base64 into r.
func (r *RawBytes) UnmarshalText(text []byte) error {
	b, err := base64.StdEncoding.AppendDecode(nil, text)
	if err != nil {
		return fmt.Errorf("decoding raw bytes: %w", err)
	}
	*r = RawBytes(b)
	return nil
}

// Container is the container a process runs in, as its runtime names it.
type Container struct {
	ID string `json:"id"`
	// Runtime is docker, containerd, cri-o or podman.
	Runtime string `json:"runtime,omitempty"`
	// Name is the runtime's name for it, when the runtime answered.
	Name string `json:"name,omitempty"`
}

// Pod is the Kubernetes pod a container belongs to. Namespace and Name
// come from the node's CRI runtime socket; UID from the cgroup path.
type Pod struct {
	UID       string `json:"uid"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

// NetnsNames are the names users know a network namespace by.
type NetnsNames struct {
	// Name is its `ip netns` name (a bind mount in /run/netns).
	Name string `json:"name,omitempty"`
	// Container and Pod live in it.
	Container *Container `json:"container,omitempty"`
	Pod       *Pod       `json:"pod,omitempty"`
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit status when the process called exit().
	Code *int `json:"exit_code,omitempty"`
	// Signal is the name of the signal that killed it ("SIGSEGV").
	Signal     string `json:"signal,omitempty"`
	CoreDumped bool   `json:"core_dumped,omitempty"`
}

// ExitFromCode decodes a kernel task exit_code (as wait(2) reports it).
func ExitFromCode(code int32) *Exit {
	if sig := code & 0x7f; sig != 0 {
		return &Exit{Signal: SignalName(int(sig)), CoreDumped: code&0x80 != 0}
	}
	status := int(code>>8) & 0xff
	return &Exit{Code: &status}
}

// Listener is a listening socket and the process that owns it.
type Listener struct {
	Process
	Addr  netip.Addr `json:"addr"`
	Port  uint16     `json:"port"`
	Netns uint32     `json:"netns"`
	// NetnsNames names Netns, when it has names.
	NetnsNames *NetnsNames `json:"netns_names,omitempty"`
	// Backlog is the effective backlog (the accept queue holds Backlog+1).
	Backlog uint32 `json:"backlog,omitempty"`
	// BacklogRequested is what the program passed to listen(), when the
	// tracer saw the call; above Backlog when net.core.somaxconn clamped it.
	BacklogRequested uint32 `json:"backlog_requested,omitempty"`
	// Queued is the accept-queue length seen (listen_overflow only).
	Queued *uint32 `json:"queued,omitempty"`
	// V6Only is set for IPv6 listeners that refuse IPv4 (IPV6_V6ONLY).
	V6Only bool `json:"v6only,omitempty"`
	// Since is when it started listening, if the tracer saw it.
	Since time.Time `json:"since,omitzero"`
	// ClosedAt is when it stopped listening.
	ClosedAt time.Time `json:"closed_at,omitzero"`
	// ClosedBy is the process that dropped the last reference, when it is
	// not the owner (an inherited descriptor, for example).
	ClosedBy *Process `json:"closed_by,omitempty"`
	// Exit is set when the listener was closed because the process that
	// held it last (the owner, or ClosedBy) exited.
	*Exit
}

// Bind is a failed bind() call.
type Bind struct {
	Process
	Addr  netip.Addr `json:"addr"`
	Port  uint16     `json:"port"`
	Errno string     `json:"errno"`
	Time  time.Time  `json:"time"`
	// Holder is the process whose socket holds the port, when found.
	Holder *Process `json:"holder,omitempty"`
}

// Drops counts the connection attempts a listener dropped, by stage.
type Drops struct {
	// Total equals what the kernel counted in TcpExtListenDrops.
	Total uint64 `json:"total"`
	// SYNs dropped because the accept queue was full.
	SynAcceptQueueFull uint64 `json:"syn_accept_queue_full"`
	// SYNs dropped because the SYN queue was full (syncookies off).
	SynQueueFull uint64 `json:"syn_queue_full"`
	// Final ACKs (handshake completions) dropped: accept queue full.
	FinalAck uint64 `json:"final_ack"`
	// Other listen drops (out of memory, routing failure).
	Other uint64 `json:"other"`
}

// Attach says which kernel hook serves a capability.
type Attach struct {
	Capability string `json:"capability"`
	Hook       string `json:"hook,omitempty"`
	// Degraded is the reason a capability cannot be served on this kernel.
	Degraded string `json:"degraded,omitempty"`
	// Fallback, with Degraded, is how rsttrace does without it (less
	// detail, nothing missing).
	Fallback string `json:"fallback,omitempty"`
	// Waiting: the hook is loaded but attached only once this happens on
	// the host (until then nothing pays for it); it goes from later
	// records' plans once attached.
	Waiting string `json:"waiting,omitempty"`
}

// Event is one record of output. Which fields are set depends on Type.
type Event struct {
	Time  time.Time `json:"time"`
	Type  Type      `json:"type"`
	Netns uint32    `json:"netns,omitempty"`
	// NetnsNames names Netns, when it has names.
	NetnsNames *NetnsNames `json:"netns_names,omitempty"`
	// Src is the side that opened the connection, Dst the side refused.
	Src *Endpoint `json:"src,omitempty"`
	Dst *Endpoint `json:"dst,omitempty"`
	// DstOriginal is the destination the client used when address
	// translation (DNAT: a published port, a Service) rewrote it to Dst;
	// ClientNetns is then the client's namespace, when it differs.
	DstOriginal *Endpoint `json:"dst_original,omitempty"`
	ClientNetns uint32    `json:"client_netns,omitempty"`
	// Proxy is a userland proxy (docker-proxy) that accepted the client
	// and whose own connection to Dst was refused; Client is then the
	// process that reached the proxy, which saw a reset or an empty reply.
	Proxy *Process `json:"proxy,omitempty"`

	Cause        Cause  `json:"cause,omitempty"`
	Explanation  string `json:"explanation,omitempty"`
	KernelReason string `json:"kernel_reason,omitempty"`
	// Client is the process that called connect(), when it is on this host.
	Client   *Process  `json:"client,omitempty"`
	Listener *Listener `json:"listener,omitempty"`
	Bind     *Bind     `json:"bind,omitempty"`

	// refused (firewall_reject, remote), timeout, filtered, reset:
	// Answer is how the refusal reached the client: "tcp_reset" (a RST)
	// or "icmp" (an ICMP error, e.g. port unreachable).
	Answer   string    `json:"answer,omitempty"`
	Firewall *Firewall `json:"firewall,omitempty"`
	Attempt  *Attempt  `json:"attempt,omitempty"`
	// reset: Process sent the RST (when local), PeerProcess received it.
	Process     *Process `json:"process,omitempty"`
	PeerProcess *Process `json:"peer_process,omitempty"`
	// reset: the TCP state of the socket that sent or received the RST.
	State string `json:"state,omitempty"`
	// reset: the sending socket was never accept()ed: its listener was
	// closed with the connection still in the accept queue.
	Unaccepted bool `json:"unaccepted,omitempty"`

	// listen_overflow: drops in the interval that ends at Time, and how
	// long the owner has not called accept() (when the tracer knows).
	Dropped      *Drops `json:"dropped,omitempty"`
	IntervalMs   int64  `json:"interval_ms,omitempty"`
	AcceptIdleMs *int64 `json:"accept_idle_ms,omitempty"`
	// NeverAccepted: the owner has not called accept() on it since it
	// started listening (AcceptIdleMs is then the time since listen()).
	NeverAccepted bool `json:"never_accepted,omitempty"`
	// Somaxconn is net.core.somaxconn in the namespace, given when it
	// clamped the backlog the program asked for.
	Somaxconn uint32 `json:"somaxconn,omitempty"`

	// summary: how many refusals to Dst in Netns were counted in the
	// IntervalMs that ends at Time; Cause, Explanation and Listener are
	// those a refusal to Dst would get at Time. Refusals by this host's
	// TCP stack, else (nothing here sent a RST) those local clients got.
	Refusals uint64 `json:"refusals,omitempty"`
	// SummaryOf: what a summary counts, the type of the events it stands
	// for ("refused", "filtered", "reset", "timeout"); Refusals is then
	// the count of those events (dropped SYNs for "filtered").
	SummaryOf string `json:"summary_of,omitempty"`

	// start
	Version int      `json:"version,omitempty"`
	Kernel  string   `json:"kernel,omitempty"`
	Plan    []Attach `json:"plan,omitempty"`
	Ports   []uint16 `json:"ports,omitempty"`

	// stop and lost: Lost is records lost (stop: in all; lost: since the
	// previous lost record), Events the records written.
	Lost   *uint64 `json:"lost,omitempty"`
	Events uint64  `json:"events,omitempty"`
	// stop: refusals written in summary records instead of one each, and
	// the same for the other kinds flood control summarizes.
	Summarized         uint64 `json:"summarized,omitempty"`
	SummarizedFiltered uint64 `json:"summarized_filtered,omitempty"`
	SummarizedResets   uint64 `json:"summarized_resets,omitempty"`
	SummarizedTimeouts uint64 `json:"summarized_timeouts,omitempty"`
}
