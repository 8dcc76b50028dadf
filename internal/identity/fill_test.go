package identity

import (
	"os"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

// cachedResolver has this process captured (pid entry) and a container
// cgroup cached (cgroup entry), with no runtime or cgroup2 to ask.
func cachedResolver(tb testing.TB) (*Resolver, uint32) {
	tb.Helper()
	r := New(Options{CgroupRoot: tb.TempDir(), NetnsDir: tb.TempDir()})
	tb.Cleanup(r.Close)
	self := uint32(os.Getpid())
	r.Capture(self, 7001, 4001, 0)
	r.mu.Lock()
	r.cgroups.put(7002, r.identLocked(parsePath("/kubepods/besteffort/pod"+uid+"/"+hexA)))
	r.mu.Unlock()
	return r, self
}

func TestFillFromCaptureAndCgroupCache(t *testing.T) {
	r, self := cachedResolver(t)
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	p := events.Process{Pid: self}
	r.Fill(&p, 7001, 4001)
	if p.Exe != exe {
		t.Errorf("Exe = %q, want %q", p.Exe, exe)
	}
	// Same pid in another cgroup: a reused pid, not this process.
	p = events.Process{Pid: self}
	r.Fill(&p, 7002, 4001)
	if p.Exe != "" || p.Container == nil || p.Container.ID != hexA || p.Pod == nil || p.Pod.UID != uid {
		t.Errorf("reused pid filled as %+v (container %+v pod %+v)", p, p.Container, p.Pod)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		p := events.Process{Pid: 1}
		r.Fill(&p, 7002, 0)
		p = events.Process{Pid: self}
		r.Fill(&p, 7001, 4001)
		r.Capture(self, 7001, 4001, 0)
	})
	if allocs != 0 {
		t.Errorf("Fill and Capture on a cache hit allocate %v times", allocs)
	}
}

func BenchmarkFillHit(b *testing.B) {
	r, self := cachedResolver(b)
	b.Run("pid", func(b *testing.B) {
		b.ReportAllocs()
		var p events.Process
		for b.Loop() {
			p = events.Process{Pid: self}
			r.Fill(&p, 7001, 4001)
		}
	})
	b.Run("cgroup", func(b *testing.B) {
		b.ReportAllocs()
		var p events.Process
		for b.Loop() {
			p = events.Process{Pid: 1}
			r.Fill(&p, 7002, 0)
		}
	})
	b.Run("capture", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Capture(self, 7001, 4001, 0)
		}
	})
}
