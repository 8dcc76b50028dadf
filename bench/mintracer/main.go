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
//	TRACER_CMD=bench/bin/mintracer bench/run.sh
package main

import (
	"encoding/json"
	"errors"
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

func run() error {
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
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "mint_count",
		Type:    ebpf.TracePoint,
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
	if err != nil {
		return fmt.Errorf("loading program: %w", err)
	}
	defer prog.Close()

	for _, tp := range []string{"tcp_send_reset", "tcp_receive_reset"} {
		l, err := link.Tracepoint("tcp", tp, prog, nil)
		if err != nil {
			return fmt.Errorf("attaching to tcp:%s: %w", tp, err)
		}
		defer l.Close()
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
