package tracer

import (
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"strings"
	"testing"
)

// Each tracepoint has one program (issue 6): a second program on a hook
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
	all := []choice{
		{capability: CapRefusals, opt: tp},
		{capability: CapListeners, opt: tp},
		{capability: CapClients, opt: tp},
		{capability: CapBindErrors, opt: &option{kind: "tracepoint"}},
		{capability: CapOverflowFinalAck, opt: tp},
		{capability: CapFirewall, opt: tp},
		{capability: CapConnectFailures, opt: tp},
		{capability: CapResets, opt: tp},
	}
	want := bpfobj.RsttraceCapFlagCAP_F_REFUSALS | bpfobj.RsttraceCapFlagCAP_F_LISTENERS | bpfobj.RsttraceCapFlagCAP_F_CLIENTS |
		bpfobj.RsttraceCapFlagCAP_F_FIREWALL | bpfobj.RsttraceCapFlagCAP_F_FINAL_ACK | bpfobj.RsttraceCapFlagCAP_F_CONNECT_FAILURES |
		bpfobj.RsttraceCapFlagCAP_F_RESETS | bpfobj.RsttraceCapFlagCAP_F_RST_REASON
	if got := capsOf(all, true); got != uint32(want) {
		t.Errorf("every capability on tp_btf: caps = %#x, want %#x", got, want)
	}

	// Before 6.10: refusals from a kprobe, resets from the tracepoint
	// without its reason, no final-ACK hook, no firewall.
	old := []choice{
		{capability: CapRefusals, opt: kp},
		{capability: CapListeners, opt: tp},
		{capability: CapClients, opt: tp},
		{capability: CapOverflowFinalAck, opt: &option{kind: "fentry"}},
		{capability: CapFirewall},
		{capability: CapConnectFailures, opt: tp},
		{capability: CapResets, opt: tp},
	}
	want = bpfobj.RsttraceCapFlagCAP_F_LISTENERS | bpfobj.RsttraceCapFlagCAP_F_CLIENTS |
		bpfobj.RsttraceCapFlagCAP_F_CONNECT_FAILURES | bpfobj.RsttraceCapFlagCAP_F_RESETS
	if got := capsOf(old, false); got != uint32(want) {
		t.Errorf("5.10-like plan: caps = %#x, want %#x", got, want)
	}
}
