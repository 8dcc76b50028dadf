package events

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Explanations of connection attempts that this host's packet filter
// refused or dropped, that got no answer, or that another host refused.
// Each says what happened and where to look next.

// explainAttempt explains refusals by the packet filter or another host,
// connect() timeouts and filtered SYNs; ok is false for the causes
// explained elsewhere.
func explainAttempt(e *Event) (s string, ok bool) {
	switch {
	case e.Type == TypeTimeout, e.Type == TypeFiltered:
	case e.Cause == CauseUnknown && e.Answer != "":
	case e.Cause == CauseFirewallReject, e.Cause == CauseFirewallDrop, e.Cause == CauseNoResponse, e.Cause == CauseRemote:
	default:
		return "", false // the core's causes: nothing formatted, nothing allocated
	}
	port := uint16(0)
	dst := "?"
	if e.Dst != nil {
		port = e.Dst.Port
		dst = string(appendHostPort(nil, e.Dst.Addr, e.Dst.Port))
	}
	switch e.Cause {
	case CauseFirewallReject:
		s := fmt.Sprintf("this host's packet filter refused the connection to %s: rejected by %s, which answered the SYN with %s; the service never saw it",
			dst, fwWhere(e.Firewall), answerText(e.Answer))
		if e.Listener != nil {
			s += fmt.Sprintf(" although %s listens on port %d", e.Listener.Process, port)
		}
		return s + ": " + fwCheck(e.Firewall, port), true
	case CauseFirewallDrop:
		if e.Type == TypeFiltered {
			s := fmt.Sprintf("%s on this host discarded %d SYN(s) to %s", fwWhere(e.Firewall), synCount(e.Firewall), dst)
			if e.Listener != nil {
				s += fmt.Sprintf(" (where %s listens)", e.Listener.Process)
			}
			return s + "; the sender got a RST if the rule rejects with tcp reset, nothing if it drops: " + fwCheck(e.Firewall, port), true
		}
		s := "connect() to " + dst + " got no answer"
		if e.Attempt != nil && e.Attempt.StillWaiting {
			s = "connect() to " + dst + " is still waiting"
		} else if e.Attempt != nil && e.Attempt.Errno == "" {
			s = "the client gave up on connect() to " + dst
		}
		if w := waited(e.Attempt); w != "" {
			s += " after " + w
		}
		return s + ": " + fwWhere(e.Firewall) + " on this host dropped its SYNs; " + fwCheck(e.Firewall, port), true
	case CauseNoResponse:
		addr := dstAddr(e)
		return noAnswer(e, dst) + fmt.Sprintf(" and this host did not drop them: %s is down or unreachable, or a firewall on the path or on that host drops them; check `ip route get %s` and that host's firewall", addr, addr), true
	case CauseUnknown:
		// Where the kernel does not report packet filter drops (before
		// 5.17) this host's own firewall cannot be ruled out.
		switch {
		case e.Type == TypeTimeout:
			addr := dstAddr(e)
			return noAnswer(e, dst) + fmt.Sprintf(": this kernel does not report packet filter drops, so this host's firewall is not ruled out: check `nft list ruleset` (and `iptables-save`) here for a drop on port %d, then `ip route get %s` and that host's firewall", port, addr), true
		case e.Type == TypeRefused && e.Answer == "icmp":
			return fmt.Sprintf("an ICMP error refused the connection to %s (no RST); this kernel cannot tell a `reject` rule of this host's packet filter from the remote host: check `nft list ruleset` here for a reject on port %d, then the service and firewall on %s", dst, port, dstAddr(e)), true
		}
	case CauseRemote:
		return fmt.Sprintf("%s refused the connection with %s, and nothing on this host sent it: nothing listens on port %d there, or its firewall rejects it; check the service and the firewall on that host", dst, answerText(e.Answer), port), true
	}
	return "", false
}

// fwWhere says where the packet filter acted: the rule when the ruleset
// names it, `nftables rule "ip kube-proxy services handle 12" (comment:
// "default/web:http has no endpoints") on the input hook`, else "an
// nftables rule (nft or iptables-nft) in a chain on the input hook".
func fwWhere(f *Firewall) string {
	if r := fwRule(f); r != "" {
		s := "nftables rule \"" + r + "\""
		if f.Comment != "" {
			s += " (comment: \"" + f.Comment + "\")"
		}
		if f.Hook != "" {
			s += " on the " + f.Hook + " hook"
		}
		return s
	}
	s := "a packet filter rule (nftables or iptables)"
	if f != nil && f.Table == "nftables" {
		s = "an nftables rule (nft or iptables-nft)"
	}
	if f != nil && f.Hook != "" {
		s += " in a chain on the " + f.Hook + " hook"
	}
	return s
}

// fwRule names the rule as nft does: "ip kube-proxy services handle 12";
// empty when the ruleset did not say which rule it was.
func fwRule(f *Firewall) string {
	if f == nil || f.TableName == "" && f.Chain == "" && f.Handle == 0 {
		return ""
	}
	var parts []string
	for _, p := range []string{f.Family, f.TableName, f.Chain} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if f.Handle != 0 {
		parts = append(parts, "handle "+strconv.FormatUint(f.Handle, 10))
	}
	return strings.Join(parts, " ")
}

// fwCheck is what to run to find the rule.
func fwCheck(f *Firewall, port uint16) string {
	if f != nil && f.TableName != "" && f.Chain != "" {
		chain := strings.TrimSpace(f.Family + " " + f.TableName + " " + f.Chain)
		return "check `nft -a list chain " + chain + "`"
	}
	hook := ""
	if f != nil && f.Hook != "" {
		hook = " hook " + f.Hook
	}
	if f != nil && f.Table == "nftables" {
		return fmt.Sprintf("check `nft -a list ruleset` for a rule matching tcp dport %d in the chains with%s", port, orAny(hook))
	}
	return fmt.Sprintf("check `nft -a list ruleset` and `iptables-save` for a rule matching port %d%s", port, hook)
}

func orAny(hook string) string {
	if hook == "" {
		return " any hook"
	}
	return hook
}

func answerText(a string) string {
	switch a {
	case "tcp_reset":
		return "a TCP reset"
	case "icmp":
		return "an ICMP error (port unreachable or the type the rule names)"
	}
	return "an error"
}

func waited(a *Attempt) string {
	if a == nil {
		return ""
	}
	d := time.Duration(a.WaitedMs) * time.Millisecond
	return fmt.Sprintf("%d SYNs in %s", a.Retransmits+1, d.Round(time.Millisecond))
}

// noAnswer starts the explanation of a connect() that got no answer.
func noAnswer(e *Event, dst string) string {
	s := "connect() to " + dst + " got no answer"
	if e.Attempt != nil && e.Attempt.Errno == "" {
		s = "the client gave up on connect() to " + dst
	}
	if w := waited(e.Attempt); w != "" {
		s += " after " + w
	}
	return s
}

func dstAddr(e *Event) string {
	if e.Dst == nil {
		return "the destination"
	}
	return e.Dst.Addr.String()
}

func synCount(f *Firewall) uint32 {
	if f == nil {
		return 0
	}
	return f.SYNs
}
