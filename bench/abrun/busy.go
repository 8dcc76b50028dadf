package main

// abrun -busy: the busy-host benchmark's rounds (bench/busy.sh builds the
// namespaces, nginx and the firewall rule, and removes them). Each arm runs
// the same traffic: wrk with keep-alive, then wrk with "Connection: close",
// one request in RESET_EVERY answered by a RST, while a slow port scan and
// UDP to a dropped port run in the background. A has no tracer, B runs it;
// the arms alternate A B A B … as in the refusal benchmark.

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type busyOptions struct {
	cmdline                    string
	nsServer, nsClient         string
	serverIP, clientIP         string
	httpPort, udpPort          int
	wrkScript, resetLog        string
	busyload, tableOut, outDir string
	tracerCmd, floorCmd        string
	rounds, conns, threads     int
	scanRate, udpRate          int
	duration, settle, idle     time.Duration
	startTimeout, stopTimeout  time.Duration
}

// wrkResult is what wrk printed for one phase.
type wrkResult struct {
	Requests  uint64            `json:"requests"`
	RPS       float64           `json:"requests_per_sec"`
	Errors    map[string]uint64 `json:"socket_errors,omitempty"`
	Non2xx    uint64            `json:"non_2xx"`
	DurationS float64           `json:"duration_s"`
}

// sendResult mirrors busyload's JSON.
type sendResult struct {
	Mode      string         `json:"mode"`
	Attempts  uint64         `json:"attempts"`
	Refused   uint64         `json:"refused"`
	Connected uint64         `json:"connected"`
	Sent      uint64         `json:"sent"`
	Errors    uint64         `json:"errors"`
	ErrorKind map[string]int `json:"error_kinds,omitempty"`
	DurationS float64        `json:"duration_s"`
}

// tcpCounters are a namespace's /proc/net/snmp Tcp counters.
type tcpCounters struct {
	ActiveOpens  uint64 `json:"active_opens"`
	PassiveOpens uint64 `json:"passive_opens"`
	AttemptFails uint64 `json:"attempt_fails"`
	EstabResets  uint64 `json:"estab_resets"`
	OutRsts      uint64 `json:"out_rsts"`
}

func (c tcpCounters) minus(o tcpCounters) tcpCounters {
	return tcpCounters{c.ActiveOpens - o.ActiveOpens, c.PassiveOpens - o.PassiveOpens,
		c.AttemptFails - o.AttemptFails, c.EstabResets - o.EstabResets, c.OutRsts - o.OutRsts}
}

// snapshot is everything counted outside the tracer, read before and after
// an arm's load.
type snapshot struct {
	Server, Client tcpCounters
	UDPDropped     uint64 // the nft rule's counter
	Resets444      uint64 // lines of nginx's /reset log
}

// busyTracer is what one B arm's tracer reported about the benchmark's
// namespaces, and what it cost.
type busyTracer struct {
	Output   string  `json:"output"`
	StartupS float64 `json:"startup_s"`
	// CPU from /proc/PID/stat (utime+stime) between the start of the load
	// and its end, and from wait4 for the whole life of the tracer.
	CPULoadS  float64 `json:"cpu_load_s"`
	CPUTotalS float64 `json:"cpu_total_s"`
	MaxRSSKiB int64   `json:"max_rss_kib"`

	ServerResets       uint64  `json:"reset_events_from_server"`
	ClientResets       uint64  `json:"reset_events_from_client"`
	OtherResets        uint64  `json:"reset_events_other"`
	Refused            uint64  `json:"refused_events_to_server"`
	OtherRefused       uint64  `json:"refused_events_other"`
	SummarizedRefusals uint64  `json:"summarized_refusals"`
	SummarizedResets   uint64  `json:"summarized_resets"`
	Filtered           uint64  `json:"filtered_events"`
	Timeouts           uint64  `json:"timeout_events"`
	Remote             uint64  `json:"remote_cause_events"`
	Lost               *uint64 `json:"lost,omitempty"`
	BadLines           uint64  `json:"unparsable_lines"`
	// Records from namespaces other than the benchmark's (other work on
	// the host): not counted above.
	Foreign uint64            `json:"records_other_netns"`
	Types   map[string]uint64 `json:"types"`
}

type busyArm struct {
	N         int         `json:"n"`
	Arm       string      `json:"arm"`
	KeepAlive wrkResult   `json:"keepalive"`
	Close     wrkResult   `json:"close"`
	Scan      sendResult  `json:"scan"`
	UDP       sendResult  `json:"udp"`
	Server    tcpCounters `json:"server"`
	Client    tcpCounters `json:"client"`
	// ServerResets are the RSTs the server sent on connections: its
	// OutRsts less one per refused scan connect.
	ServerResets uint64      `json:"server_resets"`
	Resets444    uint64      `json:"nginx_444"`
	UDPDropped   uint64      `json:"udp_dropped"`
	Tracer       *busyTracer `json:"tracer,omitempty"`
}

func runBusy(args []string) error {
	var o busyOptions
	fs := flag.NewFlagSet("abrun -busy", flag.ContinueOnError)
	fs.StringVar(&o.cmdline, "busy-cmd", "", "the command that made the table, printed above it")
	fs.StringVar(&o.nsServer, "netns-server", "", "ip netns name of the server's namespace")
	fs.StringVar(&o.nsClient, "netns-client", "", "ip netns name of the clients' namespace")
	fs.StringVar(&o.serverIP, "server-ip", "10.203.0.1", "server address (inside the namespaces)")
	fs.StringVar(&o.clientIP, "client-ip", "10.203.0.2", "client address (inside the namespaces)")
	fs.IntVar(&o.httpPort, "http-port", 80, "nginx's port")
	fs.IntVar(&o.udpPort, "udp-port", 9999, "UDP port the firewall drops")
	fs.StringVar(&o.wrkScript, "wrk-script", "", "wrk Lua script choosing / or /reset")
	fs.StringVar(&o.resetLog, "reset-log", "", "nginx's access log of /reset")
	fs.StringVar(&o.busyload, "busyload", "bench/bin/busyload", "busyload binary")
	fs.StringVar(&o.tableOut, "table-out", "", "also write the table here")
	fs.StringVar(&o.outDir, "out", env("OUT_DIR", ""), "directory for tracer outputs and busy.json (env OUT_DIR)")
	fs.StringVar(&o.tracerCmd, "tracer-cmd", env("TRACER_CMD", "./rsttrace -o json"), "tracer command, split on spaces and run directly (its pid is the one measured) (env TRACER_CMD)")
	fs.StringVar(&o.floorCmd, "floor-cmd", env("FLOOR_CMD", ""), "the floor: a third arm F in every round with this command instead of the tracer (bench/bin/mintracer -hooks=rsttrace -syscalls: a counting program on each hook), its F/A in the table; empty: no F arm (env FLOOR_CMD)")
	fs.IntVar(&o.rounds, "rounds", envInt("ROUNDS", 5), "A/B pairs (env ROUNDS)")
	fs.DurationVar(&o.duration, "duration", envDuration("DURATION", 5*time.Second), "each wrk phase (env DURATION)")
	fs.IntVar(&o.conns, "conns", envInt("CONNS", 64), "wrk connections (env CONNS)")
	fs.IntVar(&o.threads, "threads", envInt("THREADS", 2), "wrk threads (env THREADS)")
	fs.IntVar(&o.scanRate, "scan-rate", envInt("SCAN_RATE", 50), "scan connects per second (env SCAN_RATE)")
	fs.IntVar(&o.udpRate, "udp-rate", envInt("UDP_RATE", 1000), "UDP datagrams per second (env UDP_RATE)")
	fs.DurationVar(&o.idle, "idle", envDuration("IDLE", 5*time.Second), "how long the tracer's CPU is measured without load, once (env IDLE)")
	fs.DurationVar(&o.settle, "settle", envDuration("SETTLE", time.Second), "pause between arms (env SETTLE)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 60*time.Second, "max wait for the tracer's start line")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 30*time.Second, "max wait for the tracer to exit after SIGINT")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.nsServer == "" || o.nsClient == "" || o.wrkScript == "" || o.resetLog == "" {
		return errors.New("-busy needs -netns-server, -netns-client, -wrk-script and -reset-log (run bench/busy.sh)")
	}
	if o.rounds < 1 || o.duration < time.Second {
		return errors.New("-busy: rounds >= 1 and duration >= 1s")
	}
	if o.outDir == "" {
		d, err := os.MkdirTemp("", "rsttrace-busy-")
		if err != nil {
			return err
		}
		o.outDir = d
	} else if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	var ns [2]uint64
	for i, name := range []string{o.nsServer, o.nsClient} {
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+name, &st); err != nil {
			return fmt.Errorf("finding namespace %s: %w", name, err)
		}
		ns[i] = st.Ino
	}

	// A tracer still running when we are interrupted is stopped with us.
	var mu sync.Mutex
	tracerPgid := 0
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		mu.Lock()
		if tracerPgid != 0 {
			syscall.Kill(-tracerPgid, syscall.SIGINT)
		}
		mu.Unlock()
		fmt.Fprintf(os.Stderr, "abrun: %v, stopping\n", s)
		os.Exit(130)
	}()
	setTracer := func(pgid int) { mu.Lock(); tracerPgid = pgid; mu.Unlock() }

	fmt.Fprintf(os.Stderr, "busy: out dir %s, tracer %q, %d rounds of 2×%v, load average %s\n", o.outDir, o.tracerCmd, o.rounds, o.duration, loadavg())
	// The first load after nginx starts is slower (page cache, worker
	// start-up, the client's port range): an unmeasured warm-up keeps it
	// out of round 1A.
	for _, closeEach := range []bool{false, true} {
		if _, err := runWrk(&o, closeEach, time.Second); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	idle, err := busyIdle(&o, setTracer)
	if err != nil {
		return fmt.Errorf("idle tracer: %w", err)
	}
	fmt.Fprintf(os.Stderr, "idle tracer: %.2f s CPU in %v\n", idle, o.idle)
	var arms []busyArm
	for i := 1; i <= o.rounds; i++ {
		// A B (F), then (F) B A: a drift of the machine's speed across
		// a round pair weighs on every arm alike.
		order := []string{"A", "B"}
		if o.floorCmd != "" {
			order = append(order, "F")
		}
		if i%2 == 0 {
			slices.Reverse(order)
		}
		for _, arm := range order {
			if len(arms) > 0 {
				time.Sleep(o.settle)
			}
			a, err := busyRound(&o, i, arm, ns, setTracer)
			if err != nil {
				return fmt.Errorf("round %d%s: %w", i, arm, err)
			}
			fmt.Fprintf(os.Stderr, "round %d%s: keep-alive %.0f req/s, close %.0f req/s, %d resets, %d refused, %d connections\n",
				i, arm, a.KeepAlive.RPS, a.Close.RPS, a.ServerResets, a.Scan.Refused, a.Client.ActiveOpens)
			arms = append(arms, a)
		}
	}
	data, err := json.MarshalIndent(arms, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.outDir, "busy.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	var buf bytes.Buffer
	busyTable(&buf, &o, arms, idle)
	fmt.Fprintf(&buf, "\nload average after: %s; per-round details: %s\n", loadavg(), filepath.Join(o.outDir, "busy.json"))
	os.Stdout.Write(buf.Bytes())
	if o.tableOut != "" {
		return os.WriteFile(o.tableOut, buf.Bytes(), 0o644)
	}
	return nil
}

// busyRound runs one arm: the tracer (B only), then the load, with the
// counters read around it.
func busyRound(o *busyOptions, n int, arm string, ns [2]uint64, setTracer func(int)) (busyArm, error) {
	a := busyArm{N: n, Arm: arm}
	var tr *busyTracer
	var cmd *exec.Cmd
	exited := make(chan struct{})
	var waitErr error
	if arm == "B" || arm == "F" {
		tr = &busyTracer{Output: filepath.Join(o.outDir, fmt.Sprintf("round-%02d-%s.jsonl", n, arm)), Types: map[string]uint64{}}
		stdout, err := os.Create(tr.Output)
		if err != nil {
			return a, err
		}
		defer stdout.Close()
		stderrPath := strings.TrimSuffix(tr.Output, ".jsonl") + ".stderr"
		stderr, err := os.Create(stderrPath)
		if err != nil {
			return a, err
		}
		defer stderr.Close()
		argv := strings.Fields(o.tracerCmd)
		if arm == "F" {
			argv = strings.Fields(o.floorCmd)
		}
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		started := time.Now()
		if err := cmd.Start(); err != nil {
			return a, fmt.Errorf("starting tracer: %w", err)
		}
		setTracer(cmd.Process.Pid)
		go func() { waitErr = cmd.Wait(); close(exited) }()
		if err := waitForStart(tr.Output, exited, &waitErr, o.startTimeout); err != nil {
			stopBusyTracer(cmd, exited, o.stopTimeout)
			setTracer(0)
			return a, fmt.Errorf("%w\ntracer stderr:\n%s", err, tail(stderrPath, 20))
		}
		tr.StartupS = time.Since(started).Seconds()
	}
	// From here on a B arm's tracer must be stopped whatever happens.
	stop := func() error {
		if cmd == nil {
			return nil
		}
		defer setTracer(0)
		c := cmd
		cmd = nil
		return stopBusyTracer(c, exited, o.stopTimeout)
	}
	defer stop()

	before, err := readSnapshot(o)
	if err != nil {
		return a, err
	}
	var cpu0 float64
	if cmd != nil {
		if cpu0, err = procCPU(cmd.Process.Pid); err != nil {
			return a, err
		}
	}

	// The scan and the UDP run across both wrk phases.
	background := 2*o.duration + time.Second
	scan := busyCmd(o, o.busyload, "-scan", o.serverIP, "-rate", strconv.Itoa(o.scanRate), "-duration", background.String())
	udp := busyCmd(o, o.busyload, "-udp", fmt.Sprintf("%s:%d", o.serverIP, o.udpPort), "-rate", strconv.Itoa(o.udpRate), "-duration", background.String())
	var scanOut, udpOut, scanErr, udpErr bytes.Buffer
	scan.Stdout, scan.Stderr = &scanOut, &scanErr
	udp.Stdout, udp.Stderr = &udpOut, &udpErr
	if err := scan.Start(); err != nil {
		return a, fmt.Errorf("starting scan: %w", err)
	}
	if err := udp.Start(); err != nil {
		scan.Process.Kill()
		scan.Wait()
		return a, fmt.Errorf("starting udp sender: %w", err)
	}
	ka, kaErr := runWrk(o, false, o.duration)
	cl, clErr := runWrk(o, true, o.duration)
	scanWait, udpWait := scan.Wait(), udp.Wait()
	switch {
	case kaErr != nil:
		return a, kaErr
	case clErr != nil:
		return a, clErr
	case scanWait != nil:
		return a, fmt.Errorf("scan: %w: %s", scanWait, scanErr.String())
	case udpWait != nil:
		return a, fmt.Errorf("udp sender: %w: %s", udpWait, udpErr.String())
	}
	a.KeepAlive, a.Close = ka, cl
	if err := json.Unmarshal(scanOut.Bytes(), &a.Scan); err != nil {
		return a, fmt.Errorf("scan output %q: %w", scanOut.String(), err)
	}
	if err := json.Unmarshal(udpOut.Bytes(), &a.UDP); err != nil {
		return a, fmt.Errorf("udp output %q: %w", udpOut.String(), err)
	}
	var cpu1 float64
	if cmd != nil {
		if cpu1, err = procCPU(cmd.Process.Pid); err != nil {
			return a, err
		}
	}
	after, err := readSnapshot(o)
	if err != nil {
		return a, err
	}
	a.Server = after.Server.minus(before.Server)
	a.Client = after.Client.minus(before.Client)
	a.UDPDropped = after.UDPDropped - before.UDPDropped
	a.Resets444 = after.Resets444 - before.Resets444
	a.ServerResets = a.Server.OutRsts - min(a.Server.OutRsts, a.Scan.Refused)
	if tr == nil {
		return a, nil
	}

	// RSTs are paired with their receiver within the tracer's hold time;
	// let the last ones through before asking it to stop.
	time.Sleep(500 * time.Millisecond)
	pid := cmd.Process.Pid
	c := cmd
	stopErr := stop()
	tr.CPULoadS = cpu1 - cpu0
	if ps := c.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			tr.CPUTotalS = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
			tr.MaxRSSKiB = ru.Maxrss
		}
	}
	if stopErr != nil {
		var exitErr *exec.ExitError
		if !errors.As(stopErr, &exitErr) {
			return a, stopErr
		}
		fmt.Fprintf(os.Stderr, "abrun: round %d%s: tracer (pid %d) exited: %v\n", n, arm, pid, stopErr)
	}
	if arm == "F" {
		// The floor writes no events: only its run and its cost count.
		a.Tracer = tr
		return a, nil
	}
	if err := countBusy(tr, o, ns); err != nil {
		return a, err
	}
	a.Tracer = tr
	return a, nil
}

// busyIdle measures the tracer's CPU over o.idle with no load: what it
// costs on this host anyway (timers, its own periodic reads).
func busyIdle(o *busyOptions, setTracer func(int)) (float64, error) {
	if o.idle <= 0 {
		return 0, nil
	}
	argv := strings.Fields(o.tracerCmd)
	cmd := exec.Command(argv[0], argv[1:]...)
	out := filepath.Join(o.outDir, "idle.jsonl")
	stdout, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	defer stdout.Close()
	cmd.Stdout = stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting tracer: %w", err)
	}
	setTracer(cmd.Process.Pid)
	defer setTracer(0)
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer stopBusyTracer(cmd, exited, o.stopTimeout)
	if err := waitForStart(out, exited, &waitErr, o.startTimeout); err != nil {
		return 0, err
	}
	// The start-up snapshot (listeners, names) is read just after the
	// start record: steady state is measured from a second later.
	time.Sleep(time.Second)
	cpu0, err := procCPU(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(o.idle)
	cpu1, err := procCPU(cmd.Process.Pid)
	return cpu1 - cpu0, err
}

// stopBusyTracer sends SIGINT to the tracer's group and waits for it,
// killing it after timeout.
func stopBusyTracer(cmd *exec.Cmd, exited <-chan struct{}, timeout time.Duration) error {
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(timeout):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("tracer did not exit within %v of SIGINT, killed", timeout)
	}
	if ps := cmd.ProcessState; ps != nil && !ps.Success() {
		return &exec.ExitError{ProcessState: ps}
	}
	return nil
}

// busyCmd runs a command in the client namespace; it dies with us.
func busyCmd(o *busyOptions, argv ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", o.nsClient}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

var (
	wrkTotal  = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m)`)
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkErrors = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func runWrk(o *busyOptions, closeEach bool, d time.Duration) (wrkResult, error) {
	var r wrkResult
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{"wrk", "-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "2s", "-s", o.wrkScript}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, fmt.Sprintf("http://%s:%d/", o.serverIP, o.httpPort))
	cmd := busyCmd(o, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// wrk stops by itself after -d; the timer is a bound in case it hangs.
	timer := time.AfterFunc(d+30*time.Second, func() { cmd.Process.Kill() })
	out, err := cmd.Output()
	timer.Stop()
	if err != nil {
		return r, fmt.Errorf("wrk: %w: %s%s", err, out, stderr.String())
	}
	m := wrkTotal.FindSubmatch(out)
	rps := wrkRPS.FindSubmatch(out)
	if m == nil || rps == nil {
		return r, fmt.Errorf("wrk output not understood:\n%s", out)
	}
	r.Requests, _ = strconv.ParseUint(string(m[1]), 10, 64)
	took, _ := time.ParseDuration(string(m[2]) + string(m[3]))
	r.DurationS = took.Seconds()
	r.RPS, _ = strconv.ParseFloat(string(rps[1]), 64)
	if e := wrkErrors.FindSubmatch(out); e != nil {
		r.Errors = map[string]uint64{}
		for i, k := range []string{"connect", "read", "write", "timeout"} {
			r.Errors[k], _ = strconv.ParseUint(string(e[i+1]), 10, 64)
		}
	}
	if x := wrkNon2xx.FindSubmatch(out); x != nil {
		r.Non2xx, _ = strconv.ParseUint(string(x[1]), 10, 64)
	}
	return r, nil
}

var nftCounter = regexp.MustCompile(`counter packets (\d+)`)

func readSnapshot(o *busyOptions) (snapshot, error) {
	var s snapshot
	var err error
	if s.Server, err = readTCP(o.nsServer); err != nil {
		return s, err
	}
	if s.Client, err = readTCP(o.nsClient); err != nil {
		return s, err
	}
	out, err := exec.Command("ip", "netns", "exec", o.nsServer, "nft", "list", "table", "inet", "rsttrace_busy").Output()
	if err != nil {
		return s, fmt.Errorf("reading the firewall counter: %w", err)
	}
	m := nftCounter.FindSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("no counter in the firewall table:\n%s", out)
	}
	s.UDPDropped, _ = strconv.ParseUint(string(m[1]), 10, 64)
	log, err := os.ReadFile(o.resetLog)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("reading nginx's reset log: %w", err)
	}
	s.Resets444 = uint64(bytes.Count(log, []byte{'\n'}))
	return s, nil
}

// readTCP reads the Tcp line pair of /proc/net/snmp in namespace ns.
func readTCP(ns string) (tcpCounters, error) {
	var c tcpCounters
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return c, fmt.Errorf("reading /proc/net/snmp in %s: %w", ns, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			switch names[i] {
			case "ActiveOpens":
				c.ActiveOpens = v
			case "PassiveOpens":
				c.PassiveOpens = v
			case "AttemptFails":
				c.AttemptFails = v
			case "EstabResets":
				c.EstabResets = v
			case "OutRsts":
				c.OutRsts = v
			}
		}
		return c, nil
	}
	return c, fmt.Errorf("no Tcp counters in /proc/net/snmp of %s", ns)
}

// procCPU returns utime+stime of pid in seconds (/proc/PID/stat fields 14
// and 15, in clock ticks of USER_HZ, which is 100 on Linux).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the tracer's cpu time: %w", err)
	}
	// The command name may hold spaces: fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(ut+st) / 100, nil
}

type busyEndpoint struct {
	Addr string `json:"addr"`
	Port int    `json:"port"`
}

type busyRecord struct {
	Type        string        `json:"type"`
	Netns       uint64        `json:"netns"`
	ClientNetns uint64        `json:"client_netns"`
	Src         *busyEndpoint `json:"src"`
	Dst         *busyEndpoint `json:"dst"`
	Cause       string        `json:"cause"`
	SummaryOf   string        `json:"summary_of"`
	Refusals    uint64        `json:"refusals"`
	Resets      *uint64       `json:"resets"`
	Count       *uint64       `json:"count"`
	Lost        *uint64       `json:"lost"`
}

// countBusy sorts the tracer's records about the benchmark's namespaces.
func countBusy(tr *busyTracer, o *busyOptions, ns [2]uint64) error {
	f, err := os.Open(tr.Output)
	if err != nil {
		return err
	}
	defer f.Close()
	ours := func(r *busyRecord) bool {
		return r.Netns == ns[0] || r.Netns == ns[1] || r.ClientNetns == ns[0] || r.ClientNetns == ns[1]
	}
	is := func(e *busyEndpoint, addr string, port int) bool {
		return e != nil && e.Addr == addr && (port == 0 || e.Port == port)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r busyRecord
		if err := json.Unmarshal(line, &r); err != nil {
			tr.BadLines++
			continue
		}
		switch r.Type {
		case "start":
			continue
		case "stop":
			tr.Lost = r.Lost
			continue
		case "lost":
			continue
		}
		if !ours(&r) {
			tr.Foreign++
			continue
		}
		tr.Types[r.Type]++
		if r.Cause == "remote" {
			tr.Remote++
		}
		switch r.Type {
		case "reset":
			switch {
			case is(r.Src, o.serverIP, o.httpPort):
				tr.ServerResets++
			case is(r.Src, o.clientIP, 0):
				tr.ClientResets++
			default:
				tr.OtherResets++
			}
		case "refused":
			if is(r.Dst, o.serverIP, 0) {
				tr.Refused++
			} else {
				tr.OtherRefused++
			}
		case "summary":
			// Refusal summaries carry no summary_of (or "refusals");
			// reset summaries name their count.
			switch r.SummaryOf {
			case "", "refusals", "refused":
				if is(r.Dst, o.serverIP, 0) {
					tr.SummarizedRefusals += r.Refusals
				}
			case "reset", "resets":
				switch {
				case r.Resets != nil:
					tr.SummarizedResets += *r.Resets
				case r.Count != nil:
					tr.SummarizedResets += *r.Count
				default:
					tr.SummarizedResets += r.Refusals
				}
			}
		case "filtered":
			tr.Filtered++
		case "timeout":
			tr.Timeouts++
		}
	}
	return sc.Err()
}

// busyTable prints the one table: throughput ratios, tracer cost, and each
// count the benchmark knows next to what the tracer reported.
func busyTable(w io.Writer, o *busyOptions, arms []busyArm, idle float64) {
	var kaA, clA, kaRatio, clRatio, kaFloor, clFloor, starts []float64
	var cpuLoad, cpuTotal, loadSecs, rss float64
	var conns, resets, n444, refusals, scanConns, udpSent, udpDropped uint64
	var repResets, repRefusals, sumResets, sumRefusals, filtered, timeouts, remote, lost, foreign uint64
	var clientRsts, clientResetEvents uint64
	exactResets, exactRefusals, bRounds := 0, 0, 0
	lostKnown := true
	armA := map[int]*busyArm{}
	for i := range arms {
		if r := &arms[i]; r.Arm == "A" {
			armA[r.N] = r
			kaA = append(kaA, r.KeepAlive.RPS)
			clA = append(clA, r.Close.RPS)
		}
	}
	for i := range arms {
		r := &arms[i]
		a, t := armA[r.N], r.Tracer
		if r.Arm == "F" && a != nil {
			kaFloor = append(kaFloor, r.KeepAlive.RPS/a.KeepAlive.RPS)
			clFloor = append(clFloor, r.Close.RPS/a.Close.RPS)
			continue
		}
		if r.Arm != "B" || t == nil || a == nil {
			continue
		}
		bRounds++
		kaRatio = append(kaRatio, r.KeepAlive.RPS/a.KeepAlive.RPS)
		clRatio = append(clRatio, r.Close.RPS/a.Close.RPS)
		starts = append(starts, t.StartupS*1000)
		cpuLoad += t.CPULoadS
		cpuTotal += t.CPUTotalS
		loadSecs += r.KeepAlive.DurationS + r.Close.DurationS
		rss = max(rss, float64(t.MaxRSSKiB)/1024)
		conns += r.Client.ActiveOpens
		resets += r.ServerResets
		n444 += r.Resets444
		refusals += r.Scan.Refused
		scanConns += r.Scan.Attempts
		udpSent += r.UDP.Sent
		udpDropped += r.UDPDropped
		clientRsts += r.Client.OutRsts
		clientResetEvents += t.ClientResets
		repResets += t.ServerResets
		sumResets += t.SummarizedResets
		repRefusals += t.Refused
		sumRefusals += t.SummarizedRefusals
		filtered += t.Filtered
		timeouts += t.Timeouts
		remote += t.Remote
		foreign += t.Foreign
		if t.Lost != nil {
			lost += *t.Lost
		} else {
			lostKnown = false
		}
		if t.ServerResets+t.SummarizedResets == r.ServerResets {
			exactResets++
		}
		if t.Refused+t.SummarizedRefusals == r.Scan.Refused {
			exactRefusals++
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "**FAIL**"
	}
	lostStr := strconv.FormatUint(lost, 10)
	if !lostKnown {
		lostStr += " (a round had no stop record)"
	}
	perK := "-"
	if conns > 0 {
		perK = fmt.Sprintf("%.1f ms", 1e6*cpuLoad/float64(conns))
		if o.idle > 0 {
			above := cpuLoad - idle/o.idle.Seconds()*loadSecs
			perK += fmt.Sprintf(" (%.1f ms above idle)", 1e6*max(0, above)/float64(conns))
		}
	}
	idleShare := "-"
	if o.idle > 0 {
		idleShare = fmt.Sprintf("%.1f%%", 100*idle/o.idle.Seconds())
	}
	share := "-"
	if loadSecs > 0 {
		share = fmt.Sprintf("%.1f%%", 100*cpuLoad/loadSecs)
	}
	kaB, clB := median(kaRatio), median(clRatio)

	fmt.Fprintf(w, "Busy host: nginx under wrk (%d threads, %d connections, %v per phase), 1 request in %s reset, scan %d/s, UDP %d/s dropped; %d A/B rounds, kernel %s, %d CPUs\n\n",
		o.threads, o.conns, o.duration, env("RESET_EVERY", "100"), o.scanRate, o.udpRate, o.rounds, kernelRelease(), numCPU())
	fmt.Fprintf(w, "    %s\n\n", o.cmdline)
	fmt.Fprintln(w, "| measure | value | expected | |")
	fmt.Fprintln(w, "| --- | ---: | ---: | --- |")
	fmt.Fprintf(w, "| keep-alive: A requests/s (median) | %.0f | | |\n", median(kaA))
	fmt.Fprintf(w, "| keep-alive: B/A requests/s (median of %d; pairs %s) | %.3f | >= 0.97 | %s |\n", len(kaRatio), spread(kaRatio), kaB, verdict(kaB >= 0.97))
	if len(kaFloor) > 0 {
		fmt.Fprintf(w, "| keep-alive: floor F/A (median of %d; pairs %s) | %.3f | | |\n", len(kaFloor), spread(kaFloor), median(kaFloor))
	}
	fmt.Fprintf(w, "| Connection: close: A requests/s (median) | %.0f | | |\n", median(clA))
	fmt.Fprintf(w, "| Connection: close: B/A requests/s (median of %d; pairs %s) | %.3f | >= 0.97 | %s |\n", len(clRatio), spread(clRatio), clB, verdict(clB >= 0.97))
	if len(clFloor) > 0 {
		fmt.Fprintf(w, "| Connection: close: floor F/A (median of %d; pairs %s) | %.3f | | |\n", len(clFloor), spread(clFloor), median(clFloor))
	}
	fmt.Fprintf(w, "| tracer CPU per 1,000 connections (%d connections in B) | %s | | |\n", conns, perK)
	fmt.Fprintf(w, "| tracer CPU during the load (%% of a core); idle, no load; whole life | %s; %s; %.2f s | | |\n", share, idleShare, cpuTotal)
	fmt.Fprintf(w, "| tracer max RSS; start-up (median) | %.1f MiB; %.0f ms | | |\n", rss, median(starts))
	fmt.Fprintf(w, "| server resets (kernel OutRsts less refusals; nginx 444: %d) | %d | | |\n", n444, resets)
	fmt.Fprintf(w, "| reset events + summarized resets | %d + %d | %d, each round | %s (%d/%d rounds) |\n", repResets, sumResets, resets, verdict(exactResets == bRounds), exactResets, bRounds)
	fmt.Fprintf(w, "| scan connects to closed ports, refused | %d of %d | | |\n", refusals, scanConns)
	fmt.Fprintf(w, "| refused events + summarized refusals | %d + %d | %d, each round | %s (%d/%d rounds) |\n", repRefusals, sumRefusals, refusals, verdict(exactRefusals == bRounds), exactRefusals, bRounds)
	fmt.Fprintf(w, "| client-sent RSTs (kernel OutRsts) | %d | | |\n", clientRsts)
	fmt.Fprintf(w, "| reset events from the client | %d | %d | %s |\n", clientResetEvents, clientRsts, verdict(clientResetEvents == clientRsts))
	fmt.Fprintf(w, "| UDP sent; dropped by the nft rule | %d; %d | | |\n", udpSent, udpDropped)
	fmt.Fprintf(w, "| filtered + timeout events | %d + %d | 0 | %s |\n", filtered, timeouts, verdict(filtered+timeouts == 0))
	fmt.Fprintf(w, "| events with cause remote | %d | 0 | %s |\n", remote, verdict(remote == 0))
	fmt.Fprintf(w, "| records lost | %s | 0 | %s |\n", lostStr, verdict(lost == 0 && lostKnown))
	fmt.Fprintf(w, "\n(B rounds only for counts; records from other namespaces on the host, ignored: %d)\n", foreign)
	if len(kaFloor) > 0 {
		fmt.Fprintf(w, "(F: the floor, `%s`, in every round next to A and B)\n", o.floorCmd)
	}
}

// spread is the range of the per-pair ratios, for judging the median.
func spread(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f–%.2f", slices.Min(xs), slices.Max(xs))
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func numCPU() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		x, _ := strconv.Atoi(lo)
		y := x
		if ok {
			y, _ = strconv.Atoi(hi)
		}
		n += y - x + 1
	}
	return n
}
