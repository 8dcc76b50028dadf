package netfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Tuple is one direction of a connection as conntrack records it.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// NATEntry is a conntrack entry: the connection as the client sent it
// (Original: client → the address it used) and as the other end answers
// (Reply: backend → the address the backend sees the client as).
type NATEntry struct {
	Proto    uint8
	Original Tuple
	Reply    Tuple
	// State is the TCP conntrack state (SYN_SENT, ESTABLISHED, CLOSE, ...).
	State string
	// Status bits: Assured (traffic seen both ways, the entry is kept
	// under pressure), SeenReply, DstNAT and SrcNAT (the translations
	// done), Dying (being removed).
	Assured, SeenReply, DstNAT, SrcNAT, Dying bool
	// Timeout is the seconds left before the entry expires.
	Timeout uint32
}

// Backend is the translated destination: where the connection went.
func (e NATEntry) Backend() netip.AddrPort { return e.Reply.Src }

// ClientAsSeen is the source the backend sees (the client, or the
// masquerading address).
func (e NATEntry) ClientAsSeen() netip.AddrPort { return e.Reply.Dst }

// Conntrack is a connection to the conntrack table of one network
// namespace; reuse it for several lookups.
type Conntrack struct {
	c *conntrack.Conn
}

// OpenConntrack connects to conntrack in the namespace netnsFD refers to
// (0: the calling thread's).
func OpenConntrack(netnsFD int) (*Conntrack, error) {
	cfg := &netlink.Config{}
	if netnsFD > 0 {
		cfg.NetNS = netnsFD
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to conntrack: %w", err)
	}
	return &Conntrack{c: c}, nil
}

// Close closes the connection.
func (ct *Conntrack) Close() error { return ct.c.Close() }

// Lookup finds the entry whose original tuple is src → dst (the client's
// view). ok is false when there is none: never tracked, expired, or
// refused by a RST — conntrack deletes an entry whose only answer was a
// RST at once (tcp_packet in nf_conntrack_proto_tcp.c), so a refusal's
// translation must be looked up while its SYN is in flight, or taken
// from conntrack's destroy events. SYNs that were dropped or rejected
// with ICMP leave the entry in SYN_SENT (120 s).
func (ct *Conntrack) Lookup(proto uint8, src, dst netip.AddrPort) (NATEntry, bool, error) {
	return ct.get(proto, src, dst, false)
}

// LookupReply finds the entry whose reply tuple is backend → seenAs, from
// the backend's view of a connection (seenAs → backend), and so gives the
// original tuple the client used.
func (ct *Conntrack) LookupReply(proto uint8, seenAs, backend netip.AddrPort) (NATEntry, bool, error) {
	return ct.get(proto, backend, seenAs, true)
}

func (ct *Conntrack) get(proto uint8, src, dst netip.AddrPort, reply bool) (NATEntry, bool, error) {
	t := conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: src.Addr().Unmap(), DestinationAddress: dst.Addr().Unmap()},
		Proto: conntrack.ProtoTuple{Protocol: proto, SourcePort: src.Port(), DestinationPort: dst.Port()},
	}
	var q conntrack.Flow
	if reply {
		q.TupleReply = t
	} else {
		q.TupleOrig = t
	}
	f, err := ct.c.Get(q)
	if err != nil {
		var oe *netlink.OpError
		if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOENT) {
			return NATEntry{}, false, nil
		}
		return NATEntry{}, false, fmt.Errorf("looking up conntrack entry %s -> %s: %w", src, dst, err)
	}
	e := NATEntry{
		Proto:     f.TupleOrig.Proto.Protocol,
		Original:  tupleOf(f.TupleOrig),
		Reply:     tupleOf(f.TupleReply),
		Assured:   f.Status.Assured(),
		SeenReply: f.Status.SeenReply(),
		DstNAT:    f.Status.DstNAT(),
		SrcNAT:    f.Status.SrcNAT(),
		Dying:     f.Status.Dying(),
		Timeout:   f.Timeout,
	}
	if f.ProtoInfo.TCP != nil {
		e.State = tcpConntrackState(f.ProtoInfo.TCP.State)
	}
	return e, true, nil
}

func tupleOf(t conntrack.Tuple) Tuple {
	return Tuple{
		Src: netip.AddrPortFrom(t.IP.SourceAddress, t.Proto.SourcePort),
		Dst: netip.AddrPortFrom(t.IP.DestinationAddress, t.Proto.DestinationPort),
	}
}

// enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
var tcpStates = []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func tcpConntrackState(s uint8) string {
	if int(s) < len(tcpStates) {
		return tcpStates[s]
	}
	return "state " + strconv.Itoa(int(s))
}

// LookupNAT finds, in the namespace netnsFD refers to, the conntrack
// entry of a connection the client sent src → dst; see Conntrack.Lookup.
func LookupNAT(netnsFD int, proto uint8, src, dst netip.AddrPort) (NATEntry, bool, error) {
	ct, err := OpenConntrack(netnsFD)
	if err != nil {
		return NATEntry{}, false, err
	}
	defer ct.Close()
	return ct.Lookup(proto, src, dst)
}

// LookupNATReply finds the entry of a connection a backend sees as
// seenAs → backend; see Conntrack.LookupReply.
func LookupNATReply(netnsFD int, proto uint8, seenAs, backend netip.AddrPort) (NATEntry, bool, error) {
	ct, err := OpenConntrack(netnsFD)
	if err != nil {
		return NATEntry{}, false, err
	}
	defer ct.Close()
	return ct.LookupReply(proto, seenAs, backend)
}

// NATRule is a rule that rewrites a destination.
type NATRule struct {
	// Hook is prerouting (traffic from elsewhere) or output (local clients).
	Hook      string
	TableName string
	Family    string
	Chain     string
	Handle    uint64
	Comment   string
	Rule      string
	// To is the new destination when the rule names it (dnat to
	// ADDR:PORT); Addr alone when it keeps the port; both zero when a map
	// gives the target.
	To   netip.AddrPort
	Addr netip.Addr
}

// DNATRules lists, in evaluation order, the rules of the nat chains on
// prerouting and output that may rewrite a TCP connection to dst (its
// source unknown), following jumps as FindRule does (kube-proxy's
// KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-*, Docker's DOCKER chain), in
// the namespace netnsFD refers to.
func DNATRules(netnsFD int, dst netip.AddrPort) ([]NATRule, error) {
	rs, err := openRuleset(netnsFD)
	if err != nil {
		return nil, err
	}
	defer rs.close()
	return rs.dnatRules(dst)
}

func (rs *ruleset) dnatRules(dst netip.AddrPort) ([]NATRule, error) {
	family, fam := 4, nftables.TableFamilyIPv4
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		family, fam = 6, nftables.TableFamilyIPv6
	}
	q := Query{Family: family, Proto: unix.IPPROTO_TCP, Dst: dst, SYN: true}
	p := newPacket(q)
	// The source is not known: mark it so.
	if family == 6 {
		clear(p.nhK[8:24])
	} else {
		clear(p.nhK[12:16])
	}
	clear(p.thK[0:2])
	var out []NATRule
	for _, hookName := range []string{"prerouting", "output"} {
		hook := hooks[hookName]
		var base []*nftables.Chain
		for _, c := range rs.chains {
			if c.Hooknum != nil && *c.Hooknum == hook && c.Type == nftables.ChainTypeNAT &&
				(c.Table.Family == fam || c.Table.Family == nftables.TableFamilyINet) {
				base = append(base, c)
			}
		}
		sort.SliceStable(base, func(i, j int) bool { return *base[i].Priority < *base[j].Priority })
		for _, c := range base {
			w := &natWalker{rs: rs, p: p, hook: hookName, seen: map[chainKey]bool{}}
			if err := w.walk(c, 0, &out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

type natWalker struct {
	rs   *ruleset
	p    packet
	hook string
	seen map[chainKey]bool
}

func (w *natWalker) walk(c *nftables.Chain, depth int, out *[]NATRule) error {
	k := chainKey{keyOf(c.Table), c.Name}
	if depth > maxDepth || w.seen[k] {
		return nil
	}
	w.seen[k] = true
	rules, err := w.rs.rulesOf(c)
	if err != nil {
		return err
	}
	for _, r := range rules {
		ev, err := evalRule(r, w.p, w.rs.set)
		if err != nil {
			return err
		}
		if ev.match == triNo {
			continue
		}
		for _, o := range ev.outcomes {
			switch {
			case o.nat && (o.natKind == "dnat" || o.natKind == "redirect"):
				comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				if comment == "" {
					comment = ev.comment
				}
				*out = append(*out, NATRule{Hook: w.hook, TableName: r.Table.Name, Family: familyName(r.Table.Family),
					Chain: r.Chain.Name, Handle: r.Handle, Comment: comment, Rule: w.rs.render(r), To: o.natTo, Addr: o.natAddr})
			case o.kind == expr.VerdictJump || o.kind == expr.VerdictGoto:
				if to := w.rs.chain(c.Table, o.chain); to != nil {
					if err := w.walk(to, depth+1, out); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// xtNATTarget decodes an xtables DNAT/SNAT target's first range.
func xtNATTarget(t *expr.Target, fam nftables.TableFamily) (netip.Addr, netip.AddrPort) {
	var ipb []byte
	var port uint16
	const mapIPs, protoSpecified = 1, 2 // NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PROTO_SPECIFIED
	var flags uint
	switch info := t.Info.(type) {
	case *xt.NatRange:
		flags, ipb, port = info.Flags, info.MinIP, info.MinPort
	case *xt.NatRange2:
		flags, ipb, port = info.Flags, info.MinIP, info.MinPort
	case *xt.NatIPv4MultiRangeCompat:
		if len(*info) > 0 {
			r := (*info)[0]
			flags, ipb, port = r.Flags, r.MinIP, r.MinPort
		}
	}
	var addr netip.Addr
	if flags&mapIPs != 0 {
		if a, ok := netip.AddrFromSlice(ipb); ok {
			addr = a.Unmap()
			if a4 := ipb; fam == nftables.TableFamilyIPv4 && len(a4) == 16 && isV4Padded(a4) {
				addr = netip.AddrFrom4([4]byte(a4[:4]))
			}
		}
	}
	if addr.IsValid() && flags&protoSpecified != 0 {
		return addr, netip.AddrPortFrom(addr, port)
	}
	return addr, netip.AddrPort{}
}

// isV4Padded says whether a 16-byte nf_inet_addr holds an IPv4 address
// (the first four bytes, the rest zero).
func isV4Padded(b []byte) bool {
	for _, v := range b[4:] {
		if v != 0 {
			return false
		}
	}
	return true
}

func xtNATTo(t *expr.Target, fam nftables.TableFamily) (string, bool) {
	addr, to := xtNATTarget(t, fam)
	switch {
	case to.IsValid():
		return to.String(), true
	case addr.IsValid():
		return addr.String(), true
	}
	return "", false
}
