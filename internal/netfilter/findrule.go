package netfilter

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// Query describes a packet the packet filter discarded.
type Query struct {
	// Family is 4 or 6.
	Family int
	// Hook is the netfilter hook: prerouting, input, forward, output,
	// postrouting.
	Hook string
	// Proto is the IP protocol (6: TCP).
	Proto uint8
	// Src and Dst are the packet's addresses as the hook saw them: after
	// DNAT for the hooks that follow it (input, forward, postrouting after
	// prerouting's DNAT; output's filter chains after its NAT chain).
	Src, Dst netip.AddrPort
	// Verdict is "drop" (nothing was sent back), "reject" (a RST or an
	// ICMP error was), or "" (either: the kernel said only that the
	// filter dropped it).
	Verdict string
	// SYN says the packet is a TCP SYN without other flags (tcp flags
	// matches are then evaluated).
	SYN bool
	// CtState is the packet's conntrack state bits (expr.CtStateBit*);
	// 0 means new, which a connection's SYNs are.
	CtState uint32
}

var hooks = map[string]nftables.ChainHook{
	"prerouting":  unix.NF_INET_PRE_ROUTING,
	"input":       unix.NF_INET_LOCAL_IN,
	"forward":     unix.NF_INET_FORWARD,
	"output":      unix.NF_INET_LOCAL_OUT,
	"postrouting": unix.NF_INET_POST_ROUTING,
}

// Bounds on a walk, so a huge or odd ruleset cannot make a lookup slow:
// nft itself refuses jump chains deeper than 16 (NFT_JUMP_STACK_SIZE).
const (
	maxDepth = 16
	maxRules = 50000
)

// FindRule returns the first nftables rule, in evaluation order, that can
// have given the verdict q describes to the packet q describes, in the
// network namespace netnsFD refers to (0: the calling thread's).
//
// Evaluation order is the base chains on q.Hook for q.Family's tables
// (ip or ip6, and inet) by priority, each one's rules in order, following
// jump and goto (verdict maps included) into regular chains such as
// kube-proxy's KUBE-SERVICES or Docker's DOCKER-USER. A rule is a
// candidate when its verdict is of q.Verdict's kind (drop, or reject:
// `reject`, iptables' REJECT) and none of its matches excludes the
// packet; a definite accept (every match known to hold) ends a base
// chain. Matches evaluated: meta l4proto/nfproto, ip protocol, ip/ip6
// saddr and daddr (equality, prefixes, ranges, sets), tcp/udp ports
// (equality, ranges, anonymous and named sets, interval sets, concatenated
// keys of verdict maps), tcp flags, ct state (a SYN is new), and the
// xtables matches iptables-nft keeps (tcp, udp, conntrack state, comment).
// Everything else (interface names, marks, rate limits, fib, sockets) may
// match. A drop policy of a base chain is returned as the rule
// "policy drop" (Handle 0) when no rule decided first.
//
// Rules of iptables-legacy live in the x_tables of ip_tables.ko, not in
// nf_tables: they are invisible over nftables netlink, and FindRule then
// returns ErrNoRule; what is known of such a drop is the hook only.
func FindRule(netnsFD int, q Query) (*events.Firewall, error) {
	rs, err := openRuleset(netnsFD)
	if err != nil {
		return nil, err
	}
	defer rs.close()
	return rs.findRule(q)
}

func (rs *ruleset) findRule(q Query) (*events.Firewall, error) {
	hook, ok := hooks[q.Hook]
	if !ok {
		return nil, fmt.Errorf("finding rule: unknown netfilter hook %q", q.Hook)
	}
	fam := nftables.TableFamilyIPv4
	if q.Family == 6 {
		fam = nftables.TableFamilyIPv6
	}
	var base []*nftables.Chain
	for _, c := range rs.chains {
		if c.Hooknum == nil || *c.Hooknum != hook || c.Priority == nil {
			continue
		}
		if c.Table.Family == fam || c.Table.Family == nftables.TableFamilyINet {
			base = append(base, c)
		}
	}
	sort.SliceStable(base, func(i, j int) bool { return *base[i].Priority < *base[j].Priority })

	w := &walker{rs: rs, q: q, p: newPacket(q)}
	for _, c := range base {
		hit, end, err := w.walk(c, 0, "")
		if err != nil {
			return nil, err
		}
		if hit != nil {
			return hit, nil
		}
		if end == endAccept {
			continue
		}
		if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop && q.Verdict != "reject" {
			return &events.Firewall{Hook: q.Hook, Table: "nftables", TableName: c.Table.Name,
				Family: familyName(c.Table.Family), Chain: c.Name, Rule: "policy drop"}, nil
		}
	}
	return nil, ErrNoRule
}

type walker struct {
	rs    *ruleset
	q     Query
	p     packet
	rules int
}

type end int

const (
	endFall   end = iota // fell off the end or returned: the caller goes on
	endAccept            // a definite accept: the base chain is done
)

// walk evaluates chain c; via is the comment of the verdict map element
// that led here, given to a rule without its own.
func (w *walker) walk(c *nftables.Chain, depth int, via string) (*events.Firewall, end, error) {
	if depth > maxDepth {
		return nil, endFall, nil
	}
	rules, err := w.rs.rulesOf(c)
	if err != nil {
		return nil, endFall, err
	}
	for _, r := range rules {
		if w.rules++; w.rules > maxRules {
			return nil, endFall, nil
		}
		ev, err := evalRule(r, w.p, w.rs.set)
		if err != nil {
			return nil, endFall, err
		}
		if ev.match == triNo {
			continue
		}
		for _, o := range ev.outcomes {
			sure := ev.match == triYes && o.sure
			switch o.kind {
			case expr.VerdictDrop:
				if w.verdictFits(o) {
					if o.comment != "" {
						via = o.comment
					}
					return w.hit(r, ev, via), endFall, nil
				}
			case expr.VerdictAccept, expr.VerdictQueue, expr.VerdictStolen, expr.VerdictStop:
				if sure {
					return nil, endAccept, nil
				}
			case expr.VerdictJump, expr.VerdictGoto:
				to := w.rs.chain(c.Table, o.chain)
				if to == nil {
					continue
				}
				next := via
				if o.comment != "" {
					next = o.comment
				}
				hit, e, err := w.walk(to, depth+1, next)
				if err != nil || hit != nil {
					return hit, endFall, err
				}
				if sure && e == endAccept {
					return nil, endAccept, nil
				}
				if sure && o.kind == expr.VerdictGoto {
					return nil, endFall, nil
				}
			case expr.VerdictReturn:
				if sure {
					return nil, endFall, nil
				}
			}
		}
	}
	return nil, endFall, nil
}

func (w *walker) verdictFits(o outcome) bool {
	switch w.q.Verdict {
	case "drop":
		return !o.reject
	case "reject":
		return o.reject
	}
	return true
}

func (w *walker) hit(r *nftables.Rule, ev ruleEval, via string) *events.Firewall {
	comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	if comment == "" {
		comment = ev.comment
	}
	if comment == "" {
		comment = via
	}
	return &events.Firewall{
		Hook:      w.q.Hook,
		Table:     "nftables",
		TableName: r.Table.Name,
		Family:    familyName(r.Table.Family),
		Chain:     r.Chain.Name,
		Handle:    r.Handle,
		Comment:   comment,
		Rule:      w.rs.render(r),
	}
}
