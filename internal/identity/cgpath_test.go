package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	hexA = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	hexB = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	uid  = "8d3c6a1e-5b2f-4c7d-9e0a-1b2c3d4e5f60"
)

func TestParsePath(t *testing.T) {
	uidU := strings.ReplaceAll(uid, "-", "_")
	tests := []struct {
		path string
		want pathInfo
	}{
		{"/", pathInfo{}},
		{"", pathInfo{}},
		{"/system.slice/nginx.service", pathInfo{Unit: "nginx.service"}},
		{"/user.slice/user-1000.slice/session-3.scope", pathInfo{Unit: "session-3.scope"}},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", pathInfo{Unit: "x.service"}},
		{"/user.slice/user-1000.slice/user@1000.service/init.scope", pathInfo{Unit: "init.scope"}},
		{"/system.slice", pathInfo{}},
		{"/init.scope", pathInfo{Unit: "init.scope"}},
		// Docker, systemd driver: the container scope is not the unit.
		{"/system.slice/docker-" + hexA + ".scope", pathInfo{ContainerID: hexA, Runtime: "docker"}},
		// systemd inside the container: its own units are.
		{"/system.slice/docker-" + hexA + ".scope/system.slice/nginx.service", pathInfo{ContainerID: hexA, Runtime: "docker", Unit: "nginx.service"}},
		// Docker, cgroupfs driver (v2 path, or a v1 line's).
		{"/docker/" + hexA, pathInfo{ContainerID: hexA, Runtime: "docker"}},
		{"/system.slice/docker.service", pathInfo{Unit: "docker.service"}},
		// containerd under kubelet, systemd driver.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + hexA + ".scope",
			pathInfo{ContainerID: hexA, Runtime: "containerd", PodUID: uid}},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + hexA + ".scope",
			pathInfo{ContainerID: hexA, Runtime: "containerd", PodUID: uid}},
		// kubelet, cgroupfs driver: the runtime is not in the path.
		{"/kubepods/besteffort/pod" + uid + "/" + hexA, pathInfo{ContainerID: hexA, PodUID: uid}},
		{"/kubepods/pod" + uid + "/" + hexB, pathInfo{ContainerID: hexB, PodUID: uid}},
		// A process in the pod's cgroup itself.
		{"/kubepods/besteffort/pod" + uid, pathInfo{PodUID: uid}},
		// CRI-O, both drivers; its conmon is not the container.
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + hexA + ".scope",
			pathInfo{ContainerID: hexA, Runtime: "cri-o", PodUID: uid}},
		{"/kubepods/besteffort/pod" + uid + "/crio-" + hexA, pathInfo{ContainerID: hexA, Runtime: "cri-o", PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + hexA + ".scope",
			pathInfo{Unit: "crio-conmon-" + hexA + ".scope", PodUID: uid}},
		// podman.
		{"/machine.slice/libpod-" + hexA + ".scope", pathInfo{ContainerID: hexA, Runtime: "podman"}},
		{"/machine.slice/libpod-" + hexA + ".scope/container", pathInfo{ContainerID: hexA, Runtime: "podman"}},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + hexA + ".scope", pathInfo{ContainerID: hexA, Runtime: "podman"}},
		{"/machine.slice/libpod-conmon-" + hexA + ".scope", pathInfo{Unit: "libpod-conmon-" + hexA + ".scope"}},
		{"/libpod_parent/libpod-" + hexA, pathInfo{ContainerID: hexA, Runtime: "podman"}},
		// Shapes nested anywhere; the innermost container wins (a kind
		// node's pod containers inside the node's Docker container).
		{"/rsttrace-test-1/system.slice/demo.service", pathInfo{Unit: "demo.service"}},
		{"/docker/" + hexB + "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + hexA + ".scope",
			pathInfo{ContainerID: hexA, Runtime: "containerd", PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + hexA + ".scope",
			pathInfo{ContainerID: hexA, Runtime: "containerd", PodUID: uid}},
		// Not containers: short or non-hex ids, 32-hex names elsewhere.
		{"/docker/" + hexA[:12], pathInfo{}},
		{"/system.slice/docker-" + strings.ToUpper(hexA) + ".scope", pathInfo{Unit: "docker-" + strings.ToUpper(hexA) + ".scope"}},
		{"/process_api/6fc18cb5005b2f15764aab082ffe9218", pathInfo{}},
		{"/podcast.slice/x.service", pathInfo{Unit: "x.service"}},
	}
	for _, tt := range tests {
		if got := parsePath(tt.path); got != tt.want {
			t.Errorf("parsePath(%q)\n got %+v\nwant %+v", tt.path, got, tt.want)
		}
	}
}

func TestIdentifyProcCgroup(t *testing.T) {
	tests := []struct {
		name, data string
		want       pathInfo
	}{
		{"v2 service", "0::/system.slice/nginx.service\n", pathInfo{Unit: "nginx.service"}},
		{"hybrid host service", "9:name=systemd:/system.slice/nginx.service\n4:memory:/system.slice/nginx.service\n0::/system.slice/nginx.service\n",
			pathInfo{Unit: "nginx.service"}},
		// Docker cgroupfs on a hybrid host: v1 only, v2 is the root or
		// dockerd's own.
		{"hybrid docker cgroupfs", "9:name=systemd:/docker/" + hexA + "\n8:pids:/docker/" + hexA + "\n0::/\n",
			pathInfo{ContainerID: hexA, Runtime: "docker"}},
		{"hybrid docker cgroupfs under docker.service", "8:pids:/docker/" + hexA + "\n0::/system.slice/docker.service\n",
			pathInfo{ContainerID: hexA, Runtime: "docker"}},
		{"v1 only", "9:name=systemd:/system.slice/cron.service\n8:pids:/system.slice/cron.service\n",
			pathInfo{Unit: "cron.service"}},
		{"v1 only docker", "9:name=systemd:/docker/" + hexA + "\n8:pids:/docker/" + hexA + "\n",
			pathInfo{ContainerID: hexA, Runtime: "docker"}},
		{"v1 systemd unit, v2 root", "9:name=systemd:/system.slice/cron.service\n0::/\n", pathInfo{Unit: "cron.service"}},
		{"garbage", "nonsense\n1:x\n", pathInfo{}},
	}
	for _, tt := range tests {
		if got := parseProcCgroup(tt.data).identify(); got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestCgroup2Mount(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "mountinfo")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hybrid := "30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755\n" +
		"31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate\n" +
		"32 30 0:28 / /sys/fs/cgroup/systemd rw shared:6 - cgroup cgroup rw,name=systemd\n"
	if got := cgroup2Mount(write(hybrid)); got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: got %q", got)
	}
	v2 := "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n"
	if got := cgroup2Mount(write(v2)); got != "/sys/fs/cgroup" {
		t.Errorf("v2: got %q", got)
	}
	if got := cgroup2Mount(write(`35 24 0:30 / /mnt/cg\0402 rw shared:9 - cgroup2 cgroup2 rw` + "\n")); got != "/mnt/cg 2" {
		t.Errorf("escaped: got %q", got)
	}
	if got := cgroup2Mount(write("32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n")); got != "" {
		t.Errorf("v1 only: got %q", got)
	}
}

func TestGenCacheBound(t *testing.T) {
	c := newGenCache[int, int](4)
	for i := range 100 {
		c.put(i, i)
		c.get(0) // kept alive by use
		if c.len() > 8 {
			t.Fatalf("after %d puts: %d entries, bound is 8", i+1, c.len())
		}
	}
	if _, ok := c.get(0); !ok {
		t.Error("entry used on every put was evicted")
	}
	if _, ok := c.get(1); ok {
		t.Error("entry never used again survived 99 puts")
	}
	if v, ok := c.get(99); !ok || v != 99 {
		t.Errorf("newest entry: %v %v", v, ok)
	}
}
