// Package record is what the BPF programs write into the ring buffer, as Go
// sees it: one fixed-size record per kernel observation, its type tag and
// flags, and the decoder from ring buffer bytes.
//
// The record is struct record of bpf/rsttrace.h. Its Go twin here is
// written by hand so that the packages that interpret records (the
// correlator above all) depend on nothing but the standard library; the
// bpfobj package's tests check that this twin has exactly the size, field
// order and offsets of the type bpf2go generates from the C header, and
// that every tag and flag has the C value.
package record

import (
	"fmt"
	"net/netip"
	"structs"
	"unsafe"
)

// Type is what a record reports (enum record_type).
type Type uint8

// Record types. Values are those of enum record_type in bpf/rsttrace.h.
const (
	// ResetSent: the TCP stack answered a segment with a RST
	// (tcp:tcp_send_reset); the refusal's server side.
	ResetSent Type = 1
	// ClientRefused: a local connect() in SYN_SENT received a RST
	// (tcp:tcp_receive_reset); the refusal's client side.
	ClientRefused Type = 2
	// Listen: a socket entered LISTEN.
	Listen Type = 3
	// ListenClose: a listener left LISTEN.
	ListenClose Type = 4
	// Bind: bind() on a TCP socket returned.
	Bind Type = 5
	// ListenUpdate: listen() again on a listener changed its backlog.
	ListenUpdate Type = 6
	// FirewallDrop: the packet filter dropped a TCP SYN.
	FirewallDrop Type = 10
	// ConnectFailed: a local connect() ended in SYN_SENT->CLOSE with an
	// error, or after retransmitting.
	ConnectFailed Type = 11
	// SynRetransmit: a local connect() sent its SYN again.
	SynRetransmit Type = 12
	// ResetOut: this host sent a RST on an existing connection.
	ResetOut Type = 13
	// ResetIn: a local socket past SYN_SENT received a RST.
	ResetIn Type = 14
)

// Types lists every record type, for the decoder and its tests.
var Types = []Type{ResetSent, ClientRefused, Listen, ListenClose, Bind, ListenUpdate,
	FirewallDrop, ConnectFailed, SynRetransmit, ResetOut, ResetIn}

// Known reports whether t is a record type this decoder understands.
func (t Type) Known() bool {
	switch t {
	case ResetSent, ClientRefused, Listen, ListenClose, Bind, ListenUpdate,
		FirewallDrop, ConnectFailed, SynRetransmit, ResetOut, ResetIn:
		return true
	}
	return false
}

// Flag is a bit of Record.Flags (enum record_flag).
type Flag = uint32

// Record flags. Values are those of enum record_flag in bpf/rsttrace.h.
const (
	// FlagProcKnown: Proc was recorded when the socket was made
	// (connect, listen, accept), not taken from the interrupted context.
	FlagProcKnown Flag = 1 << 0
	// FlagExiting: the closing task was exiting; ExitCode is valid.
	FlagExiting Flag = 1 << 1
	// FlagNoSkb: the RST answered no segment (an active reset).
	FlagNoSkb Flag = 1 << 2
	// FlagHasSk: tcp_send_reset was given a socket.
	FlagHasSk Flag = 1 << 3
	// FlagV6Only: the IPv6 socket is IPV6_V6ONLY.
	FlagV6Only Flag = 1 << 4
	// FlagFirewallICMP: the packet filter answered the dropped SYN with
	// an ICMP error (a reject).
	FlagFirewallICMP Flag = 1 << 8
	// FlagFirewallNFT: nft_do_chain dropped it (nftables, iptables-nft).
	FlagFirewallNFT Flag = 1 << 9
	// FlagCurrent: Proc is the task that sent the RST (process context).
	FlagCurrent Flag = 1 << 10
	// FlagOwnerKnown: Proc is the socket's owner, recorded in the kernel
	// when the socket was made (connect, listen, accept).
	FlagOwnerKnown Flag = 1 << 11
	// FlagNAT: ResetSent whose SYN was translated on this host (DNAT,
	// SNAT/masquerade); the Orig* fields hold the connection as the client
	// made it, NatNetns the namespace that translated it.
	FlagNAT Flag = 1 << 12

	// FlagSenderSeen: on ClientRefused and ResetIn, this host's TCP
	// stack sent the RST and its record (ResetSent, ResetOut) was written
	// before this one: the two are one connection's two sides.
	FlagSenderSeen Flag = 1 << 16
	// FlagSelfAbort: on ResetOut, a socket killed by a segment it could
	// not take (data after shutdown) answered it; the ResetIn its kernel
	// reported just before for the same socket was no RST received.
	FlagSelfAbort Flag = 1 << 17
)

// Flags lists every flag, for the bpfobj consistency test.
var Flags = []Flag{FlagProcKnown, FlagExiting, FlagNoSkb, FlagHasSk, FlagV6Only,
	FlagFirewallICMP, FlagFirewallNFT, FlagCurrent, FlagOwnerKnown, FlagNAT, FlagSenderSeen, FlagSelfAbort}

// Address families of Record.Family.
const (
	AFInet  = 2
	AFInet6 = 10
)

// Proc is the process a record names (struct proc_info).
type Proc struct {
	_    structs.HostLayout
	Pid  uint32
	Tid  uint32
	Comm [16]int8
	// CgroupId is the process's cgroup v2 id (the inode of its cgroup
	// directory on cgroup2), Mntns its mount namespace inode: captured
	// when it acted, so its container and unit can be named after it
	// exited.
	CgroupId uint64
	Mntns    uint32
	Pad      uint32
}

// Record is one kernel record (struct record). Addresses are in network
// order, IPv4 in the first four bytes; ports in host order. Which fields
// are meaningful depends on Type: see bpf/rsttrace.h.
type Record struct {
	_          structs.HostLayout
	Type       Type
	Family     uint8
	TcpFlags   uint8
	State      uint8
	Flags      uint32
	Ts         uint64
	Netns      uint32
	Reason     uint32
	Saddr      [16]uint8
	Daddr      [16]uint8
	Sport      uint16
	Dport      uint16
	Ret        int32
	Backlog    uint32
	ExitCode   int32
	BacklogReq uint32
	Aux        uint32
	Ino        uint64
	Sk         uint64
	Proc       Proc
	// NetnsCookie is the network namespace's cookie (net->net_cookie):
	// unlike its inode number, never reused; 0 where the kernel has none.
	NetnsCookie uint64

	// Address translation (FlagNAT; zero otherwise): the refused SYN as the
	// client sent it (conntrack's original tuple: client -> the address it
	// connected to), in Family, ports in host order, and the namespace
	// whose netfilter translated it.
	OrigSaddr      [16]uint8
	OrigDaddr      [16]uint8
	OrigSport      uint16
	OrigDport      uint16
	NatNetns       uint32
	NatNetnsCookie uint64
	// End of address translation fields.
}

// Size is the size of a record in bytes.
const Size = int(unsafe.Sizeof(Record{}))

// Decode copies a raw ring buffer sample into r. The sample must hold at
// least one whole record of a known type; the kernel pads samples to 8
// bytes, so longer samples are accepted.
func Decode(raw []byte, r *Record) error {
	if len(raw) < Size {
		return fmt.Errorf("short record: %d bytes, want %d", len(raw), Size)
	}
	// The layout is the C struct's, little endian on every architecture
	// bpf2go builds for (bpfel), with no pointers inside: a copy of the
	// bytes is the decode.
	copy(unsafe.Slice((*byte)(unsafe.Pointer(r)), Size), raw)
	if !r.Type.Known() {
		return fmt.Errorf("unknown record type %d", r.Type)
	}
	if r.Family != AFInet && r.Family != AFInet6 && r.Type != ListenClose {
		return fmt.Errorf("record type %d: unknown address family %d", r.Type, r.Family)
	}
	return nil
}

// Addr converts a record address to netip.Addr by the record's family.
func Addr(family uint8, b *[16]uint8) netip.Addr {
	if family == AFInet {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(*b)
}

// Src and Dst are the record's addresses and ports.
func (r *Record) Src() netip.AddrPort {
	return netip.AddrPortFrom(Addr(r.Family, &r.Saddr), r.Sport)
}

func (r *Record) Dst() netip.AddrPort {
	return netip.AddrPortFrom(Addr(r.Family, &r.Daddr), r.Dport)
}

// OrigSrc and OrigDst are the connection as the client made it, before
// address translation (FlagNAT).
func (r *Record) OrigSrc() netip.AddrPort {
	return netip.AddrPortFrom(Addr(r.Family, &r.OrigSaddr), r.OrigSport)
}

func (r *Record) OrigDst() netip.AddrPort {
	return netip.AddrPortFrom(Addr(r.Family, &r.OrigDaddr), r.OrigDport)
}

// CommString is a kernel command name as a string.
func CommString(c *[16]int8) string {
	n := 0
	for n < len(c) && c[n] != 0 {
		n++
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(c[i])
	}
	return string(b)
}

// HookID is the netfilter hook of a FirewallDrop record, in Aux (enum
// nf_hook_id): found by the function on the kernel stack that ran NF_HOOK.
type HookID uint32

// Netfilter hooks, as enum nf_hook_id numbers them.
const (
	HookUnknown     HookID = 0
	HookPrerouting  HookID = 1
	HookInput       HookID = 2
	HookForward     HookID = 3
	HookOutput      HookID = 4
	HookPostrouting HookID = 5
	// HookNFT is not a hook: it marks nft_do_chain in the code ranges.
	HookNFT HookID = 16
)

// Name is the hook's name as nft spells it, or "" when unknown.
func (h HookID) Name() string {
	switch h {
	case HookPrerouting:
		return "prerouting"
	case HookInput:
		return "input"
	case HookForward:
		return "forward"
	case HookOutput:
		return "output"
	case HookPostrouting:
		return "postrouting"
	}
	return ""
}
