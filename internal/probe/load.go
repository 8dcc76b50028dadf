package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/rsttrace/rsttrace/internal/bpfobj"
)

// Settings are what the programs are told before load, besides the plan.
type Settings struct {
	// RingSize is the ring buffer size in bytes (a power of two).
	RingSize int
	// Summary: count every refusal in the kernel instead of writing it.
	// Otherwise refusals are counted only while the ring buffer holds
	// more than SummaryAbove bytes.
	Summary      bool
	SummaryAbove uint64
	// FilterPorts: only the ports put in the ports map are traced.
	FilterPorts bool
	// Proc is where procfs is mounted (for kallsyms).
	Proc string
	// RatePerSecond: events of a kind per destination written in full
	// each second, the rest counted (0: no limit). The kernel counts per
	// CPU, so each CPU gets an equal share (at least one).
	RatePerSecond int
}

// Prepare returns the BPF collection spec for plan on this kernel: only the
// programs the plan attaches (the others may not even load here: fentry
// where it is refused, for one), with every setting made. Variables and
// maps are reached through the generated types, so a rename in the C code
// fails to compile here rather than at run time.
func Prepare(kernelBTF *btf.Spec, plan Plan, set Settings) (*ebpf.CollectionSpec, error) {
	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		return nil, fmt.Errorf("loading BPF object: %w", err)
	}
	var objs bpfobj.RsttraceSpecs
	if err := spec.Assign(&objs); err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	objs.Records.MaxEntries = uint32(set.RingSize)
	vars := &objs.RsttraceVariableSpecs
	settings := []struct {
		what string
		v    *ebpf.VariableSpec
		val  any
	}{
		{"summary mode", vars.SummaryAlways, set.Summary},
		{"summary threshold", vars.SummaryAbove, set.SummaryAbove},
		{"port filter", vars.FilterPorts, set.FilterPorts},
		{"rate per destination", vars.RateLimit, perCPURate(set.RatePerSecond)},
		{"capabilities of the shared programs", vars.Caps, plan.Caps(SendResetHasReason(kernelBTF))},
	}
	if plan.Kind(CapOverflowFinalAck) == "tp_btf" {
		v, _ := dropReason(kernelBTF, "TCP_LISTEN_OVERFLOW")
		settings = append(settings, struct {
			what string
			v    *ebpf.VariableSpec
			val  any
		}{"listen overflow drop reason", vars.ReasonListenOverflow, v})
	}
	for _, s := range settings {
		if err := s.v.Set(s.val); err != nil {
			return nil, fmt.Errorf("setting %s: %w", s.what, err)
		}
	}
	if err := configureFirewall(vars, kernelBTF, plan, set.Proc); err != nil {
		return nil, err
	}
	keep := plan.Programs()
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	return spec, nil
}

// perCPURate is each CPU's share of rate full records a second (0: no
// limit). Shares rounded down keep the total at most rate; a load all on
// one CPU then gets its share only.
func perCPURate(rate int) uint32 {
	if rate <= 0 {
		return 0
	}
	n, err := ebpf.PossibleCPU()
	if err != nil || n < 1 {
		n = 1
	}
	return uint32(max(1, rate/n))
}

// Load loads spec into the kernel.
func Load(spec *ebpf.CollectionSpec, kernelBTF *btf.Spec) (*ebpf.Collection, error) {
	// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK; from 5.11 on
	// (memcg accounting) this probes and changes nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, requirement("raising RLIMIT_MEMLOCK for BPF maps: %v", err)
	}
	opts := ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernelBTF}}
	if _, ok := spec.Programs["tp_btf_net_dev_queue"]; ok {
		// struct nf_conn lives in the nf_conntrack module's BTF where
		// conntrack is not built in.
		if m, err := conntrackTypes(kernelBTF); err == nil && m != nil {
			opts.Programs.ExtraRelocationTargets = []*btf.Spec{m}
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading BPF programs (verifier): %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	return coll, nil
}

// Attach attaches the programs of every capability the plan serves. A
// capability whose attach fails although its probe passed (a function
// ftrace cannot patch, for one) is degraded in the plan, with the kernel's
// reason, rather than failing the tracer.
//
// A program shared by several capabilities is attached once: by the first
// capability that needs it. If another of that capability's programs
// fails, the links it made are closed, so a later capability attaches the
// shared one afresh.
func Attach(coll *ebpf.Collection, plan Plan, log *slog.Logger) []link.Link {
	var all []link.Link
	attached := map[string]bool{}
	failed := map[string]error{}
	for i := range plan {
		c := &plan[i]
		if !c.Served() {
			if c.Fallback != "" {
				log.Info("capability partial", "capability", c.Capability, "reason", c.Degraded, "fallback", c.Fallback)
			} else {
				log.Warn("capability degraded", "capability", c.Capability, "reason", c.Degraded)
			}
			continue
		}
		var links []link.Link
		var made []string
		var aerr error
		for _, name := range c.Programs() {
			if attached[name] {
				continue
			}
			if err, ok := failed[name]; ok {
				aerr = fmt.Errorf("attaching %s: %w", c.Hook(), err)
				break
			}
			l, err := c.Attach(name, coll.Programs[name])
			if err != nil {
				failed[name] = fmt.Errorf("%s: %w", name, err)
				aerr = fmt.Errorf("attaching %s (%s): %w", c.Hook(), name, err)
				break
			}
			attached[name] = true
			links = append(links, l)
			made = append(made, name)
		}
		if aerr != nil {
			for j, l := range links {
				l.Close()
				delete(attached, made[j])
			}
			plan.Degrade(c.Capability, aerr.Error())
			log.Warn("capability degraded", "capability", c.Capability, "reason", aerr.Error())
			continue
		}
		all = append(all, links...)
	}
	return all
}

// RSTReasonNames resolves RST reason values by their names in this
// kernel's BTF (enum sk_rst_reason, 6.10+): the numbering differs between
// kernels, so it is never hard-coded.
func RSTReasonNames(spec *btf.Spec) func(uint32) string {
	names := map[uint32]string{}
	var e *btf.Enum
	if err := spec.TypeByName("sk_rst_reason", &e); err == nil {
		for _, v := range e.Values {
			names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
		}
	}
	return func(v uint32) string { return names[v] }
}
