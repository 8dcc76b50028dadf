// Package mintrace is the floor of the overhead benchmarks: one tiny BPF
// program that only counts, attached where rsttrace's programs would run.
// Its cost is what having a program on those hooks costs at all, before
// any of rsttrace's work.
package mintrace

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Hook sets.
const (
	// HooksReset: tcp:tcp_send_reset and tcp:tcp_receive_reset
	// (tracepoint programs): the RST of a refusal, sent and received.
	HooksReset = "reset"
	// HooksRsttrace: a raw tracepoint program (dispatched as rsttrace's
	// tp_btf ones are) on every tracepoint a loopback refusal passes that
	// rsttrace's default plan attaches to.
	HooksRsttrace = "rsttrace"
)

// RsttraceHooks: the tracepoints of rsttrace's default plan that a
// loopback refusal passes (a connect's two state changes, the SYN and the
// RST leaving lo where the NAT hook is attached, the RST sent and
// received, the refused SYN freed).
var RsttraceHooks = []string{"inet_sock_set_state", "net_dev_queue", "tcp_send_reset", "tcp_receive_reset", "kfree_skb"}

// RsttraceSyscalls: the syscalls rsttrace traces on entry and exit where
// the kernel refuses fentry (bind failures, listen(), the owners of
// accepted sockets).
var RsttraceSyscalls = []string{"bind", "listen", "accept", "accept4"}

// Programs is the counting program, loaded, and where it attaches.
type Programs struct {
	counts *ebpf.Map
	progs  []*ebpf.Program
	attach []func() (link.Link, error)
	links  []link.Link
}

// Load loads the counting program for hooks (HooksReset or
// HooksRsttrace), and with syscalls for the syscall tracepoints rsttrace
// uses too. Nothing is attached yet.
func Load(hooks string, syscalls bool) (*Programs, error) {
	if hooks != HooksReset && hooks != HooksRsttrace {
		return nil, fmt.Errorf("hooks %q: want %s or %s", hooks, HooksReset, HooksRsttrace)
	}
	p := &Programs{}
	var err error
	// A per-CPU counter keeps the program free of cross-CPU cache-line
	// bouncing, so what is measured is the attach cost, not contention.
	p.counts, err = ebpf.NewMap(&ebpf.MapSpec{Name: "mint_counts", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	typ := ebpf.TracePoint
	if hooks == HooksRsttrace {
		typ = ebpf.RawTracepoint
	}
	prog, err := p.program(typ)
	if err != nil {
		p.Close()
		return nil, err
	}
	if hooks == HooksRsttrace {
		for _, tp := range RsttraceHooks {
			p.attach = append(p.attach, func() (link.Link, error) {
				return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
			})
		}
	} else {
		for _, tp := range []string{"tcp_send_reset", "tcp_receive_reset"} {
			p.attach = append(p.attach, func() (link.Link, error) { return link.Tracepoint("tcp", tp, prog, nil) })
		}
	}
	if syscalls {
		sys := prog
		if typ != ebpf.TracePoint {
			if sys, err = p.program(ebpf.TracePoint); err != nil {
				p.Close()
				return nil, err
			}
		}
		for _, sc := range RsttraceSyscalls {
			for _, dir := range []string{"enter", "exit"} {
				p.attach = append(p.attach, func() (link.Link, error) {
					return link.Tracepoint("syscalls", "sys_"+dir+"_"+sc, sys, nil)
				})
			}
		}
	}
	return p, nil
}

// program loads the counting program as typ: it adds one to the per-CPU
// counter on every run.
func (p *Programs) program(typ ebpf.ProgramType) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "mint_count",
		Type:    typ,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, p.counts.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("loading program: %w", err)
	}
	p.progs = append(p.progs, prog)
	return prog, nil
}

// Attach attaches the program to every hook; on an error none stays
// attached.
func (p *Programs) Attach() error {
	for _, a := range p.attach {
		l, err := a()
		if err != nil {
			p.Detach()
			return fmt.Errorf("attaching: %w", err)
		}
		p.links = append(p.links, l)
	}
	return nil
}

// Detach detaches it from every hook.
func (p *Programs) Detach() {
	for _, l := range p.links {
		l.Close()
	}
	p.links = nil
}

// Hits is how many times the program ran, on all CPUs.
func (p *Programs) Hits() (uint64, error) {
	var perCPU []uint64
	if err := p.counts.Lookup(uint32(0), &perCPU); err != nil {
		return 0, errors.Join(errors.New("reading counter"), err)
	}
	var total uint64
	for _, n := range perCPU {
		total += n
	}
	return total, nil
}

// Close detaches and frees everything.
func (p *Programs) Close() {
	p.Detach()
	for _, prog := range p.progs {
		prog.Close()
	}
	if p.counts != nil {
		p.counts.Close()
	}
}
