// Package tracer loads the BPF programs, attaches them, reads their records
// from the ring buffer and correlates them into events.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
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
}

// DefaultRingSize holds about 75,000 records.
const DefaultRingSize = 8 << 20

// Tracer is a loaded and attached set of programs.
type Tracer struct {
	cfg    Config
	log    *slog.Logger
	coll   *ebpf.Collection
	links  []link.Link
	reader *ringbuf.Reader
	plan   []events.Attach
	kernel string
	corr   *Correlator
	ovf    *overflowPoller
	sum    *summarizer
	// wallOffset converts CLOCK_MONOTONIC ns to Unix ns.
	wallOffset int64

	mu       sync.Mutex
	lostSeen uint64 // kernel losses already reported in lost records
	written  uint64
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
	if cfg.OverflowInterval <= 0 {
		cfg.OverflowInterval = DefaultOverflowInterval
	}
	if err := CheckHost(); err != nil {
		return nil, err
	}
	kernelBTF, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF: %w", err)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)

	t := &Tracer{cfg: cfg, log: cfg.Logger, kernel: unix.ByteSliceToString(uts.Release[:])}
	if err := t.load(kernelBTF); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// load loads, attaches and learns the existing listeners; on error the
// caller closes what was made.
func (t *Tracer) load(kernelBTF *btf.Spec) error {
	cfg := t.cfg

	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		return fmt.Errorf("loading BPF object: %w", err)
	}
	spec.Maps["records"].MaxEntries = uint32(cfg.RingSize)
	if err := spec.Variables["summary_always"].Set(cfg.Summary); err != nil {
		return fmt.Errorf("setting summary mode: %w", err)
	}
	if err := spec.Variables["summary_above"].Set(uint64(cfg.RingSize / 2)); err != nil {
		return fmt.Errorf("setting summary mode: %w", err)
	}
	if len(cfg.Ports) > 0 {
		if err := spec.Variables["filter_ports"].Set(true); err != nil {
			return fmt.Errorf("setting port filter: %w", err)
		}
	}
	// Load only the programs the plan attaches: the others may not even
	// load on this kernel (fentry where it is refused, for example).
	choices := choose(kernelBTF, cfg.Force)
	t.plan = planOf(choices)
	if err := configureIssue5(spec, kernelBTF, choices, cfg.Proc); err != nil {
		return err
	}
	keep := map[string]bool{}
	chosen := map[string]string{} // capability -> hook kind
	for _, c := range choices {
		if c.opt != nil {
			chosen[c.capability] = c.opt.kind
			for _, p := range c.opt.progs {
				keep[p] = true
			}
		}
	}
	if chosen[CapOverflowFinalAck] == "tp_btf" {
		v, _ := dropReason(kernelBTF, "TCP_LISTEN_OVERFLOW")
		if err := spec.Variables["reason_listen_overflow"].Set(v); err != nil {
			return fmt.Errorf("setting drop reason: %w", err)
		}
	}
	if err := spec.Variables["caps"].Set(capsOf(choices, sendResetHasReason(kernelBTF))); err != nil {
		return fmt.Errorf("setting capabilities of the shared programs: %w", err)
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK; from 5.11 on
	// (memcg accounting) this probes and changes nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return requirement("raising RLIMIT_MEMLOCK for BPF maps: %v", err)
	}
	opts := ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernelBTF}}
	if t.coll, err = ebpf.NewCollectionWithOptions(spec, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("loading BPF programs (verifier): %+v", ve)
		}
		return fmt.Errorf("loading BPF programs: %w", err)
	}
	for _, p := range cfg.Ports {
		if err := t.coll.Maps["ports"].Put(uint32(p), uint8(1)); err != nil {
			return fmt.Errorf("setting port filter for %d: %w", p, err)
		}
	}

	// The reader exists before the programs run, so no record is missed;
	// records wait in the ring while the snapshot is taken.
	if t.reader, err = ringbuf.NewReader(t.coll.Maps["records"]); err != nil {
		return fmt.Errorf("opening ring buffer: %w", err)
	}
	if err := ensureTracefs(t.log); err != nil {
		return err
	}
	// A program shared by several capabilities is attached once: by the
	// first capability that needs it. If another of that capability's
	// programs fails, the links it made are closed, so a later capability
	// attaches the shared one afresh. (A shared program attached for one
	// capability still does the work `caps` gave it for a capability that
	// failed to attach another program; with tp_btf, whose load already
	// checked the hook, that is not expected.)
	attached := map[string]bool{}
	failed := map[string]error{}
	for _, c := range choices {
		if c.opt == nil {
			if c.fallback != "" {
				t.log.Info("capability partial", "capability", c.capability, "reason", c.reason, "fallback", c.fallback)
			} else {
				t.log.Warn("capability degraded", "capability", c.capability, "reason", c.reason)
			}
			continue
		}
		var links []link.Link
		var made []string
		var aerr error
		for _, name := range c.opt.progs {
			if attached[name] {
				continue
			}
			if err, ok := failed[name]; ok {
				aerr = fmt.Errorf("attaching %s: %w", c.opt.hook, err)
				break
			}
			l, err := c.opt.attach(name, t.coll.Programs[name])
			if err != nil {
				failed[name] = fmt.Errorf("%s: %w", name, err)
				aerr = fmt.Errorf("attaching %s (%s): %w", c.opt.hook, name, err)
				break
			}
			attached[name] = true
			links = append(links, l)
			made = append(made, name)
		}
		if aerr != nil {
			// A probe said yes and the kernel still said no (a
			// function ftrace cannot patch, for one): the capability is
			// degraded, and says why, rather than the tracer failing.
			for i, l := range links {
				l.Close()
				delete(attached, made[i])
			}
			delete(chosen, c.capability)
			t.degrade(c.capability, aerr.Error())
			continue
		}
		t.links = append(t.links, links...)
	}

	t.corr = NewCorrelator()
	t.sum = newSummarizer(cfg.Summary, time.Now())
	t.corr.RSTReason = rstReasonNames(kernelBTF)
	t.corr.Wall = t.wall
	proc := cfg.Proc
	t.corr.HolderScan = func(pid uint32, port uint16) *events.Process { return procHolder(proc, pid, port) }
	t.corr.Alive = func(pid uint32, ino uint64) bool { return procHasSocket(proc, pid, ino) }
	t.corr.PortOf = func(pid uint32, ino uint64) uint16 { return procPortOf(proc, pid, ino) }
	t.corr.x5 = newIssue5(choices, proc)

	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	t.wallOffset = time.Now().UnixNano() - mono.Nano()

	snap, err := Snapshot(cfg.Proc)
	if err != nil {
		return fmt.Errorf("reading existing listeners: %w", err)
	}
	for _, l := range snap {
		t.corr.AddListener(l.Ino, l.Listener)
	}
	t.log.Debug("start-up snapshot", "listeners", len(snap))

	_, perSYN := chosen[CapOverflowSYN]
	_, perFinal := chosen[CapOverflowFinalAck]
	t.ovf = newOverflowPoller(kernelOverflow{proc: cfg.Proc, stats: t.coll.Maps["listener_stats"]}, t.log, perSYN, perFinal)
	t.ovf.keep[hostNetns(cfg.Proc)] = true
	t.ovf.watch(hostNetns(cfg.Proc), uint32(os.Getpid()))
	for _, l := range snap {
		t.ovf.watch(l.Netns, l.Pid)
	}
	t.ovf.lastPoll = time.Now()
	return nil
}

// hostNetns is the tracer's own network namespace.
func hostNetns(proc string) uint32 {
	n, _ := nsInode(proc, "self")
	return n
}

// kernelOverflow is the overflow poller's view of the kernel.
type kernelOverflow struct {
	proc  string
	stats *ebpf.Map
}

func (k kernelOverflow) open(pid, netns uint32) (nsHandle, error) {
	f, err := openNetns(k.proc, pid, netns)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (k kernelOverflow) stages(ino uint64) stageCounts {
	var v bpfobj.RsttraceListenStats
	if err := k.stats.Lookup(ino, &v); err != nil {
		return stageCounts{}
	}
	return stageCounts{synAcceptQ: v.SynAcceptq, synReqQ: v.SynReqq, finalAck: v.FinalAck, lastAccept: v.LastAccept}
}

// degrade marks capability c as not served in the plan, with reason.
func (t *Tracer) degrade(c, reason string) {
	for i := range t.plan {
		if t.plan[i].Capability != c {
			continue
		}
		t.plan[i].Hook = ""
		t.plan[i].Degraded = reason
		for _, cp := range capabilities {
			if cp.name == c {
				t.plan[i].Fallback = cp.fallback
			}
		}
		t.log.Warn("capability degraded", "capability", c, "reason", reason)
	}
}

func (t *Tracer) wall(ns uint64) time.Time { return time.Unix(0, int64(ns)+t.wallOffset) }

// Plan says which hook serves which capability.
func (t *Tracer) Plan() []events.Attach { return t.plan }

// Kernel is the running kernel's release.
func (t *Tracer) Kernel() string { return t.kernel }

// Lost returns the number of records lost so far: records the kernel could
// not put in the ring buffer.
func (t *Tracer) Lost() (uint64, error) {
	var perCPU []uint64
	if err := t.coll.Maps["lost"].Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading loss counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Written returns how many events Run passed to emit.
func (t *Tracer) Written() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.written
}

// How often the read loop wakes up when idle: to write held refusals and
// to report losses.
const tick = 10 * time.Millisecond
const lostEvery = time.Second

// gather is how long Run lets records pile up after it emptied the ring.
// The kernel wakes the reader only for the first record after the reader
// caught up, so under a flood a reader that returned to epoll at once was
// woken for every few records (each wakeup an interrupt-work item on the
// CPU running the load, a context switch, and a tiny batch); pausing
// bounds that to 1/gather batches a second. It is also the most an event
// waits in the ring once the tracer is busy.
const gather = time.Millisecond

// Run reads records until ctx is cancelled or the reader is closed, and
// writes events to out. It flushes out whenever the ring buffer is empty.
// On cancellation it drains what is already in the ring, then returns.
func (t *Tracer) Run(ctx context.Context, out events.Encoder) error {
	count := func(e *events.Event) error {
		t.mu.Lock()
		t.written++
		t.mu.Unlock()
		return out.Encode(e)
	}
	stop := context.AfterFunc(ctx, func() { _ = t.reader.Flush() })
	defer stop()

	var rec ringbuf.Record
	var r Record
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
				time.Sleep(gather)
				continue
			}
			if !batch {
				// A read that may wait in epoll waits at most a tick:
				// the kernel does not wake the reader for a record
				// behind unread (discarded) ones.
				t.reader.SetDeadline(time.Now().Add(tick))
			}
		}
		err := t.reader.ReadInto(&rec)
		switch {
		case err == nil:
			batch = true
			if derr := Decode(rec.RawSample, &r); derr != nil {
				t.log.Warn("dropping undecodable record", "error", derr)
				continue
			}
			// A new listener's namespace is watched before its listen
			// event is out: drops right after it are counted.
			t.trackNetns(&r, false)
			if err := t.corr.Handle(&r, count); err != nil {
				return err
			}
			t.trackNetns(&r, true)
			// A ring that never empties must not starve the periodic
			// work (lost reports, overflow polls).
			if n++; n%1024 == 0 && time.Since(lastHouse) >= tick {
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

// housekeep runs when the ring is empty: the overflow poll when due, held
// refusals whose client did not come, the output flush, and the lost
// report when due.
func (t *Tracer) housekeep(emit func(*events.Event) error, out events.Encoder, lastLost *time.Time) error {
	if time.Since(t.ovf.lastPoll) >= t.cfg.OverflowInterval {
		if err := t.ovf.poll(time.Now(), t.monoNow(), t.corr.Listener, emit); err != nil {
			return err
		}
	}
	if err := t.corr.Expire(t.monoNow(), emit); err != nil {
		return err
	}
	if err := t.sum.poll(t.coll.Maps["summary"], t.corr, time.Now(), false, emit); err != nil {
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
	if err := t.ovf.poll(time.Now(), t.monoNow(), t.corr.Listener, emit); err != nil {
		return err
	}
	if err := t.sum.poll(t.coll.Maps["summary"], t.corr, time.Now(), true, emit); err != nil {
		return err
	}
	return out.Flush()
}

// Summarized returns how many refusals Run wrote in summary records.
func (t *Tracer) Summarized() uint64 {
	if t.sum == nil {
		return 0
	}
	return t.sum.total
}

// trackNetns keeps the overflow poller on the namespaces that have
// listeners: it starts watching one at its first listener and lets it go
// after its last listener closed.
func (t *Tracer) trackNetns(r *Record, handled bool) {
	switch {
	case !handled && (r.Type == recListen || r.Type == recListenUpdate):
		t.ovf.watch(r.Netns, r.Proc.Pid)
	case handled && r.Type == recListenClose:
		if t.corr.ListenersIn(r.Netns) == 0 {
			t.ovf.retire(r.Netns)
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
	for i := len(t.links) - 1; i >= 0; i-- {
		errs = append(errs, t.links[i].Close())
	}
	t.links = nil
	if t.ovf != nil {
		t.ovf.Close()
		t.ovf = nil
	}
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
		t.reader = nil
	}
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	return errors.Join(errs...)
}

// rstReasonNames resolves RST reason values by their names in this
// kernel's BTF (enum sk_rst_reason, 6.10+): the numbering differs between
// kernels, so it is never hard-coded.
func rstReasonNames(spec *btf.Spec) func(uint32) string {
	names := map[uint32]string{}
	var e *btf.Enum
	if err := spec.TypeByName("sk_rst_reason", &e); err == nil {
		for _, v := range e.Values {
			names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
		}
	}
	return func(v uint32) string { return names[v] }
}
