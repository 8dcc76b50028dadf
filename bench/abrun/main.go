// Command abrun measures rsttrace's overhead with interleaved A/B rounds:
//
//	A: loadgen alone
//	B: loadgen while the tracer runs
//
// Rounds alternate A B A B … so that slow drift of the machine (thermal,
// noisy neighbours, background work) hits both arms alike; the per-pair
// ratio B/A and its median are the headline numbers, not the raw rates.
//
// For B rounds the tracer is started first, and the load only begins once
// the tracer has printed its first stdout line ({"type":"start",…}), i.e. once
// its probes are attached. After the load the tracer gets SIGINT, and its
// output is checked: refusals generated vs "refused" events recorded vs the
// "lost" count of the final {"type":"stop",…} line.
//
// Optionally (default on) kernel.bpf_stats_enabled is set to 1 around each B
// load so that per-program run_time_ns/run_cnt can be read with bpftool. The
// previous value is restored afterwards, also on SIGINT/SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

const bpfStatsSysctl = "/proc/sys/kernel/bpf_stats_enabled"

type options struct {
	loadgen      string
	loadgenArgs  []string
	tracerCmd    string
	rounds       int
	duration     time.Duration
	threads      int
	family       int
	outDir       string
	bpfStats     bool
	settle       time.Duration
	startTimeout time.Duration
	stopTimeout  time.Duration
	netnsField   string
}

// loadResult mirrors the JSON printed by loadgen -json.
type loadResult struct {
	Mode           string  `json:"mode"`
	Refusals       uint64  `json:"refusals"`
	RefusalsPerSec float64 `json:"refusals_per_sec"`
	Connected      uint64  `json:"connected"`
	SelfConnects   uint64  `json:"self_connects"`
	Errors         uint64  `json:"errors"`
	DurationS      float64 `json:"duration_s"`
	NetnsInode     uint64  `json:"netns_inode"`
}

// progStat is one BPF program's counters over the load interval.
type progStat struct {
	ID        uint32 `json:"id"`
	Type      string `json:"type"`
	Name      string `json:"name"`
	RunTimeNs uint64 `json:"run_time_ns"`
	RunCnt    uint64 `json:"run_cnt"`
}

type tracerResult struct {
	Output       string  `json:"output"`
	Refused      uint64  `json:"refused_events"`
	RefusedNetns *uint64 `json:"refused_events_in_loadgen_netns,omitempty"`
	Lost         *uint64 `json:"lost,omitempty"` // nil: no stop line seen
	BadLines     uint64  `json:"unparsable_lines"`
	StartupS     float64 `json:"startup_s"`
	// From wait4's rusage of the tracer (sh -c execs it; a pipeline's
	// waited-for children are included).
	CPUUserS  float64 `json:"cpu_user_s"`
	CPUSysS   float64 `json:"cpu_sys_s"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	// Refusals reported in aggregate ({"type":"summary"} records).
	Summarized uint64     `json:"summarized_refusals"`
	Progs      []progStat `json:"bpf_progs,omitempty"`
}

type round struct {
	N      int           `json:"n"`
	Arm    string        `json:"arm"` // "A" or "B"
	Load   loadResult    `json:"load"`
	Tracer *tracerResult `json:"tracer,omitempty"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-table" {
		if err := printTable(os.Stdout, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "abrun:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "-busy" {
		if err := runBusy(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "abrun:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "abrun:", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "abrun:", err)
		os.Exit(1)
	}
}

// parseOptions takes defaults from the environment so the runner can be
// driven the same way from run.sh, make, or by hand; flags win.
func parseOptions() (*options, error) {
	var o options
	var extra string
	self, _ := os.Executable()
	defLoadgen := filepath.Join(filepath.Dir(self), "loadgen")

	flag.StringVar(&o.loadgen, "loadgen", env("LOADGEN", defLoadgen), "loadgen binary (env LOADGEN)")
	flag.StringVar(&extra, "loadgen-args", env("LOADGEN_ARGS", ""), "extra loadgen flags, space separated, e.g. \"-scan -passes 20\" (env LOADGEN_ARGS)")
	flag.StringVar(&o.tracerCmd, "tracer-cmd", env("TRACER_CMD", "./rsttrace -o json"), "tracer command run by sh -c; its stdout is sent to a per-round file (env TRACER_CMD)")
	flag.IntVar(&o.rounds, "rounds", envInt("ROUNDS", 5), "number of A/B pairs (env ROUNDS)")
	flag.DurationVar(&o.duration, "duration", envDuration("DURATION", 5*time.Second), "load duration per round (env DURATION)")
	flag.IntVar(&o.threads, "threads", envInt("THREADS", 2), "loadgen worker threads (env THREADS)")
	flag.IntVar(&o.family, "family", envInt("FAMILY", 4), "address family 4 or 6 (env FAMILY)")
	flag.StringVar(&o.outDir, "out", env("OUT_DIR", ""), "directory for tracer outputs and summary.json (env OUT_DIR; default a new dir under /tmp)")
	flag.BoolVar(&o.bpfStats, "bpf-stats", env("BPF_STATS", "1") != "0", "enable kernel.bpf_stats_enabled during B loads and report per-program cost (env BPF_STATS=0 to disable; it adds a little overhead to B)")
	flag.DurationVar(&o.settle, "settle", envDuration("SETTLE", time.Second), "pause between rounds, so netns/tracer teardown does not overlap the next load (env SETTLE)")
	flag.DurationVar(&o.startTimeout, "start-timeout", 60*time.Second, "max wait for the tracer's start line")
	flag.DurationVar(&o.stopTimeout, "stop-timeout", 30*time.Second, "max wait for the tracer to exit after SIGINT before SIGKILL")
	flag.StringVar(&o.netnsField, "netns-field", env("NETNS_FIELD", "netns"), "if refused events carry this numeric field, also count those matching loadgen's netns inode (env NETNS_FIELD)")
	flag.Parse()

	o.loadgenArgs = strings.Fields(extra)
	switch {
	case o.rounds < 1:
		return nil, errors.New("-rounds must be >= 1")
	case o.family != 4 && o.family != 6:
		return nil, errors.New("-family must be 4 or 6")
	}
	if _, err := os.Stat(o.loadgen); err != nil {
		return nil, fmt.Errorf("loadgen binary: %w (build it with: go build -o bench/bin/loadgen ./bench/loadgen)", err)
	}
	if o.outDir == "" {
		d, err := os.MkdirTemp("", "rsttrace-bench-")
		if err != nil {
			return nil, err
		}
		o.outDir = d
	} else if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return nil, err
	}
	return &o, nil
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(env(key, "")); err == nil {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(env(key, "")); err == nil {
		return v
	}
	return def
}

// cleanup holds what must be undone however the run ends: the sysctl, and
// a tracer that is still running.
type cleanup struct {
	mu          sync.Mutex
	sysctlOld   []byte // nil: untouched
	tracerPgid  int
	interrupted bool
}

func (c *cleanup) restoreSysctl() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sysctlOld != nil {
		if err := os.WriteFile(bpfStatsSysctl, c.sysctlOld, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "abrun: restoring bpf_stats_enabled:", err)
		}
		c.sysctlOld = nil
	}
}

func (c *cleanup) setTracer(pgid int) {
	c.mu.Lock()
	c.tracerPgid = pgid
	c.mu.Unlock()
}

func run(o *options) error {
	var cl cleanup
	// The tracer runs in its own process group (so a terminal ^C does not
	// reach it behind our back); on our own SIGINT/SIGTERM we stop it and
	// restore the sysctl before exiting.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		cl.mu.Lock()
		cl.interrupted = true
		if cl.tracerPgid != 0 {
			syscall.Kill(-cl.tracerPgid, syscall.SIGINT)
		}
		cl.mu.Unlock()
		cl.restoreSysctl()
		fmt.Fprintf(os.Stderr, "abrun: %v, stopping\n", s)
		os.Exit(130)
	}()
	defer cl.restoreSysctl()

	if o.bpfStats {
		if _, err := exec.LookPath("bpftool"); err != nil {
			fmt.Fprintln(os.Stderr, "abrun: bpftool not found, per-program stats disabled")
			o.bpfStats = false
		}
	}

	fmt.Printf("out dir: %s\ntracer: %s\nloadgen: %s %s\n", o.outDir, o.tracerCmd, o.loadgen, strings.Join(loadgenArgv(o), " "))
	fmt.Printf("load average before: %s\n", loadavg())

	var rounds []round
	for i := 1; i <= o.rounds; i++ {
		for _, arm := range []string{"A", "B"} {
			if len(rounds) > 0 {
				time.Sleep(o.settle)
			}
			r := round{N: i, Arm: arm}
			var err error
			if arm == "A" {
				r.Load, err = runLoadgen(o)
			} else {
				r.Load, r.Tracer, err = runTraced(o, &cl, i)
			}
			if err != nil {
				return fmt.Errorf("round %d%s: %w", i, arm, err)
			}
			fmt.Fprintf(os.Stderr, "round %d%s: %.0f refusals/s\n", i, arm, r.Load.RefusalsPerSec)
			rounds = append(rounds, r)
		}
	}

	fmt.Printf("load average after: %s\n\n", loadavg())
	report(os.Stdout, rounds)

	summary, err := json.MarshalIndent(rounds, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(o.outDir, "summary.json")
	if err := os.WriteFile(path, append(summary, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nper-round details: %s\n", path)
	return nil
}

func loadgenArgv(o *options) []string {
	args := []string{
		"-json",
		"-threads", strconv.Itoa(o.threads),
		"-duration", o.duration.String(),
		"-family", strconv.Itoa(o.family),
	}
	return append(args, o.loadgenArgs...)
}

func runLoadgen(o *options) (loadResult, error) {
	var res loadResult
	cmd := exec.Command(o.loadgen, loadgenArgv(o)...)
	// If abrun is interrupted, the load must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("loadgen: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("loadgen output %q: %w", out, err)
	}
	return res, nil
}

// runTraced runs one B round.
func runTraced(o *options, cl *cleanup, n int) (loadResult, *tracerResult, error) {
	var load loadResult
	tr := &tracerResult{Output: filepath.Join(o.outDir, fmt.Sprintf("round-%02d-B.jsonl", n))}
	stdout, err := os.Create(tr.Output)
	if err != nil {
		return load, nil, err
	}
	defer stdout.Close()
	stderrPath := strings.TrimSuffix(tr.Output, ".jsonl") + ".stderr"
	stderr, err := os.Create(stderrPath)
	if err != nil {
		return load, nil, err
	}
	defer stderr.Close()

	// Programs that exist before the tracer starts are not the tracer's;
	// remembering their ids lets us attribute bpf stats correctly even if
	// other BPF users are active on the machine.
	var preexisting map[uint32]bool
	if o.bpfStats {
		progs, err := bpfProgs()
		if err != nil {
			return load, nil, err
		}
		preexisting = make(map[uint32]bool, len(progs))
		for _, p := range progs {
			preexisting[p.ID] = true
		}
	}

	// The tracer writes straight into the file, exactly as with a shell
	// redirect, rather than through a pipe we would have to drain: a reader
	// in this process would compete with loadgen and the tracer for the
	// same two CPUs during the measurement.
	cmd := exec.Command("sh", "-c", o.tracerCmd)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return load, nil, fmt.Errorf("starting tracer: %w", err)
	}
	cl.setTracer(cmd.Process.Pid)
	// exited is closed, never sent on, so that both the start wait and
	// stopTracer can observe the exit; waitErr is valid once it is closed.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()

	stopTracer := func() error {
		defer cl.setTracer(0)
		pgid := cmd.Process.Pid
		// Signal the whole group: TRACER_CMD may be a pipeline, or run
		// under a shell that does not exec its last command.
		syscall.Kill(-pgid, syscall.SIGINT)
		deadline := time.After(o.stopTimeout)
		select {
		case <-exited:
		case <-deadline:
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
			return fmt.Errorf("tracer did not exit within %v of SIGINT, killed", o.stopTimeout)
		}
		// The shell may die of SIGINT while the tracer itself is still
		// detaching and writing its stop line, so wait until every process
		// in the group is gone before the output file is read.
		for syscall.Kill(-pgid, 0) == nil {
			select {
			case <-deadline:
				syscall.Kill(-pgid, syscall.SIGKILL)
				return fmt.Errorf("tracer process group still alive %v after SIGINT, killed", o.stopTimeout)
			case <-time.After(10 * time.Millisecond):
			}
		}
		return waitErr
	}

	if err := waitForStart(tr.Output, exited, &waitErr, o.startTimeout); err != nil {
		stopTracer()
		return load, nil, fmt.Errorf("%w\ntracer stderr (%s):\n%s", err, stderrPath, tail(stderrPath, 20))
	}
	tr.StartupS = time.Since(started).Seconds()

	var before map[uint32]progStat
	if o.bpfStats {
		if err := cl.enableBPFStats(); err != nil {
			fmt.Fprintln(os.Stderr, "abrun: cannot enable bpf stats, disabling:", err)
			o.bpfStats = false
		} else if before, err = tracerProgs(preexisting); err != nil {
			stopTracer()
			return load, nil, err
		}
	}

	load, loadErr := runLoadgen(o)

	if o.bpfStats {
		after, err := tracerProgs(preexisting)
		cl.restoreSysctl()
		if err != nil {
			stopTracer()
			return load, nil, err
		}
		tr.Progs = diffProgs(before, after)
	}

	stopErr := stopTracer()
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			tr.CPUUserS = time.Duration(ru.Utime.Nano()).Seconds()
			tr.CPUSysS = time.Duration(ru.Stime.Nano()).Seconds()
			tr.MaxRSSKiB = ru.Maxrss
		}
	}
	if loadErr != nil {
		return load, nil, loadErr
	}
	if stopErr != nil {
		var exitErr *exec.ExitError
		if !errors.As(stopErr, &exitErr) {
			return load, nil, stopErr
		}
		// Dying of our SIGINT is a normal stop (dash, for one, does so while
		// its child handles the signal); any other failure is worth
		// surfacing, but the counts are still usable.
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			fmt.Fprintf(os.Stderr, "abrun: round %dB: tracer exited: %v\n", n, stopErr)
		}
	}

	if err := countEvents(tr, load.NetnsInode, o.netnsField); err != nil {
		return load, nil, err
	}
	if tr.Lost == nil {
		fmt.Fprintf(os.Stderr, "abrun: round %dB: no {\"type\":\"stop\"} line in %s; tracer stderr:\n%s\n", n, tr.Output, tail(stderrPath, 10))
	}
	return load, tr, nil
}

// waitForStart polls the tracer's output file until its first complete line
// is the start record. Polling a file costs a few stat calls before the
// load begins and nothing during it.
func waitForStart(path string, exited <-chan struct{}, waitErr *error, timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return fmt.Errorf("tracer exited before printing its start line (%v)", *waitErr)
		case <-deadline:
			return fmt.Errorf("no start line from tracer within %v", timeout)
		case <-tick.C:
		}
		line, ok, err := firstLine(path)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		var rec struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(line, &rec); err != nil || rec.Type != "start" {
			return fmt.Errorf(`tracer's first line is not {"type":"start",...}: %q`, line)
		}
		return nil
	}
}

// firstLine returns the first newline-terminated line of path, if there is
// one yet.
func firstLine(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadBytes('\n')
	if err == io.EOF {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return bytes.TrimSpace(line), true, nil
}

// countEvents scans the tracer's output for refused events and the lost
// count of the last stop line.
func countEvents(tr *tracerResult, netns uint64, netnsField string) error {
	f, err := os.Open(tr.Output)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var inNetns uint64
	sawNetnsField := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(line, &rec); err != nil {
			tr.BadLines++
			continue
		}
		var typ string
		json.Unmarshal(rec["type"], &typ)
		switch typ {
		case "refused":
			tr.Refused++
			if raw, ok := rec[netnsField]; ok && netnsField != "" {
				sawNetnsField = true
				var v uint64
				if json.Unmarshal(raw, &v) == nil && v == netns {
					inNetns++
				}
			}
		case "summary":
			var n uint64
			if json.Unmarshal(rec["refusals"], &n) == nil {
				tr.Summarized += n
			}
		case "stop":
			var lost uint64
			if err := json.Unmarshal(rec["lost"], &lost); err == nil {
				tr.Lost = &lost
			}
		}
	}
	if sawNetnsField {
		tr.RefusedNetns = &inNetns
	}
	return sc.Err()
}

func (c *cleanup) enableBPFStats() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.interrupted {
		return errors.New("interrupted")
	}
	old, err := os.ReadFile(bpfStatsSysctl)
	if err != nil {
		return err
	}
	if err := os.WriteFile(bpfStatsSysctl, []byte("1\n"), 0o644); err != nil {
		return err
	}
	c.sysctlOld = old
	return nil
}

func bpfProgs() ([]progStat, error) {
	out, err := exec.Command("bpftool", "prog", "show", "-j").Output()
	if err != nil {
		return nil, fmt.Errorf("bpftool prog show: %w", err)
	}
	var progs []progStat
	if err := json.Unmarshal(out, &progs); err != nil {
		return nil, fmt.Errorf("parsing bpftool output: %w", err)
	}
	return progs, nil
}

// tracerProgs returns the programs that appeared since preexisting was taken.
// bpftool omits run_time_ns/run_cnt while they are zero, which decodes as 0.
func tracerProgs(preexisting map[uint32]bool) (map[uint32]progStat, error) {
	progs, err := bpfProgs()
	if err != nil {
		return nil, err
	}
	m := make(map[uint32]progStat)
	for _, p := range progs {
		if !preexisting[p.ID] {
			m[p.ID] = p
		}
	}
	return m, nil
}

// diffProgs reports each program's cost during the load only, excluding
// anything it did while the tracer was starting up.
func diffProgs(before, after map[uint32]progStat) []progStat {
	var out []progStat
	for id, a := range after {
		b := before[id]
		a.RunCnt -= b.RunCnt
		a.RunTimeNs -= b.RunTimeNs
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y progStat) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func report(w io.Writer, rounds []round) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tarm\trefusals/s\trefusals\tevents\tsummarized\tlost\treported+lost\tB/A\ttracer CPU s\tCPU us/refusal\tmax RSS MiB\tstart ms\t")
	var ratios, starts []float64
	var a *round
	for i := range rounds {
		r := &rounds[i]
		if r.Arm == "A" {
			a = r
			fmt.Fprintf(tw, "%d\tA\t%.0f\t%d\t\t\t\t\t\t\t\t\t\t\n", r.N, r.Load.RefusalsPerSec, r.Load.Refusals)
			continue
		}
		ratio := r.Load.RefusalsPerSec / a.Load.RefusalsPerSec
		ratios = append(ratios, ratio)
		t := r.Tracer
		starts = append(starts, t.StartupS*1000)
		got := t.Refused
		if t.RefusedNetns != nil {
			got = *t.RefusedNetns // the load's refusals only
		}
		lost, pct := "?", "?"
		if t.Lost != nil {
			lost = strconv.FormatUint(*t.Lost, 10)
			if r.Load.Refusals > 0 {
				pct = fmt.Sprintf("%.2f%%", 100*float64(got+t.Summarized+*t.Lost)/float64(r.Load.Refusals))
			}
		}
		cpu := t.CPUUserS + t.CPUSysS
		per := "-"
		if r.Load.Refusals > 0 {
			per = fmt.Sprintf("%.2f", cpu*1e6/float64(r.Load.Refusals))
		}
		fmt.Fprintf(tw, "%d\tB\t%.0f\t%d\t%d\t%d\t%s\t%s\t%.3f\t%.2f\t%s\t%.1f\t%.0f\t\n", r.N, r.Load.RefusalsPerSec, r.Load.Refusals,
			got, t.Summarized, lost, pct, ratio, cpu, per, float64(t.MaxRSSKiB)/1024, t.StartupS*1000)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmedian B/A over %d pairs: %.3f  (overhead %.1f%%); median start-up %.0f ms\n", len(ratios), median(ratios), 100*(1-median(ratios)), median(starts))
	fmt.Fprintln(w, "(events: refused events in the load's netns; reported+lost = (events + summarized + lost) / refusals;")
	fmt.Fprintln(w, " start ms: tracer exec to its start line on stdout, polled every 2 ms)")

	// Per-program cost, summed over B rounds.
	type agg struct{ cnt, ns uint64 }
	byName := map[string]*agg{}
	var names []string
	for _, r := range rounds {
		if r.Tracer == nil {
			continue
		}
		for _, p := range r.Tracer.Progs {
			key := p.Type + "/" + p.Name
			if byName[key] == nil {
				byName[key] = &agg{}
				names = append(names, key)
			}
			byName[key].cnt += p.RunCnt
			byName[key].ns += p.RunTimeNs
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(w, "\nbpf stats: no tracer BPF programs seen (stats disabled, or the tracer loads none)")
		return
	}
	slices.Sort(names)
	fmt.Fprintln(w, "\nbpf stats during B loads (all B rounds):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "program\trun_cnt\trun_time_ns\tns/run\t")
	for _, n := range names {
		g := byName[n]
		per := "-"
		if g.cnt > 0 {
			per = fmt.Sprintf("%.1f", float64(g.ns)/float64(g.cnt))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", n, g.cnt, g.ns, per)
	}
	tw.Flush()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
