package netfilter

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tri is what is known about a match: it excludes the packet, it may
// match (it depends on something the packet's addresses do not say), or
// it matches.
type tri int8

const (
	triNo tri = iota
	triMaybe
	triYes
)

func minTri(a, b tri) tri {
	if a < b {
		return a
	}
	return b
}

// regs is the nft register file as nft_regs lays it out: four 16-byte
// registers (NFT_REG_1..4) overlaid by sixteen 4-byte ones
// (NFT_REG32_00..15), after the 16-byte verdict. known marks the bytes
// the evaluator could compute from the packet; the rest is unknown.
type regs struct {
	b [80]byte
	k [80]bool
}

// regOffset maps a register number to its byte offset, as
// nft_parse_register does.
func regOffset(reg uint32) (int, bool) {
	switch {
	case reg >= unix.NFT_REG_1 && reg <= unix.NFT_REG_4:
		return int(reg) * 16, true
	case reg >= unix.NFT_REG32_00 && reg <= unix.NFT_REG32_15:
		return 16 + int(reg-unix.NFT_REG32_00)*4, true
	}
	return 0, false
}

func (r *regs) set(reg uint32, data []byte, known []bool) {
	off, ok := regOffset(reg)
	if !ok {
		return
	}
	// Loads are padded to 4 bytes (NFT_REG32_SIZE); the padding is zero.
	n := (len(data) + 3) &^ 3
	for i := 0; i < n && off+i < len(r.b); i++ {
		if i < len(data) {
			r.b[off+i] = data[i]
			r.k[off+i] = known == nil || known[i]
		} else {
			r.b[off+i], r.k[off+i] = 0, true
		}
	}
}

func (r *regs) unknown(reg uint32, n int) {
	off, ok := regOffset(reg)
	if !ok {
		return
	}
	for i := 0; i < n && off+i < len(r.k); i++ {
		r.k[off+i] = false
	}
}

func (r *regs) get(reg uint32, n int) ([]byte, []bool) {
	off, ok := regOffset(reg)
	if !ok || off+n > len(r.b) {
		return make([]byte, n), make([]bool, n)
	}
	return r.b[off : off+n], r.k[off : off+n]
}

func allKnown(k []bool) bool {
	for _, v := range k {
		if !v {
			return false
		}
	}
	return true
}

// packet is what the evaluator knows of the SYN: its network and
// transport headers with only the fields the query gives marked known,
// and its conntrack state.
type packet struct {
	family  int // 4 or 6
	nh, th  []byte
	nhK     []bool
	thK     []bool
	l4proto byte
	ctState uint32
}

func newPacket(q Query) packet {
	p := packet{family: q.Family, l4proto: q.Proto, ctState: expr.CtStateBitNEW}
	if q.CtState != 0 {
		p.ctState = q.CtState
	}
	mark := func(k []bool, off, n int) {
		for i := off; i < off+n; i++ {
			k[i] = true
		}
	}
	if q.Family == 6 {
		p.nh, p.nhK = make([]byte, 40), make([]bool, 40)
		p.nh[0] = 0x60
		p.nh[6] = q.Proto
		mark(p.nhK, 6, 1)
		if a := q.Src.Addr(); a.IsValid() {
			s := a.As16()
			copy(p.nh[8:], s[:])
			mark(p.nhK, 8, 16)
		}
		if a := q.Dst.Addr(); a.IsValid() {
			d := a.As16()
			copy(p.nh[24:], d[:])
			mark(p.nhK, 24, 16)
		}
	} else {
		p.nh, p.nhK = make([]byte, 20), make([]bool, 20)
		p.nh[0] = 0x45
		p.nh[9] = q.Proto
		mark(p.nhK, 9, 1)
		// An address of the other family (or none) stays unknown.
		if a := q.Src.Addr().Unmap(); a.Is4() {
			s := a.As4()
			copy(p.nh[12:], s[:])
			mark(p.nhK, 12, 4)
		}
		if a := q.Dst.Addr().Unmap(); a.Is4() {
			d := a.As4()
			copy(p.nh[16:], d[:])
			mark(p.nhK, 16, 4)
		}
	}
	p.th, p.thK = make([]byte, 20), make([]bool, 20)
	binary.BigEndian.PutUint16(p.th[0:], q.Src.Port())
	binary.BigEndian.PutUint16(p.th[2:], q.Dst.Port())
	mark(p.thK, 0, 4)
	if q.Proto == unix.IPPROTO_TCP && q.SYN {
		p.th[13] = 0x02 // SYN alone
		mark(p.thK, 13, 1)
	}
	return p
}

// setData is a set's elements as the evaluator needs them.
type setData struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// setSource finds a set of the rule's table by name (or id).
type setSource func(t *nftables.Table, name string, id uint32) (*setData, error)

// outcome is a verdict a rule may give.
type outcome struct {
	kind  expr.VerdictKind
	chain string // jump, goto
	// reject: the packet is dropped and an answer sent; rejectText
	// describes it ("tcp reset", "icmpx port-unreachable").
	reject     bool
	rejectText string
	// nat: a NAT statement ended the chain (accept for filtering); natKind
	// is dnat, snat, masquerade or redirect, natTo its target when
	// immediates give it (the zero value for mapped targets).
	nat     bool
	natKind string
	natTo   netip.AddrPort
	natAddr netip.Addr
	// comment is the comment of the verdict map element that gave it
	// (kube-proxy names the Service there).
	comment string
	// sure: this outcome follows whenever the rule matches (not one of
	// several elements of a verdict map).
	sure bool
}

// ruleEval is what evaluating one rule against the packet gave.
type ruleEval struct {
	match    tri
	outcomes []outcome
	comment  string // xt comment match
}

// evalRule runs the rule's expressions over what is known of the packet.
// Expressions it does not model "may match" and leave their destination
// register unknown.
func evalRule(r *nftables.Rule, p packet, sets setSource) (ruleEval, error) {
	var rg regs
	res := ruleEval{match: triYes}
	and := func(t tri) bool {
		res.match = minTri(res.match, t)
		return res.match != triNo
	}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				continue
			}
			var hdr []byte
			var known []bool
			switch e.Base {
			case expr.PayloadBaseNetworkHeader:
				hdr, known = p.nh, p.nhK
			case expr.PayloadBaseTransportHeader:
				hdr, known = p.th, p.thK
			}
			off, n := int(e.Offset), int(e.Len)
			if hdr == nil || off+n > len(hdr) {
				rg.unknown(e.DestRegister, n)
				continue
			}
			rg.set(e.DestRegister, hdr[off:off+n], known[off:off+n])
		case *expr.Meta:
			if e.SourceRegister {
				continue
			}
			switch e.Key {
			case expr.MetaKeyL4PROTO:
				rg.set(e.Register, []byte{p.l4proto}, nil)
			case expr.MetaKeyNFPROTO:
				v := byte(unix.NFPROTO_IPV4)
				if p.family == 6 {
					v = unix.NFPROTO_IPV6
				}
				rg.set(e.Register, []byte{v}, nil)
			case expr.MetaKeyPROTOCOL:
				v := []byte{0x08, 0x00}
				if p.family == 6 {
					v = []byte{0x86, 0xdd}
				}
				rg.set(e.Register, v, nil)
			default:
				rg.unknown(e.Register, 16)
			}
		case *expr.Ct:
			if e.SourceRegister {
				continue
			}
			if e.Key == expr.CtKeySTATE {
				b := make([]byte, 4)
				binary.NativeEndian.PutUint32(b, p.ctState)
				rg.set(e.Register, b, nil)
			} else {
				rg.unknown(e.Register, 16)
			}
		case *expr.Immediate:
			rg.set(e.Register, e.Data, nil)
		case *expr.Bitwise:
			src, sk := rg.get(e.SourceRegister, int(e.Len))
			out, ok := make([]byte, e.Len), make([]bool, e.Len)
			for i := range out {
				var m, x byte = 0xff, 0
				if i < len(e.Mask) {
					m = e.Mask[i]
				}
				if i < len(e.Xor) {
					x = e.Xor[i]
				}
				out[i] = src[i]&m ^ x
				ok[i] = sk[i] || m == 0
			}
			rg.set(e.DestRegister, out, ok)
		case *expr.Cmp:
			v, k := rg.get(e.Register, len(e.Data))
			if !and(cmpTri(e.Op, v, k, e.Data)) {
				return res, nil
			}
		case *expr.Range:
			v, k := rg.get(e.Register, len(e.FromData))
			t := triMaybe
			if allKnown(k) {
				in := bytes.Compare(v, e.FromData) >= 0 && bytes.Compare(v, e.ToData) <= 0
				t = boolTri(in == (e.Op == expr.CmpOpEq))
			}
			if !and(t) {
				return res, nil
			}
		case *expr.Lookup:
			sd, err := sets(r.Table, e.SetName, e.SetID)
			if err != nil {
				return res, err
			}
			if sd == nil {
				and(triMaybe)
				continue
			}
			keyLen := keyLength(sd)
			v, k := rg.get(e.SourceRegister, keyLen)
			hits := lookupSet(sd, v, k)
			t := triNo
			for _, h := range hits {
				if h.t > t {
					t = h.t
				}
			}
			if e.Invert {
				t = triYes - t
			}
			if !and(t) {
				return res, nil
			}
			if !e.IsDestRegSet || e.Invert {
				continue
			}
			if e.DestRegister == unix.NFT_REG_VERDICT {
				for _, h := range hits {
					if vd := elemVerdict(h.e); vd != nil {
						res.outcomes = append(res.outcomes, outcome{kind: vd.Kind, chain: vd.Chain, comment: h.e.Comment, sure: h.t == triYes && len(hits) == 1})
					}
				}
				if len(res.outcomes) > 0 {
					return res, nil
				}
				continue
			}
			if len(hits) == 1 && hits[0].t == triYes {
				rg.set(e.DestRegister, hits[0].e.Val, nil)
			} else {
				rg.unknown(e.DestRegister, 16)
			}
		case *expr.Verdict:
			res.outcomes = append(res.outcomes, outcome{kind: e.Kind, chain: e.Chain, sure: true})
			return res, nil
		case *expr.Reject:
			res.outcomes = append(res.outcomes, outcome{kind: expr.VerdictDrop, reject: true, rejectText: rejectText(e, r.Table.Family), sure: true})
			return res, nil
		case *expr.NAT:
			o := outcome{kind: expr.VerdictAccept, nat: true, natKind: "snat", sure: true}
			if e.Type == expr.NATTypeDestNAT {
				o.natKind = "dnat"
			}
			o.natAddr, o.natTo = natRegs(e, &rg)
			res.outcomes = append(res.outcomes, o)
			return res, nil
		case *expr.Masq:
			res.outcomes = append(res.outcomes, outcome{kind: expr.VerdictAccept, nat: true, natKind: "masquerade", sure: true})
			return res, nil
		case *expr.Redir:
			res.outcomes = append(res.outcomes, outcome{kind: expr.VerdictAccept, nat: true, natKind: "redirect", sure: true})
			return res, nil
		case *expr.Match:
			t, comment := xtMatch(e, p)
			if comment != "" {
				res.comment = comment
			}
			if !and(t) {
				return res, nil
			}
		case *expr.Target:
			if o, ok := xtTarget(e, r.Table.Family); ok {
				res.outcomes = append(res.outcomes, o)
				return res, nil
			}
		case *expr.Fib:
			rg.unknown(e.Register, 16)
		case *expr.Exthdr:
			rg.unknown(e.DestRegister, int(e.Len))
		case *expr.Rt:
			rg.unknown(e.Register, 16)
		case *expr.Socket:
			rg.unknown(e.Register, 16)
		case *expr.Hash:
			rg.unknown(e.DestRegister, 4)
		case *expr.Numgen:
			rg.unknown(e.Register, 4)
		case *expr.Limit, *expr.Quota, *expr.Connlimit:
			// Rate and quota state are not known: the rule may match.
			and(triMaybe)
		}
	}
	return res, nil
}

func boolTri(b bool) tri {
	if b {
		return triYes
	}
	return triNo
}

// cmpTri compares a register with data as nft_cmp_eval does (memcmp),
// or says "maybe" when a byte it depends on is unknown.
func cmpTri(op expr.CmpOp, v []byte, k []bool, data []byte) tri {
	if !allKnown(k) {
		if op == expr.CmpOpEq {
			// A known byte that differs already excludes the packet.
			for i := range data {
				if k[i] && v[i] != data[i] {
					return triNo
				}
			}
		}
		return triMaybe
	}
	c := bytes.Compare(v, data)
	switch op {
	case expr.CmpOpEq:
		return boolTri(c == 0)
	case expr.CmpOpNeq:
		return boolTri(c != 0)
	case expr.CmpOpLt:
		return boolTri(c < 0)
	case expr.CmpOpLte:
		return boolTri(c <= 0)
	case expr.CmpOpGt:
		return boolTri(c > 0)
	case expr.CmpOpGte:
		return boolTri(c >= 0)
	}
	return triMaybe
}

func keyLength(sd *setData) int {
	n := int(sd.set.KeyType.Bytes)
	for _, e := range sd.elems {
		if len(e.Key) > n {
			n = len(e.Key)
		}
	}
	return n
}

type setHit struct {
	e nftables.SetElement
	t tri
}

// lookupSet finds the elements a key may match. Interval sets hold, in
// key order, the start of each range and the element after its end
// (flagged as interval end), as nft_rbtree stores them; concatenations
// with ranges (nft_set_pipapo) carry an inclusive KeyEnd.
func lookupSet(sd *setData, v []byte, k []bool) []setHit {
	known := allKnown(k)
	var hits []setHit
	if sd.set.Interval && known && !sd.set.Concatenation {
		elems := append([]nftables.SetElement(nil), sd.elems...)
		sort.SliceStable(elems, func(i, j int) bool { return bytes.Compare(elems[i].Key, elems[j].Key) < 0 })
		best := -1
		for i, e := range elems {
			if len(e.KeyEnd) > 0 {
				if bytes.Compare(v[:len(e.Key)], e.Key) >= 0 && bytes.Compare(v[:len(e.KeyEnd)], e.KeyEnd) <= 0 {
					hits = append(hits, setHit{e, triYes})
				}
				continue
			}
			if bytes.Compare(e.Key, v[:len(e.Key)]) <= 0 {
				best = i
			}
		}
		if best >= 0 && !elems[best].IntervalEnd {
			hits = append(hits, setHit{elems[best], triYes})
		}
		return hits
	}
	for _, e := range sd.elems {
		if e.IntervalEnd {
			continue
		}
		if len(e.KeyEnd) > 0 {
			t := triMaybe
			if known {
				t = boolTri(bytes.Compare(v[:len(e.Key)], e.Key) >= 0 && bytes.Compare(v[:len(e.KeyEnd)], e.KeyEnd) <= 0)
			}
			if t != triNo {
				hits = append(hits, setHit{e, t})
			}
			continue
		}
		t := triYes
		for i := range e.Key {
			if i >= len(v) {
				t = triMaybe
				break
			}
			if !k[i] {
				if sd.set.Interval {
					t = triMaybe
				} else if t == triYes {
					t = triMaybe
				}
				continue
			}
			if v[i] != e.Key[i] {
				if sd.set.Interval {
					// Interval starts do not equal the key; only a known
					// full key decides.
					t = triMaybe
					continue
				}
				t = triNo
				break
			}
		}
		if t != triNo {
			hits = append(hits, setHit{e, t})
		}
	}
	return hits
}

// xtMatch evaluates the xtables matches iptables-nft leaves in a rule
// (those it does not translate to native expressions): comment, tcp and
// udp ports, conntrack state.
func xtMatch(m *expr.Match, p packet) (tri, string) {
	switch info := m.Info.(type) {
	case *xt.Comment:
		return triYes, string(*info)
	case *xt.Tcp:
		if p.l4proto != unix.IPPROTO_TCP {
			return triNo, ""
		}
		return xtTcpTri(info, p), ""
	case *xt.Udp:
		return boolTri(p.l4proto == unix.IPPROTO_UDP), ""
	case *xt.Unknown:
		if m.Name == "multiport" && m.Rev == 1 {
			if mp, ok := parseMultiport(*info); ok {
				return mp.eval(p), ""
			}
		}
	case *xt.ConntrackMtinfo1:
		return ctStateTri(uint32(info.StateMask), info.MatchFlags, info.InvertFlags, p), ""
	case *xt.ConntrackMtinfo2:
		return ctStateTri(uint32(info.StateMask), info.MatchFlags, info.InvertFlags, p), ""
	case *xt.ConntrackMtinfo3:
		return ctStateTri(uint32(info.StateMask), info.MatchFlags, info.InvertFlags, p), ""
	}
	return triMaybe, ""
}

func xtTcpTri(info *xt.Tcp, p packet) tri {
	t := portsTri(info.SrcPorts, info.InvFlags&xt.TcpInvSrcPorts != 0, p.th[0:2], p.thK[0])
	return minTri(t, portsTri(info.DstPorts, info.InvFlags&xt.TcpInvDestPorts != 0, p.th[2:4], p.thK[2]))
}

func portsTri(r [2]uint16, inv bool, b []byte, known bool) tri {
	if r[0] == 0 && r[1] == 0xffff && !inv {
		return triYes
	}
	if !known {
		return triMaybe
	}
	port := binary.BigEndian.Uint16(b)
	return boolTri((port >= r[0] && port <= r[1]) != inv)
}

// xt_conntrack's XT_CONNTRACK_STATE flag; the state bits are those of
// the nft ct state.
const xtConntrackState = 1 << 0

func ctStateTri(mask uint32, flags, inv uint16, p packet) tri {
	if flags&xtConntrackState == 0 {
		return triMaybe
	}
	return boolTri((mask&p.ctState != 0) != (inv&xtConntrackState != 0))
}

// Reject codes as include/uapi/linux/netfilter_ipv4/ipt_REJECT.h and
// netfilter_ipv6/ip6t_REJECT.h number them.
var (
	iptRejectWith  = []string{"icmp net-unreachable", "icmp host-unreachable", "icmp prot-unreachable", "icmp port-unreachable", "echo-reply", "icmp net-prohibited", "icmp host-prohibited", "tcp reset", "icmp admin-prohibited"}
	ip6tRejectWith = []string{"icmpv6 no-route", "icmpv6 admin-prohibited", "icmpv6 beyond-scope", "icmpv6 addr-unreachable", "icmpv6 port-unreachable", "echo-reply", "tcp reset", "icmpv6 policy-fail", "icmpv6 reject-route"}
)

// xtTarget gives the verdict of an xtables target that ends evaluation.
// Other targets (MARK, LOG, ...) continue.
func xtTarget(t *expr.Target, fam nftables.TableFamily) (outcome, bool) {
	switch t.Name {
	case "REJECT":
		text := "icmp port-unreachable"
		if fam == nftables.TableFamilyIPv6 {
			text = "icmpv6 port-unreachable"
		}
		if u, ok := t.Info.(*xt.Unknown); ok && len(*u) >= 4 {
			with := binary.NativeEndian.Uint32(*u)
			names := iptRejectWith
			if fam == nftables.TableFamilyIPv6 {
				names = ip6tRejectWith
			}
			if int(with) < len(names) {
				text = names[with]
			}
		}
		return outcome{kind: expr.VerdictDrop, reject: true, rejectText: text, sure: true}, true
	case "DNAT", "SNAT", "MASQUERADE", "REDIRECT":
		o := outcome{kind: expr.VerdictAccept, nat: true, natKind: strings.ToLower(t.Name), sure: true}
		o.natAddr, o.natTo = xtNATTarget(t, fam)
		return o, true
	}
	return outcome{}, false
}

var icmpCodes = map[uint8]string{0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
var icmp6Codes = map[uint8]string{0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}
var icmpxCodes = map[uint8]string{0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"}

func rejectText(r *expr.Reject, fam nftables.TableFamily) string {
	switch r.Type {
	case unix.NFT_REJECT_TCP_RST:
		return "tcp reset"
	case unix.NFT_REJECT_ICMPX_UNREACH:
		return "icmpx " + codeName(icmpxCodes, r.Code)
	}
	if fam == nftables.TableFamilyIPv6 {
		return "icmpv6 " + codeName(icmp6Codes, r.Code)
	}
	return "icmp " + codeName(icmpCodes, r.Code)
}

func codeName(m map[uint8]string, c uint8) string {
	if s, ok := m[c]; ok {
		return s
	}
	return "code " + strconv.Itoa(int(c))
}

// natRegs reads a NAT statement's address and port from the registers
// when they are known (immediates, or a map lookup with a known key).
func natRegs(e *expr.NAT, rg *regs) (netip.Addr, netip.AddrPort) {
	var addr netip.Addr
	if e.RegAddrMin != 0 {
		n := 4
		if e.Family == unix.NFPROTO_IPV6 {
			n = 16
		}
		if b, k := rg.get(e.RegAddrMin, n); allKnown(k) {
			addr, _ = netip.AddrFromSlice(b)
		}
	}
	if e.RegProtoMin != 0 && addr.IsValid() {
		if b, k := rg.get(e.RegProtoMin, 2); allKnown(k) {
			return addr, netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b))
		}
	}
	return addr, netip.AddrPort{}
}

// multiport is struct xt_multiport_v1
// (include/uapi/linux/netfilter/xt_multiport.h).
type multiport struct {
	flags  uint8 // 0 source, 1 destination, 2 either
	ports  []uint16
	ranges []bool // ports[i]..ports[i+1] is a range
	invert bool
}

func parseMultiport(b []byte) (multiport, bool) {
	const size = 1 + 1 + 15*2 + 15 + 1
	if len(b) < size || b[1] > 15 {
		return multiport{}, false
	}
	m := multiport{flags: b[0], invert: b[47] != 0}
	for i := 0; i < int(b[1]); i++ {
		m.ports = append(m.ports, binary.NativeEndian.Uint16(b[2+2*i:]))
		m.ranges = append(m.ranges, b[32+i] != 0)
	}
	return m, true
}

func (m multiport) has(port uint16) bool {
	for i := 0; i < len(m.ports); i++ {
		if m.ranges[i] && i+1 < len(m.ports) {
			if port >= m.ports[i] && port <= m.ports[i+1] {
				return true
			}
			i++
			continue
		}
		if port == m.ports[i] {
			return true
		}
	}
	return false
}

func (m multiport) eval(p packet) tri {
	sport, dport := binary.BigEndian.Uint16(p.th[0:]), binary.BigEndian.Uint16(p.th[2:])
	var in bool
	switch m.flags {
	case 0:
		if !p.thK[0] {
			return triMaybe
		}
		in = m.has(sport)
	case 1:
		if !p.thK[2] {
			return triMaybe
		}
		in = m.has(dport)
	default:
		if !p.thK[0] || !p.thK[2] {
			return triMaybe
		}
		in = m.has(sport) || m.has(dport)
	}
	return boolTri(in != m.invert)
}

func (m multiport) String() string {
	var ps []string
	for i := 0; i < len(m.ports); i++ {
		if m.ranges[i] && i+1 < len(m.ports) {
			ps = append(ps, strconv.Itoa(int(m.ports[i]))+"-"+strconv.Itoa(int(m.ports[i+1])))
			i++
			continue
		}
		ps = append(ps, strconv.Itoa(int(m.ports[i])))
	}
	key := [...]string{"sport", "dport", "port"}[min(int(m.flags), 2)]
	inv := ""
	if m.invert {
		inv = "!= "
	}
	return "tcp " + key + " " + inv + "{ " + strings.Join(ps, ", ") + " }"
}

// elemVerdict is the verdict of a verdict map element. The nftables
// library leaves it undecoded in Val (the NFTA_DATA_VERDICT attributes:
// NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN) when it does not know the map's
// data type, as for concatenated keys.
func elemVerdict(e nftables.SetElement) *expr.Verdict {
	if e.VerdictData != nil {
		return e.VerdictData
	}
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	var v expr.Verdict
	var ok bool
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind, ok = expr.VerdictKind(int32(ad.Uint32())), true
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil || !ok {
		return nil
	}
	return &v
}
