// Command loadgen generates TCP connection refusals as fast as possible, to
// benchmark the overhead rsttrace adds to the kernel's refusal path.
//
// Each worker is an OS-thread-locked goroutine running a tight loop of raw
// socket(2) → connect(2) → close(2) against a loopback port nothing listens on,
// so every iteration costs one SYN, one RST and one ECONNREFUSED.
//
// # Network namespace
//
// By default loadgen runs in a fresh network namespace so that (a) no
// listener can exist on the target port(s), which -scan relies on, and (b) the
// storm of RSTs never touches the host's loopback or its SNMP counters.
//
// A network namespace is a per-thread attribute in Linux, and a Go program
// is multi-threaded before main runs, so unshare(CLONE_NEWNET) in main would
// move only one thread. Calling setns on every locked worker thread would
// work for the workers, but other runtime threads (and the lo set-up socket,
// and /proc/self/ns/net) would still be in the old namespace, which is easy to
// get subtly wrong. Instead loadgen re-executes itself with
// clone(CLONE_NEWNET): the namespace exists before the child's first
// instruction, so every thread the Go runtime ever creates inherits it, and
// nothing can leak into the host namespace. Pass -netns=false to stay in the
// current namespace (e.g. when a runner already placed us in one).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reexecEnv marks the child that already lives in the new namespace, so it
// does not re-execute itself forever.
const reexecEnv = "RSTTRACE_LOADGEN_IN_NETNS"

type config struct {
	threads  int
	duration time.Duration
	port     int
	family   int
	jsonOut  bool
	scan     bool
	passes   int
	netns    bool
	rate     int
}

// result is the machine-readable outcome; the A/B runner parses it.
type result struct {
	Mode           string            `json:"mode"` // "loop" or "scan"
	Family         int               `json:"family"`
	Threads        int               `json:"threads"`
	Port           int               `json:"port,omitempty"`
	Refusals       uint64            `json:"refusals"`
	RefusalsPerSec float64           `json:"refusals_per_sec"`
	Connected      uint64            `json:"connected"`     // connect() unexpectedly succeeded
	SelfConnects   uint64            `json:"self_connects"` // -scan only, see errSelfConnect
	Errors         uint64            `json:"errors"`        // any failure other than ECONNREFUSED
	ErrorKinds     map[string]uint64 `json:"error_kinds,omitempty"`
	DurationS      float64           `json:"duration_s"`
	NetnsInode     uint64            `json:"netns_inode"`
	PortsScanned   int               `json:"ports_scanned,omitempty"` // 65535 × -passes
}

// counters is owned by exactly one worker while it runs, so it needs no
// synchronisation; the padding keeps two workers' hot counters off the same
// cache line.
type counters struct {
	refused      uint64
	connected    uint64
	selfConnects uint64
	errs         uint64
	kinds        map[string]uint64
	_            [64]byte
}

// record classifies the outcome of one dial. Errors are keyed by syscall and
// errno so that, e.g., EMFILE from socket() is distinguishable from
// ENETUNREACH from connect().
func (c *counters) record(err error) {
	switch {
	// connect returns a bare Errno: compare directly, as this is the hot
	// path and errors.Is would walk Errno.Is on every iteration.
	case err == unix.ECONNREFUSED:
		c.refused++
	case err == nil:
		c.connected++
	case err == errSelfConnect:
		c.selfConnects++
	default:
		c.errs++
		key := "connect"
		var se *os.SyscallError
		if errors.As(err, &se) {
			key = se.Syscall
		}
		var errno unix.Errno
		if errors.As(err, &errno) {
			key += ":" + unix.ErrnoName(errno)
		} else {
			key += ":" + err.Error()
		}
		c.kinds[key]++
	}
}

func main() {
	var cfg config
	flag.IntVar(&cfg.threads, "threads", 2, "number of OS-thread-locked workers")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long to generate refusals (ignored with -scan)")
	flag.IntVar(&cfg.port, "port", 1, "closed TCP port to connect to (ignored with -scan)")
	flag.IntVar(&cfg.family, "family", 4, "address family: 4 (127.0.0.1) or 6 (::1)")
	flag.BoolVar(&cfg.jsonOut, "json", false, "print the result as one JSON object")
	flag.BoolVar(&cfg.scan, "scan", false, "connect once to each of ports 1-65535 (port-scan shape) instead of looping on -port")
	flag.IntVar(&cfg.passes, "passes", 1, "with -scan, sweep the whole port range this many times (one sweep takes only ~0.15s)")
	flag.IntVar(&cfg.rate, "rate", 0, "refusals per second in all (paced per thread in 1 ms steps); 0: as fast as possible")
	flag.BoolVar(&cfg.netns, "netns", true, "run in a fresh network namespace (re-executes itself; needs CAP_SYS_ADMIN)")
	flag.Parse()

	if err := validate(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		flag.Usage()
		os.Exit(2)
	}

	if cfg.netns && os.Getenv(reexecEnv) == "" {
		os.Exit(reexecInNewNetns())
	}

	res, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if cfg.jsonOut {
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	printHuman(res)
}

func validate(cfg config) error {
	switch {
	case cfg.rate < 0:
		return errors.New("-rate must not be negative")
	case cfg.threads < 1:
		return errors.New("-threads must be >= 1")
	case cfg.family != 4 && cfg.family != 6:
		return errors.New("-family must be 4 or 6")
	case !cfg.scan && (cfg.port < 1 || cfg.port > 65535):
		return errors.New("-port must be in 1..65535")
	case cfg.scan && cfg.passes < 1:
		return errors.New("-passes must be >= 1")
	case !cfg.scan && cfg.duration <= 0:
		return errors.New("-duration must be positive")
	}
	return nil
}

// reexecInNewNetns runs this same binary with the same arguments in a new
// network namespace and returns the exit code to use.
func reexecInNewNetns() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), reexecEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		// If the parent dies, don't leave a refusal storm running.
		Pdeathsig: syscall.SIGKILL,
	}
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "loadgen: creating network namespace:", err)
		return 1
	}
}

func run(cfg config) (*result, error) {
	// A fresh namespace has lo down; in an existing one this is a no-op.
	if err := bringLoopbackUp(); err != nil {
		return nil, fmt.Errorf("bringing lo up: %w", err)
	}
	ino, err := netnsInode()
	if err != nil {
		return nil, err
	}

	target := newTarget(cfg.family)

	// Fail loudly rather than benchmark the wrong thing (e.g. IPv6 disabled,
	// or -netns=false and something listens on -port).
	probePort := cfg.port
	if cfg.scan {
		probePort = 1
	}
	if err := target.dial(probePort); !errors.Is(err, unix.ECONNREFUSED) {
		return nil, fmt.Errorf("preflight connect to %s port %d: want ECONNREFUSED, got %v", target.name(), probePort, err)
	}

	res := &result{
		Family:     cfg.family,
		Threads:    cfg.threads,
		NetnsInode: ino,
	}
	var all []*counters
	var elapsed time.Duration
	if cfg.scan {
		res.Mode = "scan"
		res.PortsScanned = 65535 * cfg.passes
		all, elapsed = runScan(cfg, target)
	} else {
		res.Mode = "loop"
		res.Port = cfg.port
		all, elapsed = runLoop(cfg, target)
	}

	res.DurationS = elapsed.Seconds()
	for _, c := range all {
		res.Refusals += c.refused
		res.Connected += c.connected
		res.SelfConnects += c.selfConnects
		res.Errors += c.errs
		for k, v := range c.kinds {
			if res.ErrorKinds == nil {
				res.ErrorKinds = make(map[string]uint64)
			}
			res.ErrorKinds[k] += v
		}
	}
	if res.DurationS > 0 {
		res.RefusalsPerSec = float64(res.Refusals) / res.DurationS
	}
	return res, nil
}

// startWorkers launches n thread-locked workers, waits until all are ready
// (so goroutine start-up is not part of the measured interval), then
// releases them together and returns the time of release and a wait func.
func startWorkers(n int, work func(c *counters)) ([]*counters, time.Time, func()) {
	all := make([]*counters, n)
	var ready, done sync.WaitGroup
	begin := make(chan struct{})
	for i := range all {
		c := &counters{kinds: make(map[string]uint64)}
		all[i] = c
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			// Keep each worker on its own OS thread so that the Go scheduler
			// does not add goroutine switches to the syscall loop. Never
			// unlocked: the thread is discarded when the goroutine exits.
			runtime.LockOSThread()
			ready.Done()
			<-begin
			work(c)
		}()
	}
	ready.Wait()
	start := time.Now()
	close(begin)
	return all, start, done.Wait
}

func runLoop(cfg config, t target) ([]*counters, time.Duration) {
	var stop atomic.Bool
	all, start, wait := startWorkers(cfg.threads, func(c *counters) {
		// A relaxed-cost atomic load per iteration is noise next to three
		// syscalls, and gives a prompt, clean stop.
		if cfg.rate == 0 {
			for !stop.Load() {
				c.record(t.dial(cfg.port))
			}
			return
		}
		// Paced: each thread owes rate/threads refusals a second and
		// catches up in bursts each millisecond (a storm, not a trickle).
		perThread := float64(cfg.rate) / float64(cfg.threads)
		begin := time.Now()
		done := 0
		for !stop.Load() {
			due := int(perThread * time.Since(begin).Seconds())
			for ; done < due && !stop.Load(); done++ {
				c.record(t.dial(cfg.port))
			}
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(cfg.duration)
	stop.Store(true)
	wait()
	return all, time.Since(start)
}

func runScan(cfg config, t target) ([]*counters, time.Duration) {
	// Workers claim small chunks of ports so that the load stays balanced
	// even if one thread gets descheduled, while the shared counter is not
	// touched on every connect.
	const chunk = 64
	total := 65535 * cfg.passes
	var next atomic.Int64
	all, start, wait := startWorkers(cfg.threads, func(c *counters) {
		for {
			lo := int(next.Add(chunk)) - chunk
			if lo >= total {
				return
			}
			for i := lo; i < lo+chunk && i < total; i++ {
				c.record(t.dial(i%65535 + 1))
			}
		}
	})
	wait()
	return all, time.Since(start)
}

// target performs one socket/connect/close round with raw syscalls,
// deliberately bypassing the net package (no poller, no non-blocking
// connect, no goroutine parking) so that nearly all CPU time is spent in the
// kernel path being traced.
type target struct {
	family int
	addr4  [4]byte
	addr6  [16]byte
}

func newTarget(family int) target {
	return target{
		family: family,
		addr4:  netip.MustParseAddr("127.0.0.1").As4(),
		addr6:  netip.IPv6Loopback().As16(),
	}
}

func (t target) name() string {
	if t.family == 6 {
		return "[::1]"
	}
	return "127.0.0.1"
}

// dial returns the error of connect(2) (nil on an unexpected success), or
// of socket(2) if that failed. The sockaddr lives on the stack, so the loop
// does not allocate.
func (t target) dial(port int) error {
	domain := unix.AF_INET
	if t.family == 6 {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return &os.SyscallError{Syscall: "socket", Err: err}
	}
	if t.family == 6 {
		err = unix.Connect(fd, &unix.SockaddrInet6{Port: port, Addr: t.addr6})
	} else {
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: t.addr4})
	}
	if err == nil && isSelfConnect(fd, port) {
		err = errSelfConnect
	}
	unix.Close(fd)
	return err
}

// errSelfConnect reports TCP simultaneous open with itself: when the kernel
// happens to pick the destination port as the ephemeral source port, the
// SYN meets its own socket and connect succeeds. This only happens in -scan
// mode (the default -port 1 is outside the ephemeral range) and is not a
// bug in the load generator, so it is counted apart from real successes.
var errSelfConnect = errors.New("self-connect")

func isSelfConnect(fd, port int) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port == port
	case *unix.SockaddrInet6:
		return sa.Port == port
	}
	return false
}

func bringLoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// netnsInode identifies the namespace the refusals happen in, so a tracer's
// events can be matched against it.
func netnsInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("stat netns: %w", err)
	}
	return st.Ino, nil
}

func printHuman(r *result) {
	what := fmt.Sprintf("port %d", r.Port)
	if r.Mode == "scan" {
		what = fmt.Sprintf("%d ports", r.PortsScanned)
	}
	fmt.Printf("mode=%s family=%d threads=%d target=%s netns=%d\n",
		r.Mode, r.Family, r.Threads, what, r.NetnsInode)
	fmt.Printf("refusals=%d in %.3fs = %.0f/s  connected=%d self_connects=%d errors=%d\n",
		r.Refusals, r.DurationS, r.RefusalsPerSec, r.Connected, r.SelfConnects, r.Errors)
	if len(r.ErrorKinds) > 0 {
		keys := make([]string, 0, len(r.ErrorKinds))
		for k := range r.ErrorKinds {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, r.ErrorKinds[k])
		}
		fmt.Printf("error kinds:%s\n", b.String())
	}
}
