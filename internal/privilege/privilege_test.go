package privilege

import (
	"strings"
	"testing"
)

func TestNeededByKernel(t *testing.T) {
	names := func(cs []Capability) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.Name)
		}
		return strings.Join(s, " ")
	}
	// 5.8+ (cap_last_cap 40 on 5.9+, 39 on 5.8).
	if got, want := names(Needed(40)), "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYSLOG CAP_NET_ADMIN"; got != want {
		t.Errorf("Needed(40) = %s, want %s", got, want)
	}
	// Before 5.8 there is no CAP_BPF: CAP_SYS_ADMIN covers BPF and tracing.
	old := Needed(37)
	if got, want := names(old), "CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYSLOG CAP_NET_ADMIN"; got != want {
		t.Errorf("Needed(37) = %s, want %s", got, want)
	}
	if !strings.Contains(old[0].For, "BPF") {
		t.Errorf("CAP_SYS_ADMIN before 5.8 should say it loads BPF programs: %q", old[0].For)
	}
}

func TestMissingFromAndError(t *testing.T) {
	need := Needed(40)
	all := uint64(0)
	for _, c := range need {
		all |= 1 << c.Bit
	}
	if m := MissingFrom(need, all); len(m) != 0 {
		t.Fatalf("nothing missing from the full set, got %v", m)
	}
	if err := Error(nil); err != nil {
		t.Fatalf("Error(nil) = %v", err)
	}
	m := MissingFrom(need, all&^(1<<capBPF)&^(1<<capSyslog))
	if len(m) != 2 || m[0].Name != "CAP_BPF" || m[1].Name != "CAP_SYSLOG" {
		t.Fatalf("missing = %v, want CAP_BPF and CAP_SYSLOG", m)
	}
	msg := Error(m).Error()
	for _, want := range []string{
		"missing CAP_BPF: needed to load BPF programs",
		"missing CAP_SYSLOG: needed to read kernel symbol addresses",
		"AmbientCapabilities=CAP_BPF CAP_SYSLOG",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

// TestPrivCheckAsRoot: the test runs as root with every capability, so
// nothing is missing; Effective reads the real set.
func TestPrivCheckAsRoot(t *testing.T) {
	eff, err := Effective()
	if err != nil {
		t.Fatal(err)
	}
	if eff&(1<<capSysAdmin) == 0 {
		t.Fatalf("privileged test needs CAP_SYS_ADMIN (run as root); effective set %#x", eff)
	}
	if err := Check(); err != nil {
		t.Fatalf("Check as root: %v", err)
	}
}
