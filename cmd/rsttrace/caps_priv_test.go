package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsttrace/rsttrace/internal/privilege"
)

// These tests run the real binary with exactly the capabilities
// internal/privilege says rsttrace needs, then with each one removed, set
// by setpriv(1) in the bounding, inheritable and ambient sets.

// buildBinary builds rsttrace once per test into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rsttrace")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building rsttrace: %v\n%s", err, out)
	}
	return bin
}

// neededCaps returns the set for this kernel, as setpriv names them.
func neededCaps(t *testing.T) []privilege.Capability {
	t.Helper()
	last, err := privilege.LastCap()
	if err != nil {
		t.Fatal(err)
	}
	return privilege.Needed(last)
}

func setprivName(c privilege.Capability) string {
	return strings.ToLower(strings.TrimPrefix(c.Name, "CAP_"))
}

// runWithCaps runs bin with args holding only caps: as uid 0 with every
// other capability out of the bounding set, or (asUser) as nobody with
// caps as ambient capabilities, the way systemd's AmbientCapabilities
// runs it.
func runWithCaps(t *testing.T, bin string, caps []privilege.Capability, asUser bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv not found: install the Debian package util-linux")
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + setprivName(c)
	}
	pargs := []string{"--bounding-set=" + set, "--inh-caps=" + set}
	if asUser {
		pargs = append(pargs, "--reuid=65534", "--regid=65534", "--clear-groups", "--ambient-caps="+set)
	}
	pargs = append(append(pargs, "--", bin), args...)
	cmd := exec.Command("setpriv", pargs...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func TestPrivMinimalCapabilities(t *testing.T) {
	bin := buildBinary(t)
	caps := neededCaps(t)
	if len(caps) == 6 { // Linux 5.8+: the measured set
		var names []string
		for _, c := range caps {
			names = append(names, c.Name)
		}
		if got := strings.Join(names, " "); got != "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYSLOG CAP_NET_ADMIN" {
			t.Fatalf("capability set %s differs from the measured one", got)
		}
	}
	for _, asUser := range []bool{false, true} {
		name := "uid0"
		if asUser {
			name = "nobody-ambient"
		}
		t.Run(name, func(t *testing.T) {
			out, errOut, err := runWithCaps(t, bin, caps, asUser, "-o", "json", "--duration", "2s")
			if err != nil {
				t.Fatalf("rsttrace with exactly %v: %v\nstderr: %s", caps, err, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var first, last struct {
				Type string `json:"type"`
				Lost *uint64
			}
			if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.Type != "start" {
				t.Fatalf("first record %q (%v), want start", lines[0], err)
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Type != "stop" || last.Lost == nil {
				t.Fatalf("last record %q (%v), want a stop record with its loss count", lines[len(lines)-1], err)
			}
			if strings.Contains(errOut, "operation not permitted") || strings.Contains(errOut, "permission denied") {
				t.Errorf("something was still refused with the minimal set:\n%s", errOut)
			}
		})
	}
}

func TestPrivEachCapabilityNeeded(t *testing.T) {
	bin := buildBinary(t)
	caps := neededCaps(t)
	for i, c := range caps {
		t.Run(c.Name, func(t *testing.T) {
			less := append(append([]privilege.Capability{}, caps[:i]...), caps[i+1:]...)
			out, errOut, err := runWithCaps(t, bin, less, false, "-o", "json", "--duration", "1s")
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("without %s: exit %v, want 1 (stdout %q)", c.Name, err, out)
			}
			if want := "missing " + c.Name + ": " + c.For; !strings.Contains(errOut, want) {
				t.Errorf("without %s the error does not say %q:\n%s", c.Name, want, errOut)
			}
			if out != "" {
				t.Errorf("without %s rsttrace wrote records: %q", c.Name, out)
			}
		})
	}
}
