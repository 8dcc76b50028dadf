package netfilter

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// field is what a register holds, for rendering: the name nft prints
// for the load ("ip daddr", "tcp dport") and how to print its values.
type field struct {
	name string
	kind fieldKind
	len  int
	// imm is set for immediate data (NAT addresses and ports).
	imm []byte
	// full is the address size of a kindPrefix load.
	full int
}

type fieldKind int

const (
	kindHex fieldKind = iota
	kindAddr
	kindPort
	kindProto
	kindString
	kindCtState
	kindNfproto
	kindDec
	// kindPrefix is the first len bytes of an address of size full
	// (nft loads only the bytes a /24 needs).
	kindPrefix
)

// RenderRule returns a short nft-like text of a rule. Forms rendered:
//
//	meta l4proto tcp, ip protocol tcp, meta nfproto ipv4
//	ip|ip6 saddr|daddr ADDR, ADDR/PREFIX (bitwise mask + cmp), != ...
//	tcp|udp|th sport|dport N, N-M (range), <, <=, >, >=
//	iifname|oifname "NAME", ct state new,established,...
//	KEY { E1, E2 } (anonymous sets), KEY @set, KEY . KEY vmap @map
//	xtables matches: tcp/udp ports, conntrack state ("ct state"), others by name (xt NAME)
//	accept, drop, jump C, goto C, return, reject with tcp reset|icmp|icmpv6|icmpx CODE
//	dnat to ADDR:PORT, snat to ADDR, masquerade, redirect, limit, log
//
// As nft does, a "meta l4proto tcp" that a tcp field implies is left
// out; counters are left out.
//
// Loads whose meaning is not modelled print as payload @nh|th,OFFSET,LEN or
// meta NAME, values as hex. Comments are not part of the text (Firewall
// carries them apart).
func RenderRule(r *nftables.Rule, sets func(name string) *setData) string {
	var parts []string
	regs := map[int]field{}
	l4 := ""
	// l4dep is the index of the "meta l4proto tcp" part, which nft does
	// not print when a tcp or udp field follows (it is implied).
	l4dep := -1
	// nf is the network protocol: the table's, or what meta nfproto says.
	nf := familyName(r.Table.Family)
	setField := func(reg uint32, f field) {
		off, ok := regOffset(reg)
		if ok {
			regs[off] = f
		}
	}
	getField := func(reg uint32) field {
		off, _ := regOffset(reg)
		return regs[off]
	}
	// keyFields are the fields of a lookup key of n bytes starting at reg
	// (a concatenation fills consecutive 4-byte-aligned registers).
	keyFields := func(reg uint32, n int) []field {
		off, ok := regOffset(reg)
		if !ok {
			return nil
		}
		var fs []field
		for end := off + n; off < end; {
			f, ok := regs[off]
			if !ok || f.len == 0 {
				break
			}
			fs = append(fs, f)
			off += (f.len + 3) &^ 3
		}
		return fs
	}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				parts = append(parts, "payload write")
				continue
			}
			if e.Base == expr.PayloadBaseTransportHeader && l4dep >= 0 && (l4 == "tcp" || l4 == "udp") {
				parts = append(parts[:l4dep], parts[l4dep+1:]...)
				l4dep = -1
			}
			setField(e.DestRegister, payloadField(e, l4, nf))
		case *expr.Meta:
			if e.SourceRegister {
				parts = append(parts, "meta "+metaName(e.Key)+" set")
				continue
			}
			setField(e.Register, metaField(e.Key))
		case *expr.Ct:
			if e.SourceRegister {
				parts = append(parts, "ct set")
				continue
			}
			f := field{name: "ct " + ctName(e.Key), len: 4, kind: kindHex}
			if e.Key == expr.CtKeySTATE {
				f.kind = kindCtState
			}
			setField(e.Register, f)
		case *expr.Immediate:
			setField(e.Register, field{imm: e.Data, len: len(e.Data)})
		case *expr.Bitwise:
			f := getField(e.SourceRegister)
			if p, ok := prefixLen(e.Mask); ok && f.kind == kindAddr && len(e.Xor) > 0 && allZero(e.Xor) {
				f.name += "/" + strconv.Itoa(p)
			} else if f.kind == kindCtState {
				// ct state & (a|b) != 0 is how nft encodes a list of states.
				f.name += "&" + formatValue(kindCtState, e.Mask)
			} else {
				f.name += " & 0x" + fmt.Sprintf("%x", e.Mask)
			}
			setField(e.DestRegister, f)
		case *expr.Cmp:
			f := getField(e.Register)
			if f.name == "meta l4proto" || f.name == "ip protocol" || f.name == "ip6 nexthdr" {
				if e.Op == expr.CmpOpEq && len(e.Data) == 1 {
					l4 = protoName(e.Data[0])
					l4dep = len(parts)
				}
			}
			if f.kind == kindNfproto && e.Op == expr.CmpOpEq && len(e.Data) == 1 {
				nf = map[byte]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[e.Data[0]]
			}
			if f.kind == kindPrefix {
				b := make([]byte, f.full)
				copy(b, e.Data)
				a, _ := netip.AddrFromSlice(b)
				ops := map[expr.CmpOp]string{expr.CmpOpNeq: "!= "}
				parts = append(parts, f.name+" "+ops[e.Op]+netip.PrefixFrom(a, len(e.Data)*8).String())
				continue
			}
			// nft encodes "tcp dport 9000-9100" as >= 9000 and <= 9100.
			if n := len(parts); n > 0 && e.Op == expr.CmpOpLte && strings.HasPrefix(parts[n-1], f.name+" >= ") {
				parts[n-1] = f.name + " " + strings.TrimPrefix(parts[n-1], f.name+" >= ") + "-" + formatValue(f.kind, e.Data)
				continue
			}
			parts = append(parts, renderCmp(f, e.Op, e.Data))
		case *expr.Range:
			f := getField(e.Register)
			op := ""
			if e.Op == expr.CmpOpNeq {
				op = "!= "
			}
			parts = append(parts, f.name+" "+op+formatValue(f.kind, e.FromData)+"-"+formatValue(f.kind, e.ToData))
		case *expr.Lookup:
			var sd *setData
			if sets != nil {
				sd = sets(e.SetName)
			}
			n := 4
			if sd != nil {
				n = keyLength(sd)
			}
			fs := keyFields(e.SourceRegister, n)
			names := make([]string, len(fs))
			for i, f := range fs {
				names[i] = f.name
			}
			key := strings.Join(names, " . ")
			if key == "" {
				key = "key"
			}
			if e.Invert {
				key += " !="
			}
			set := "@" + e.SetName
			if sd != nil && sd.set.Anonymous {
				set = renderElems(sd, fs)
			}
			switch {
			case e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT:
				parts = append(parts, key+" vmap "+set)
			case e.IsDestRegSet:
				parts = append(parts, key+" map "+set)
				setField(e.DestRegister, field{name: key + " map " + set})
			default:
				parts = append(parts, key+" "+set)
			}
		case *expr.Verdict:
			parts = append(parts, verdictText(e))
		case *expr.Reject:
			parts = append(parts, "reject with "+rejectText(e, r.Table.Family))
		case *expr.NAT:
			parts = append(parts, natText(e, getField))
		case *expr.Masq:
			parts = append(parts, "masquerade")
		case *expr.Redir:
			parts = append(parts, "redirect")
		case *expr.Limit:
			parts = append(parts, "limit")
		case *expr.Log:
			parts = append(parts, "log")
		case *expr.Match:
			if s := xtMatchText(e); s != "" {
				parts = append(parts, s)
			}
		case *expr.Target:
			parts = append(parts, xtTargetText(e, r.Table.Family))
		case *expr.Fib:
			setField(e.Register, field{name: "fib", len: 4})
		case *expr.Dynset:
			parts = append(parts, "update @"+e.SetName)
		}
	}
	return strings.Join(parts, " ")
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// prefixLen says whether mask is a network prefix mask and its length.
func prefixLen(mask []byte) (int, bool) {
	n, done := 0, false
	for _, b := range mask {
		if done && b != 0 {
			return 0, false
		}
		ones := bits.LeadingZeros8(^b)
		if b<<ones != 0 {
			return 0, false
		}
		n += ones
		if ones < 8 {
			done = true
		}
	}
	return n, true
}

func payloadField(e *expr.Payload, l4, nf string) field {
	n := int(e.Len)
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		switch {
		case e.Offset == 9 && n == 1:
			return field{name: "ip protocol", kind: kindProto, len: 1}
		case e.Offset == 6 && n == 1:
			return field{name: "ip6 nexthdr", kind: kindProto, len: 1}
		case e.Offset == 12 && n == 4:
			return field{name: "ip saddr", kind: kindAddr, len: 4}
		case e.Offset == 16 && n == 4:
			return field{name: "ip daddr", kind: kindAddr, len: 4}
		case e.Offset == 8 && n == 16:
			return field{name: "ip6 saddr", kind: kindAddr, len: 16}
		case e.Offset == 24 && n == 16:
			return field{name: "ip6 daddr", kind: kindAddr, len: 16}
		}
		switch {
		case nf != "ip6" && (e.Offset == 12 || e.Offset == 16) && n < 4:
			return field{name: map[uint32]string{12: "ip saddr", 16: "ip daddr"}[e.Offset], kind: kindPrefix, len: n, full: 4}
		case nf == "ip6" && (e.Offset == 8 || e.Offset == 24) && n < 16:
			return field{name: map[uint32]string{8: "ip6 saddr", 24: "ip6 daddr"}[e.Offset], kind: kindPrefix, len: n, full: 16}
		}
		return field{name: fmt.Sprintf("@nh,%d,%d", e.Offset*8, n*8), len: n}
	case expr.PayloadBaseTransportHeader:
		if l4 == "" || (l4 != "tcp" && l4 != "udp") {
			l4 = "th"
		}
		switch {
		case e.Offset == 0 && n == 2:
			return field{name: l4 + " sport", kind: kindPort, len: 2}
		case e.Offset == 2 && n == 2:
			return field{name: l4 + " dport", kind: kindPort, len: 2}
		case e.Offset == 13 && n == 1 && l4 == "tcp":
			return field{name: "tcp flags", len: 1}
		}
		return field{name: fmt.Sprintf("@th,%d,%d", e.Offset*8, n*8), len: n}
	}
	return field{name: fmt.Sprintf("@ll,%d,%d", e.Offset*8, n*8), len: n}
}

func metaField(k expr.MetaKey) field {
	switch k {
	case expr.MetaKeyL4PROTO:
		return field{name: "meta l4proto", kind: kindProto, len: 1}
	case expr.MetaKeyNFPROTO:
		return field{name: "meta nfproto", kind: kindNfproto, len: 1}
	case expr.MetaKeyIIFNAME:
		return field{name: "iifname", kind: kindString, len: 16}
	case expr.MetaKeyOIFNAME:
		return field{name: "oifname", kind: kindString, len: 16}
	case expr.MetaKeyIIF:
		return field{name: "iif", kind: kindDec, len: 4}
	case expr.MetaKeyOIF:
		return field{name: "oif", kind: kindDec, len: 4}
	case expr.MetaKeyMARK:
		return field{name: "meta mark", kind: kindHex, len: 4}
	}
	return field{name: "meta " + metaName(k), len: 4}
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyPROTOCOL:
		return "protocol"
	case expr.MetaKeySKUID:
		return "skuid"
	case expr.MetaKeySKGID:
		return "skgid"
	case expr.MetaKeyPKTTYPE:
		return "pkttype"
	case expr.MetaKeyIIFTYPE:
		return "iiftype"
	case expr.MetaKeyOIFTYPE:
		return "oiftype"
	case expr.MetaKeyMARK:
		return "mark"
	}
	return "key" + strconv.Itoa(int(k))
}

func ctName(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "state"
	case expr.CtKeySTATUS:
		return "status"
	case expr.CtKeyMARK:
		return "mark"
	}
	return "key" + strconv.Itoa(int(k))
}

func protoName(p byte) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

var ctStates = []struct {
	bit  uint32
	name string
}{{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"}}

func formatValue(k fieldKind, b []byte) string {
	switch k {
	case kindAddr:
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case kindPort:
		if len(b) >= 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
		}
	case kindProto:
		if len(b) >= 1 {
			return protoName(b[0])
		}
	case kindNfproto:
		if len(b) >= 1 {
			switch b[0] {
			case unix.NFPROTO_IPV4:
				return "ipv4"
			case unix.NFPROTO_IPV6:
				return "ipv6"
			}
		}
	case kindString:
		return strconv.Quote(strings.TrimRight(string(b), "\x00"))
	case kindDec:
		if len(b) == 4 {
			return strconv.FormatUint(uint64(binary.NativeEndian.Uint32(b)), 10)
		}
	case kindCtState:
		if len(b) == 4 {
			v := binary.NativeEndian.Uint32(b)
			var names []string
			for _, s := range ctStates {
				if v&s.bit != 0 {
					names = append(names, s.name)
				}
			}
			if len(names) > 0 {
				return strings.Join(names, ",")
			}
		}
	}
	return fmt.Sprintf("0x%x", b)
}

func renderCmp(f field, op expr.CmpOp, data []byte) string {
	name := f.name
	if name == "" {
		name = "reg"
	}
	// ct state & MASK != 0: print "ct state STATES".
	if f.kind == kindCtState && strings.Contains(name, "&") && op == expr.CmpOpNeq && allZero(data) {
		return strings.Replace(name, "&", " ", 1)
	}
	ops := map[expr.CmpOp]string{expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}
	val := formatValue(f.kind, data)
	if i := strings.Index(name, "/"); i >= 0 && f.kind == kindAddr {
		// ip daddr/24 == 10.0.0.0 prints as ip daddr 10.0.0.0/24.
		return name[:i] + " " + ops[op] + val + name[i:]
	}
	return name + " " + ops[op] + val
}

// renderElems prints an anonymous set's elements, splitting concatenated
// keys along the key's fields.
func renderElems(sd *setData, fs []field) string {
	var out []string
	for _, e := range sd.elems {
		if e.IntervalEnd {
			continue
		}
		s := formatKey(e.Key, fs)
		if len(e.KeyEnd) > 0 {
			s += "-" + formatKey(e.KeyEnd, fs)
		}
		if v := elemVerdict(e); v != nil {
			s += " : " + verdictText(v)
		}
		out = append(out, s)
	}
	if sd.set.Interval && !sd.set.Concatenation {
		// Interval sets hold starts and (exclusive) ends: print start-end.
		out = out[:0]
		var start []byte
		for _, e := range sortedElems(sd.elems) {
			if !e.IntervalEnd {
				if start != nil {
					out = append(out, formatKey(start, fs)+"-")
				}
				start = e.Key
				continue
			}
			if start != nil {
				out = append(out, formatRange(start, e.Key, fs))
				start = nil
			}
		}
		if start != nil {
			out = append(out, formatKey(start, fs)+"-")
		}
	}
	return "{ " + strings.Join(out, ", ") + " }"
}

func formatRange(start, endExcl []byte, fs []field) string {
	last := decrement(endExcl)
	if string(last) == string(start) {
		return formatKey(start, fs)
	}
	if len(fs) == 1 && fs[0].kind == kindAddr {
		// An address range that is a prefix prints as one.
		if a, ok := netip.AddrFromSlice(start); ok {
			for bits := 0; bits <= a.BitLen(); bits++ {
				p := netip.PrefixFrom(a, bits)
				if p.Masked().Addr() != a {
					continue
				}
				if lastInPrefix(p) == string(last) {
					return p.String()
				}
			}
		}
	}
	return formatKey(start, fs) + "-" + formatKey(last, fs)
}

func lastInPrefix(p netip.Prefix) string {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return string(b)
}

func decrement(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

func sortedElems(es []nftables.SetElement) []nftables.SetElement {
	out := append([]nftables.SetElement(nil), es...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && string(out[j].Key) < string(out[j-1].Key); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func formatKey(k []byte, fs []field) string {
	if len(fs) == 0 {
		return fmt.Sprintf("0x%x", k)
	}
	var parts []string
	off := 0
	for _, f := range fs {
		if off+f.len > len(k) {
			break
		}
		parts = append(parts, formatValue(f.kind, k[off:off+f.len]))
		off += (f.len + 3) &^ 3
	}
	return strings.Join(parts, " . ")
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictQueue:
		return "queue"
	}
	return "verdict " + strconv.Itoa(int(v.Kind))
}

func natText(e *expr.NAT, get func(uint32) field) string {
	s := "snat"
	if e.Type == expr.NATTypeDestNAT {
		s = "dnat"
	}
	to, ok := natTarget(e, func(reg uint32) []byte { return get(reg).imm })
	if !ok {
		return s
	}
	return s + " to " + to
}

// natTarget prints a NAT statement's address and port when immediates
// loaded them (dnat to ADDR:PORT); mapped forms print as "".
func natTarget(e *expr.NAT, imm func(uint32) []byte) (string, bool) {
	var addr netip.Addr
	var port uint16
	if e.RegAddrMin != 0 {
		b := imm(e.RegAddrMin)
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return "", false
		}
		addr = a
	}
	if e.RegProtoMin != 0 {
		b := imm(e.RegProtoMin)
		if len(b) < 2 {
			return "", false
		}
		port = binary.BigEndian.Uint16(b)
	}
	switch {
	case addr.IsValid() && port != 0:
		return netip.AddrPortFrom(addr, port).String(), true
	case addr.IsValid():
		return addr.String(), true
	case port != 0:
		return ":" + strconv.Itoa(int(port)), true
	}
	return "", false
}

func xtMatchText(m *expr.Match) string {
	switch info := m.Info.(type) {
	case *xt.Comment:
		return ""
	case *xt.Tcp:
		return xtPortsText("tcp", info.SrcPorts, info.DstPorts, info.InvFlags&xt.TcpInvSrcPorts != 0, info.InvFlags&xt.TcpInvDestPorts != 0)
	case *xt.Unknown:
		if m.Name == "multiport" && m.Rev == 1 {
			if mp, ok := parseMultiport(*info); ok {
				return mp.String()
			}
		}
	case *xt.Udp:
		return xtPortsText("udp", info.SrcPorts, info.DstPorts, info.InvFlags&0x01 != 0, info.InvFlags&0x02 != 0)
	case *xt.ConntrackMtinfo1:
		return xtStateText(uint32(info.StateMask), info.MatchFlags, info.InvertFlags)
	case *xt.ConntrackMtinfo2:
		return xtStateText(uint32(info.StateMask), info.MatchFlags, info.InvertFlags)
	case *xt.ConntrackMtinfo3:
		return xtStateText(uint32(info.StateMask), info.MatchFlags, info.InvertFlags)
	}
	return "xt match " + m.Name
}

func xtPortsText(proto string, sp, dp [2]uint16, sinv, dinv bool) string {
	var parts []string
	one := func(name string, r [2]uint16, inv bool) {
		if r[0] == 0 && r[1] == 0xffff && !inv {
			return
		}
		s := proto + " " + name + " "
		if inv {
			s += "!= "
		}
		if r[0] == r[1] {
			s += strconv.Itoa(int(r[0]))
		} else {
			s += strconv.Itoa(int(r[0])) + "-" + strconv.Itoa(int(r[1]))
		}
		parts = append(parts, s)
	}
	one("sport", sp, sinv)
	one("dport", dp, dinv)
	if len(parts) == 0 {
		return proto
	}
	return strings.Join(parts, " ")
}

func xtStateText(mask uint32, flags, inv uint16) string {
	if flags&xtConntrackState == 0 {
		return "xt match conntrack"
	}
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, mask)
	s := "ct state "
	if inv&xtConntrackState != 0 {
		s += "!= "
	}
	return s + formatValue(kindCtState, b)
}

func xtTargetText(t *expr.Target, fam nftables.TableFamily) string {
	switch t.Name {
	case "REJECT":
		o, _ := xtTarget(t, fam)
		return "reject with " + o.rejectText
	case "MASQUERADE":
		return "masquerade"
	case "DNAT", "SNAT":
		if to, ok := xtNATTo(t, fam); ok {
			return strings.ToLower(t.Name) + " to " + to
		}
		return strings.ToLower(t.Name)
	}
	return "xt target " + t.Name
}
