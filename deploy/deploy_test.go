package deploy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/rsttrace/rsttrace/internal/privilege"
)

// measuredCaps is the capability set of internal/privilege, as
// capabilities(7) names it without the CAP_ prefix.
func measuredCaps() []string {
	var out []string
	for _, c := range privilege.Needed(40) {
		out = append(out, strings.TrimPrefix(c.Name, "CAP_"))
	}
	return out
}

// verifyUnit runs systemd-analyze verify on a copy of unit whose binary is
// an existing file, and returns what it printed.
func verifyUnit(t *testing.T, unit string) (string, error) {
	t.Helper()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install the Debian package systemd")
	}
	path := filepath.Join(t.TempDir(), "rsttrace.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/rsttrace", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", "--man=no", path).CombinedOutput()
	return string(out), err
}

func TestSystemdUnitVerifies(t *testing.T) {
	b, err := os.ReadFile("rsttrace.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	out, err := verifyUnit(t, unit)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check is not blind: a misspelt setting is reported.
	if out, _ := verifyUnit(t, unit+"\n[Service]\nProtectSytem=strict\n"); !strings.Contains(out, "ProtectSytem") {
		t.Errorf("systemd-analyze verify did not report an unknown setting: %q", out)
	}

	caps := "CAP_" + strings.Join(measuredCaps(), " CAP_")
	for _, want := range []string{
		"Type=notify",
		"Restart=on-failure",
		"ExecStart=/usr/local/bin/rsttrace -o json --output /var/log/rsttrace/rsttrace.jsonl --metrics 127.0.0.1:9637",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"CapabilityBoundingSet=" + caps,
		"AmbientCapabilities=" + caps,
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ReadWritePaths=/var/log/rsttrace",
		"LogsDirectory=rsttrace",
		"ProtectHome=yes",
		"PrivateTmp=yes",
	} {
		if !slices.Contains(strings.Split(unit, "\n"), want) {
			t.Errorf("unit lacks the line %q", want)
		}
	}
	// Settings that would break tracing (see the unit's comment).
	for _, bad := range []string{"ProtectKernelTunables=yes", "ProtectKernelLogs=yes", "PrivateNetwork=yes", "ProtectProc=invisible"} {
		if slices.Contains(strings.Split(unit, "\n"), bad) {
			t.Errorf("unit sets %s, which breaks tracing", bad)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	b, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := decodeStrict(b)
	if err != nil {
		t.Fatalf("decoding daemonset.yaml: %v", err)
	}
	// The decoding is not blind: a field in the wrong case is refused.
	if _, err := decodeStrict([]byte(strings.Replace(string(b), "\n      hostPID:", "\n      hostPid:", 1))); err == nil {
		t.Error("a misspelt field (hostPid) was accepted")
	}
	if ds.Kind != "DaemonSet" || ds.APIVersion != "apps/v1" {
		t.Fatalf("kind %s/%s", ds.APIVersion, ds.Kind)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v: both needed", spec.HostPID, spec.HostNetwork)
	}
	if !selects(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("want exactly one container, got %d (+%d init)", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true: the measured capability set is enough")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", got)
	}
	got, want := capNames(sc.Capabilities.Add), measuredCaps()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities.add %v, want exactly the measured set %v", got, want)
	}

	// Exactly these host paths, each read-only.
	wantMounts := map[string]string{ // mount path -> host path
		"/sys/kernel/btf":                 "/sys/kernel/btf",
		"/sys/kernel/tracing":             "/sys/kernel/tracing",
		"/run/netns":                      "/run/netns",
		"/sys/fs/cgroup":                  "/sys/fs/cgroup",
		"/run/containerd/containerd.sock": "/run/containerd/containerd.sock",
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if len(c.VolumeMounts) != len(wantMounts) || len(spec.Volumes) != len(wantMounts) {
		t.Errorf("%d mounts and %d volumes, want exactly %d", len(c.VolumeMounts), len(spec.Volumes), len(wantMounts))
	}
	for _, m := range c.VolumeMounts {
		host, ok := wantMounts[m.MountPath]
		if !ok {
			t.Errorf("unexpected mount %s", m.MountPath)
			continue
		}
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.MountPath)
		}
		v := vols[m.Name]
		if v.HostPath == nil || v.HostPath.Path != host {
			t.Errorf("mount %s: volume %q is not hostPath %s", m.MountPath, m.Name, host)
		}
		delete(wantMounts, m.MountPath)
	}
	for p := range wantMounts {
		t.Errorf("missing mount %s", p)
	}

	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME is not spec.nodeName from the downward API: %+v", e)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources: %+v", c.Resources)
	}
	lp := c.LivenessProbe
	if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Port.String() != "metrics" {
		t.Fatalf("liveness probe is not an HTTP GET on the metrics port: %+v", lp)
	}
	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if metricsPort != 9637 || !slices.Contains(c.Args, "$(HOST_IP):9637") {
		t.Errorf("metrics port %d, args %v: want 9637 on the node address", metricsPort, c.Args)
	}
}

// decodeStrict decodes a DaemonSet as the API server would in strict
// mode: unknown, duplicate and wrongly cased fields are errors.
func decodeStrict(b []byte) (*appsv1.DaemonSet, error) {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, err
	}
	var ds appsv1.DaemonSet
	strict, err := kjson.UnmarshalStrict(j, &ds)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(strict...); err != nil {
		return nil, err
	}
	return &ds, nil
}

func capNames(cs []corev1.Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}
