package diagnose

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/rsttrace/rsttrace/events"
)

// Facts is what Gather found on the host, for every target.
type Facts struct {
	Port      uint16
	Listeners []Listener
	Bound     []Bound
	// BindFailures are recorded bind_failed events for the port, newest
	// first.
	BindFailures []*events.Event
}

// covers reports whether listener l accepts connections to dst (the
// kernel's rule: an address, or the wildcard of its family; [::] takes
// IPv4 too unless IPV6_V6ONLY).
func covers(l *Listener, dst netip.Addr) bool {
	la, d := l.Addr.Unmap(), dst.Unmap()
	if la.IsUnspecified() {
		if la.Is4() {
			return d.Is4()
		}
		return d.Is6() || !l.V6Only
	}
	return la == d
}

// Judge sets t's verdict, cause and summary from what was found on its
// path and what its probe did. The probe wins where it is decisive: an
// accepted probe is reachable whatever the ruleset seemed to say, and a
// firewall verdict the kernel reported is the firewall's.
func Judge(f *Facts, t *Target) {
	t.Cause, t.Summary = staticCause(f, t)
	p := t.Probe
	switch {
	case p == nil:
		t.Verdict = verdictOf(t.Cause)
	case p.Outcome == "accepted":
		t.Verdict, t.Cause = "reachable", CauseReachable
		t.Summary = reachableSummary(t)
	case p.Outcome == "error":
		t.Verdict = "unreachable"
		if t.Cause == CauseReachable {
			t.Cause = CauseUnknown
		}
		t.Summary = fmt.Sprintf("unreachable: the probe to %v from %s could not be made: %s", t.Dst, netnsPlace(t.Netns, t.NetnsNames), p.Error)
	default:
		t.Verdict = "refused"
		if p.Outcome == "timeout" {
			t.Verdict = "dropped"
		}
		if p.Outcome == "reset" {
			t.Verdict = "reset"
		}
		if e := p.Event; e != nil && (e.Cause == events.CauseFirewallReject || e.Cause == events.CauseFirewallDrop) &&
			t.Cause != CauseFirewallReject && t.Cause != CauseFirewallDrop {
			t.Cause = Cause(e.Cause)
			t.Summary = t.Verdict + ": " + e.Explanation
		}
		if t.Cause == CauseReachable {
			// Something listens and no rule was found, yet it failed:
			// what the kernel said is the best there is.
			t.Cause = CauseUnknown
			t.Summary = fmt.Sprintf("%s: the probe to %v from %s was %s", t.Verdict, t.Dst, netnsPlace(t.Netns, t.NetnsNames), p.Outcome)
			if e := p.Event; e != nil {
				if e.Cause == events.CauseBacklogFull {
					t.Cause = CauseBacklogFull
				}
				t.Summary = t.Verdict + ": " + e.Explanation
			}
		} else if !strings.HasPrefix(t.Summary, t.Verdict+":") {
			// The static summary guessed the verdict word; the probe knows.
			if _, rest, ok := strings.Cut(t.Summary, ": "); ok {
				t.Summary = t.Verdict + ": " + rest
			}
		}
	}
}

func verdictOf(c Cause) string {
	switch c {
	case CauseReachable:
		return "reachable"
	case CauseFirewallDrop, CauseBacklogFull:
		return "dropped"
	}
	return "refused"
}

// staticCause decides from the host's state alone, in the order the
// kernel meets things: packet filter and NAT on the way, then the socket
// lookup in the target's namespace.
func staticCause(f *Facts, t *Target) (Cause, string) {
	place := netnsPlace(t.Netns, t.NetnsNames)
	for _, r := range t.Firewall {
		c := CauseFirewallDrop
		word := "dropped"
		if r.Verdict == "reject" {
			c, word = CauseFirewallReject, "refused"
		}
		return c, fmt.Sprintf("%s: firewall rule %s on the %s hook %ss %v in %s: %s", word, ruleName(&r.Firewall), r.Hook, r.Verdict, t.Dst, place, r.Rule)
	}
	dst := t.Dst
	for _, n := range t.NAT {
		if !n.To.IsValid() {
			continue
		}
		if n.Backend == "nothing listens" {
			return CauseNATDeadBackend, fmt.Sprintf("refused: %v is translated (DNAT, rule %s) to %v in %s, and nothing listens on %v (dead backend)",
				t.Dst, natName(&n), n.To, place, n.To)
		}
		dst = n.To
		break
	}

	var here, other []*Listener
	for i := range f.Listeners {
		l := &f.Listeners[i]
		if l.Port != dst.Port() {
			continue
		}
		if l.Netns == t.Netns {
			here = append(here, l)
		} else if covers(l, dst.Addr()) || covers(l, netip.IPv4Unspecified()) || covers(l, netip.IPv6Unspecified()) {
			other = append(other, l)
		}
	}
	for _, l := range here {
		if covers(l, dst.Addr()) {
			t.Listener = l
			if l.Full {
				return CauseBacklogFull, fmt.Sprintf("dropped: %s listens on %v in %s, but its accept queue is full (%d queued, backlog %d): it does not accept() fast enough (full backlog)",
					l.Process, hostPort(l.Addr, l.Port), place, deref(l.Queued), l.Backlog)
			}
			return CauseReachable, reachableSummary(t)
		}
	}
	nothing := fmt.Sprintf("refused: nothing listens on %v in %s", dst, place)
	if len(here) > 0 {
		l := here[0]
		for _, x := range here {
			if x.V6Only && x.Addr.IsUnspecified() && dst.Addr().Unmap().Is4() {
				l = x
				t.Listener = l
				return CauseIPv6Only, fmt.Sprintf("%s; %s listens on %v there with IPV6_V6ONLY, which takes IPv6 only (IPv6-only)", nothing, l.Process, hostPort(l.Addr, l.Port))
			}
		}
		t.Listener = l
		return CauseWrongAddress, fmt.Sprintf("%s; %s listens on %v there (wrong address)", nothing, l.Process, hostPort(l.Addr, l.Port))
	}
	for i := range f.Bound {
		b := &f.Bound[i]
		if b.Netns == t.Netns && b.Port == dst.Port() {
			t.Bound = b
			return CauseBoundNotListening, fmt.Sprintf("%s; %s has bound %v there but does not listen (bound, not listening)", nothing, b.Process, hostPort(b.Addr, b.Port))
		}
	}
	for _, e := range f.BindFailures {
		if b := e.Bind; b != nil && b.Port == dst.Port() && (e.Netns == 0 || e.Netns == t.Netns) {
			t.BindFailed = e
			s := fmt.Sprintf("%s; %s failed to bind %v at %s: %s", nothing, b.Process, hostPort(b.Addr, b.Port), e.Time.Format("2006-01-02 15:04:05"), b.Errno)
			if b.Holder != nil {
				s += fmt.Sprintf(" (held by %s)", b.Holder)
			}
			return CauseBindFailed, s + " (bind failed)"
		}
	}
	if len(other) > 0 {
		l := other[0]
		t.Listener = l
		return CauseOtherNetns, fmt.Sprintf("%s; %s listens on %v in %s (other namespace)", nothing, l.Process, hostPort(l.Addr, l.Port), netnsPlace(l.Netns, l.NetnsNames))
	}
	return CauseNoListener, nothing
}

func reachableSummary(t *Target) string {
	s := fmt.Sprintf("reachable: %v from %s", t.Dst, netnsPlace(t.Netns, t.NetnsNames))
	if l := t.Listener; l != nil {
		s += fmt.Sprintf(": %s listens on %v", l.Process, hostPort(l.Addr, l.Port))
	}
	if t.Probe != nil && t.Probe.Outcome == "accepted" {
		s += " and accepted the probe"
	}
	return s
}

// Todo says what to do about t, one line.
func Todo(t *Target) string {
	place := netnsPlace(t.Netns, t.NetnsNames)
	port := t.Dst.Port()
	switch t.Cause {
	case CauseNoListener:
		return fmt.Sprintf("start the service that should listen on port %d in %s", port, place)
	case CauseWrongAddress:
		if l := t.Listener; l != nil {
			return fmt.Sprintf("make %s listen on %v or on all addresses (0.0.0.0 / [::]), or connect to %v", l.Process, t.Dst, hostPort(l.Addr, l.Port))
		}
	case CauseIPv6Only:
		if l := t.Listener; l != nil {
			return fmt.Sprintf("make %s listen on IPv4 too (clear IPV6_V6ONLY, or add a listener on 0.0.0.0:%d), or connect to [::1]:%d", l.Process, port, port)
		}
	case CauseOtherNetns:
		if l := t.Listener; l != nil {
			return fmt.Sprintf("connect from %s, or publish the port into %s (port mapping), or run the service there", netnsPlace(l.Netns, l.NetnsNames), place)
		}
	case CauseBoundNotListening:
		if b := t.Bound; b != nil {
			return fmt.Sprintf("%s bound the port but never called listen(): check its start-up (stuck or half-failed), restart it", b.Process)
		}
	case CauseBindFailed:
		if e := t.BindFailed; e != nil && e.Bind != nil {
			if e.Bind.Holder != nil {
				return fmt.Sprintf("stop %s (it holds port %d) or move %s to another port, then restart it", e.Bind.Holder, port, e.Bind.Process)
			}
			return fmt.Sprintf("fix what made %s's bind fail (%s), then restart it", e.Bind.Process, e.Bind.Errno)
		}
	case CauseFirewallReject, CauseFirewallDrop:
		for _, r := range t.Firewall {
			return fmt.Sprintf("open the firewall: rule %s (%s) %ss tcp port %d; allow it before that rule, or delete it: nft delete rule %s %s %s handle %d",
				ruleName(&r.Firewall), r.Rule, r.Verdict, port, r.Family, r.TableName, r.Chain, r.Handle)
		}
		if p := t.Probe; p != nil && p.Event != nil && p.Event.Firewall != nil {
			return fmt.Sprintf("open the firewall for tcp port %d on the %s hook in %s", port, p.Event.Firewall.Hook, place)
		}
		return fmt.Sprintf("open the firewall for tcp port %d in %s", port, place)
	case CauseNATDeadBackend:
		for _, n := range t.NAT {
			if n.To.IsValid() {
				return fmt.Sprintf("start the backend on %v, or point the DNAT rule %s at a live one", n.To, natName(&n))
			}
		}
	case CauseBacklogFull:
		if l := t.Listener; l != nil {
			s := fmt.Sprintf("find why %s does not accept() (stuck, overloaded), or raise its backlog (now %d", l.Process, l.Backlog)
			if l.Somaxconn > 0 {
				s += fmt.Sprintf("; net.core.somaxconn %d caps it", l.Somaxconn)
			}
			return s + ")"
		}
	case CauseUnknown:
		return "run rsttrace while reproducing: it records what the kernel did with every attempt"
	}
	return ""
}

func ruleName(f *events.Firewall) string {
	s := fmt.Sprintf("'%s %s %s handle %d'", f.Family, f.TableName, f.Chain, f.Handle)
	if f.Handle == 0 {
		s = fmt.Sprintf("'%s %s %s'", f.Family, f.TableName, f.Chain)
	}
	if f.Comment != "" {
		s += " (" + strconv.Quote(f.Comment) + ")"
	}
	return s
}

func natName(n *NAT) string {
	s := fmt.Sprintf("'%s %s %s handle %d: %s'", n.Family, n.Table, n.Chain, n.Handle, n.Rule)
	if n.Comment != "" {
		s += " (" + strconv.Quote(n.Comment) + ")"
	}
	return s
}

// netnsPlace names a namespace as explanations do.
func netnsPlace(ino uint32, n *events.NetnsNames) string {
	switch {
	case n != nil && n.Name != "":
		return fmt.Sprintf("netns %s (%d)", n.Name, ino)
	case n != nil && n.Container != nil && n.Container.Name != "":
		return fmt.Sprintf("container %s's netns (%d)", n.Container.Name, ino)
	case n != nil && n.Pod != nil && n.Pod.Name != "":
		return fmt.Sprintf("pod %s/%s's netns (%d)", n.Pod.Namespace, n.Pod.Name, ino)
	}
	return fmt.Sprintf("netns %d", ino)
}

func hostPort(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func deref(p *uint32) uint32 {
	if p == nil {
		return 0
	}
	return *p
}
