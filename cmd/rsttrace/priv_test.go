package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests run rsttrace as a real process (this test binary re-executed
// in "main" mode) and talk to it with real signals and pipes.

const mainEnv = "RSTTRACE_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		os.Args = append([]string{"rsttrace"}, strings.Fields(os.Getenv(mainEnv))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var waitTimeout = func() time.Duration {
	if os.Getenv("RSTTRACE_IN_VM") != "" {
		return 90 * time.Second
	}
	return 15 * time.Second
}()

type proc struct {
	cmd    *exec.Cmd
	out    *bufio.Reader
	stdout io.ReadCloser
	stderr bytes.Buffer
}

func startMain(t *testing.T, args string) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(self)}
	p.cmd.Env = append(os.Environ(), mainEnv+"="+args)
	p.cmd.Stderr = &p.stderr
	if p.stdout, err = p.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewReader(p.stdout)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

// record reads the next JSON line, failing after waitTimeout.
func (p *proc) record(t *testing.T) map[string]any {
	t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() { l, err := p.out.ReadString('\n'); ch <- res{l, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("reading output: %v (stderr: %s)", r.err, p.stderr.String())
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.line), &m); err != nil {
			t.Fatalf("output line %q is not JSON: %v", r.line, err)
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no output within %v (stderr: %s)", waitTimeout, p.stderr.String())
	}
	return nil
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(waitTimeout):
		t.Fatalf("rsttrace did not exit within %v", waitTimeout)
	}
	return -1
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root (run the privileged tests as root: make test)")
	}
}

func checkStart(t *testing.T, m map[string]any) {
	t.Helper()
	var uts unix.Utsname
	unix.Uname(&uts)
	if m["type"] != "start" || m["version"] != 1.0 || m["kernel"] != unix.ByteSliceToString(uts.Release[:]) {
		t.Fatalf("first record = %v, want start, version 1, kernel %s", m, unix.ByteSliceToString(uts.Release[:]))
	}
	plan, _ := m["plan"].([]any)
	found := false
	for _, a := range plan {
		if a.(map[string]any)["capability"] == "refusals" && a.(map[string]any)["hook"] != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("plan %v has no hook for refusals", plan)
	}
}

// refuseInNewNetns makes one refused connection to 127.0.0.1:port from a
// fresh network namespace and returns the namespace's inode.
func refuseInNewNetns(t *testing.T, port int) uint64 {
	t.Helper()
	type res struct {
		ino uint64
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with its netns
		var r res
		defer func() { ch <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err != nil {
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if r.err = err; err != nil {
			return
		}
		ifr, _ := unix.NewIfreq("lo")
		ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
		r.err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
		unix.Close(fd)
		if r.err != nil {
			return
		}
		var st unix.Stat_t
		unix.Stat("/proc/thread-self/ns/net", &st)
		r.ino = st.Ino
		s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		defer unix.Close(s)
		if err := unix.Connect(s, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != syscall.ECONNREFUSED {
			r.err = errors.New("connect: want ECONNREFUSED, got " + errString(err))
		}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("refusing a connection in a new netns: %v", r.err)
	}
	return r.ino
}

func errString(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}

// SIGINT: the refusal made while tracing is written, then the stop record
// with the loss count, and the exit status is 0.
func TestPrivSIGINT(t *testing.T) {
	requireRoot(t)
	p := startMain(t, "-o json --port 2090")
	checkStart(t, p.record(t))
	ino := refuseInNewNetns(t, 2090)
	ev := p.record(t)
	if ev["type"] != "refused" || ev["netns"] != float64(ino) || ev["cause"] != "no_listener" {
		t.Errorf("event = %v, want refused no_listener in netns %d", ev, ino)
	}
	if c, _ := ev["client"].(map[string]any); c == nil || c["pid"] != float64(os.Getpid()) {
		t.Errorf("client = %v, want pid %d", ev["client"], os.Getpid())
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	stop := p.record(t)
	if stop["type"] != "stop" || stop["lost"] != 0.0 {
		t.Errorf("last record = %v, want stop with lost 0", stop)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0 (stderr: %s)", code, p.stderr.String())
	}
}

func TestPrivDuration(t *testing.T) {
	requireRoot(t)
	began := time.Now()
	p := startMain(t, "-o json --duration 1s")
	checkStart(t, p.record(t))
	attached := time.Now()
	for {
		m := p.record(t)
		if m["type"] == "stop" {
			if _, ok := m["lost"]; !ok {
				t.Errorf("stop record %v has no lost count", m)
			}
			break
		}
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d, want 0 (stderr: %s)", code, p.stderr.String())
	}
	// The duration counts from the start record; it stops after it, and
	// not much later (a tick to drain, the stop record, exit).
	if ran := time.Since(attached); ran < 900*time.Millisecond || time.Since(began) > 10*time.Second {
		t.Errorf("ran %v after the start record (%v in all), want 1s", ran, time.Since(began))
	}
}

// Closing the reading end of stdout ends an idle tracer cleanly.
func TestPrivStdoutClosed(t *testing.T) {
	requireRoot(t)
	p := startMain(t, "-o json --port 2091")
	checkStart(t, p.record(t))
	p.stdout.Close()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d after stdout closed, want 0 (stderr: %s)", code, p.stderr.String())
	}
}

func TestBadFlagExits2(t *testing.T) {
	for _, args := range []string{"--port 70000", "-o yaml", "--bogus"} {
		p := startMain(t, args)
		if code := p.wait(t); code != 2 {
			t.Errorf("%s: exit code %d, want 2", args, code)
		}
		if lines := strings.Count(strings.TrimSpace(p.stderr.String()), "\n"); lines != 0 {
			t.Errorf("%s: stderr has %d lines, want one: %q", args, lines+1, p.stderr.String())
		}
		if p.stderr.Len() == 0 {
			t.Errorf("%s: nothing on stderr", args)
		}
	}
}

// --check attaches everything, prints the plan and exits 0 on this kernel.
func TestPrivCheck(t *testing.T) {
	requireRoot(t)
	p := startMain(t, "--check -o json")
	checkStart(t, p.record(t))
	if code := p.wait(t); code != 0 {
		t.Errorf("--check exit code %d, want 0 (stderr: %s)", code, p.stderr.String())
	}
}
