package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimev1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/rsttrace/rsttrace/events"
)

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randUID(t *testing.T) string {
	h := randHex(t, 32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups, moves processes, adds network namespaces")
	}
}

// testCgroupRoot makes an empty directory under a cgroup hierarchy's root
// and removes it, with everything created below it, at the end.
func testCgroupRoot(t *testing.T, mount string) string {
	t.Helper()
	root := filepath.Join(mount, "rsttrace-test-"+randHex(t, 8))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatalf("creating test cgroup: %v", err)
	}
	t.Cleanup(func() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Deepest first; any process still inside goes back to the
		// hierarchy's root.
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if data, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, pid := range strings.Fields(string(data)) {
					_ = os.WriteFile(filepath.Join(mount, "cgroup.procs"), []byte(pid), 0o644)
				}
			}
			if err := syscall.Rmdir(d); err != nil {
				t.Errorf("removing test cgroup %s: %v", d, err)
			}
		}
	})
	return root
}

// startIn starts a command, waits until it runs the wanted executable, and
// moves it into the cgroup dir (created as needed). The process is killed
// at the end if the test did not.
func startIn(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", args, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	// unshare and ip netns exec switch namespaces, then exec sleep.
	want := sleepExe(t)
	pidDir := fmt.Sprintf("/proc/%d", cmd.Process.Pid)
	for i := 0; ; i++ {
		if exe, _ := os.Readlink(pidDir + "/exe"); exe == want {
			break
		}
		if i == 200 {
			t.Fatalf("%v did not exec %s within 2s", args, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("creating cgroup: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatalf("moving %d into %s: %v", cmd.Process.Pid, dir, err)
		}
	}
	return cmd
}

func sleepExe(t *testing.T) string {
	p, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	p, err = filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// kernelView is what the kernel would record for a process acting now.
type kernelView struct {
	pid          uint32
	cgroupID     uint64
	mntns, netns uint32
}

func viewOf(t *testing.T, cg2 string, pid int) kernelView {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	pc := parseProcCgroup(string(data))
	v := kernelView{
		pid:      uint32(pid),
		cgroupID: dirInode(filepath.Join(cg2, pc.v2)),
		mntns:    nsInode(fmt.Sprintf("/proc/%d/ns/mnt", pid)),
		netns:    nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)),
	}
	if v.cgroupID == 0 || v.mntns == 0 || v.netns == 0 {
		t.Fatalf("reading the identity of pid %d: %+v", pid, v)
	}
	return v
}

func exit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", cmd.Process.Pid)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pid %d still there after wait: %v", cmd.Process.Pid, err)
	}
}

// fillNamed fills until the runtime's names arrived (or 2 s passed).
func fillNamed(r *Resolver, pid uint32, v kernelView, named func(*events.Process) bool) events.Process {
	var p events.Process
	for range 200 {
		p = events.Process{Pid: pid, Comm: "sleep"}
		r.Fill(&p, v.cgroupID, v.mntns)
		if named(&p) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// engineServer is a Docker Engine API on a unix socket: GET
// /v1.41/containers/<id>/json for the containers it knows, 404 else.
type engineServer struct {
	socket string
	mu     sync.Mutex
	names  map[string]string
	asked  map[string]int
}

func newEngineServer(t *testing.T, names map[string]string) *engineServer {
	t.Helper()
	e := &engineServer{socket: filepath.Join(t.TempDir(), "docker.sock"), names: names, asked: map[string]int{}}
	ln, err := net.Listen("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1.41/containers/{id}/json", func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		e.mu.Lock()
		e.asked[id]++
		name, ok := e.names[id]
		e.mu.Unlock()
		if !ok {
			http.Error(w, `{"message":"No such container: `+id+`"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Id": id, "Name": "/" + name, "Config": map[string]any{"Labels": map[string]string{}}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return e
}

func (e *engineServer) count(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.asked[id]
}

// criServer is a CRI runtime service on a unix socket answering for the
// containers and sandboxes it holds.
type criServer struct {
	runtimev1.UnimplementedRuntimeServiceServer
	containers map[string]*runtimev1.ContainerStatus
	sandboxes  map[string]*runtimev1.PodSandboxStatus
}

func (s *criServer) Version(context.Context, *runtimev1.VersionRequest) (*runtimev1.VersionResponse, error) {
	return &runtimev1.VersionResponse{RuntimeName: "containerd", RuntimeApiVersion: "v1"}, nil
}

func (s *criServer) ContainerStatus(_ context.Context, req *runtimev1.ContainerStatusRequest) (*runtimev1.ContainerStatusResponse, error) {
	if c, ok := s.containers[req.ContainerId]; ok {
		return &runtimev1.ContainerStatusResponse{Status: c}, nil
	}
	return nil, status.Errorf(codes.NotFound, "container %q not found", req.ContainerId)
}

func (s *criServer) PodSandboxStatus(_ context.Context, req *runtimev1.PodSandboxStatusRequest) (*runtimev1.PodSandboxStatusResponse, error) {
	if p, ok := s.sandboxes[req.PodSandboxId]; ok {
		return &runtimev1.PodSandboxStatusResponse{Status: p}, nil
	}
	return nil, status.Errorf(codes.NotFound, "sandbox %q not found", req.PodSandboxId)
}

func startCRI(t *testing.T, s *criServer) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "containerd.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	runtimev1.RegisterRuntimeServiceServer(g, s)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return socket
}

func cgroup2OrSkip(t *testing.T) string {
	t.Helper()
	cg2 := cgroup2Mount("/proc/self/mountinfo")
	if cg2 == "" {
		t.Skip("no cgroup2 hierarchy mounted")
	}
	return cg2
}

// TestPrivCgroupV2Layouts moves a real process into each cgroup layout
// systemd, Docker, kubelet+containerd and podman make, captures it, lets it
// exit, and names it from what was cached; a second resolver that never
// saw the process names it from the cgroup id alone.
func TestPrivCgroupV2Layouts(t *testing.T) {
	requireRoot(t)
	cg2 := cgroup2OrSkip(t)
	root := testCgroupRoot(t, cg2)

	dockerID, podmanID, k8sID, sandboxID, unknownID := randHex(t, 64), randHex(t, 64), randHex(t, 64), randHex(t, 64), randHex(t, 64)
	podUID, sandboxUID := randUID(t), randUID(t)
	engine := newEngineServer(t, map[string]string{dockerID: "web", podmanID: "pdb"})
	cri := startCRI(t, &criServer{
		containers: map[string]*runtimev1.ContainerStatus{k8sID: {
			Id: k8sID, Metadata: &runtimev1.ContainerMetadata{Name: "app"},
			Labels: map[string]string{labelPodName: "cart-7d9f", labelPodNamespace: "shop", labelPodUID: podUID},
		}},
		sandboxes: map[string]*runtimev1.PodSandboxStatus{sandboxID: {
			Id: sandboxID, Metadata: &runtimev1.PodSandboxMetadata{Name: "dns-5c", Namespace: "kube-system", Uid: sandboxUID},
		}},
	})
	// Timeout: the first call dials; on two shared cores under the race
	// detector that can take longer than the default.
	opts := Options{Timeout: time.Second, DockerSocket: engine.socket, PodmanSocket: engine.socket, CRISockets: []string{filepath.Join(t.TempDir(), "absent.sock"), cri}}
	r := New(opts)
	defer r.Close()
	fresh := New(opts)
	defer fresh.Close()

	underscored := strings.ReplaceAll(podUID, "-", "_")
	layouts := []struct {
		name, path string
		unit       string
		ctr        *events.Container
		pod        *events.Pod
	}{
		{"systemd service", "system.slice/demo.service", "demo.service", nil, nil},
		{"systemd session", "user.slice/user-1000.slice/session-3.scope", "session-3.scope", nil, nil},
		{"docker systemd driver", "system.slice/docker-" + dockerID + ".scope", "",
			&events.Container{ID: dockerID, Runtime: "docker", Name: "web"}, nil},
		{"kubelet containerd", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + underscored + ".slice/cri-containerd-" + k8sID + ".scope", "",
			&events.Container{ID: k8sID, Runtime: "containerd", Name: "app"}, &events.Pod{UID: podUID, Namespace: "shop", Name: "cart-7d9f"}},
		{"kubelet cgroupfs sandbox", "kubepods/besteffort/pod" + sandboxUID + "/" + sandboxID, "",
			&events.Container{ID: sandboxID, Runtime: "containerd"}, &events.Pod{UID: sandboxUID, Namespace: "kube-system", Name: "dns-5c"}},
		{"podman", "machine.slice/libpod-" + podmanID + ".scope", "",
			&events.Container{ID: podmanID, Runtime: "podman", Name: "pdb"}, nil},
		{"docker unknown to the engine", "system.slice/docker-" + unknownID + ".scope", "",
			&events.Container{ID: unknownID, Runtime: "docker"}, nil},
	}
	exe := sleepExe(t)
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			cmd := startIn(t, filepath.Join(root, l.path), "sleep", "30")
			v := viewOf(t, cg2, cmd.Process.Pid)
			if got := dirInode(filepath.Join(root, l.path)); got != v.cgroupID {
				t.Fatalf("process in cgroup %d, want %d", v.cgroupID, got)
			}
			r.Capture(v.pid, v.cgroupID, v.mntns, v.netns)
			exit(t, cmd)

			matches := func(p events.Process, wantExe string) bool {
				return p.Exe == wantExe && p.Unit == l.unit && equalPtr(p.Container, l.ctr) && equalPtr(p.Pod, l.pod)
			}
			check := func(who string, r *Resolver, pid uint32, wantExe string) {
				t.Helper()
				// Runtime names arrive in the background; a resolver
				// that walked the hierarchy less than a second ago
				// walks again only then.
				p := fillNamed(r, pid, v, func(p *events.Process) bool { return matches(*p, wantExe) })
				if p.Exe != wantExe || p.Unit != l.unit {
					t.Errorf("%s: exe %q unit %q, want %q %q", who, p.Exe, p.Unit, wantExe, l.unit)
				}
				if !equalPtr(p.Container, l.ctr) {
					t.Errorf("%s: container %+v, want %+v", who, p.Container, l.ctr)
				}
				if !equalPtr(p.Pod, l.pod) {
					t.Errorf("%s: pod %+v, want %+v", who, p.Pod, l.pod)
				}
			}
			check("captured", r, v.pid, exe)
			// Another pid in that cgroup, never captured.
			check("same cgroup", r, 1<<22+1, "")
			// A resolver that never saw it: the cgroup id alone.
			check("cgroup id only", fresh, v.pid, "")
		})
	}
	// A miss is remembered: one question to the engine per resolver, not
	// one per Fill.
	for i := 0; engine.count(unknownID) < 2 && i < 200; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	unknown := layouts[len(layouts)-1]
	for range 20 {
		for _, r := range []*Resolver{r, fresh} {
			p := events.Process{Pid: 1<<22 + 1}
			r.Fill(&p, dirInode(filepath.Join(root, unknown.path)), 0)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := engine.count(unknownID); n != 2 {
		t.Errorf("engine asked %d times for a container it does not know, want 2 (once per resolver)", n)
	}
	if n := engine.count(dockerID); n != 2 {
		t.Errorf("engine asked %d times for a named container, want 2 (once per resolver)", n)
	}
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// TestPrivCgroupV1Docker is Docker's cgroupfs driver on a hybrid host: the
// container is in the v1 hierarchies only (/docker/<id>), its v2 cgroup is
// the one it was started in. It is found from the v1 lines while the
// process lives, and afterwards by its mount namespace.
func TestPrivCgroupV1Docker(t *testing.T) {
	requireRoot(t)
	cg2 := cgroup2OrSkip(t)
	v1 := "/sys/fs/cgroup/pids"
	if st, err := os.Stat(filepath.Join(v1, "tasks")); err != nil || !st.Mode().IsRegular() {
		t.Skip("no v1 pids hierarchy at /sys/fs/cgroup/pids: not a hybrid host")
	}
	root := testCgroupRoot(t, v1)
	id := randHex(t, 64)
	engine := newEngineServer(t, map[string]string{id: "legacy"})
	r := New(Options{DockerSocket: engine.socket, Timeout: time.Second})
	defer r.Close()

	cmd := startIn(t, filepath.Join(root, "docker", id), "unshare", "-m", "sleep", "30")
	v := viewOf(t, cg2, cmd.Process.Pid)
	if v.mntns == r.selfMntns {
		t.Fatal("unshare -m left the process in this mount namespace")
	}
	r.Capture(v.pid, v.cgroupID, v.mntns, v.netns)
	exit(t, cmd)

	want := events.Container{ID: id, Runtime: "docker", Name: "legacy"}
	named := func(p *events.Process) bool { return p.Container != nil && p.Container.Name != "" }
	if p := fillNamed(r, v.pid, v, named); !equalPtr(p.Container, &want) {
		t.Errorf("captured pid: container %+v, want %+v", p.Container, want)
	}
	// Another process of the container (same mount namespace), never
	// captured: its v2 cgroup names nothing, the namespace does.
	if p := fillNamed(r, 1<<22+2, v, named); !equalPtr(p.Container, &want) {
		t.Errorf("same mount namespace: container %+v, want %+v", p.Container, want)
	}
	// A host process in the same v2 cgroup is no container.
	host := events.Process{Pid: 1<<22 + 3}
	r.Fill(&host, v.cgroupID, r.selfMntns)
	if host.Container != nil {
		t.Errorf("host process named as container %+v", host.Container)
	}
}

// TestPrivNetnsNames names a network namespace by its `ip netns` name and
// by the container whose process was captured in it.
func TestPrivNetnsNames(t *testing.T) {
	requireRoot(t)
	cg2 := cgroup2OrSkip(t)
	name := "rsttrace-id-test-" + randHex(t, 6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	ino := nsInode(filepath.Join("/run/netns", name))
	if ino == 0 {
		t.Fatal("no inode for the new namespace")
	}
	id := randHex(t, 64)
	engine := newEngineServer(t, map[string]string{id: "web"})
	r := New(Options{DockerSocket: engine.socket, Timeout: time.Second})
	defer r.Close()

	if n := r.Netns(ino); n == nil || n.Name != name || n.Container != nil {
		t.Fatalf("Netns(%d) = %+v, want name %q only", ino, n, name)
	}
	if n := r.Netns(r.selfNetns); n != nil {
		t.Errorf("host namespace named %+v", n)
	}

	root := testCgroupRoot(t, cg2)
	cmd := startIn(t, filepath.Join(root, "system.slice", "docker-"+id+".scope"), "ip", "netns", "exec", name, "sleep", "30")
	v := viewOf(t, cg2, cmd.Process.Pid)
	if v.netns != ino {
		t.Fatalf("process in netns %d, want %d", v.netns, ino)
	}
	r.Capture(v.pid, v.cgroupID, v.mntns, v.netns)
	exit(t, cmd)
	var n *events.NetnsNames
	for range 200 {
		if n = r.Netns(ino); n != nil && n.Container != nil && n.Container.Name != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := events.Container{ID: id, Runtime: "docker", Name: "web"}
	if n == nil || n.Name != name || !equalPtr(n.Container, &want) || n.Pod != nil {
		t.Errorf("Netns(%d) = %+v, want name %q container %+v", ino, n, name, want)
	}
}
