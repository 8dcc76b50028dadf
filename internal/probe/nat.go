package probe

import (
	"errors"
	"os"

	"github.com/cilium/ebpf/btf"
)

// Address translation of first SYNs (capability nat): tp_btf/net_dev_queue
// reads the SYN's conntrack entry (skb->_nfct -> struct nf_conn). Where
// nf_conntrack is built in, struct nf_conn is in vmlinux BTF; where it is
// a module, in the module's BTF (/sys/kernel/btf/nf_conntrack), which the
// CO-RE relocations then take as an extra target (conntrackTypes). Where
// the module was not loaded when the tracer started, the program is loaded
// again with its types when the capability's wait for nf_nat ends
// (Untyped.Reload): a NAT rule loads both.

// conntrackModule is the module that defines struct nf_conn when it is not
// built in.
const conntrackModule = "nf_conntrack"

// natProgram serves the nat capability.
const natProgram = "tp_btf_net_dev_queue"

// natModule is the kernel's address translation when it is not built in.
const natModule = "nf_nat"

// natNeeded: the NAT program runs for every packet every device sends,
// and only a kernel that can translate addresses needs it. Built in
// (nf_nat_setup_info in vmlinux BTF) or loaded already: attached at once.
// Otherwise it waits for the module, which the first NAT rule loads
// (nftables' nat chains, iptables' nat table: Docker, kube-proxy, a
// port redirect); the tracer looks for it in /sys/module at each
// housekeeping pass (a few times a second).
func natNeeded(s *btf.Spec) (func() bool, string) {
	var fn *btf.Func
	if err := s.TypeByName("nf_nat_setup_info", &fn); err == nil {
		return nil, ""
	}
	loaded := func() bool {
		_, err := os.Stat("/sys/module/" + natModule)
		return err == nil
	}
	if loaded() {
		return nil, ""
	}
	return loaded, "the kernel's address translation (module " + natModule + ") is loaded"
}

// probeNAT: the tracepoint exists, sk_buff carries a conntrack reference
// (CONFIG_NF_CONNTRACK) and struct nf_conn is resolvable.
func probeNAT(s *btf.Spec) error {
	if _, err := tpParams(s, "btf_trace_net_dev_queue"); err != nil {
		return errors.New("no net:net_dev_queue tracepoint")
	}
	var skb *btf.Struct
	if err := s.TypeByName("sk_buff", &skb); err != nil {
		return errors.New("no struct sk_buff in kernel BTF")
	}
	if !hasMember(skb.Members, "_nfct") {
		return errors.New("sk_buff has no _nfct: kernel built without conntrack")
	}
	// struct nf_conn may still be missing: nf_conntrack not loaded yet.
	// The capability then waits for nf_nat (natNeeded), which needs it;
	// with nf_nat there and still no types, the modules have no BTF.
	if now, _ := natNeeded(s); now == nil {
		if _, err := conntrackTypes(s); err != nil {
			return err
		}
	}
	return nil
}

// conntrackTypes returns nil if struct nf_conn is in s, else the BTF of the
// nf_conntrack module that has it, or an error saying neither does.
func conntrackTypes(s *btf.Spec) (*btf.Spec, error) {
	var ct *btf.Struct
	if err := s.TypeByName("nf_conn", &ct); err == nil {
		return nil, nil
	}
	m, err := btf.LoadKernelModuleSpec(conntrackModule)
	if err == nil {
		if err := m.TypeByName("nf_conn", &ct); err == nil {
			return m, nil
		}
	}
	return nil, errors.New("nf_conntrack types not in BTF (module not loaded, or without BTF)")
}

// hasMember reports whether a member called name is among ms, looking into
// anonymous structs and unions (sk_buff nests most of its fields).
func hasMember(ms []btf.Member, name string) bool {
	for _, m := range ms {
		if m.Name == name {
			return true
		}
		if m.Name != "" {
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			if hasMember(t.Members, name) {
				return true
			}
		case *btf.Union:
			if hasMember(t.Members, name) {
				return true
			}
		}
	}
	return false
}
