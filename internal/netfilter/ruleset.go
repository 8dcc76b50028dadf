package netfilter

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
)

// ruleset reads the nftables ruleset of one network namespace lazily:
// chains once, the rules of a chain and the elements of a set when the
// walk first needs them, so a lookup on a host with thousands of
// kube-proxy chains reads only the chains the packet can reach.
type ruleset struct {
	conn   *nftables.Conn
	chains []*nftables.Chain
	rules  map[chainKey][]*nftables.Rule
	sets   map[setKey]*setData
	tsets  map[tableKey][]*nftables.Set
	// reads counts netlink dumps, for tests and cost reports.
	reads int
}

type tableKey struct {
	family nftables.TableFamily
	name   string
}

type chainKey struct {
	table tableKey
	chain string
}

type setKey struct {
	table tableKey
	name  string
}

func keyOf(t *nftables.Table) tableKey { return tableKey{t.Family, t.Name} }

// openRuleset connects to nf_tables in the namespace netnsFD refers to
// (0: the calling thread's) and lists its chains.
func openRuleset(netnsFD int) (*ruleset, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if netnsFD > 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to nf_tables: %w", err)
	}
	rs := &ruleset{conn: c, rules: map[chainKey][]*nftables.Rule{}, sets: map[setKey]*setData{}, tsets: map[tableKey][]*nftables.Set{}}
	rs.chains, err = c.ListChains()
	rs.reads++
	if err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	return rs, nil
}

func (rs *ruleset) close() { rs.conn.CloseLasting() }

func (rs *ruleset) chain(t *nftables.Table, name string) *nftables.Chain {
	for _, c := range rs.chains {
		if c.Name == name && c.Table.Name == t.Name && c.Table.Family == t.Family {
			return c
		}
	}
	return nil
}

func (rs *ruleset) rulesOf(c *nftables.Chain) ([]*nftables.Rule, error) {
	k := chainKey{keyOf(c.Table), c.Name}
	if r, ok := rs.rules[k]; ok {
		return r, nil
	}
	rs.reads++
	r, err := rs.conn.GetRules(c.Table, c)
	if err != nil {
		return nil, fmt.Errorf("listing rules of chain %s %s %s: %w", familyName(c.Table.Family), c.Table.Name, c.Name, err)
	}
	for _, x := range r {
		// ruleFromMsg leaves the family on the table only.
		x.Table, x.Chain = c.Table, c
	}
	rs.rules[k] = r
	return r, nil
}

// set returns a set of table t and its elements; nil when it is gone.
func (rs *ruleset) set(t *nftables.Table, name string, id uint32) (*setData, error) {
	k := setKey{keyOf(t), name}
	if sd, ok := rs.sets[k]; ok {
		return sd, nil
	}
	list, ok := rs.tsets[keyOf(t)]
	if !ok {
		rs.reads++
		var err error
		list, err = rs.conn.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("listing sets of table %s %s: %w", familyName(t.Family), t.Name, err)
		}
		rs.tsets[keyOf(t)] = list
	}
	var s *nftables.Set
	for _, x := range list {
		if x.Name == name || (name == "" && x.ID == id) {
			s = x
			break
		}
	}
	if s == nil {
		rs.sets[k] = nil
		return nil, nil
	}
	rs.reads++
	elems, err := rs.conn.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("listing elements of set %s in table %s: %w", name, t.Name, err)
	}
	sd := &setData{set: s, elems: elems}
	rs.sets[k] = sd
	return sd, nil
}

// render is RenderRule with the rule's sets read from the ruleset.
func (rs *ruleset) render(r *nftables.Rule) string {
	return RenderRule(r, func(name string) *setData {
		sd, _ := rs.set(r.Table, name, 0)
		return sd
	})
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

// ErrNoRule is returned when no rule of the ruleset can have given the
// verdict: the ruleset changed since, or the rule lives where nftables
// netlink does not show it (iptables-legacy).
var ErrNoRule = errors.New("no nftables rule matches")
