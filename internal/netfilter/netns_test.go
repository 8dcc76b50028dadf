package netfilter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testNetns is a network namespace a test created with `ip netns add`.
type testNetns struct {
	name string
	fd   int
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating network namespaces needs root (CAP_SYS_ADMIN)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
}

// newNetns creates a fresh namespace, deleted at the end of the test.
func newNetns(t *testing.T) *testNetns {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "rsttrace-nf-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ns := &testNetns{name: name, fd: fd}
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	return runIn(t, "", args...)
}

func runIn(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func (ns *testNetns) run(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

// nft loads a ruleset into the namespace.
func (ns *testNetns) nft(t *testing.T, ruleset string) {
	t.Helper()
	runIn(t, ruleset, "ip", "netns", "exec", ns.name, "nft", "-f", "-")
}

// handle returns the handle `nft -a list chain` prints for the one rule
// of the chain whose text contains substr.
func (ns *testNetns) handle(t *testing.T, family, table, chain, substr string) uint64 {
	t.Helper()
	out := ns.run(t, "nft", "-a", "list", "chain", family, table, chain)
	re := regexp.MustCompile(`# handle (\d+)$`)
	var found []uint64
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, substr) {
			continue
		}
		if m := re.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			h, _ := strconv.ParseUint(m[1], 10, 64)
			found = append(found, h)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one rule with %q in %s %s %s, found %d:\n%s", substr, family, table, chain, len(found), out)
	}
	return found[0]
}

// inNetns runs f on a thread that has entered the namespace; the thread
// is discarded afterwards (never unlocked back into the pool).
func inNetns(t *testing.T, ns *testNetns, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("entering netns %s: %v", ns.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out in netns %s", ns.name)
	}
}

// veth connects two namespaces with addresses given as CIDRs.
func veth(t *testing.T, a, b *testNetns, addrsA, addrsB []string) (ifA, ifB string) {
	t.Helper()
	ifA, ifB = "nfa", "nfb"
	a.run(t, "ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.name)
	for _, x := range addrsA {
		args := []string{"ip", "addr", "add", x, "dev", ifA}
		if strings.Contains(x, ":") {
			args = append(args, "nodad")
		}
		a.run(t, args...)
	}
	for _, x := range addrsB {
		args := []string{"ip", "addr", "add", x, "dev", ifB}
		if strings.Contains(x, ":") {
			args = append(args, "nodad")
		}
		b.run(t, args...)
	}
	a.run(t, "ip", "link", "set", ifA, "up")
	b.run(t, "ip", "link", "set", ifB, "up")
	return ifA, ifB
}
