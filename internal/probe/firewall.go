package probe

// The packet filter's side of the plan: the settings the firewall program
// gets before load (the drop reason resolved by name, and the code ranges
// of the functions that call NF_HOOK, from kallsyms, to name the hook).

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

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
	// A scan of the bytes, line by line in a reused buffer: /proc/kallsyms
	// has over 100,000 lines, and splitting each into strings (or reading
	// the whole file, of unknown size, into one growing slice under the
	// tracer's small heap limit) cost 100-300 ms of start-up.
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	addrs := make([]uint64, 0, 1<<17)
	starts := map[string]uint64{}
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			continue // a line longer than the buffer is no symbol of ours
		}
		if len(line) == 0 && err != nil {
			if err == io.EOF {
				break
			}
			return nil, err
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		// "ffffffff81ff5d30 T ip_local_deliver\t[module]"
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 || len(line) < sp+4 || line[sp+2] != ' ' {
			continue
		}
		a, ok := parseHex(line[:sp])
		if !ok || a == 0 {
			continue
		}
		addrs = append(addrs, a)
		if typ := line[sp+1]; typ != 't' && typ != 'T' {
			continue
		}
		name := line[sp+3:]
		if t := bytes.IndexByte(name, '\t'); t >= 0 {
			name = name[:t]
		}
		if _, ok := want[string(name)]; ok { // no allocation: map lookup by string(bytes)
			if _, dup := starts[string(name)]; !dup {
				starts[string(name)] = a
			}
		}
	}
	var out []bpfobj.RsttraceCodeRange
	for name, start := range starts {
		// The function ends where the next symbol starts.
		end := ^uint64(0)
		for _, a := range addrs {
			if a > start && a < end {
				end = a
			}
		}
		if end == ^uint64(0) {
			continue
		}
		out = append(out, bpfobj.RsttraceCodeRange{Start: start, End: end, What: uint32(want[name])})
	}
	slices.SortFunc(out, func(a, b bpfobj.RsttraceCodeRange) int {
		if a.What != b.What {
			return int(a.What) - int(b.What)
		}
		return cmp.Compare(a.Start, b.Start)
	})
	return out, nil
}

// parseHex parses a hexadecimal address.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

const nfRangesMax = 24 // NF_RANGES_MAX in rsttrace.h

// configureFirewall sets what the firewall program reads before load.
func configureFirewall(vars *bpfobj.RsttraceVariableSpecs, kernelBTF *btf.Spec, ranges []bpfobj.RsttraceCodeRange) error {
	v, err := EnumValue(kernelBTF, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
	if err != nil {
		return err
	}
	if err := vars.NetfilterDropReason.Set(uint32(v)); err != nil {
		return fmt.Errorf("setting netfilter drop reason: %w", err)
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
