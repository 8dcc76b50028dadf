package probe

// The packet filter's side of the plan: the settings the firewall program
// gets before load (the drop reason resolved by name, and the code ranges
// of the functions that call NF_HOOK, from kallsyms, to name the hook).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/rsttrace/rsttrace/internal/bpfobj"

	"github.com/cilium/ebpf/btf"
)

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
	_, err = EnumValue(s, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
	return err
}

func probeIcmpSend(s *btf.Spec) error {
	if _, err := tpParams(s, "btf_trace_icmp_send"); err != nil {
		return errors.New("no icmp:icmp_send tracepoint: an ICMP reject of a remote client's SYN looks like a drop (local clients are still told apart)")
	}
	return nil
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

// configureFirewall sets what the firewall program reads before load.
func configureFirewall(vars *bpfobj.RsttraceVariableSpecs, kernelBTF *btf.Spec, plan Plan, proc string) error {
	if !plan.Serves(CapFirewall) {
		return nil
	}
	v, err := EnumValue(kernelBTF, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
	if err != nil {
		return err
	}
	if err := vars.NetfilterDropReason.Set(uint32(v)); err != nil {
		return fmt.Errorf("setting netfilter drop reason: %w", err)
	}
	ranges, err := kallsymsRanges(proc+"/kallsyms", nfHookCallers)
	if err != nil {
		// Without kallsyms the hook is not named; drops are still seen.
		ranges = nil
	}
	var arr [nfRangesMax]bpfobj.RsttraceCodeRange
	n := copy(arr[:], ranges)
	if err := vars.NfRanges.Set(arr); err != nil {
		return fmt.Errorf("setting netfilter hook ranges: %w", err)
	}
	if err := vars.NfRangeCount.Set(uint32(n)); err != nil {
		return fmt.Errorf("setting netfilter hook ranges: %w", err)
	}
	return nil
}
