package tracer

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/identity"
)

// Names operators use: a server in a cgroup shaped as systemd and Docker
// make them is named by its unit or container in every event, also after
// it died, and the --unit/--container filters keep exactly its events.

// cgroup2Root is where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup
// on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st syscall.Statfs_t
		if syscall.Statfs(p, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			return p
		}
	}
	t.Fatal("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	return ""
}

// makeCgroup creates root/test-XXXX/rel and removes it after the test
// (once the processes in it are gone).
func makeCgroup(t *testing.T, rel string) string {
	t.Helper()
	base := filepath.Join(cgroup2Root(t), fmt.Sprintf("rsttrace-test-%08x", rand.Uint32()))
	dir := filepath.Join(base, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		// Deepest first: rmdir only removes empty cgroups.
		for d := dir; strings.HasPrefix(d, base); d = filepath.Dir(d) {
			os.Remove(d)
		}
	})
	return dir
}

func TestPrivNamesAndFilters(t *testing.T) {
	const id = "3f2a9c1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	cases := []struct {
		name    string
		rel     string
		filter  identity.Filter
		check   func(p events.Process) bool
		inProse string
	}{
		{"systemd service", "system.slice/demo.service", identity.Filter{Units: []string{"demo.service"}},
			func(p events.Process) bool { return p.Unit == "demo.service" }, "demo.service (pid "},
		{"docker container", "system.slice/docker-" + id + ".scope", identity.Filter{Containers: []string{id[:12]}},
			func(p events.Process) bool {
				return p.Container != nil && p.Container.ID == id && p.Container.Runtime == "docker"
			}, "container " + id[:12]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, other := newNetns(t), newNetns(t)
			cg := makeCgroup(t, c.rel)
			s := startTracer(t, Config{Filter: c.filter, Names: &identity.Options{Proc: "/proc"}}, n, other)
			s.settleIn = cg
			lst := netip.MustParseAddrPort("127.0.0.1:2110")
			srv, res := n.startIn(t, cg, "demosrv", "listen", lst)
			if res != "ok" {
				t.Fatalf("listen: %s", res)
			}
			l := s.waitFor("listen of the server", func(e *events.Event) bool {
				return e.Type == events.TypeListen && e.Listener != nil && e.Listener.Port == lst.Port()
			})
			if !c.check(l.Listener.Process) {
				t.Errorf("listener process %+v: not named by its cgroup %s", l.Listener.Process, c.rel)
			}
			// A refusal that involves the server passes the filter ...
			e := mustRefuse(t, s, n, netip.MustParseAddrPort("127.0.0.2:2110"), events.CauseWrongAddress)
			if e.Listener == nil || !c.check(e.Listener.Process) || !strings.Contains(e.Explanation, c.inProse) {
				t.Errorf("wrong_address event: listener %+v, explanation %q; want it named (%q)", e.Listener, e.Explanation, c.inProse)
			}
			// ... and, once it died, the refusals it caused still name it.
			srv.cmd.Process.Signal(syscall.SIGKILL)
			srv.cmd.Wait()
			s.waitFor("close of the server", func(e *events.Event) bool {
				return e.Type == events.TypeListenClose && e.Listener != nil && e.Listener.Port == lst.Port()
			})
			e = mustRefuse(t, s, n, lst, events.CauseListenerClosed)
			if e.Listener == nil || !c.check(e.Listener.Process) || !strings.Contains(e.Explanation, c.inProse) {
				t.Errorf("listener_closed event: listener %+v, explanation %q; want it named after its death (%q)", e.Listener, e.Explanation, c.inProse)
			}
			// A refusal that involves nothing of the unit or container, in
			// a namespace none of its processes lives in, is filtered out.
			// (One in the container's own namespace is the container's.)
			// The settling refusal in n comes after it in the ring, so it
			// is out once that one is.
			if err, _ := other.connect(t, netip.MustParseAddrPort("127.0.0.1:2111")); err == nil {
				t.Fatal("connect to 2111 succeeded")
			}
			s.settle(n)
			for _, e := range s.all(func(e *events.Event) bool { return e.Dst != nil && e.Dst.Port == 2111 }) {
				t.Errorf("filtered event passed: %+v", e)
			}
		})
	}
}
