package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/diagnose"
	"github.com/rsttrace/rsttrace/internal/host"
)

// `rsttrace why` is run as the real binary against real processes and
// rulesets, each scenario in fresh network namespaces.

const whyHelperEnv = "RSTTRACE_WHY_HELPER"

// A helper process: "listen ADDR:PORT BACKLOG [v6only]" or "bind
// ADDR:PORT"; prints "ok" (or the error) and holds the socket until stdin
// closes. It runs from init, before TestMain.
func init() {
	if spec := os.Getenv(whyHelperEnv); spec != "" {
		os.Exit(whyHelper(strings.Fields(spec)))
	}
}

func whyHelper(f []string) int {
	ap := netip.MustParseAddrPort(f[1])
	fam := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().Is4() {
		fam, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil && len(f) > 3 && f[3] == "v6only" {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err == nil && f[0] == "listen" {
		backlog, _ := strconv.Atoi(f[2])
		err = unix.Listen(fd, backlog)
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ok")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

var (
	whyBinOnce sync.Once
	whyBin     string
	whyBinErr  error
	whyDir     string
)

// whyBinaries builds rsttrace once, and copies this test binary as the
// helper named webapp (its comm in the verdicts).
func whyBinaries(t *testing.T) (rsttrace, webapp string) {
	t.Helper()
	requireRoot(t)
	whyBinOnce.Do(func() {
		if whyDir, whyBinErr = os.MkdirTemp("", "rsttrace-why"); whyBinErr != nil {
			return
		}
		whyBin = filepath.Join(whyDir, "rsttrace")
		out, err := exec.Command("go", "build", "-o", whyBin, ".").CombinedOutput()
		if err != nil {
			whyBinErr = fmt.Errorf("building rsttrace: %v\n%s", err, out)
			return
		}
		self, err := os.Executable()
		if err == nil {
			var b []byte
			if b, err = os.ReadFile(self); err == nil {
				err = os.WriteFile(filepath.Join(whyDir, "webapp"), b, 0o755)
			}
		}
		whyBinErr = err
	})
	if whyBinErr != nil {
		t.Fatal(whyBinErr)
	}
	return whyBin, filepath.Join(whyDir, "webapp")
}

// whyNetns is a fresh named network namespace (ip netns add) with lo up.
type whyNetns struct {
	name string
	path string
	ino  uint32
}

func newWhyNetns(t *testing.T) *whyNetns {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	n := &whyNetns{name: "rsttrace-why-" + hex.EncodeToString(b)}
	n.path = "/run/netns/" + n.name
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip(t, "link", "set", "lo", "up")
	var st unix.Stat_t
	if err := unix.Stat(n.path, &st); err != nil {
		t.Fatal(err)
	}
	n.ino = uint32(st.Ino)
	return n
}

func (n *whyNetns) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %v: %v: %s", n.name, args, err, out)
	}
}

func (n *whyNetns) nft(t *testing.T, ruleset string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", n.name, err, out, ruleset)
	}
}

// start runs the webapp helper in the namespace; it returns its pid once
// its socket is ready.
func (n *whyNetns) start(t *testing.T, spec string) uint32 {
	t.Helper()
	_, webapp := whyBinaries(t)
	cmd := exec.Command(webapp)
	cmd.Env = append(os.Environ(), whyHelperEnv+"="+spec)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	// Forked from a thread in the namespace, the child starts there.
	if err := host.InNetns(n.path, cmd.Start); err != nil {
		t.Fatalf("starting helper %q: %v", spec, err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		t.Fatalf("helper %q: %q %v", spec, line, err)
	}
	return uint32(cmd.Process.Pid)
}

// why runs `rsttrace why ARGS -o json` and `... -o text`, and returns the
// report, the text and the exit status (the same for both).
func why(t *testing.T, args ...string) (*diagnose.Report, string, int) {
	t.Helper()
	bin, _ := whyBinaries(t)
	run := func(format string) ([]byte, int) {
		cmd := exec.Command(bin, append(append([]string{"why"}, args...), "-o", format)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running rsttrace why: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("rsttrace why took %v", d)
		}
		if stderr.Len() > 0 {
			t.Logf("stderr: %s", stderr.String())
		}
		return out, code
	}
	js, code := run("json")
	var rep diagnose.Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("decoding the JSON report: %v\n%s", err, js)
	}
	text, tcode := run("text")
	if tcode != code {
		t.Errorf("exit status %d with -o text, %d with -o json", tcode, code)
	}
	t.Logf("rsttrace why %s:\n%s", strings.Join(args, " "), text)
	if rep.Exit != code {
		t.Errorf("report says exit %d, the process exited %d", rep.Exit, code)
	}
	if first, _, _ := strings.Cut(string(text), "\n"); first != rep.Summary {
		t.Errorf("first line %q, want the verdict %q", first, rep.Summary)
	}
	return &rep, string(text), code
}

// wantVerdict checks the verdict, its cause, the exit status and that the
// summary and text say what they must.
func wantVerdict(t *testing.T, rep *diagnose.Report, text string, code int, verdict string, cause diagnose.Cause, summaryHas []string, textHas []string) {
	t.Helper()
	wantCode := 1
	if cause == diagnose.CauseReachable {
		wantCode = 0
	}
	if rep.Verdict != verdict || rep.Cause != cause || code != wantCode {
		t.Errorf("verdict %q cause %q exit %d, want %q %q exit %d; summary %q", rep.Verdict, rep.Cause, code, verdict, cause, wantCode, rep.Summary)
	}
	if !strings.HasPrefix(rep.Summary, verdict+":") {
		t.Errorf("summary %q does not start with %q", rep.Summary, verdict+":")
	}
	for _, s := range summaryHas {
		if !strings.Contains(rep.Summary, s) {
			t.Errorf("summary %q lacks %q", rep.Summary, s)
		}
	}
	for _, s := range textHas {
		if !strings.Contains(text, s) {
			t.Errorf("text lacks %q:\n%s", s, text)
		}
	}
	if wantCode == 1 && len(rep.Todo) == 0 {
		t.Error("no line under \"what to do\"")
	}
	if !strings.Contains(text, "\nevidence:\n") {
		t.Error("no evidence section")
	}
}

func probeOf(t *testing.T, rep *diagnose.Report) *diagnose.Probe {
	t.Helper()
	if len(rep.Targets) == 0 || rep.Targets[0].Probe == nil {
		t.Fatalf("no probe in %+v", rep.Targets)
	}
	return rep.Targets[0].Probe
}

func TestPrivWhyNothingListens(t *testing.T) {
	n := newWhyNetns(t)
	rep, text, code := why(t, "127.0.0.1:2201", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseNoListener,
		[]string{"nothing listens on 127.0.0.1:2201 in netns " + n.name},
		[]string{"listeners on port 2201: none", "start the service"})
	p := probeOf(t, rep)
	if p.Outcome != "refused" || p.Errno != "ECONNREFUSED" || p.Event == nil || p.Event.Cause != events.CauseNoListener {
		t.Errorf("probe %+v (event %+v): want refused by the kernel, no_listener", p, p.Event)
	}
	if rep.Targets[0].Netns != n.ino {
		t.Errorf("target netns %d, want %d", rep.Targets[0].Netns, n.ino)
	}
}

func TestPrivWhyWrongAddress(t *testing.T) {
	n := newWhyNetns(t)
	pid := n.start(t, "listen 127.0.0.2:2202 511")
	rep, text, code := why(t, "127.0.0.1:2202", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseWrongAddress,
		[]string{fmt.Sprintf("webapp (pid %d) listens on 127.0.0.2:2202 there (wrong address)", pid)},
		[]string{"127.0.0.2:2202 ipv4", "backlog 511", "connect to 127.0.0.2:2202"})
	if len(rep.Listeners) != 1 || rep.Listeners[0].Backlog != 511 || rep.Listeners[0].Pid != pid || rep.Listeners[0].Netns != n.ino {
		t.Errorf("listeners %+v: want webapp's with backlog 511", rep.Listeners)
	}
}

func TestPrivWhyIPv6Only(t *testing.T) {
	n := newWhyNetns(t)
	pid := n.start(t, "listen [::]:2203 16 v6only")
	rep, text, code := why(t, "127.0.0.1:2203", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseIPv6Only,
		[]string{fmt.Sprintf("webapp (pid %d) listens on [::]:2203 there with IPV6_V6ONLY", pid)},
		[]string{"v6only", "clear IPV6_V6ONLY"})
	if len(rep.Listeners) != 1 || !rep.Listeners[0].V6Only || rep.Listeners[0].Family != "ipv6" {
		t.Errorf("listeners %+v: want one v6only IPv6 listener", rep.Listeners)
	}
	// The same listener answers on ::1.
	rep, text, code = why(t, "[::1]:2203", "--netns", n.name)
	wantVerdict(t, rep, text, code, "reachable", diagnose.CauseReachable, []string{"accepted the probe"}, nil)
}

func TestPrivWhyOtherNetns(t *testing.T) {
	a, b := newWhyNetns(t), newWhyNetns(t)
	pid := b.start(t, "listen 0.0.0.0:2204 16")
	rep, text, code := why(t, "127.0.0.1:2204", "--netns", a.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseOtherNetns,
		[]string{"in netns " + a.name, fmt.Sprintf("webapp (pid %d) listens on 0.0.0.0:2204 in netns %s", pid, b.name), "(other namespace)"},
		[]string{"connect from netns " + b.name})
}

func TestPrivWhyBoundNotListening(t *testing.T) {
	n := newWhyNetns(t)
	pid := n.start(t, "bind 127.0.0.1:2205")
	rep, text, code := why(t, "127.0.0.1:2205", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseBoundNotListening,
		[]string{fmt.Sprintf("webapp (pid %d) has bound 127.0.0.1:2205 there but does not listen", pid)},
		[]string{"bound, not listening: 127.0.0.1:2205", "never called listen()"})
}

func TestPrivWhyBindFailed(t *testing.T) {
	n := newWhyNetns(t)
	// What a running rsttrace recorded: a failed bind in that namespace,
	// and older history.
	hist := filepath.Join(t.TempDir(), "rsttrace.jsonl")
	f, err := os.Create(hist)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := events.NewEncoder("json", f)
	when := time.Now().Add(-time.Minute).Truncate(time.Second)
	holder := events.Process{Pid: 4242, Comm: "squatter"}
	for _, e := range []*events.Event{
		{Time: when.Add(-time.Hour), Type: events.TypeStart, Version: events.SchemaVersion},
		{Time: when.Add(-time.Second), Type: events.TypeListenClose, Netns: n.ino,
			Listener: &events.Listener{Process: events.Process{Pid: 77, Comm: "webapp"}, Addr: netip.MustParseAddr("0.0.0.0"), Port: 2206, Netns: n.ino}},
		{Time: when, Type: events.TypeBindFailed, Netns: n.ino, Bind: &events.Bind{Process: events.Process{Pid: 78, Comm: "webapp"},
			Addr: netip.MustParseAddr("0.0.0.0"), Port: 2206, Errno: "EADDRINUSE", Time: when, Holder: &holder}},
		{Time: when, Type: events.TypeBindFailed, Netns: n.ino, Bind: &events.Bind{Process: events.Process{Pid: 79, Comm: "other"},
			Addr: netip.MustParseAddr("0.0.0.0"), Port: 9999, Errno: "EACCES", Time: when}},
	} {
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	enc.Flush()
	f.Close()
	rep, text, code := why(t, "127.0.0.1:2206", "--netns", n.name, "--history", hist)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseBindFailed,
		[]string{"webapp (pid 78) failed to bind 0.0.0.0:2206", "EADDRINUSE", "held by squatter (pid 4242)"},
		[]string{"history of port 2206", "BIND-FAILED", "stop squatter (pid 4242)"})
	if len(rep.History) != 2 || rep.History[0].Type != events.TypeBindFailed || rep.History[1].Type != events.TypeListenClose {
		t.Errorf("history %+v: want the failed bind, then the close (newest first, port 2206 only)", rep.History)
	}
}

func TestPrivWhyFirewallReject(t *testing.T) {
	n := newWhyNetns(t)
	n.start(t, "listen 0.0.0.0:2207 16")
	n.nft(t, `table inet guard {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 2207 reject with tcp reset comment "closed for maintenance"
	}
}`)
	rep, text, code := why(t, "127.0.0.1:2207", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseFirewallReject,
		[]string{"'inet guard input handle", `"closed for maintenance"`, "input hook"},
		[]string{"open the firewall", "nft delete rule inet guard input handle"})
	p := probeOf(t, rep)
	if p.Outcome != "refused" || p.Event == nil || p.Event.Cause != events.CauseFirewallReject {
		t.Errorf("probe %+v (event %+v): want refused, firewall_reject from the kernel", p, p.Event)
	}
}

func TestPrivWhyFirewallDrop(t *testing.T) {
	n := newWhyNetns(t)
	n.start(t, "listen 0.0.0.0:2208 16")
	n.nft(t, `table inet guard {
	chain output {
		type filter hook output priority 0; policy accept;
		tcp dport 2208 drop comment "blackhole"
	}
}`)
	rep, text, code := why(t, "127.0.0.1:2208", "--netns", n.name)
	wantVerdict(t, rep, text, code, "dropped", diagnose.CauseFirewallDrop,
		[]string{"'inet guard output handle", `"blackhole"`, "drops 127.0.0.1:2208"},
		[]string{"open the firewall"})
	if p := probeOf(t, rep); p.Outcome != "timeout" {
		t.Errorf("probe %+v: want timeout", p)
	}
}

func TestPrivWhyDNATDeadBackend(t *testing.T) {
	n := newWhyNetns(t)
	n.nft(t, `table ip nat {
	chain output {
		type nat hook output priority -100; policy accept;
		tcp dport 2209 dnat to 127.0.0.1:2210 comment "svc"
	}
}`)
	rep, text, code := why(t, "127.0.0.1:2209", "--netns", n.name)
	wantVerdict(t, rep, text, code, "refused", diagnose.CauseNATDeadBackend,
		[]string{"translated (DNAT", "to 127.0.0.1:2210", "nothing listens on 127.0.0.1:2210 (dead backend)"},
		[]string{"nat (output hook)", "-> 127.0.0.1:2210 (nothing listens)", "start the backend on 127.0.0.1:2210"})
	p := probeOf(t, rep)
	// The verdict comes from the ruleset and the sockets; the kernel's
	// record of the attempt is shown as it is.
	if p.Outcome != "refused" || p.Event == nil {
		t.Errorf("probe %+v (event %+v): want refused, with the tracer's record", p, p.Event)
	}
}

func TestPrivWhyBacklogFull(t *testing.T) {
	n := newWhyNetns(t)
	pid := n.start(t, "listen 127.0.0.1:2211 1")
	// The accept queue holds backlog+1 connections: fill it, nobody
	// accepts.
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	err := host.InNetns(n.path, func() error {
		for i := 0; i < 2; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 2211, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("filling the accept queue: %v", err)
	}
	rep, text, code := why(t, "127.0.0.1:2211", "--netns", n.name)
	wantVerdict(t, rep, text, code, "dropped", diagnose.CauseBacklogFull,
		[]string{fmt.Sprintf("webapp (pid %d) listens on 127.0.0.1:2211", pid), "accept queue is full (2 queued, backlog 1)"},
		[]string{"accept queue 2/2", "FULL", "raise its backlog"})
	if p := probeOf(t, rep); p.Outcome != "timeout" {
		t.Errorf("probe %+v: want timeout (SYN dropped)", p)
	}
}

func TestPrivWhyReachable(t *testing.T) {
	n := newWhyNetns(t)
	pid := n.start(t, "listen 0.0.0.0:2212 128")
	rep, text, code := why(t, "2212", "--netns", n.name)
	wantVerdict(t, rep, text, code, "reachable", diagnose.CauseReachable,
		[]string{fmt.Sprintf("webapp (pid %d) listens on 0.0.0.0:2212 and accepted the probe", pid)},
		[]string{"note: also: refused: nothing listens on [::1]:2212"})
	if p := probeOf(t, rep); p.Outcome != "accepted" || p.Event != nil {
		t.Errorf("probe %+v: want accepted, no refusal event", p)
	}
	// Asked by pid, the same namespace.
	rep, _, code = why(t, "127.0.0.1:2212", "--pid", strconv.Itoa(int(pid)), "--no-probe")
	if code != 0 || rep.Cause != diagnose.CauseReachable || rep.Targets[0].Probe != nil || rep.Targets[0].Netns != n.ino {
		t.Errorf("--pid %d --no-probe: exit %d cause %s targets %+v", pid, code, rep.Cause, rep.Targets)
	}
}

func TestPrivWhyUsage(t *testing.T) {
	bin, _ := whyBinaries(t)
	for _, args := range [][]string{{"why"}, {"why", "0"}, {"why", "x:1"}, {"why", "80", "-o", "yaml"}, {"why", "80", "--netns", "a", "--pid", "1"}} {
		err := exec.Command(bin, args...).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("rsttrace %v: %v, want exit status 2", args, err)
		}
	}
}
