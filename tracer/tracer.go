// Package tracer wires rsttrace's stages and owns the run loop: it loads and
// attaches the BPF programs by the attach plan (internal/probe), reads their
// records from the ring buffer (internal/record), correlates them into
// events (internal/correlate), asks the host what records cannot say
// (internal/host), and polls the kernel's counters (listen-queue overflow,
// summarized refusals).
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"github.com/rsttrace/rsttrace/internal/correlate"
	"github.com/rsttrace/rsttrace/internal/host"
	"github.com/rsttrace/rsttrace/internal/identity"
	"github.com/rsttrace/rsttrace/internal/probe"
	"github.com/rsttrace/rsttrace/internal/record"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// Config is what the tracer is asked to do.
type Config struct {
	// Ports limits tracing to these local ports (the refused side, the
	// listener, the bound port); empty means every port.
	Ports []uint16
	// RingSize is the ring buffer size in bytes (a power of two, at least
	// a page); 0 means the default.
	RingSize int
	// Proc is where procfs is mounted; "" means /proc.
	Proc string
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
	// Force maps a capability to the hook kind it must use ("refusals":
	// "kprobe"), to test fallbacks; empty means the best this kernel allows.
	Force map[string]string
	// OverflowInterval is how often listen-queue overflow is summed up
	// per listener; 0 means DefaultOverflowInterval.
	OverflowInterval time.Duration
	// Summary: the kernel counts refusals per destination and the tracer
	// writes summary records, never one event per refusal (without it
	// this happens only while the ring buffer is more than half full).
	Summary bool
	// Filter keeps only events that name a process (or happen in a
	// namespace) of these units, containers or pods; empty keeps all.
	Filter identity.Filter
	// Names: the identity resolver's options (container runtime sockets,
	// cgroup mount); nil means identity.DefaultOptions().
	Names *identity.Options
	// Observe, when set, sees every event Run writes (metrics).
	Observe func(*events.Event)
	// RatePerSecond is how many events of one kind (refused, filtered,
	// reset, timeout) to one destination are written in full each
	// second; the rest are counted in summary records. 0 means
	// DefaultRatePerSecond; negative: every event is written (while the
	// ring buffer has room).
	RatePerSecond int

	// connectSlots: the kernel's lock-free table of connect() owners
	// (probe.Settings.ConnectSlots); tests shrink it.
	connectSlots int
	// natWait: tests make the NAT hook wait for this instead of the
	// kernel's NAT module, and its program be loaded again at the end
	// of the wait (probe.Settings.KeepNAT), as where the modules come
	// after the tracer.
	natWait func() bool
}

// DefaultRatePerSecond is how many events of a kind per destination are
// written in full each second by default.
const DefaultRatePerSecond = 100

// DefaultOverflowInterval is how often listen-queue overflow is reported.
const DefaultOverflowInterval = time.Second

// DefaultRingSize holds about 75,000 records.
const DefaultRingSize = 8 << 20

// Tracer is a loaded and attached set of programs, and the stages a
// record goes through: decode (record), correlate, and the pollers that
// turn the kernel's counters into events (overflow, summary).
type Tracer struct {
	cfg    Config
	log    *slog.Logger
	coll   *ebpf.Collection
	maps   bpfobj.RsttraceMaps
	links  []link.Link
	reader *ringbuf.Reader
	// readerMu: RingFill (a metrics scrape, any goroutine) against Close,
	// which unmaps the ring; Run and Close never overlap.
	readerMu sync.Mutex
	plan     probe.Plan
	kernel   string
	corr     *correlate.Correlator
	ovf      *correlate.OverflowPoller
	sum      *correlate.Summarizer
	sumr     summaryReader
	enr      enricher
	// snap is the start-up snapshot, written as listen records when Run
	// starts.
	snap []host.SnapshotListener
	// snapDone closes when the snapshot (snap, snapErr) is read.
	snapDone chan struct{}
	snapErr  error
	// wallOffset converts CLOCK_MONOTONIC ns to Unix ns.
	wallOffset int64

	mu       sync.Mutex
	lostSeen uint64 // kernel losses already reported in lost records
	written  uint64
	// waiting: a capability of the plan waits for the host
	// (probe.AttachWaiting); looked for at waitLooked. The plan changes
	// under mu.
	waiting    bool
	waitLooked time.Time
	paused     bool // Pause: links detached
	// untyped: a program loaded without the types a module brings,
	// loaded again before its capability attaches.
	untyped     *probe.Untyped
	untypedMaps map[string]*ebpf.Map // the maps it uses, by name
}

// New checks the host, loads and attaches the programs, and reads the
// start-up snapshot of listeners. Close releases everything.
func New(cfg Config) (*Tracer, error) {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = DefaultRingSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RatePerSecond == 0 {
		cfg.RatePerSecond = DefaultRatePerSecond
	}
	if cfg.RatePerSecond < 0 {
		cfg.RatePerSecond = 0
	}
	if cfg.OverflowInterval <= 0 {
		cfg.OverflowInterval = DefaultOverflowInterval
	}
	began := time.Now()
	if err := probe.CheckHost(); err != nil {
		return nil, err
	}
	// The programs' maps are made and kallsyms read while the kernel's
	// BTF is read and the plan chosen.
	kernel := sync.OnceValues(btf.LoadKernelSpec)
	objs := probe.Open(probe.Settings{
		RingSize: cfg.RingSize, Summary: cfg.Summary, SummaryAbove: uint64(cfg.RingSize / 2),
		FilterPorts: len(cfg.Ports) > 0, Proc: cfg.Proc, RatePerSecond: cfg.RatePerSecond,
		ConnectSlots: cfg.connectSlots, KeepNAT: cfg.natWait != nil,
	}, kernel)
	defer objs.Close()
	kernelBTF, err := kernel()
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF: %w", err)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)

	t := &Tracer{cfg: cfg, log: cfg.Logger, kernel: unix.ByteSliceToString(uts.Release[:])}
	if err := t.load(objs, kernelBTF, began); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// load loads, attaches and learns the existing listeners; on error the
// caller closes what was made.
func (t *Tracer) load(objs *probe.Objects, kernelBTF *btf.Spec, began time.Time) error {
	cfg := t.cfg
	phase := func(what string) { t.log.Debug("start-up", "done", what, "elapsed", time.Since(began)) }
	phase("kernel BTF")
	t.plan = probe.Choose(kernelBTF, cfg.Force)
	if cfg.natWait != nil {
		t.plan.Wait(probe.CapNAT, "the test's signal", cfg.natWait)
	}
	if err := objs.Prepare(kernelBTF, t.plan); err != nil {
		return err
	}
	phase("plan and settings")
	var err error
	if t.coll, err = objs.Load(kernelBTF); err != nil {
		return err
	}
	t.untyped = objs.Untyped()
	phase("load")
	if t.untyped != nil {
		// Assign takes the maps out of the collection.
		t.untypedMaps = maps.Clone(t.coll.Maps)
	}
	if err := t.coll.Assign(&t.maps); err != nil {
		return fmt.Errorf("reading BPF maps: %w", err)
	}
	for _, p := range cfg.Ports {
		if err := t.maps.Ports.Put(uint32(p), uint8(1)); err != nil {
			return fmt.Errorf("setting port filter for %d: %w", p, err)
		}
	}

	// The reader exists before the programs run, so no record is missed;
	// records wait in the ring while the snapshot is taken.
	if t.reader, err = ringbuf.NewReader(t.maps.Records); err != nil {
		return fmt.Errorf("opening ring buffer: %w", err)
	}
	if err := probe.EnsureTracefs(t.log); err != nil {
		return err
	}
	t.links = probe.Attach(t.coll, t.plan, t.log)
	t.waiting = slices.ContainsFunc(t.plan, func(c probe.Choice) bool { return c.Waiting != "" })
	phase("attach")

	procfs := host.Procfs{Root: cfg.Proc}
	// The namespace of this thread, not of the process's first thread:
	// that one may be anywhere (a program embedding the tracer, or a
	// test, may have moved it).
	self, _ := procfs.Netns("thread-self")
	nameOpts := identity.DefaultOptions()
	if cfg.Names != nil {
		nameOpts = *cfg.Names
	}
	nameOpts.Proc = cfg.Proc
	t.enr = enricher{log: t.log, proc: cfg.Proc, self: self, names: identity.New(nameOpts), filter: cfg.Filter,
		rules: ruleNamer{log: t.log, proc: cfg.Proc, self: self}}
	t.corr = correlate.New(procfs)
	t.corr.Names = t.enr.names
	t.corr.RSTReason = probe.RSTReasonNames(kernelBTF)
	t.corr.Wall = t.wall
	t.corr.SeesFirewallDrops = t.plan.Serves(probe.CapFirewall)
	t.corr.SeesLocalAnswers = t.plan.Serves(probe.CapRefusals) && t.plan.Serves(probe.CapFirewall)
	t.sum = correlate.NewSummarizer(cfg.Summary, cfg.RatePerSecond, time.Now())
	t.sumr = summaryReader{maps: [2]*ebpf.Map{t.maps.SummaryA, t.maps.SummaryB},
		cells: [2]*ebpf.Map{t.maps.SummaryCellsA, t.maps.SummaryCellsB}, slot: t.maps.SummarySlot}

	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	t.wallOffset = time.Now().UnixNano() - mono.Nano()

	phase("stages")
	// The listeners that exist already are read while Run starts: the
	// start record (readiness) does not wait for a walk of /proc that
	// grows with the host. Records wait in the ring meanwhile, and Run
	// handles none before the snapshot is in the correlator.
	t.snapDone = make(chan struct{})
	go func() {
		defer close(t.snapDone)
		t.snap, t.snapErr = host.Snapshot(cfg.Proc)
	}()
	t.ovf = correlate.NewOverflowPoller(kernelOverflow{proc: cfg.Proc, stats: t.maps.ListenerStats}, t.log,
		t.plan.Serves(probe.CapOverflowSYN), t.plan.Serves(probe.CapOverflowFinalAck))
	t.ovf.Keep(self)
	t.ovf.Watch(self, uint32(os.Getpid()))
	t.ovf.Start(time.Now())
	return nil
}

// kernelOverflow is the overflow poller's view of the kernel.
type kernelOverflow struct {
	proc  string
	stats *ebpf.Map
}

func (k kernelOverflow) Open(pid, netns uint32) (correlate.Netns, error) {
	f, err := host.OpenNetns(k.proc, pid, netns)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (k kernelOverflow) Stages(ino uint64) correlate.StageCounts {
	var v bpfobj.RsttraceListenStats
	if err := k.stats.Lookup(ino, &v); err != nil {
		return correlate.StageCounts{}
	}
	return correlate.StageCounts{SynAcceptQ: v.SynAcceptq, SynReqQ: v.SynReqq, FinalAck: v.FinalAck, LastAccept: v.LastAccept}
}

func (t *Tracer) wall(ns uint64) time.Time { return time.Unix(0, int64(ns)+t.wallOffset) }

// Plan says which hook serves which capability.
func (t *Tracer) Plan() []events.Attach {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.plan.Attaches()
}

// Pause detaches every program: until Resume the kernel runs none of them
// and nothing that happens meanwhile is seen; the maps, the ring and what
// the correlator holds stay. It is for measuring what the programs cost
// against the same process with nothing attached (bench/chop).
func (t *Tracer) Pause() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for i := len(t.links) - 1; i >= 0; i-- {
		errs = append(errs, t.links[i].Close())
	}
	t.links = nil
	t.paused = true
	return errors.Join(errs...)
}

// Resume attaches again what Pause detached. A hook the kernel refuses
// now (before 5.13 a fentry/fexit program attaches only once) leaves its
// capability degraded in the plan, and the error says which.
func (t *Tracer) Resume() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		return nil
	}
	var err error
	t.links, err = probe.Reattach(t.coll, t.plan)
	t.paused = false
	return err
}

// reloadUntyped loads the untyped program again if progs has it: the
// module its types come from is loaded now.
func (t *Tracer) reloadUntyped(progs []string) error {
	if t.untyped == nil || !slices.Contains(progs, t.untyped.Program()) {
		return nil
	}
	if err := t.untyped.Reload(t.coll, t.untypedMaps); err != nil {
		return err
	}
	t.untyped, t.untypedMaps = nil, nil
	return nil
}

// waitEvery is how often a capability waiting for the host looks again.
const waitEvery = 100 * time.Millisecond

// attachWaiting attaches the capabilities whose wait is over.
func (t *Tracer) attachWaiting() {
	if !t.waiting || time.Since(t.waitLooked) < waitEvery {
		return
	}
	t.waitLooked = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused {
		return // the first pass after Resume attaches what is due
	}
	t.links = append(t.links, probe.AttachWaiting(t.coll, t.plan, t.log, t.reloadUntyped)...)
	t.waiting = slices.ContainsFunc(t.plan, func(c probe.Choice) bool { return c.Waiting != "" })
}

// Kernel is the running kernel's release.
func (t *Tracer) Kernel() string { return t.kernel }

// Lost returns the number of records lost so far: records the kernel could
// not put in the ring buffer (or count in a full summary map), and records
// the correlator could not keep (a table at its bound).
func (t *Tracer) Lost() (uint64, error) {
	var perCPU []uint64
	if err := t.maps.Lost.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading loss counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	if t.corr != nil {
		n += t.corr.Lost()
	}
	return n, nil
}

// Written returns how many events Run passed to emit.
func (t *Tracer) Written() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.written
}

// gather is how long Run lets records pile up after it emptied the ring,
// and the longest it waits in epoll while the correlator holds something
// (a refusal waiting up to correlate.DefaultHold for its client, a reset for
// its receiver): the read loop wakes at most about 1/gather times a second
// under steady traffic. The kernel wakes the reader for the first record
// after it caught up; a reader that went back to epoll at once was woken for
// every few records. Each wakeup is a context switch onto a CPU the busy
// server is using, and on a virtual machine a switch between address spaces
// costs far more than the tracer's own CPU time shows. Next to nginx
// resetting ~350 connections a second (bench/busy.sh's mix, keep-alive, two
// CPUs, 6 interleaved pairs per run), 10 ms (with the held-record ticks,
// ~470 context switches a second across the tracer's threads) left the
// server 91-92% of its requests, 100 ms 95-98%; with Go on one thread as
// well (cmd/rsttrace), the tracer's CPU fell from 2.2% to 0.3% of a core,
// its context switches to ~55 a second. 100 ms is
// also the most an event waits in the ring once the tracer is busy; held
// records are paired by record time, so the pause changes no pairing. The
// 8 MiB ring (~37,000 records before its half, where the kernel starts
// counting instead of writing) fills that far in 100 ms only at several
// hundred thousand full records a second, beyond the per-destination rate.
const gather = 100 * time.Millisecond

// How often it wakes up when nothing is held: for the periodic work
// (overflow and summary polls, loss reports, firewall claims that wait
// seconds). Waking every tick regardless cost ~3% of a core on an idle
// host.
const idleTick = 250 * time.Millisecond

const lostEvery = time.Second

// Run reads records until ctx is cancelled or the reader is closed, and
// writes events to out. It flushes out whenever the ring buffer is empty.
// On cancellation it drains what is already in the ring, then returns.
func (t *Tracer) Run(ctx context.Context, out events.Encoder) error {
	count := func(e *events.Event) error {
		if !t.enr.enrich(e) {
			return nil
		}
		t.mu.Lock()
		t.written++
		t.mu.Unlock()
		if t.cfg.Observe != nil {
			t.cfg.Observe(e)
		}
		return out.Encode(e)
	}
	stop := context.AfterFunc(ctx, func() { _ = t.reader.Flush() })
	defer stop()
	if err := t.takeSnapshot(ctx, count); err != nil {
		return err
	}

	var rec ringbuf.Record
	var r record.Record
	lastLost := time.Now()
	draining, batch := false, false
	n := 0
	lastHouse := time.Now()
	for {
		if !draining && ctx.Err() != nil {
			// Drain: read what is in the ring now, then stop.
			draining = true
			t.reader.SetDeadline(time.Now().Add(-time.Second))
		}
		if !draining {
			if batch && t.reader.AvailableBytes() == 0 {
				// Emptied the ring: housekeeping, then let the next
				// records gather instead of waking up for each.
				batch = false
				if err := t.housekeep(count, out, &lastLost); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
				case <-time.After(gather):
				}
				continue
			}
			if !batch {
				// A read that may wait in epoll waits at most gather
				// while something is held; otherwise until the next
				// periodic work. The ring is empty here: the kernel
				// wakes the reader for the next record.
				wait := min(idleTick, t.cfg.OverflowInterval)
				if t.corr.Holding() {
					wait = gather
				}
				t.reader.SetDeadline(time.Now().Add(wait))
			}
		}
		err := t.reader.ReadInto(&rec)
		switch {
		case err == nil:
			batch = true
			if derr := record.Decode(rec.RawSample, &r); derr != nil {
				t.log.Warn("dropping undecodable record", "error", derr)
				continue
			}
			t.enr.capture(&r)
			// A new listener's namespace is watched before its listen
			// event is out: drops right after it are counted.
			t.trackNetns(&r, false)
			if err := t.corr.Handle(&r, count); err != nil {
				return err
			}
			t.trackNetns(&r, true)
			// A ring that never empties must not starve the periodic
			// work (lost reports, overflow polls).
			if n++; n%1024 == 0 && time.Since(lastHouse) >= gather {
				lastHouse = time.Now()
				if err := t.housekeep(count, out, &lastLost); err != nil {
					return err
				}
			}
			continue
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			batch = false
		case errors.Is(err, ringbuf.ErrClosed):
			return t.finish(count, out)
		default:
			return fmt.Errorf("reading ring buffer: %w", err)
		}
		if draining {
			return t.finish(count, out)
		}
		if err := t.housekeep(count, out, &lastLost); err != nil {
			return err
		}
	}
}

// portTraced reports whether --port lets port through (every port when
// none was given), as the kernel's port filter does for records.
func (t *Tracer) portTraced(port uint16) bool {
	return len(t.cfg.Ports) == 0 || slices.Contains(t.cfg.Ports, port)
}

// takeSnapshot waits for the start-up snapshot, gives its listeners to the
// correlator and the overflow poller, and writes one listen record per
// listener that existed before the tracer: Since is zero (when it started
// listening is not known) and the explanation says it comes from the
// start-up snapshot.
func (t *Tracer) takeSnapshot(ctx context.Context, emit func(*events.Event) error) error {
	select {
	case <-t.snapDone:
	case <-ctx.Done():
		<-t.snapDone
	}
	if t.snapErr != nil {
		return fmt.Errorf("reading existing listeners: %w", t.snapErr)
	}
	for _, l := range t.snap {
		t.corr.AddListener(l.Ino, l.Listener)
		t.ovf.Watch(l.Netns, l.Pid)
	}
	t.log.Debug("start-up snapshot", "listeners", len(t.snap))
	now := time.Now()
	for _, l := range t.snap {
		if !t.portTraced(l.Port) {
			continue
		}
		cp := l.Listener
		e := &events.Event{Time: now, Type: events.TypeListen, Netns: cp.Netns, Listener: &cp,
			Explanation: "already listening when rsttrace started (start-up snapshot)"}
		if err := emit(e); err != nil {
			return err
		}
	}
	t.snap = nil
	return nil
}

// housekeep runs when the ring is empty: hooks waiting for the host, the
// overflow poll when due, held refusals whose client did not come, the
// output flush, and the lost report when due.
func (t *Tracer) housekeep(emit func(*events.Event) error, out events.Encoder, lastLost *time.Time) error {
	t.attachWaiting()
	if t.ovf.Due(time.Now(), t.cfg.OverflowInterval) {
		if err := t.ovf.Poll(time.Now(), t.monoNow(), t.corr.Listener, emit); err != nil {
			return err
		}
	}
	if err := t.corr.Expire(t.monoNow(), emit); err != nil {
		return err
	}
	if err := t.sumr.poll(t.sum, t.corr, time.Now(), false, emit); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if time.Since(*lastLost) >= lostEvery {
		*lastLost = time.Now()
		if err := t.reportLost(emit); err != nil {
			return err
		}
	}
	return nil
}

// finish writes what is still held and a last overflow summary.
func (t *Tracer) finish(emit func(*events.Event) error, out events.Encoder) error {
	if err := t.corr.FlushAll(emit); err != nil {
		return err
	}
	if err := t.ovf.Poll(time.Now(), t.monoNow(), t.corr.Listener, emit); err != nil {
		return err
	}
	if err := t.sumr.poll(t.sum, t.corr, time.Now(), true, emit); err != nil {
		return err
	}
	return out.Flush()
}

// RingFill is how full the ring buffer is now, from 0 to 1.
func (t *Tracer) RingFill() float64 {
	t.readerMu.Lock()
	defer t.readerMu.Unlock()
	if t.reader == nil {
		return 0
	}
	return float64(t.reader.AvailableBytes()) / float64(t.cfg.RingSize)
}

// Summarized returns how many refusals Run wrote in summary records.
func (t *Tracer) Summarized() uint64 {
	if t.sum == nil {
		return 0
	}
	return t.sum.Total()
}

// SummarizedByKind returns how many events of each kind Run wrote in
// summary records.
func (t *Tracer) SummarizedByKind() correlate.SummaryTotals {
	if t.sum == nil {
		return correlate.SummaryTotals{}
	}
	return t.sum.Totals()
}

// trackNetns keeps the overflow poller on the namespaces that have
// listeners: it starts watching one at its first listener and lets it go
// after its last listener closed.
func (t *Tracer) trackNetns(r *record.Record, handled bool) {
	switch {
	case !handled && (r.Type == record.Listen || r.Type == record.ListenUpdate):
		t.ovf.Watch(r.Netns, r.Proc.Pid)
	case handled && r.Type == record.ListenClose:
		if t.corr.ListenersIn(r.Netns) == 0 {
			t.ovf.Retire(r.Netns)
		}
	}
}

func (t *Tracer) monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// reportLost emits a lost record if the kernel lost records since the last.
func (t *Tracer) reportLost(emit func(*events.Event) error) error {
	n, err := t.Lost()
	if err != nil {
		return err
	}
	t.mu.Lock()
	delta := n - t.lostSeen
	t.lostSeen = n
	t.mu.Unlock()
	if delta == 0 {
		return nil
	}
	return emit(&events.Event{Time: time.Now(), Type: events.TypeLost, Lost: &delta})
}

// Close detaches the programs and frees the maps, in reverse order of
// creation.
func (t *Tracer) Close() error {
	var errs []error
	if t.snapDone != nil {
		<-t.snapDone // the snapshot reads nothing Close frees, but ends first
	}
	t.mu.Lock()
	for i := len(t.links) - 1; i >= 0; i-- {
		errs = append(errs, t.links[i].Close())
	}
	t.links = nil
	t.mu.Unlock()
	if t.ovf != nil {
		t.ovf.Close()
		t.ovf = nil
	}
	t.readerMu.Lock()
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
		t.reader = nil
	}
	t.readerMu.Unlock()
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	if t.enr.names != nil {
		t.enr.names.Close()
		t.enr.names = nil
	}
	return errors.Join(errs...)
}
