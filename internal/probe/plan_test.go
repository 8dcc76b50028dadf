package probe

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/rsttrace/rsttrace/internal/bpfobj"
)

// Each tracepoint has one program: a second program on a hook
// would pay the hook's whole cost again on every event. Capabilities that
// share a hook share the program, and every program a plan names exists.
func TestOneProgramPerTracepoint(t *testing.T) {
	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		t.Fatal(err)
	}
	bySection := map[string][]string{}
	for name, p := range spec.Programs {
		if strings.HasPrefix(p.SectionName, "tp_btf/") || strings.HasPrefix(p.SectionName, "tracepoint/") {
			bySection[p.SectionName] = append(bySection[p.SectionName], name)
		}
	}
	for sec, progs := range bySection {
		if len(progs) > 1 {
			t.Errorf("%s has %d programs %v, want one that serves every capability on it", sec, len(progs), progs)
		}
	}
	for _, c := range capabilities {
		for _, o := range c.options {
			for _, p := range o.progs {
				if spec.Programs[p] == nil {
					t.Errorf("capability %s, hook %s: no program %s in the object", c.name, o.hook, p)
				}
			}
		}
	}
}

// The caps word names the capabilities a shared tp_btf program serves: a
// capability served by another hook kind, or degraded, leaves its bit clear.
func TestCapsOf(t *testing.T) {
	tp := &option{kind: "tp_btf"}
	kp := &option{kind: "kprobe"}
	all := Plan{
		{Capability: CapRefusals, option: tp},
		{Capability: CapListeners, option: tp},
		{Capability: CapClients, option: tp},
		{Capability: CapBindErrors, option: &option{kind: "tracepoint"}},
		{Capability: CapOverflowFinalAck, option: tp},
		{Capability: CapFirewall, option: tp},
		{Capability: CapConnectFailures, option: tp},
		{Capability: CapResets, option: tp},
	}
	want := bpfobj.RsttraceCapFlagCAP_F_REFUSALS | bpfobj.RsttraceCapFlagCAP_F_LISTENERS | bpfobj.RsttraceCapFlagCAP_F_CLIENTS |
		bpfobj.RsttraceCapFlagCAP_F_FIREWALL | bpfobj.RsttraceCapFlagCAP_F_FINAL_ACK | bpfobj.RsttraceCapFlagCAP_F_CONNECT_FAILURES |
		bpfobj.RsttraceCapFlagCAP_F_RESETS | bpfobj.RsttraceCapFlagCAP_F_OWNERS | bpfobj.RsttraceCapFlagCAP_F_RST_REASON
	if got := all.Caps(true); got != uint32(want) {
		t.Errorf("every capability on tp_btf: caps = %#x, want %#x", got, want)
	}

	// Before 6.10: refusals from a kprobe, resets from the tracepoint
	// without its reason, no final-ACK hook, no firewall.
	old := Plan{
		{Capability: CapRefusals, option: kp},
		{Capability: CapListeners, option: tp},
		{Capability: CapClients, option: tp},
		{Capability: CapOverflowFinalAck, option: &option{kind: "fentry"}},
		{Capability: CapFirewall},
		{Capability: CapConnectFailures, option: tp},
		{Capability: CapResets, option: tp},
	}
	want = bpfobj.RsttraceCapFlagCAP_F_LISTENERS | bpfobj.RsttraceCapFlagCAP_F_CLIENTS |
		bpfobj.RsttraceCapFlagCAP_F_CONNECT_FAILURES | bpfobj.RsttraceCapFlagCAP_F_RESETS | bpfobj.RsttraceCapFlagCAP_F_OWNERS
	if got := old.Caps(false); got != uint32(want) {
		t.Errorf("5.10-like plan: caps = %#x, want %#x", got, want)
	}
}
func TestKallsymsRanges(t *testing.T) {
	f := t.TempDir() + "/kallsyms"
	data := "ffffffff81000000 T _stext\n" +
		"ffffffff81ff5d30 T ip_local_deliver\n" +
		"ffffffff81ff5e00 t ip_local_deliver_finish\n" +
		"ffffffff81f62a50 T nft_do_chain\t[nf_tables]\n" +
		"ffffffff81f63000 T other\n" +
		"0000000000000000 T hidden\n"
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := kallsymsRanges(f, map[string]bpfobj.RsttraceNfHookId{"ip_local_deliver": bpfobj.RsttraceNfHookIdNF_HOOK_ID_INPUT,
		"nft_do_chain": bpfobj.RsttraceNfHookIdNF_HOOK_ID_NFT, "hidden": bpfobj.RsttraceNfHookIdNF_HOOK_ID_OUTPUT})
	if err != nil {
		t.Fatal(err)
	}
	want := []bpfobj.RsttraceCodeRange{
		{Start: 0xffffffff81ff5d30, End: 0xffffffff81ff5e00, What: uint32(bpfobj.RsttraceNfHookIdNF_HOOK_ID_INPUT)},
		{Start: 0xffffffff81f62a50, End: 0xffffffff81f63000, What: uint32(bpfobj.RsttraceNfHookIdNF_HOOK_ID_NFT)},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ranges = %+v, want %+v", got, want)
	}
}

// A choice's alternates are loaded with it, and take its place, in order,
// when the kernel refuses to attach it.
func TestChoiceAlternates(t *testing.T) {
	fentry := &option{hook: "fexit/inet_bind", kind: "fentry", progs: []string{"fexit_inet_bind"}}
	tp := &option{hook: "tracepoint/syscalls/sys_{enter,exit}_bind", kind: "tracepoint", progs: []string{"tp_sys_enter_bind", "tp_sys_exit_bind"}}
	p := Plan{{Capability: CapBindErrors, option: fentry, alternates: []*option{tp}}}
	want := map[string]bool{"fexit_inet_bind": true, "tp_sys_enter_bind": true, "tp_sys_exit_bind": true}
	if got := p.Programs(); len(got) != len(want) || !got["fexit_inet_bind"] || !got["tp_sys_exit_bind"] {
		t.Errorf("programs to load %v, want %v", got, want)
	}
	if !p[0].fallBack() || p[0].Hook() != tp.hook || p[0].Kind() != "tracepoint" {
		t.Fatalf("after a refused attach: hook %q, want %q", p[0].Hook(), tp.hook)
	}
	if p[0].fallBack() {
		t.Error("a second fallback with no alternate left")
	}
	p[0].alternates = []*option{tp}
	p.Degrade(CapBindErrors, "refused")
	if p[0].Served() || len(p[0].alternates) != 0 || p.Programs()["tp_sys_exit_bind"] {
		t.Error("a degraded choice keeps programs to load")
	}
}

// TestAttachWaiting: a waiting capability is left out of Attach and shown
// as waiting; AttachWaiting leaves it while its condition is false, and
// when it turns true runs prepare on its programs first, degrading the
// capability if prepare fails. (No program is attached: prepare fails or
// the wait holds in each case.)
func TestAttachWaiting(t *testing.T) {
	nat := &option{hook: "tp_btf/net_dev_queue", kind: "tp_btf", progs: []string{natProgram}}
	ready := false
	p := Plan{{Capability: CapNAT, option: nat}}
	p.Wait(CapNAT, "nf_nat", func() bool { return ready })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if links := Attach(nil, p, log); len(links) != 0 {
		t.Fatalf("Attach attached a waiting capability: %v", links)
	}
	if a := p.Attaches(); a[0].Waiting != "nf_nat" || a[0].Hook != nat.hook {
		t.Errorf("plan shows %+v, want the hook waiting for nf_nat", a[0])
	}
	var prepared []string
	prepare := func(progs []string) error { prepared = progs; return errors.New("no types") }
	AttachWaiting(nil, p, log, prepare)
	if prepared != nil || p[0].Waiting == "" {
		t.Fatalf("the wait ended before its condition: prepared %v, waiting %q", prepared, p[0].Waiting)
	}
	ready = true
	AttachWaiting(nil, p, log, prepare)
	if len(prepared) != 1 || prepared[0] != natProgram {
		t.Errorf("prepare got %v, want [%s]", prepared, natProgram)
	}
	if p[0].Served() || p[0].Waiting != "" || p[0].Degraded != "no types" {
		t.Errorf("after a failed prepare: served %v, waiting %q, degraded %q", p[0].Served(), p[0].Waiting, p[0].Degraded)
	}
}
