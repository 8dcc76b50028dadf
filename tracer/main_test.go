package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// The privileged tests load the real programs, make real sockets in fresh
// network namespaces and start real processes: copies of this test binary
// under other names (so their comm differs), running in "helper" mode.

const helperEnv = "RSTTRACE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	code := m.Run()
	if helperDir != "" {
		os.RemoveAll(helperDir)
	}
	os.Exit(code)
}

// runHelper is a tiny server process driven over stdin/stdout:
//
//	listen|hold|bind ADDR PORT: socket, bind (and listen for "listen",
//	  with backlog RSTTRACE_TEST_BACKLOG, default 16, and TCP_DEFER_ACCEPT
//	  RSTTRACE_TEST_DEFER seconds if set); prints "ok" or the errno name,
//	  then obeys stdin lines:
//	  "close" closes the socket and prints "closed", "exit N" exits with N,
//	  "relisten N" calls listen(N) again and prints "ok",
//	  "acceptevery MS" accepts (and closes) one connection every MS ms.
//	  EOF on stdin exits 0.
func runHelper(mode string) int {
	// One thread does every syscall, so comm and netns are the process's.
	runtime.LockOSThread()
	// Helper modes of the firewall, timeout and reset tests (firewall_priv_test.go).
	if code, ok := runAttemptHelper(mode); ok {
		return code
	}
	ap := netip.MustParseAddrPort(os.Getenv("RSTTRACE_TEST_ADDR"))
	if mode == "connect" {
		// connect ADDR: print the errno name (or "ok") and the local
		// address, then wait for stdin to close.
		fam, sa := sockaddr(ap)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, sa)
		}
		res := "ok"
		if err != nil {
			res = events.ErrnoName(int(err.(syscall.Errno)))
		}
		local := "0.0.0.0:0"
		if lsa, lerr := unix.Getsockname(fd); lerr == nil {
			switch a := lsa.(type) {
			case *unix.SockaddrInet4:
				local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
			case *unix.SockaddrInet6:
				local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
			}
		}
		fmt.Println(res, local)
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	fd, err := bindSocket(ap)
	if err == nil && mode == "listen" {
		backlog := 16
		if v := os.Getenv("RSTTRACE_TEST_BACKLOG"); v != "" {
			backlog, _ = strconv.Atoi(v)
		}
		if v := os.Getenv("RSTTRACE_TEST_DEFER"); v != "" {
			secs, _ := strconv.Atoi(v)
			err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
		}
		if err == nil {
			err = unix.Listen(fd, backlog)
		}
	}
	if err != nil {
		fmt.Println(events.ErrnoName(int(err.(syscall.Errno))))
	} else {
		fmt.Println("ok")
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "close":
			unix.Close(fd)
			fmt.Println("closed")
		case len(f) == 2 && f[0] == "exit":
			n, _ := strconv.Atoi(f[1])
			os.Exit(n)
		case len(f) == 2 && f[0] == "relisten":
			n, _ := strconv.Atoi(f[1])
			if err := unix.Listen(fd, n); err != nil {
				fmt.Println(err)
			} else {
				fmt.Println("ok")
			}
		case len(f) == 2 && f[0] == "acceptevery":
			ms, _ := strconv.Atoi(f[1])
			go func() {
				for {
					nfd, _, err := unix.Accept(fd)
					if err != nil {
						return
					}
					unix.Close(nfd)
					time.Sleep(time.Duration(ms) * time.Millisecond)
				}
			}()
			fmt.Println("ok")
		}
	}
	return 0
}

// bindSocket makes a TCP socket bound to ap (SO_REUSEADDR off: a second bind
// to a held port fails as services do).
func bindSocket(ap netip.AddrPort) (int, error) {
	fam, sa := sockaddr(ap)
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	return fd, unix.Bind(fd, sa)
}

func sockaddr(ap netip.AddrPort) (int, unix.Sockaddr) {
	if ap.Addr().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

var (
	helperDir  string
	helperOnce sync.Mutex
)

// helperBinary returns this test binary copied under name, so processes
// started from it have comm == name.
func helperBinary(t *testing.T, name string) string {
	helperOnce.Lock()
	defer helperOnce.Unlock()
	if helperDir == "" {
		d, err := os.MkdirTemp("", "rsttrace-helpers")
		if err != nil {
			t.Fatal(err)
		}
		helperDir = d
	}
	dst := filepath.Join(helperDir, name)
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// netns is a fresh network namespace with lo up, held by one locked OS
// thread that runs whatever the test asks in it.
type netns struct {
	ino    uint32
	do     chan func()
	closed bool
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	requireRoot(t) // unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN
	n := &netns{do: make(chan func())}
	ready := make(chan error)
	go func() {
		// The thread enters the namespace and holds it; at close it goes
		// back to the namespace it came from, so nothing of the test
		// keeps the namespace alive (a thread that exits locked is not
		// always ended by the runtime).
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ready <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if err := linkUp("lo"); err != nil {
			ready <- err
			return
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			ready <- err
			return
		}
		n.ino = uint32(st.Ino)
		ready <- nil
		for f := range n.do {
			f()
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return // stays locked: the runtime ends or parks the thread
		}
		runtime.UnlockOSThread()
	}()
	if err := <-ready; err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() { n.close(t) })
	return n
}

// close gives the namespace up: its thread goes back to the namespace it
// came from, so the test holds no reference to it any more (sockets the
// test left open aside) and the kernel lets it go.
func (n *netns) close(t *testing.T) {
	if n.closed {
		return
	}
	n.closed = true
	var tid int
	n.run(func() { tid = unix.Gettid() })
	close(n.do)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var st unix.Stat_t
		err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", tid), &st)
		if err != nil || uint32(st.Ino) != n.ino {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("netns %d: its thread %d did not leave it", n.ino, tid)
}

// run calls f on the namespace's thread and waits for it.
func (n *netns) run(f func()) {
	done := make(chan struct{})
	n.do <- func() { defer close(done); f() }
	<-done
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s: %w", name, err)
	}
	return nil
}

// connect makes a TCP connection attempt from the namespace and returns the
// error (ECONNREFUSED expected) and the client's local address.
func (n *netns) connect(t *testing.T, dst netip.AddrPort) (error, netip.AddrPort) {
	t.Helper()
	var cerr error
	var local netip.AddrPort
	n.run(func() {
		fam, sa := sockaddr(dst)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			cerr = err
			return
		}
		defer unix.Close(fd)
		// Bind first (to the destination's own loopback address, port 0)
		// so the client port is known: a refused socket forgets it.
		_, self := sockaddr(netip.AddrPortFrom(dst.Addr(), 0))
		if cerr = unix.Bind(fd, self); cerr != nil {
			return
		}
		if ls, err := unix.Getsockname(fd); err == nil {
			switch a := ls.(type) {
			case *unix.SockaddrInet4:
				local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
			case *unix.SockaddrInet6:
				local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
			}
		}
		cerr = unix.Connect(fd, sa)
	})
	return cerr, local
}

// helperProc is a running helper process.
type helperProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	pid  uint32
	comm string
}

// start runs a helper named comm in the namespace: mode listen|hold|bind.
// It returns once the helper reported the result of its bind/listen. env
// adds variables (RSTTRACE_TEST_BACKLOG=8).
func (n *netns) start(t *testing.T, comm, mode string, ap netip.AddrPort, env ...string) (*helperProc, string) {
	t.Helper()
	return n.startIn(t, "", comm, mode, ap, env...)
}

// startIn is start with the helper born in the cgroup v2 directory cgroup
// ("" for the test's own), so it is there from its first syscall.
func (n *netns) startIn(t *testing.T, cgroup, comm, mode string, ap netip.AddrPort, env ...string) (*helperProc, string) {
	t.Helper()
	bin := helperBinary(t, comm)
	h := &helperProc{t: t, comm: comm}
	var err error
	var cg *os.File
	if cgroup != "" {
		if cg, err = os.Open(cgroup); err != nil {
			t.Fatalf("opening cgroup %s: %v", cgroup, err)
		}
		defer cg.Close()
	}
	n.run(func() {
		// Forked from this locked thread, the child starts in its netns.
		h.cmd = exec.Command(bin)
		if cg != nil {
			h.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		}
		h.cmd.Env = append(os.Environ(), helperEnv+"="+mode, "RSTTRACE_TEST_ADDR="+ap.String())
		h.cmd.Env = append(h.cmd.Env, env...)
		h.cmd.Stderr = os.Stderr
		var stdout io.ReadCloser
		if h.in, err = h.cmd.StdinPipe(); err != nil {
			return
		}
		if stdout, err = h.cmd.StdoutPipe(); err != nil {
			return
		}
		h.out = bufio.NewReader(stdout)
		err = h.cmd.Start()
	})
	if err != nil {
		t.Fatalf("starting helper %s: %v", comm, err)
	}
	h.pid = uint32(h.cmd.Process.Pid)
	t.Cleanup(func() { h.cmd.Process.Kill(); h.cmd.Wait() })
	return h, h.line()
}

// mustStart is start for a helper whose bind (and listen) must succeed.
func (n *netns) mustStart(t *testing.T, comm, mode string, ap netip.AddrPort, env ...string) *helperProc {
	t.Helper()
	h, res := n.start(t, comm, mode, ap, env...)
	if res != "ok" {
		t.Fatalf("helper %s %s %v: %s", comm, mode, ap, res)
	}
	return h
}

func (h *helperProc) line() string {
	h.t.Helper()
	l, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("helper %s: reading its output: %v", h.comm, err)
	}
	return strings.TrimSpace(l)
}

func (h *helperProc) send(cmd string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		h.t.Fatalf("helper %s: %v", h.comm, err)
	}
}

// session is a tracer running in this process, its events collected for
// the namespaces a test watches.
type session struct {
	t      *testing.T
	tr     *Tracer
	plan   []events.Attach
	cancel func()
	done   chan error

	mu     sync.Mutex
	cond   *sync.Cond
	watch  map[uint32]bool
	events []*events.Event
	stops  int
	// settleIn: settle from a helper in this cgroup (a filtered session).
	settleIn string
	// ports: the session's port filter.
	ports []uint16
}

// sessionEncoder keeps the events of watched namespaces.
type sessionEncoder struct{ s *session }

func (e sessionEncoder) Encode(ev *events.Event) error {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watch[ev.Netns] || ev.Type == events.TypeLost {
		s.events = append(s.events, ev)
		s.cond.Broadcast()
	}
	return nil
}

func (e sessionEncoder) Flush() error { return nil }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root (run the privileged tests as root: make test)")
	}
}

func startTracer(t *testing.T, cfg Config, watch ...*netns) *session {
	t.Helper()
	requireRoot(t)
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	s := &session{t: t, tr: tr, plan: tr.Plan(), done: make(chan error, 1), watch: map[uint32]bool{}, ports: cfg.Ports}
	s.cond = sync.NewCond(&s.mu)
	for _, n := range watch {
		s.watch[n.ino] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- tr.Run(ctx, sessionEncoder{s}) }()
	t.Cleanup(s.stop)
	return s
}

// hook returns the hook serving capability c, "" if degraded.
func (s *session) hook(c string) string {
	for _, a := range s.plan {
		if a.Capability == c {
			return a.Hook
		}
	}
	return ""
}

// waitAttached waits until capability c no longer waits for the host
// (Choice.Waiting): Run attaches it at a housekeeping pass.
func (s *session) waitAttached(c string) {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, a := range s.tr.Plan() {
			if a.Capability != c {
				continue
			}
			if a.Hook == "" {
				s.t.Fatalf("capability %s is degraded: %s", c, a.Degraded)
			}
			if a.Waiting == "" {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("capability %s still waiting after %v", c, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends Run and closes the tracer; it returns Run's error.
func (s *session) stop() {
	if s.tr == nil {
		return
	}
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("tracer Run: %v", err)
		}
	case <-time.After(waitTimeout):
		s.t.Errorf("tracer Run did not return %v after cancel", waitTimeout)
	}
	if err := s.tr.Close(); err != nil {
		s.t.Errorf("closing tracer: %v", err)
	}
	s.tr = nil
}

// waitTimeout is generous: under emulation (VM tests) everything is slow.
var waitTimeout = func() time.Duration {
	if os.Getenv("RSTTRACE_IN_VM") != "" {
		return 60 * time.Second
	}
	return 10 * time.Second
}()

// waitFor returns the first event (after those already matched) that
// matches pred, failing the test after waitTimeout.
func (s *session) waitFor(what string, pred func(*events.Event) bool) *events.Event {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	timer := time.AfterFunc(waitTimeout, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for _, e := range s.events {
			if pred(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, e := range s.events {
				seen = append(seen, fmt.Sprintf("%+v", *e))
			}
			s.t.Fatalf("no %s event within %v; events seen:\n%s", what, waitTimeout, strings.Join(seen, "\n"))
		}
		s.cond.Wait()
	}
}

// waitN waits until n events match pred, failing after waitTimeout.
func (s *session) waitN(what string, n int, pred func(*events.Event) bool) {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(s.all(pred)) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d %s events within %v, want %d", len(s.all(pred)), what, waitTimeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// all returns the events collected so far that match pred.
// settle returns once the tracer has written everything that happened in
// n before the call: it makes one more refusal there, to a port no test
// uses, and waits for its event. Records are read in order and a held
// refusal is written once a later one is past its hold, so every earlier
// event (and any duplicate of one) is out by then.
func (s *session) settle(n *netns) {
	s.t.Helper()
	if s.settleIn != "" {
		s.settleFrom(n, s.settleIn)
		return
	}
	marker := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), settlePort)
	if len(s.ports) > 0 {
		// The kernel traces only these ports: settle on the first, at an
		// address no test listens or connects to.
		marker = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.254"), s.ports[0])
	}
	err, local := n.connect(s.t, marker)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		s.t.Fatalf("settling: connect to %v: got %v, want ECONNREFUSED", marker, err)
	}
	s.waitFor("the settling refusal", func(e *events.Event) bool {
		return e.Type == events.TypeRefused && e.Netns == n.ino && e.Src != nil && e.Src.AddrPort() == local
	})
}

// settlePort is the port settle refuses connections to.
const settlePort = 2

// settleFrom settles with a refusal made by a helper born in cgroup, for
// sessions whose filter keeps only that cgroup's events.
func (s *session) settleFrom(n *netns, cgroup string) {
	s.t.Helper()
	marker := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), settlePort)
	h, res := n.startIn(s.t, cgroup, "settler", "connect", marker)
	if f := strings.Fields(res); len(f) == 0 || f[0] != "ECONNREFUSED" {
		s.t.Fatalf("settling: connect from the cgroup: %q, want ECONNREFUSED", res)
	}
	h.in.Close()
	s.waitFor("the settling refusal", func(e *events.Event) bool {
		return e.Type == events.TypeRefused && e.Netns == n.ino && e.Client != nil && e.Client.Pid == h.pid
	})
}

func (s *session) all(pred func(*events.Event) bool) []*events.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*events.Event
	for _, e := range s.events {
		if pred(e) {
			out = append(out, e)
		}
	}
	return out
}
