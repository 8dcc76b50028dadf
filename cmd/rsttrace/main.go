// Command rsttrace explains every refused TCP connection on this host: what
// refused it and why, and which processes were involved.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/identity"
	"github.com/rsttrace/rsttrace/internal/metrics"
	"github.com/rsttrace/rsttrace/internal/output"
	"github.com/rsttrace/rsttrace/internal/sdnotify"
	"github.com/rsttrace/rsttrace/tracer"
)

const usage = `rsttrace: explain every refused TCP connection on this host.

Usage: rsttrace [flags]
       rsttrace why [flags] PORT | ADDR:PORT   (see rsttrace why --help)

Traces until interrupted (Ctrl-C) and prints one line per event: every
connection refused (with its cause and the processes involved), every
listener opened and closed, every failed bind(). Needs root.

Examples:
  sudo rsttrace                      # human-readable lines until Ctrl-C
  sudo rsttrace -o json > rst.jsonl  # JSON Lines for a log pipeline
  sudo rsttrace --port 80 --port 443 # only these local ports
  sudo rsttrace --duration 30s -o json | jq 'select(.type=="refused")'
  sudo rsttrace --check              # will it work on this host? (hooks per capability)
  sudo rsttrace -o json | jq 'select(.type=="listen_overflow")'  # who does not accept()
  sudo rsttrace --summary            # a flood: one line per destination per second
  sudo rsttrace --container web --unit nginx.service   # only what involves these
  sudo rsttrace --output /var/log/rsttrace/rsttrace.jsonl --metrics 127.0.0.1:9637
  sudo rsttrace why 8080             # the "connection refused" checklist, now

Floods: the kernel writes the first --rate events of a kind (refused,
filtered, reset, timeout) per destination each second and counts the rest,
written as one summary record per destination and kind each second (also
for everything while the ring buffer is more than half full; --summary:
for every refusal). Every event is written, in a summary, or in the lost
count of the stop record.

Causes of a refusal: no_listener, listener_closed, wrong_address,
other_netns, bind_failed, backlog_full, firewall_reject, remote, unknown;
of a timeout: firewall_drop, no_response, unknown (see the README for what
to do).

Flags:
`

// config is everything the flags say.
type config struct {
	format   string
	ports    []uint16
	duration time.Duration
	ringSize int
	overflow time.Duration
	verbose  bool
	check    bool
	summary  bool
	// filter: --unit, --container, --pod.
	filter identity.Filter
	// output: JSON Lines to this file (rotated) instead of stdout.
	output     string
	outputSize int64
	outputKeep int
	// metrics: serve Prometheus metrics on this address.
	metrics string
	// rate: full events per destination and kind per second (0: the
	// default; negative: all).
	rate int
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*s = append(*s, f)
		}
	}
	return nil
}

// portList is a repeatable --port flag.
type portList []uint16

func (p *portList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *portList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q out of range: want a number from 1 to 65535", f)
		}
		*p = append(*p, uint16(n))
	}
	return nil
}

// parseFlags parses args (without the program name) into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	var ports portList
	fs := flag.NewFlagSet("rsttrace", flag.ContinueOnError)
	// Errors are one line (main prints them); the usage text is for --help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&cfg.format, "o", "text", "output format: text or json (JSON Lines)")
	fs.Var(&ports, "port", "trace only this local port (repeatable, or comma-separated)")
	fs.DurationVar(&cfg.duration, "duration", 0, "stop by itself after this long (e.g. 30s, 5m); 0 means until interrupted")
	fs.DurationVar(&cfg.overflow, "overflow-interval", tracer.DefaultOverflowInterval, "how often listen-queue overflow is summed up per listener (100ms or more)")
	fs.IntVar(&cfg.ringSize, "ring-size", tracer.DefaultRingSize, "kernel ring buffer size in bytes (a power of two)")
	fs.BoolVar(&cfg.verbose, "v", false, "log diagnostics to stderr")
	fs.IntVar(&cfg.rate, "rate", tracer.DefaultRatePerSecond, "write at most this many full events of a kind (refused, filtered, reset, timeout) per destination per second; the rest are counted in summary records (-1: write every event)")
	fs.BoolVar(&cfg.summary, "summary", false, "count refusals per destination in the kernel and write one summary record per destination per second, not one per refusal")
	fs.BoolVar(&cfg.check, "check", false, "load and attach everything, print the attach plan, and exit (1 if a capability is degraded)")
	var units, containers, pods stringList
	fs.Var(&units, "unit", "only events naming a process of this systemd unit (glob, repeatable): nginx.service, 'session-*.scope'")
	fs.Var(&containers, "container", "only events naming a process of this container (name or id prefix, repeatable)")
	fs.Var(&pods, "pod", "only events naming a process of this pod (namespace/name, name or uid, repeatable)")
	fs.StringVar(&cfg.output, "output", "", "write JSON Lines to this file, rotated by size, instead of stdout (SIGHUP reopens it)")
	fs.Int64Var(&cfg.outputSize, "output-max-size", 100<<20, "rotate --output when it reaches this many bytes")
	fs.IntVar(&cfg.outputKeep, "output-keep", 5, "how many rotated --output files to keep (FILE.1 is the newest)")
	fs.StringVar(&cfg.metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9637; /metrics and /healthz)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if cfg.format != "text" && cfg.format != "json" {
		return cfg, fmt.Errorf("-o %q: want text or json", cfg.format)
	}
	if cfg.duration < 0 {
		return cfg, fmt.Errorf("--duration %v: must not be negative", cfg.duration)
	}
	if cfg.overflow < 100*time.Millisecond {
		return cfg, fmt.Errorf("--overflow-interval %v: must be at least 100ms", cfg.overflow)
	}
	if r := cfg.ringSize; r < os.Getpagesize() || r&(r-1) != 0 {
		return cfg, fmt.Errorf("--ring-size %d: want a power of two of at least %d", r, os.Getpagesize())
	}
	if cfg.output != "" {
		if cfg.outputSize < 4096 {
			return cfg, fmt.Errorf("--output-max-size %d: want at least 4096 bytes", cfg.outputSize)
		}
		if cfg.outputKeep < 0 {
			return cfg, fmt.Errorf("--output-keep %d: must not be negative", cfg.outputKeep)
		}
	}
	cfg.ports = ports
	cfg.filter = identity.Filter{Units: units, Containers: containers, Pods: pods}
	return cfg, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "why" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := runWhy(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rsttrace:", err)
		os.Exit(2)
	}
	level := slog.LevelWarn
	if cfg.verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	// A closed stdout is an ordinary way to stop (rsttrace | head): get
	// EPIPE from write instead of dying by SIGPIPE, and stop cleanly.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A tracer on a host in trouble keeps its footprint small: the Go heap
	// is collected harder rather than grown past this (a soft limit; the
	// GOMEMLIMIT environment variable overrides it).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(24 << 20)
	}
	// For profiling under load (bench/README.md): not a flag, since
	// operators have no use for it.
	if path := os.Getenv("RSTTRACE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if path := os.Getenv("RSTTRACE_MEMPROFILE"); path != "" {
		// The live heap as shutdown begins (the last GC's view).
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	err = run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rsttrace:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// tracingProcs runs Go code on one thread from here on, unless GOMAXPROCS
// says otherwise. Start-up (BTF, maps, verification) uses every CPU;
// tracing is one goroutine reading the ring, and a second P only adds a
// thread the scheduler wakes (and spins) at every handoff to the metrics
// server, the output and the timers: context switches onto the CPUs of
// the server being traced. Next to a busy nginx (bench/busy.sh's mix, 6
// interleaved pairs) the server kept 99% of its requests with one P and 95%
// with two, in the same run.
func tracingProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// run traces until ctx is done, the duration passes or out is closed.
func run(ctx context.Context, cfg config, out *os.File) error {
	var w io.Writer = out
	var file *output.File
	if cfg.output != "" {
		var err error
		if file, err = output.Open(cfg.output, cfg.outputSize, cfg.outputKeep); err != nil {
			return fmt.Errorf("opening --output: %w", err)
		}
		defer file.Close()
		w = file
		cfg.format = "json"
	}
	host, _ := os.Hostname()
	enc, err := events.NewEncoderWith(cfg.format, w, events.Options{Host: host, Node: os.Getenv("NODE_NAME")})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if file == nil {
		go watchClosed(ctx, out, cancel)
	}

	// Metrics: the address is taken before tracing starts, so a busy
	// port is an error at start, not a silent gap.
	var m *metrics.Metrics
	var mln net.Listener
	if cfg.metrics != "" {
		if mln, err = metrics.Listen(cfg.metrics); err != nil {
			return err
		}
		defer mln.Close()
	}

	tcfg := tracer.Config{Ports: cfg.ports, RingSize: cfg.ringSize, OverflowInterval: cfg.overflow, Summary: cfg.summary, Filter: cfg.filter, RatePerSecond: cfg.rate}
	var t *tracer.Tracer
	if mln != nil {
		m = metrics.New(metrics.Options{RingFill: func() float64 {
			if t == nil {
				return 0
			}
			return t.RingFill()
		}})
		tcfg.Observe = m.Observe
	}
	if t, err = tracer.New(tcfg); err != nil {
		return err
	}
	defer t.Close()
	if m != nil {
		go func() {
			if err := metrics.ServeListener(ctx, mln, m.Handler()); err != nil {
				slog.Warn("serving metrics", "error", err)
			}
		}()
	}

	start := &events.Event{
		Time:    time.Now(),
		Type:    events.TypeStart,
		Version: events.SchemaVersion,
		Kernel:  t.Kernel(),
		Plan:    t.Plan(),
		Ports:   cfg.ports,
	}
	if m != nil {
		m.Observe(start)
	}
	if err := writeFlush(enc, start); err != nil {
		return outputErr(err)
	}
	if cfg.check {
		for _, a := range start.Plan {
			// With a fallback nothing is missing, only detail.
			if a.Degraded != "" && a.Fallback == "" {
				return fmt.Errorf("capability %s is degraded on this kernel: %s", a.Capability, a.Degraded)
			}
		}
		return nil
	}
	// --duration counts from the start record: tracing time, not load.
	if cfg.duration > 0 {
		var cancelRun context.CancelFunc
		ctx, cancelRun = context.WithTimeout(ctx, cfg.duration)
		defer cancelRun()
	}
	// Ready for systemd (Type=notify) once the programs are attached and
	// the start record is out; a no-op when not run by systemd.
	_ = sdnotify.Ready()
	if file != nil {
		go reopenOnHangup(ctx, file)
	}
	tracingProcs()
	// Events are flushed when the ring is idle (after Run's gather pause)
	// or the buffer fills; a lone event is visible within that pause.
	runErr := t.Run(ctx, enc)
	_ = sdnotify.Stopping()
	if runErr != nil && isClosedOutput(runErr) {
		return nil // the reader went away: nobody to tell
	}
	lost, lerr := t.Lost()
	sum := t.SummarizedByKind()
	stopRec := &events.Event{Time: time.Now(), Type: events.TypeStop, Lost: &lost, Events: t.Written(),
		Summarized: sum.Refused, SummarizedFiltered: sum.Filtered, SummarizedResets: sum.Reset, SummarizedTimeouts: sum.Timeout}
	if m != nil {
		m.Observe(stopRec)
	}
	if err := writeFlush(enc, stopRec); err != nil && !isClosedOutput(err) {
		return outputErr(err)
	}
	return errors.Join(runErr, lerr)
}

// reopenOnHangup reopens the output file on SIGHUP (after logrotate moved
// it): the next line goes to a new file at the configured path.
func reopenOnHangup(ctx context.Context, file *output.File) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = sdnotify.Reloading()
			// The file serializes Reopen with the encoder's writes.
			if err := file.Reopen(); err != nil {
				slog.Error("reopening --output", "error", err)
			}
			_ = sdnotify.Ready()
		}
	}
}

func writeFlush(enc events.Encoder, e *events.Event) error {
	if err := enc.Encode(e); err != nil {
		return err
	}
	return enc.Flush()
}

func outputErr(err error) error {
	if isClosedOutput(err) {
		return nil
	}
	return fmt.Errorf("writing output: %w", err)
}

func isClosedOutput(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed)
}

// watchClosed cancels when out is a pipe or socket whose reader has gone,
// so an idle `rsttrace | head -1` ends without waiting for the next event.
func watchClosed(ctx context.Context, out *os.File, cancel context.CancelFunc) {
	var st unix.Stat_t
	if unix.Fstat(int(out.Fd()), &st) != nil {
		return
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFIFO && m != unix.S_IFSOCK {
		return
	}
	fds := []unix.PollFd{{Fd: int32(out.Fd())}} // POLLERR/POLLHUP are always reported
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 200)
		if err != nil && err != unix.EINTR {
			return
		}
		if n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			cancel()
			return
		}
	}
}
