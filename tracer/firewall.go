package tracer

// Issue 5, kernel side: which hooks serve firewall refusals, connect
// failures and resets on this kernel, and the settings those programs get
// before load (a drop reason resolved by name, code ranges from kallsyms).

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Capability names of issue 5, as in the start record's plan.
const (
	// SYNs the packet filter dropped (nft/iptables drop and reject), with
	// the netfilter hook.
	CapFirewall = "firewall"
	// Which of those drops were answered with an ICMP error (reject).
	CapFirewallICMP = "firewall_icmp"
	// Local connect() attempts that timed out or were refused by ICMP.
	CapConnectFailures = "connect_failures"
	// RSTs on established connections, sent and received.
	CapResets = "resets"
)

var issue5Capabilities = []capability{
	// The programs are those of the core capabilities on the same
	// tracepoints (one per hook; see option in plan.go).
	{name: CapFirewall, options: []option{
		{"tp_btf/kfree_skb(NETFILTER_DROP)", "tp_btf", []string{"tp_btf_kfree_skb"}, probeNetfilterDrop, attachTracing},
	}},
	{name: CapFirewallICMP, options: []option{
		{"tp_btf/icmp_send", "tp_btf", []string{"tp_btf_icmp_send"}, probeIcmpSend, attachTracing},
	}},
	{name: CapConnectFailures, options: []option{
		{"tp_btf/inet_sock_set_state+tcp_retransmit_skb", "tp_btf", []string{"tp_btf_inet_sock_set_state", "tp_btf_tcp_retransmit_skb"},
			probeTPs("btf_trace_inet_sock_set_state", "btf_trace_tcp_retransmit_skb"), attachTracing},
	}},
	{name: CapResets, options: []option{
		// 6.10+: the reason (TCP_ABORT_ON_CLOSE, ...) comes with it.
		{"tp_btf/tcp_send_reset+tcp_receive_reset", "tp_btf", []string{"tp_btf_tcp_send_reset", "tp_btf_tcp_receive_reset"},
			probeSendResetTP, attachTracing},
		// Before 6.10 tcp:tcp_send_reset still fires for active resets
		// (they always have a full socket), without a reason: the same
		// program, which reads no reason there (CAP_F_RST_REASON clear).
		{"tp_btf/tcp_send_reset(no reason)+tcp_receive_reset", "tp_btf", []string{"tp_btf_tcp_send_reset", "tp_btf_tcp_receive_reset"},
			probeTPs("btf_trace_tcp_send_reset", "btf_trace_tcp_receive_reset"), attachTracing},
	}},
}

func probeTPs(typedefs ...string) func(*btf.Spec) error {
	return func(s *btf.Spec) error {
		for _, td := range typedefs {
			if err := probeTP(td)(s); err != nil {
				return err
			}
		}
		return nil
	}
}

// tpParams returns the number of arguments of a tracepoint (without the
// leading void *), from its btf_trace_* typedef.
func tpParams(s *btf.Spec, typedef string) (int, error) {
	var td *btf.Typedef
	if err := s.TypeByName(typedef, &td); err != nil {
		return 0, fmt.Errorf("no %s in kernel BTF", typedef)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("unexpected %s type", typedef)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("unexpected %s type", typedef)
	}
	return len(proto.Params) - 1, nil
}

// enumValue resolves an enumerator by name: the numbering of kernel enums
// such as skb_drop_reason differs between versions.
func enumValue(s *btf.Spec, enum, name string) (uint64, error) {
	var e *btf.Enum
	if err := s.TypeByName(enum, &e); err != nil {
		return 0, fmt.Errorf("no enum %s in kernel BTF", enum)
	}
	for _, v := range e.Values {
		if v.Name == name {
			return v.Value, nil
		}
	}
	return 0, fmt.Errorf("enum %s has no %s", enum, name)
}

// probeNetfilterDrop: skb:kfree_skb carries a drop reason (5.17+) and
// this kernel has SKB_DROP_REASON_NETFILTER_DROP.
func probeNetfilterDrop(s *btf.Spec) error {
	n, err := tpParams(s, "btf_trace_kfree_skb")
	if err != nil {
		return err
	}
	if n < 3 { // (skb, location, reason[, rx_sk from 6.11])
		return errors.New("skb:kfree_skb has no drop reason (before 5.17): packet filter drops cannot be told from other drops")
	}
	_, err = enumValue(s, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
	return err
}

func probeIcmpSend(s *btf.Spec) error {
	if _, err := tpParams(s, "btf_trace_icmp_send"); err != nil {
		return errors.New("no icmp:icmp_send tracepoint: an ICMP reject of a remote client's SYN looks like a drop (local clients are still told apart)")
	}
	return nil
}

// chosen reports whether the plan serves capability c.
func chosen(choices []choice, c string) bool {
	for _, ch := range choices {
		if ch.capability == c {
			return ch.opt != nil
		}
	}
	return false
}

// nfHookCallers are the functions whose NF_HOOK call is the hook: the first
// of them on the stack of a netfilter drop names it. Static ones may be
// inlined on some builds; a missing symbol only costs the hook name.
var nfHookCallers = map[string]bpfobj.RsttraceNfHookId{
	"ip_rcv":           bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING,
	"ip_sublist_rcv":   bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING,
	"ipv6_rcv":         bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING,
	"ipv6_list_rcv":    bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING,
	"ip6_sublist_rcv":  bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING,
	"ip_local_deliver": bpfobj.RsttraceNfHookIdNF_HOOK_ID_INPUT,
	"ip6_input":        bpfobj.RsttraceNfHookIdNF_HOOK_ID_INPUT,
	"ip_forward":       bpfobj.RsttraceNfHookIdNF_HOOK_ID_FORWARD,
	"ip6_forward":      bpfobj.RsttraceNfHookIdNF_HOOK_ID_FORWARD,
	"__ip_local_out":   bpfobj.RsttraceNfHookIdNF_HOOK_ID_OUTPUT,
	"__ip6_local_out":  bpfobj.RsttraceNfHookIdNF_HOOK_ID_OUTPUT,
	"ip6_xmit":         bpfobj.RsttraceNfHookIdNF_HOOK_ID_OUTPUT, // TCP over IPv6 calls NF_HOOK(LOCAL_OUT) itself
	"ip_output":        bpfobj.RsttraceNfHookIdNF_HOOK_ID_POSTROUTING,
	"ip_mc_output":     bpfobj.RsttraceNfHookIdNF_HOOK_ID_POSTROUTING,
	"ip6_output":       bpfobj.RsttraceNfHookIdNF_HOOK_ID_POSTROUTING,
	"nft_do_chain":     bpfobj.RsttraceNfHookIdNF_HOOK_ID_NFT,
}

// kallsymsRanges finds the code range of each wanted text symbol: from its
// address to the next symbol's. Symbols hidden by kptr_restrict (address
// 0) are skipped.
func kallsymsRanges(path string, want map[string]bpfobj.RsttraceNfHookId) ([]bpfobj.RsttraceCodeRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var addrs []uint64
	starts := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		a, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || a == 0 {
			continue
		}
		addrs = append(addrs, a)
		if _, ok := want[fields[2]]; ok && (fields[1] == "t" || fields[1] == "T") {
			if _, dup := starts[fields[2]]; !dup {
				starts[fields[2]] = a
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.Sort(addrs)
	var out []bpfobj.RsttraceCodeRange
	for name, start := range starts {
		i, _ := slices.BinarySearch(addrs, start+1)
		if i == len(addrs) {
			continue
		}
		out = append(out, bpfobj.RsttraceCodeRange{Start: start, End: addrs[i], What: uint32(want[name])})
	}
	slices.SortFunc(out, func(a, b bpfobj.RsttraceCodeRange) int { return int(a.What) - int(b.What) })
	return out, nil
}

const nfRangesMax = 24 // NF_RANGES_MAX in rsttrace.h

// configureIssue5 sets what the issue 5 programs read before load.
func configureIssue5(spec *ebpf.CollectionSpec, kernelBTF *btf.Spec, choices []choice, proc string) error {
	if !chosen(choices, CapFirewall) {
		return nil
	}
	v, err := enumValue(kernelBTF, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
	if err != nil {
		return err
	}
	if err := spec.Variables["netfilter_drop_reason"].Set(uint32(v)); err != nil {
		return fmt.Errorf("setting netfilter drop reason: %w", err)
	}
	ranges, err := kallsymsRanges(proc+"/kallsyms", nfHookCallers)
	if err != nil {
		// Without kallsyms the hook is not named; drops are still seen.
		ranges = nil
	}
	var arr [nfRangesMax]bpfobj.RsttraceCodeRange
	n := copy(arr[:], ranges)
	if err := spec.Variables["nf_ranges"].Set(arr); err != nil {
		return fmt.Errorf("setting netfilter hook ranges: %w", err)
	}
	if err := spec.Variables["nf_range_count"].Set(uint32(n)); err != nil {
		return fmt.Errorf("setting netfilter hook ranges: %w", err)
	}
	return nil
}

// hookName names an enum nf_hook_id value.
func hookName(id uint32) string {
	switch bpfobj.RsttraceNfHookId(id) {
	case bpfobj.RsttraceNfHookIdNF_HOOK_ID_PREROUTING:
		return "prerouting"
	case bpfobj.RsttraceNfHookIdNF_HOOK_ID_INPUT:
		return "input"
	case bpfobj.RsttraceNfHookIdNF_HOOK_ID_FORWARD:
		return "forward"
	case bpfobj.RsttraceNfHookIdNF_HOOK_ID_OUTPUT:
		return "output"
	case bpfobj.RsttraceNfHookIdNF_HOOK_ID_POSTROUTING:
		return "postrouting"
	}
	return ""
}
