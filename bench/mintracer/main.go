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
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cilium/ebpf/rlimit"

	"github.com/rsttrace/rsttrace/bench/mintrace"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mintracer:", err)
		os.Exit(1)
	}
}

func run() error {
	hooks := flag.String("hooks", mintrace.HooksReset, "reset: tcp:tcp_send_reset and tcp:tcp_receive_reset (tracepoint programs); rsttrace: a raw tracepoint program on each of "+fmt.Sprint(mintrace.RsttraceHooks))
	syscalls := flag.Bool("syscalls", false, "also attach to the syscall tracepoints rsttrace uses: "+fmt.Sprint(mintrace.RsttraceSyscalls))
	flag.Parse()
	// Subscribe before printing "start", so a SIGINT sent right after it
	// cannot kill us before the stop line is written.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	p, err := mintrace.Load(*hooks, *syscalls)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Attach(); err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]any{"type": "start", "version": 1}); err != nil {
		return err
	}
	<-sigs
	hits, err := p.Hits()
	if err != nil {
		return err
	}
	return out.Encode(map[string]any{"type": "stop", "lost": 0, "hits": hits})
}
