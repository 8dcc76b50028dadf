// Package identity names the processes and network namespaces rsttrace
// reports: the executable, systemd unit, container and Kubernetes pod of a
// process, and the `ip netns` name and container of a network namespace.
//
// The kernel records, when a process acts (listen, connect, bind, accept,
// close), its pid, its cgroup v2 id and its mount and network namespace
// inodes. Capture is called with those while the process may still be
// alive: it reads /proc/PID once and caches what it found by pid, by cgroup
// id and by mount and network namespace. Fill names a process from those
// caches, possibly long after it exited, without blocking: runtime names
// (Docker, CRI) are asked for in the background when a container is first
// seen, and misses are remembered for a while.
//
// cgroup id to path: on cgroup2 a cgroup's id is the inode number of its
// directory (kernfs_node id, 64-bit and never reused while the machine
// runs), so the resolver walks the cgroup2 hierarchy once, indexes
// directory inode → path, and walks again on a miss, at most once a
// second. The alternative, open_by_handle_at with the id as a kernfs file
// handle, needs CAP_DAC_READ_SEARCH and still leaves a descriptor whose
// path must be read back; a walk is a few hundred readdirs on a busy host.
//
// Hybrid hosts (v1 controllers and cgroup2 at /sys/fs/cgroup/unified) may
// run containers in the v1 hierarchies only (Docker's cgroupfs driver):
// their v2 id is the root's and names nothing. Such a container is found
// from the v1 lines of /proc/PID/cgroup while the process lives, and
// remembered by mount namespace inode, which a container does not share
// with the host.
package identity

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// Options configure a Resolver. DefaultOptions gives the usual paths.
type Options struct {
	// Proc is where procfs is mounted.
	Proc string
	// CgroupRoot is the cgroup2 mount; empty: found in
	// /proc/self/mountinfo (/sys/fs/cgroup on v2 hosts,
	// /sys/fs/cgroup/unified on hybrid ones).
	CgroupRoot string
	// NetnsDir holds the `ip netns` bind mounts.
	NetnsDir string
	// DockerSocket and PodmanSocket are Docker Engine API sockets
	// (podman's is compatible); empty disables the lookup.
	DockerSocket string
	PodmanSocket string
	// CRISockets are CRI runtime sockets (containerd, CRI-O), tried in
	// order; those that do not exist are skipped.
	CRISockets []string
	// MaxEntries bounds each cache (pids, cgroups, mount and network
	// namespaces, containers).
	MaxEntries int
	// Timeout bounds one runtime lookup.
	Timeout time.Duration
}

// DefaultOptions are the paths of a usual Linux host. DOCKER_HOST, when it
// names a unix socket (unix:///path), is the Docker socket, as for the
// docker client.
func DefaultOptions() Options {
	docker := "/var/run/docker.sock"
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok && h != "" {
		docker = h
	}
	return Options{
		Proc:         "/proc",
		NetnsDir:     "/run/netns",
		DockerSocket: docker,
		PodmanSocket: "/run/podman/podman.sock",
		CRISockets:   []string{"/run/containerd/containerd.sock", "/var/run/crio/crio.sock"},
		MaxEntries:   4096,
		Timeout:      200 * time.Millisecond,
	}
}

const (
	// A pid's /proc is read again after this long when it acts again,
	// so an exec without a cgroup or namespace change is seen.
	pidRefresh = 30 * time.Second
	// Misses (unknown cgroup id, runtime without the container) are
	// remembered this long.
	negativeTTL = 30 * time.Second
	// The cgroup2 hierarchy and /run/netns are read again on a miss at
	// most this often.
	rereadEvery = time.Second
	// Netns names are read again when older than this: netns inodes are
	// reused once a namespace is gone.
	netnsNamesTTL = 5 * time.Second
	// The cgroup index holds at most this many directories.
	maxIndex = 1 << 16
)

// Resolver names processes and network namespaces. Its methods are safe
// for concurrent use. The *events.Container and *events.Pod it hands out
// are shared and must not be modified.
type Resolver struct {
	o                    Options
	selfMntns, selfNetns uint32

	mu      sync.Mutex
	pids    *genCache[uint32, *pidEntry]
	cgroups *genCache[uint64, *ident]
	mntns   *genCache[uint32, *ctrRef]
	netns   *genCache[uint32, *netnsEntry]
	refs    *genCache[string, *ctrRef]

	walkMu sync.Mutex
	index  map[uint64]string
	walked time.Time

	nsMu      sync.Mutex
	nsNames   map[uint32]string
	nsRead    time.Time
	nsReadAny bool

	queue     chan *ctrRef
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	docker    *http.Client
	podman    *http.Client
	cri       []*criClient
}

// pidEntry is what Capture read for a pid.
type pidEntry struct {
	cgroupID     uint64
	mntns, netns uint32
	exe          string
	id           *ident // nil when /proc/PID was gone
	fresh        time.Time
}

// ident is what a cgroup path names. Immutable once cached.
type ident struct {
	unit string
	ref  *ctrRef
	// until, when set, makes this a negative entry (path unknown) that
	// expires then.
	until time.Time
}

// ctrRef is one container (or pod, for a process in the pod's own
// cgroup). The names are replaced, never modified, when the runtime
// answers, so a *events.Container handed out stays valid.
type ctrRef struct {
	id, runtime, podUID string
	ctr                 atomic.Pointer[events.Container]
	pod                 atomic.Pointer[events.Pod]

	// guarded by Resolver.mu
	queued, named bool
	retry         time.Time
	failures      int
}

// netnsEntry is the container or pod last seen acting in a netns.
type netnsEntry struct {
	ref *ctrRef
	// several containers of one pod share the netns: name the pod only.
	shared bool
}

// New returns a Resolver; Close stops its runtime lookups.
func New(o Options) *Resolver {
	d := DefaultOptions()
	if o.Proc == "" {
		o.Proc = d.Proc
	}
	if o.NetnsDir == "" {
		o.NetnsDir = d.NetnsDir
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = d.MaxEntries
	}
	if o.Timeout <= 0 {
		o.Timeout = d.Timeout
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = cgroup2Mount(filepath.Join(o.Proc, "self/mountinfo"))
	}
	n := o.MaxEntries / 2 // genCache holds up to two generations
	r := &Resolver{
		o:       o,
		pids:    newGenCache[uint32, *pidEntry](n),
		cgroups: newGenCache[uint64, *ident](n),
		mntns:   newGenCache[uint32, *ctrRef](n),
		netns:   newGenCache[uint32, *netnsEntry](n),
		refs:    newGenCache[string, *ctrRef](n),
		nsNames: map[uint32]string{},
		queue:   make(chan *ctrRef, 256),
		done:    make(chan struct{}),
	}
	r.selfMntns = nsInode(filepath.Join(o.Proc, "self/ns/mnt"))
	r.selfNetns = nsInode(filepath.Join(o.Proc, "self/ns/net"))
	if o.DockerSocket != "" {
		r.docker = unixHTTPClient(o.DockerSocket)
	}
	if o.PodmanSocket != "" {
		r.podman = unixHTTPClient(o.PodmanSocket)
	}
	for _, s := range o.CRISockets {
		r.cri = append(r.cri, &criClient{path: s})
	}
	r.wg.Add(1)
	go r.lookupLoop()
	return r
}

// Close stops the runtime lookups and closes their connections.
func (r *Resolver) Close() {
	r.closeOnce.Do(func() {
		close(r.done)
		r.wg.Wait()
		for _, c := range []*http.Client{r.docker, r.podman} {
			if c != nil {
				c.CloseIdleConnections()
			}
		}
		for _, c := range r.cri {
			c.close()
		}
	})
}

// CgroupRoot is the cgroup2 mount in use, empty without one.
func (r *Resolver) CgroupRoot() string { return r.o.CgroupRoot }

// Capture records who pid is: call it for every record in which a process
// acted, with what the kernel captured then (cgroup v2 id, mount and
// network namespace inodes; 0 when unknown). The first call for a pid
// reads /proc/PID/exe and /proc/PID/cgroup; later ones with the same
// cgroup and mount namespace make no system call until the entry is
// 30 s old.
func (r *Resolver) Capture(pid uint32, cgroupID uint64, mntns, netns uint32) {
	now := time.Now()
	r.mu.Lock()
	old, had := r.pids.get(pid)
	if had && old.cgroupID == cgroupID && old.mntns == mntns && now.Before(old.fresh) {
		if netns != 0 && old.netns != netns {
			old.netns = netns
			r.noteNetnsLocked(netns, old.id)
		}
		r.mu.Unlock()
		return
	}
	// A negative entry (path not found) is replaced by what the live
	// process says.
	known, ok := r.cgroups.get(cgroupID)
	cgroupKnown := ok && known.until.IsZero()
	r.mu.Unlock()

	dir := filepath.Join(r.o.Proc, strconv.FormatUint(uint64(pid), 10))
	exe, _ := os.Readlink(dir + "/exe")
	data, err := os.ReadFile(dir + "/cgroup")
	if err != nil && had && old.cgroupID == cgroupID && old.mntns == mntns {
		// Gone since: what was read while it lived still holds.
		r.mu.Lock()
		old.fresh = now.Add(pidRefresh)
		r.mu.Unlock()
		return
	}
	pe := &pidEntry{cgroupID: cgroupID, mntns: mntns, netns: netns, exe: exe, fresh: now.Add(pidRefresh)}
	var pc procCgroup
	var v2Match bool
	if err == nil {
		pc = parseProcCgroup(string(data))
		// The v2 line names the record's cgroup only if the process has
		// not moved since: check the directory's inode.
		if pc.hasV2 && !cgroupKnown && cgroupID != 0 && r.o.CgroupRoot != "" {
			v2Match = dirInode(filepath.Join(r.o.CgroupRoot, pc.v2)) == cgroupID
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		pe.id = r.identLocked(pc.identify())
		if v2Match {
			r.cgroups.put(cgroupID, r.identLocked(parsePath(pc.v2)))
		}
	}
	r.pids.put(pid, pe)
	if pe.id == nil || pe.id.ref == nil {
		return
	}
	ref := pe.id.ref
	if ref.id != "" && mntns != 0 && mntns != r.selfMntns {
		r.mntns.put(mntns, ref)
	}
	r.noteNetnsLocked(netns, pe.id)
	r.lookupLocked(ref, now)
}

// Fill names p (Exe, Unit, Container, Pod) from what was captured for
// p.Pid, cgroupID and mntns, leaving fields it cannot name as they are.
// On a cache hit it makes no system call and allocates nothing; a cgroup
// id never seen is looked up in the cgroup2 hierarchy (a walk at most
// once a second).
func (r *Resolver) Fill(p *events.Process, cgroupID uint64, mntns uint32) {
	now := time.Now()
	r.mu.Lock()
	var id *ident
	if pe, ok := r.pids.get(p.Pid); ok && pe.cgroupID == cgroupID && pe.mntns == mntns {
		if pe.exe != "" {
			p.Exe = pe.exe
		}
		id = pe.id
	}
	if id == nil && cgroupID != 0 {
		c, ok := r.cgroups.get(cgroupID)
		if !ok || !c.until.IsZero() && now.After(c.until) {
			r.mu.Unlock()
			c = r.resolveCgroup(cgroupID, now)
			r.mu.Lock()
		}
		id = c
	}
	var ref *ctrRef
	if id != nil {
		if id.unit != "" {
			p.Unit = id.unit
		}
		ref = id.ref
	}
	if ref == nil && mntns != 0 {
		ref, _ = r.mntns.get(mntns)
	}
	if ref != nil {
		r.lookupLocked(ref, now)
	}
	r.mu.Unlock()
	if ref != nil {
		if c := ref.ctr.Load(); c != nil {
			p.Container = c
		}
		if pod := ref.pod.Load(); pod != nil {
			p.Pod = pod
		}
	}
}

// resolveCgroup finds a cgroup id's path in the cgroup2 hierarchy and
// caches what it names; called without r.mu. A cgroup the walk did not
// find is gone (it existed when the kernel recorded its id): that miss is
// remembered for negativeTTL. One not looked for because a walk ran less
// than a second ago is looked for again from the next one on.
func (r *Resolver) resolveCgroup(cgroupID uint64, now time.Time) *ident {
	path, ok, retry := r.cgroupPath(cgroupID, now)
	r.mu.Lock()
	defer r.mu.Unlock()
	id := &ident{until: retry}
	if ok {
		id = r.identLocked(parsePath(path))
	}
	r.cgroups.put(cgroupID, id)
	return id
}

// identLocked makes the ident for a parsed path, sharing the container's
// ctrRef with every other path and process that names it.
func (r *Resolver) identLocked(info pathInfo) *ident {
	id := &ident{unit: info.Unit}
	if info.ContainerID == "" && info.PodUID == "" {
		return id
	}
	key := info.ContainerID
	if key == "" {
		key = "pod:" + info.PodUID
	}
	ref, ok := r.refs.get(key)
	if !ok {
		ref = &ctrRef{id: info.ContainerID, runtime: info.Runtime, podUID: info.PodUID}
		if ref.id != "" {
			ref.ctr.Store(&events.Container{ID: ref.id, Runtime: ref.runtime})
		}
		if ref.podUID != "" {
			ref.pod.Store(&events.Pod{UID: ref.podUID})
		}
		r.refs.put(key, ref)
	}
	id.ref = ref
	return id
}

// cgroupPath returns the path (from the cgroup2 root) of the cgroup with
// that id, walking the hierarchy again on a miss at most once a second;
// on a miss, when to look again.
func (r *Resolver) cgroupPath(cgroupID uint64, now time.Time) (string, bool, time.Time) {
	r.walkMu.Lock()
	defer r.walkMu.Unlock()
	if p, ok := r.index[cgroupID]; ok {
		return p, true, time.Time{}
	}
	if r.o.CgroupRoot == "" {
		return "", false, now.Add(negativeTTL)
	}
	if next := r.walked.Add(rereadEvery); !r.walked.IsZero() && now.Before(next) {
		return "", false, next
	}
	r.walked = now
	r.index = walkCgroups(r.o.CgroupRoot, maxIndex)
	p, ok := r.index[cgroupID]
	return p, ok, now.Add(negativeTTL)
}

// walkCgroups indexes the directories under root by inode (the cgroup id).
func walkCgroups(root string, max int) map[uint64]string {
	index := map[uint64]string{}
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed during the walk, or a file
		}
		if len(index) >= max {
			return filepath.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(path, root), "/")
		index[info.Sys().(*syscall.Stat_t).Ino] = rel
		return nil
	})
	return index
}

// cgroup2Mount finds the cgroup2 mount point in a mountinfo file.
func cgroup2Mount(mountinfo string) string {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(data)) {
		// "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if f := strings.Fields(post); len(f) == 0 || f[0] != "cgroup2" {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return unescapeMount(f[4])
		}
	}
	return ""
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dirInode(path string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

func nsInode(path string) uint32 { return uint32(dirInode(path)) }

// Refresh replaces p's container and pod with the newest the resolver
// has: names from the runtime arrive after the first record of a
// container (they are looked up in the background), and an event may be
// written from a process captured before they came.
func (r *Resolver) Refresh(p *events.Process) {
	if p == nil || p.Container == nil || (p.Container.Name != "" && (p.Pod == nil || p.Pod.Name != "")) {
		return
	}
	r.mu.Lock()
	ref, ok := r.refs.get(p.Container.ID)
	r.mu.Unlock()
	if !ok {
		return
	}
	if c := ref.ctr.Load(); c != nil {
		p.Container = c
	}
	if pod := ref.pod.Load(); pod != nil {
		p.Pod = pod
	}
}
