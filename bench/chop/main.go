// Command chop measures what tracing costs a refusal storm by chopping: the
// load runs without a break while one arm's programs are attached for a
// window and detached for the next, many times over, and each window with
// programs attached is compared with the mean of the two windows around it
// with nothing attached. This machine's speed drifts by tens of percent
// over seconds (a shared, paravirtualized host), so runs of whole seconds
// compared pairwise (abrun) spread widely; windows of a fraction of a
// second see nearly the same machine on both sides, and hundreds of them
// narrow the mean.
//
// Every arm is loaded once, in this process, before the load starts:
//
//	rsttrace     the tracer package as the rsttrace command runs it
//	             (default rate, JSON encoded and discarded); Pause and
//	             Resume detach and attach its programs
//	floor        bench/mintrace on tcp:tcp_send_reset and tcp_receive_reset
//	floor-hooks  bench/mintrace on every hook of rsttrace's plan a
//	             loopback refusal passes
//	floor-hooks+syscalls  and on the syscall tracepoints rsttrace uses
//	             where the kernel refuses fentry (bind, listen, accept)
//
// Arms take turns, [off on] each, so the floors and the tracer are
// measured over the same stretch of the machine. The load is socket,
// connect to a closed loopback port, close, on -threads OS threads in a
// network namespace of its own.
//
//	bench/bin/chop -cycles 200 -window 200ms
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/bench/mintrace"
	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/tracer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chop:", err)
		os.Exit(1)
	}
}

// arm is a set of programs that can be attached and detached.
type arm struct {
	name   string
	on     func() error
	off    func() error
	ratios []float64
}

type options struct {
	arms    string
	cycles  int
	window  time.Duration
	settle  time.Duration
	threads int
	port    int
	json    bool
}

func run() error {
	var o options
	flag.StringVar(&o.arms, "arms", "rsttrace,floor,floor-hooks", "arms, comma separated: rsttrace, floor, floor-hooks, floor-hooks+syscalls")
	flag.IntVar(&o.cycles, "cycles", 100, "turns of every arm, one [off on] pair each")
	flag.DurationVar(&o.window, "window", 200*time.Millisecond, "length of a window")
	flag.DurationVar(&o.settle, "settle", 20*time.Millisecond, "time after each attach or detach not counted")
	flag.IntVar(&o.threads, "threads", 2, "load threads")
	flag.IntVar(&o.port, "port", 1, "closed port the load connects to")
	flag.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	flag.Parse()
	if o.cycles < 1 || o.window <= o.settle || len(o.arms) == 0 {
		return errors.New("want -cycles >= 1, -window longer than -settle, and an arm")
	}
	// Interrupted, it stops at the next window and cleans up (the
	// namespace it made, the programs it attached).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}

	var arms []*arm
	for _, name := range strings.Split(o.arms, ",") {
		a, closeArm, err := loadArm(name)
		if err != nil {
			return fmt.Errorf("arm %s: %w", name, err)
		}
		defer closeArm()
		arms = append(arms, a)
	}

	ns := fmt.Sprintf("rsttrace-chop-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}

	l, err := startLoad("/run/netns/"+ns, o.threads, o.port)
	if err != nil {
		return err
	}
	defer l.stop()

	// rate counts the load's refusals over one window, past its settle.
	rate := func() (float64, error) {
		if ctx.Err() != nil {
			return 0, errors.New("interrupted")
		}
		time.Sleep(o.settle)
		n0, t0 := l.count(), time.Now()
		time.Sleep(o.window - o.settle)
		if err := l.err(); err != nil {
			return 0, err
		}
		return float64(l.count()-n0) / time.Since(t0).Seconds(), nil
	}
	var offBefore float64
	if offBefore, err = rate(); err != nil {
		return err
	}
	var onRates = map[*arm]float64{}
	var pending *arm // its on window waits for the off window after it
	for c := 0; c < o.cycles; c++ {
		for _, a := range arms {
			off, err := rate()
			if err != nil {
				return err
			}
			if pending != nil {
				pending.ratios = append(pending.ratios, onRates[pending]/((offBefore+off)/2))
			}
			if err := a.on(); err != nil {
				return fmt.Errorf("attaching %s: %w", a.name, err)
			}
			on, err := rate()
			if offErr := a.off(); offErr != nil {
				return fmt.Errorf("detaching %s: %w", a.name, offErr)
			}
			if err != nil {
				return err
			}
			onRates[a], pending, offBefore = on, a, off
		}
	}
	off, err := rate()
	if err != nil {
		return err
	}
	pending.ratios = append(pending.ratios, onRates[pending]/((offBefore+off)/2))
	return report(o, arms, l.count())
}

// loadArm loads an arm's programs, detached.
func loadArm(name string) (*arm, func(), error) {
	switch name {
	case "rsttrace":
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		t, err := tracer.New(tracer.Config{Logger: log, RatePerSecond: tracer.DefaultRatePerSecond})
		if err != nil {
			return nil, nil, err
		}
		enc, err := events.NewEncoder("json", io.Discard)
		if err != nil {
			t.Close()
			return nil, nil, err
		}
		if err := t.Pause(); err != nil {
			t.Close()
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- t.Run(ctx, enc) }()
		closeArm := func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Fprintln(os.Stderr, "chop: rsttrace:", err)
			}
			t.Close()
		}
		return &arm{name: name, on: t.Resume, off: t.Pause}, closeArm, nil
	case "floor", "floor-hooks", "floor-hooks+syscalls":
		hooks := mintrace.HooksReset
		if name != "floor" {
			hooks = mintrace.HooksRsttrace
		}
		p, err := mintrace.Load(hooks, strings.HasSuffix(name, "+syscalls"))
		if err != nil {
			return nil, nil, err
		}
		return &arm{name: name, on: p.Attach, off: func() error { p.Detach(); return nil }}, p.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown arm %q", name)
}

// load is the refusal storm: threads connecting to a closed port.
type load struct {
	counts []paddedCount
	quit   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	failed error
}

// paddedCount is one thread's count, on a cache line of its own.
type paddedCount struct {
	n atomic.Uint64
	_ [56]byte
}

func startLoad(netns string, threads, port int) (*load, error) {
	l := &load{counts: make([]paddedCount, threads)}
	ready := make(chan error, threads)
	for i := 0; i < threads; i++ {
		l.wg.Add(1)
		go func(c *atomic.Uint64) {
			defer l.wg.Done()
			// The thread leaves the host's namespace for good: it is
			// not unlocked, so the runtime ends it with the goroutine.
			runtime.LockOSThread()
			fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				err = unix.Setns(fd, unix.CLONE_NEWNET)
				unix.Close(fd)
			}
			ready <- err
			if err != nil {
				return
			}
			sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
			for !l.quit.Load() {
				s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					l.fail(err)
					return
				}
				err = unix.Connect(s, sa)
				unix.Close(s)
				if !errors.Is(err, unix.ECONNREFUSED) {
					l.fail(fmt.Errorf("connect to port %d: %v, want ECONNREFUSED", port, err))
					return
				}
				c.Add(1)
			}
		}(&l.counts[i].n)
	}
	for i := 0; i < threads; i++ {
		if err := <-ready; err != nil {
			l.stop()
			return nil, fmt.Errorf("entering %s: %w", netns, err)
		}
	}
	return l, nil
}

func (l *load) fail(err error) {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = err
	}
	l.mu.Unlock()
}

func (l *load) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

func (l *load) count() uint64 {
	var n uint64
	for i := range l.counts {
		n += l.counts[i].n.Load()
	}
	return n
}

func (l *load) stop() {
	l.quit.Store(true)
	l.wg.Wait()
}

// armResult is one arm's ratios, summarized.
type armResult struct {
	Arm    string  `json:"arm"`
	Pairs  int     `json:"pairs"`
	Median float64 `json:"median"`
	Mean   float64 `json:"mean"`
	// CI95 is the half-width of the mean's 95% confidence interval
	// (1.96 standard errors).
	CI95 float64 `json:"ci95"`
	P10  float64 `json:"p10"`
	P90  float64 `json:"p90"`
}

func summarize(name string, r []float64) armResult {
	s := slices.Clone(r)
	slices.Sort(s)
	n := len(s)
	var sum, sq float64
	for _, x := range s {
		sum += x
	}
	mean := sum / float64(n)
	for _, x := range s {
		sq += (x - mean) * (x - mean)
	}
	sd := 0.0
	if n > 1 {
		sd = math.Sqrt(sq / float64(n-1))
	}
	return armResult{Arm: name, Pairs: n, Median: s[n/2], Mean: mean, CI95: 1.96 * sd / math.Sqrt(float64(n)),
		P10: s[n/10], P90: s[n*9/10]}
}

func report(o options, arms []*arm, refusals uint64) error {
	var res []armResult
	for _, a := range arms {
		res = append(res, summarize(a.name, a.ratios))
	}
	if o.json {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"window_ms": o.window.Milliseconds(), "cycles": o.cycles,
			"threads": o.threads, "refusals": refusals, "arms": res})
	}
	fmt.Printf("%d cycles of %v windows, %d threads, %d refusals\n", o.cycles, o.window, o.threads, refusals)
	fmt.Printf("%-12s %6s %8s %8s %8s %8s %8s\n", "arm", "pairs", "median", "mean", "±95%", "p10", "p90")
	for _, r := range res {
		fmt.Printf("%-12s %6d %8.3f %8.3f %8.3f %8.3f %8.3f\n", r.Arm, r.Pairs, r.Median, r.Mean, r.CI95, r.P10, r.P90)
	}
	return nil
}
