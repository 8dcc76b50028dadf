// Command mintracer is a minimal stand-in tracer for the A/B runner: it
// attaches one tiny counting BPF program to each of the tcp:tcp_send_reset
// and tcp:tcp_receive_reset tracepoints and speaks rsttrace's stdout
// protocol ({"type":"start"} once attached, {"type":"stop","lost":0} on
// SIGINT), but emits no per-event records.
//
// It serves two purposes: it exercises abrun's bpf-stats path without the
// real tracer, and its B/A ratio is a floor for rsttrace's — the cost of
// merely having a BPF program on the refusal path, with no ring buffer, no
// user-space decoding and no output.
//
// -hooks=rsttrace instead puts the counting program (as a raw tracepoint
// program, dispatched as rsttrace's tp_btf ones are) on every tracepoint a
// loopback refusal passes that rsttrace's default plan attaches to: the
// cost of the hooks alone, before any of rsttrace's work.
//
// -syscalls also attaches it to the syscall tracepoints rsttrace uses
// (bind, listen, accept, accept4; entry and exit): while any syscall
// tracepoint is attached, every syscall of every task takes the kernel's
// traced entry and exit path, whichever syscall it is.
//
//	TRACER_CMD=bench/bin/mintracer bench/run.sh
//	TRACER_CMD="bench/bin/mintracer -hooks=rsttrace" bench/run.sh
//	TRACER_CMD="bench/bin/mintracer -hooks=rsttrace -syscalls" bench/busy.sh
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mintracer:", err)
		os.Exit(1)
	}
}

// rsttraceHooks: the tracepoints of rsttrace's default plan that a loopback
// refusal passes (a connect's two state changes, the SYN and the RST leaving
// lo, the RST sent and received, the refused SYN freed).
var rsttraceHooks = []string{"inet_sock_set_state", "net_dev_queue", "tcp_send_reset", "tcp_receive_reset", "kfree_skb"}

// rsttraceSyscalls: the syscalls rsttrace traces on entry and exit (bind
// failures, listen(), the owners of accepted sockets).
var rsttraceSyscalls = []string{"bind", "listen", "accept", "accept4"}

func run() error {
	hooks := flag.String("hooks", "reset", "reset: tcp:tcp_send_reset and tcp:tcp_receive_reset (tracepoint programs); rsttrace: a raw tracepoint program on each of "+fmt.Sprint(rsttraceHooks))
	syscalls := flag.Bool("syscalls", false, "also attach to the syscall tracepoints rsttrace uses: "+fmt.Sprint(rsttraceSyscalls))
	flag.Parse()
	if *hooks != "reset" && *hooks != "rsttrace" {
		return fmt.Errorf("-hooks %q: want reset or rsttrace", *hooks)
	}
	// Subscribe before printing "start", so a SIGINT sent right after it
	// cannot kill us before the stop line is written.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	counts, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "mint_counts",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return err
	}
	defer counts.Close()

	// A per-CPU counter keeps the program free of cross-CPU cache-line
	// bouncing, so what is measured is the attach cost, not contention.
	typ := ebpf.TracePoint
	if *hooks == "rsttrace" {
		typ = ebpf.RawTracepoint
	}
	prog, err := countingProgram(typ, counts)
	if err != nil {
		return fmt.Errorf("loading program: %w", err)
	}
	defer prog.Close()

	if *syscalls {
		sysProg := prog
		if typ != ebpf.TracePoint {
			if sysProg, err = countingProgram(ebpf.TracePoint, counts); err != nil {
				return fmt.Errorf("loading program: %w", err)
			}
			defer sysProg.Close()
		}
		for _, sc := range rsttraceSyscalls {
			for _, dir := range []string{"enter", "exit"} {
				l, err := link.Tracepoint("syscalls", "sys_"+dir+"_"+sc, sysProg, nil)
				if err != nil {
					return fmt.Errorf("attaching to syscalls:sys_%s_%s: %w", dir, sc, err)
				}
				defer l.Close()
			}
		}
	}

	if *hooks == "rsttrace" {
		for _, tp := range rsttraceHooks {
			l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
			if err != nil {
				return fmt.Errorf("attaching to raw tracepoint %s: %w", tp, err)
			}
			defer l.Close()
		}
	} else {
		for _, tp := range []string{"tcp_send_reset", "tcp_receive_reset"} {
			l, err := link.Tracepoint("tcp", tp, prog, nil)
			if err != nil {
				return fmt.Errorf("attaching to tcp:%s: %w", tp, err)
			}
			defer l.Close()
		}
	}

	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]any{"type": "start", "version": 1}); err != nil {
		return err
	}
	<-sigs

	var perCPU []uint64
	if err := counts.Lookup(uint32(0), &perCPU); err != nil {
		return errors.Join(errors.New("reading counter"), err)
	}
	var total uint64
	for _, n := range perCPU {
		total += n
	}
	return out.Encode(map[string]any{"type": "stop", "lost": 0, "hits": total})
}

// countingProgram adds one to counts' per-CPU slot on every run.
func countingProgram(typ ebpf.ProgramType, counts *ebpf.Map) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "mint_count",
		Type:    typ,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, counts.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
}
