package bpfobj

// Privileged tests: the real programs, loaded with only what each scenario
// needs, attached to this kernel's hooks, against real sockets and
// rulesets in network namespaces made for the test.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs and making network namespaces needs root")
	}
}

// loaded is a collection with some programs attached and its ring buffer.
type loaded struct {
	coll *ebpf.Collection
	rd   *ringbuf.Reader
}

// load loads only progs, with the given const volatile settings, and
// attaches each to its hook (tp_btf or syscall tracepoint).
func load(t *testing.T, vars map[string]any, progs ...string) *loaded {
	t.Helper()
	spec, err := LoadRsttrace()
	if err != nil {
		t.Fatalf("loading collection spec: %v", err)
	}
	for name, v := range vars {
		sv, ok := spec.Variables[name]
		if !ok {
			t.Fatalf("no variable %s in the collection", name)
		}
		if err := sv.Set(v); err != nil {
			t.Fatalf("setting %s: %v", name, err)
		}
	}
	want := map[string]bool{}
	for _, p := range progs {
		want[p] = true
	}
	for name := range spec.Programs {
		if !want[name] {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	if err != nil {
		t.Fatalf("loading programs %v: %+v", progs, err)
	}
	t.Cleanup(coll.Close)
	for _, name := range progs {
		p := coll.Programs[name]
		if p == nil {
			t.Fatalf("no program %s", name)
		}
		var l link.Link
		sec := spec.Programs[name].SectionName
		switch {
		case strings.HasPrefix(sec, "tp_btf/"):
			l, err = link.AttachTracing(link.TracingOptions{Program: p})
		case strings.HasPrefix(sec, "tracepoint/"):
			parts := strings.SplitN(strings.TrimPrefix(sec, "tracepoint/"), "/", 2)
			l, err = link.Tracepoint(parts[0], parts[1], p, nil)
		default:
			t.Fatalf("program %s: section %s is not attached by these tests", name, sec)
		}
		if err != nil {
			t.Fatalf("attaching %s (%s): %v", name, sec, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	rd, err := ringbuf.NewReader(coll.Maps["records"])
	if err != nil {
		t.Fatalf("opening ring buffer: %v", err)
	}
	t.Cleanup(func() { rd.Close() })
	return &loaded{coll: coll, rd: rd}
}

// drain reads records until none arrives for quiet, or until max.
func (l *loaded) drain(t *testing.T, quiet, max time.Duration) []RsttraceRecord {
	t.Helper()
	var out []RsttraceRecord
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		l.rd.SetDeadline(time.Now().Add(quiet))
		rec, err := l.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("reading ring buffer: %v", err)
		}
		var r RsttraceRecord
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &r); err != nil {
			t.Fatalf("decoding a %d-byte record: %v", len(rec.RawSample), err)
		}
		out = append(out, r)
	}
	return out
}

// netns is a network namespace made for one test, with lo up.
type netns struct {
	name string
	ino  uint64
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	name := fmt.Sprintf("rsttrace-bpfobj-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatalf("stat of netns %s: %v", name, err)
	}
	return &netns{name: name, ino: st.Ino}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// do runs fn on a thread inside the namespace: sockets fn makes belong to it.
func (n *netns) do(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with the goroutine.
			errc <- fmt.Errorf("leaving netns %s: %w", n.name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("netns scenario did not finish in 30s")
	}
}

// enumValue resolves an enumerator by name from kernel BTF: the numbering
// of enum skb_drop_reason differs between kernels.
func enumValue(t *testing.T, enum, name string) uint32 {
	t.Helper()
	s, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("loading kernel BTF: %v", err)
	}
	var e *btf.Enum
	if err := s.TypeByName(enum, &e); err != nil {
		t.Fatalf("no enum %s in kernel BTF: %v", enum, err)
	}
	for _, v := range e.Values {
		if v.Name == name {
			return uint32(v.Value)
		}
	}
	t.Fatalf("enum %s has no %s", enum, name)
	return 0
}

// sendResetHasReason: tcp:tcp_send_reset has (sk, skb, reason) from 6.10.
func sendResetHasReason(t *testing.T) bool {
	t.Helper()
	s, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("loading kernel BTF: %v", err)
	}
	var td *btf.Typedef
	if err := s.TypeByName("btf_trace_tcp_send_reset", &td); err != nil {
		t.Fatalf("no tcp:tcp_send_reset in kernel BTF: %v", err)
	}
	proto := td.Type.(*btf.Pointer).Target.(*btf.FuncProto)
	return len(proto.Params) >= 4 // void *, sk, skb, reason
}

func ip(r *RsttraceRecord, addr [16]uint8) net.IP {
	if r.Family == unix.AF_INET {
		return net.IP(addr[:4])
	}
	return net.IP(addr[:])
}

func (r *RsttraceRecord) String() string {
	return fmt.Sprintf("type=%d family=%d %s:%d -> %s:%d flags=%#x netns=%d pid=%d",
		r.Type, r.Family, ip(r, r.Saddr), r.Sport, ip(r, r.Daddr), r.Dport, r.Flags, r.Netns, r.Proc.Pid)
}

// TestPrivFirewallOnlyTCP: UDP datagrams the packet filter drops are not
// TCP SYNs; a TCP SYN it drops is, with its ports, on IPv4 and IPv6.
func TestPrivFirewallOnlyTCP(t *testing.T) {
	requireRoot(t)
	const udpPort, tcpPort = 5353, 5354
	l := load(t, map[string]any{
		"caps":                  uint32(RsttraceCapFlagCAP_F_FIREWALL),
		"netfilter_drop_reason": enumValue(t, "skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP"),
	}, "tp_btf_kfree_skb")
	ns := newNetns(t)
	ruleset := fmt.Sprintf(`table inet rsttrace_test {
	chain input {
		type filter hook input priority 0; policy accept;
		udp dport %d counter drop
		tcp dport %d counter drop
	}
}
`, udpPort, tcpPort)
	cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loading nft ruleset: %v: %s", err, out)
	}

	// Byte 13 of a UDP datagram (payload byte 5) is where a TCP header has
	// its flags: 0x02 there reads as a SYN to a parse that ignores the
	// protocol.
	payload := []byte{0, 0, 0, 0, 0, 0x02, 0, 0}
	for _, host := range []string{"127.0.0.1", "::1"} {
		ns.do(t, func() error {
			u, err := net.Dial("udp", net.JoinHostPort(host, strconv.Itoa(udpPort)))
			if err != nil {
				return fmt.Errorf("udp dial %s: %w", host, err)
			}
			defer u.Close()
			for i := 0; i < 5; i++ {
				if _, err := u.Write(payload); err != nil {
					return fmt.Errorf("udp write to %s: %w", host, err)
				}
			}
			// The SYN is dropped: connect waits; the dial gives up after
			// 1.2 s, past the first retransmit (initial RTO 1 s).
			d := net.Dialer{Timeout: 1200 * time.Millisecond}
			c, err := d.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(tcpPort)))
			if err == nil {
				c.Close()
				return fmt.Errorf("tcp connect to %s:%d succeeded through a drop rule", host, tcpPort)
			}
			return nil
		})
	}
	recs := l.drain(t, 500*time.Millisecond, 5*time.Second)

	// The rules did drop the datagrams: otherwise "no record" proves nothing.
	counters := run(t, "ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", "rsttrace_test")
	if !strings.Contains(counters, "packets 10 ") {
		t.Fatalf("udp rule did not count 10 dropped datagrams:\n%s", counters)
	}

	got := map[uint8]int{}
	for i := range recs {
		r := &recs[i]
		if r.Netns != uint32(ns.ino) {
			continue
		}
		if r.Type != uint8(RsttraceRecordTypeRECORD_FW_DROP) {
			t.Errorf("unexpected record %v", r)
			continue
		}
		if r.Dport == udpPort {
			t.Errorf("a dropped UDP datagram became a firewall drop record: %v", r)
			continue
		}
		if r.Dport != tcpPort || r.Sport == 0 || r.TcpFlags&0x12 != 0x02 {
			t.Errorf("firewall drop with wrong ports or flags: %v tcp_flags=%#x", r, r.TcpFlags)
			continue
		}
		if r.NetnsCookie == 0 {
			t.Errorf("firewall drop without netns cookie: %v", r)
		}
		got[r.Family]++
	}
	for fam, name := range map[uint8]string{unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6"} {
		if got[fam] < 1 {
			t.Errorf("%s: no firewall drop record for the dropped SYNs (records: %v)", name, recs)
		}
	}
}

// TestPrivResetOwner: a RST received on an established connection, in
// softirq, names the process that owns the socket (recorded at accept),
// not whoever was on the CPU; the RST sender is the closing task.
func TestPrivResetOwner(t *testing.T) {
	requireRoot(t)
	caps := uint32(RsttraceCapFlagCAP_F_RESETS | RsttraceCapFlagCAP_F_OWNERS)
	if sendResetHasReason(t) {
		caps |= uint32(RsttraceCapFlagCAP_F_RST_REASON)
	}
	l := load(t, map[string]any{"caps": caps},
		"tp_btf_inet_sock_set_state", "tp_btf_tcp_receive_reset", "tp_btf_tcp_send_reset",
		"tp_sys_exit_accept", "tp_sys_exit_accept4")
	ns := newNetns(t)
	const port = 5355

	// The child owns the accepted socket: it listens, accepts, says so,
	// and waits for the reset.
	script := fmt.Sprintf(`
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", %d))
s.listen(8)
print("listening", os.getpid(), flush=True)
s.settimeout(10)
c, _ = s.accept()
print("accepted", flush=True)
c.settimeout(10)
try:
    c.recv(16)
    print("no reset", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
`, port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	child := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, "python3", "-c", script)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatalf("starting the child: %v", err)
	}
	defer child.Wait()
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("child ended early: %v", lines.Err())
		}
		return lines.Text()
	}
	f := strings.Fields(next())
	if len(f) != 2 || f[0] != "listening" {
		t.Fatalf("child said %q, want listening PID", f)
	}
	childPid, _ := strconv.Atoi(f[1])

	var c *net.TCPConn
	ns.do(t, func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			return fmt.Errorf("connecting to the child: %w", err)
		}
		c = conn.(*net.TCPConn)
		return nil
	})
	clientPort := c.LocalAddr().(*net.TCPAddr).Port
	if s := next(); s != "accepted" {
		t.Fatalf("child said %q, want accepted", s)
	}
	if err := c.SetLinger(0); err != nil { // SO_LINGER {1, 0}: close sends a RST
		t.Fatal(err)
	}
	c.Close()
	if s := next(); s != "reset" {
		t.Fatalf("child said %q, want reset", s)
	}

	recs := l.drain(t, 500*time.Millisecond, 5*time.Second)
	var in, out *RsttraceRecord
	for i := range recs {
		r := &recs[i]
		if r.Netns != uint32(ns.ino) {
			continue
		}
		switch {
		case r.Type == uint8(RsttraceRecordTypeRECORD_RST_IN) && r.Sport == port && int(r.Dport) == clientPort:
			in = r
		case r.Type == uint8(RsttraceRecordTypeRECORD_RST_OUT) && int(r.Sport) == clientPort && r.Dport == port:
			out = r
		}
	}
	if in == nil {
		t.Fatalf("no RST_IN record for the child's socket 127.0.0.1:%d (records: %v)", port, recs)
	}
	const owner = uint32(RsttraceRecordFlagRECORD_F_OWNER_KNOWN | RsttraceRecordFlagRECORD_F_PROC_KNOWN)
	if in.Flags&owner != owner {
		t.Errorf("RST_IN flags %#x lack OWNER_KNOWN|PROC_KNOWN", in.Flags)
	}
	if int(in.Proc.Pid) != childPid {
		t.Errorf("RST_IN owner pid %d, want the child's %d (the test is %d)", in.Proc.Pid, childPid, os.Getpid())
	}
	if in.NetnsCookie == 0 {
		t.Error("RST_IN without netns cookie")
	}
	if out == nil {
		t.Fatalf("no RST_OUT record for the test's socket :%d (records: %v)", clientPort, recs)
	}
	if out.Flags&uint32(RsttraceRecordFlagRECORD_F_CURRENT) == 0 || int(out.Proc.Pid) != os.Getpid() {
		t.Errorf("RST_OUT proc pid %d flags %#x, want the closing test %d with CURRENT", out.Proc.Pid, out.Flags, os.Getpid())
	}
}

// cgroupV2ID is the calling process's cgroup v2 id: the inode number of
// its cgroup's directory on the cgroup2 mount.
func cgroupV2ID(t *testing.T) uint64 {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mnt string
	for _, line := range strings.Split(string(mounts), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if ok && strings.HasPrefix(post, "cgroup2 ") {
			if f := strings.Fields(pre); len(f) >= 5 {
				mnt = f[4]
				break
			}
		}
	}
	if mnt == "" {
		t.Skip("no cgroup2 mount: the task's cgroup v2 id has no directory to compare with")
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(cg), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			var st unix.Stat_t
			dir := filepath.Join(mnt, path)
			if err := unix.Stat(dir, &st); err != nil {
				t.Fatalf("stat of cgroup %s: %v", dir, err)
			}
			return st.Ino
		}
	}
	t.Fatal("no 0:: line in /proc/self/cgroup although cgroup2 is mounted")
	return 0
}

func nsIno(t *testing.T, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat of %s: %v", path, err)
	}
	return uint32(st.Ino)
}

// TestPrivIdentity: a record made in process context names the task's
// cgroup v2 id and mount namespace; a socket's network namespace has a
// cookie, different for two namespaces.
func TestPrivIdentity(t *testing.T) {
	requireRoot(t)
	wantCgroup := cgroupV2ID(t)
	wantMntns := nsIno(t, "/proc/self/ns/mnt")
	l := load(t, map[string]any{"caps": uint32(RsttraceCapFlagCAP_F_LISTENERS)},
		"tp_btf_inet_sock_set_state")
	const port = 5356
	spaces := []*netns{newNetns(t), newNetns(t)}
	for _, ns := range spaces {
		ns.do(t, func() error {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return fmt.Errorf("listening in %s: %w", ns.name, err)
			}
			return ln.Close()
		})
	}
	recs := l.drain(t, 500*time.Millisecond, 5*time.Second)
	cookies := map[uint64]uint32{}
	for _, ns := range spaces {
		var r *RsttraceRecord
		for i := range recs {
			if recs[i].Netns == uint32(ns.ino) && recs[i].Type == uint8(RsttraceRecordTypeRECORD_LISTEN) && recs[i].Dport == port {
				r = &recs[i]
			}
		}
		if r == nil {
			t.Fatalf("no LISTEN record in netns %d (records: %v)", ns.ino, recs)
		}
		if int(r.Proc.Pid) != os.Getpid() {
			t.Errorf("LISTEN pid %d, want %d", r.Proc.Pid, os.Getpid())
		}
		if r.Proc.CgroupId != wantCgroup {
			t.Errorf("cgroup_id %d, want %d", r.Proc.CgroupId, wantCgroup)
		}
		if r.Proc.Mntns != wantMntns {
			t.Errorf("mntns %d, want %d", r.Proc.Mntns, wantMntns)
		}
		if r.NetnsCookie == 0 {
			t.Errorf("netns %d: netns_cookie is 0", ns.ino)
		}
		if other, dup := cookies[r.NetnsCookie]; dup {
			t.Errorf("netns %d and %d share the cookie %d", other, ns.ino, r.NetnsCookie)
		}
		cookies[r.NetnsCookie] = uint32(ns.ino)
	}
}

// TestPrivRefusalDecidedInPlace: the refusing side of a local refusal
// finds its client through the socket that last began a connect() on this
// CPU (cpu_connecting), proven by the SYN's ports and sequence number, and
// leaves its decision in the client's connecting entry; when the
// server's stack runs on another CPU (RPS steers the veth's receive
// there), the decision goes through the decisions map instead. Either
// way each refusal is one RESET_SENT and one CLIENT_REFUSED that says the
// sender's record was written, and no decision is left behind.
func TestPrivRefusalDecidedInPlace(t *testing.T) {
	requireRoot(t)
	if !sendResetHasReason(t) {
		t.Skip("before 6.10 tcp:tcp_send_reset does not fire for a SYN nothing listens for (tcp_v4_send_reset is hooked there: the tracer tests cover it)")
	}
	if runtime.NumCPU() < 2 {
		t.Skip("steering the server's receive to another CPU needs a second CPU")
	}
	l := load(t, map[string]any{
		"caps": uint32(RsttraceCapFlagCAP_F_REFUSALS | RsttraceCapFlagCAP_F_CLIENTS |
			RsttraceCapFlagCAP_F_RST_REASON),
	}, "tp_btf_tcp_send_reset", "tp_btf_tcp_receive_reset", "tp_btf_inet_sock_set_state")

	const n = 20
	const port = 5356
	// dialTo connects to dst:port with the Go resolver's choice of socket.
	dialTo := func(dst string) func() error {
		return func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(dst, strconv.Itoa(port)), 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}
	}
	// refuse dials n times from a thread pinned to CPU 0 and returns CPU
	// 0's connecting slot as the last refusal left it (read at once: any
	// other connect on CPU 0 replaces it).
	refuse := func(t *testing.T, ns *netns, dial func() error) uint64 {
		var slots []uint64
		ns.do(t, func() error {
			var all, one unix.CPUSet
			if err := unix.SchedGetaffinity(0, &all); err != nil {
				return err
			}
			one.Set(0)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				return err
			}
			defer unix.SchedSetaffinity(0, &all)
			for i := 0; i < n; i++ {
				err := dial()
				if err == nil {
					return fmt.Errorf("connect to port %d succeeded: something listens", port)
				}
				if !errors.Is(err, unix.ECONNREFUSED) {
					return fmt.Errorf("connect to port %d: %v, want ECONNREFUSED", port, err)
				}
			}
			return l.coll.Maps["cpu_connecting"].Lookup(uint32(0), &slots)
		})
		return slots[0]
	}
	// check: n refusals, each written once by each side (the server's
	// in server, the client's in client), the client's saying the sender
	// was seen; the decisions map empty; CPU 0's slot consumed (the
	// sender found it) or still naming the last connecting socket.
	check := func(t *testing.T, client, server *netns, slot uint64, wantConsumed bool) {
		t.Helper()
		sent, refused := 0, 0
		for _, r := range l.drain(t, 500*time.Millisecond, 5*time.Second) {
			if r.Dport != port && r.Sport != port {
				continue
			}
			switch {
			case r.Type == uint8(RsttraceRecordTypeRECORD_RESET_SENT) && r.Netns == uint32(server.ino):
				sent++
			case r.Type == uint8(RsttraceRecordTypeRECORD_CLIENT_REFUSED) && r.Netns == uint32(client.ino):
				refused++
				if r.Flags&uint32(RsttraceRecordFlagRECORD_F_SENDER_SEEN) == 0 {
					t.Errorf("client record without SENDER_SEEN: %v", &r)
				}
				if r.Flags&uint32(RsttraceRecordFlagRECORD_F_PROC_KNOWN) == 0 || int(r.Proc.Pid) != os.Getpid() {
					t.Errorf("client record names pid %d (flags %#x), want the test %d", r.Proc.Pid, r.Flags, os.Getpid())
				}
			default:
				t.Errorf("unexpected record %v", &r)
			}
		}
		if sent != n || refused != n {
			t.Errorf("%d RESET_SENT and %d CLIENT_REFUSED records, want %d of each", sent, refused, n)
		}
		var k RsttraceConnKey
		var d uint8
		if it := l.coll.Maps["decisions"].Iterate(); it.Next(&k, &d) {
			t.Errorf("a decision was left behind: %+v -> %d", k, d)
		}
		if consumed := slot == 0; consumed != wantConsumed {
			t.Errorf("CPU 0's connecting slot (%#x) consumed by the refusing side: %v, want %v", slot, consumed, wantConsumed)
		}
	}

	t.Run("same CPU", func(t *testing.T) {
		ns := newNetns(t)
		slot := refuse(t, ns, dialTo("127.0.0.1"))
		check(t, ns, ns, slot, true)
	})
	t.Run("IPv6", func(t *testing.T) {
		ns := newNetns(t)
		slot := refuse(t, ns, dialTo("::1"))
		check(t, ns, ns, slot, true)
	})
	// An AF_INET6 socket connecting to a v4-mapped address sends IPv4: its
	// socket's tuple (v4-mapped) and the packet's (IPv4) are one key.
	t.Run("v4-mapped client", func(t *testing.T) {
		ns := newNetns(t)
		slot := refuse(t, ns, func() error {
			fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			sa := &unix.SockaddrInet6{Port: port, Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
			return unix.Connect(fd, sa)
		})
		check(t, ns, ns, slot, true)
	})
	t.Run("server on another CPU", func(t *testing.T) {
		client, server := newNetns(t), newNetns(t)
		run(t, "ip", "link", "add", "rtc0", "netns", client.name, "type", "veth", "peer", "rts0", "netns", server.name)
		run(t, "ip", "-n", client.name, "addr", "add", "10.211.7.1/24", "dev", "rtc0")
		run(t, "ip", "-n", server.name, "addr", "add", "10.211.7.2/24", "dev", "rts0")
		run(t, "ip", "-n", client.name, "link", "set", "rtc0", "up")
		run(t, "ip", "-n", server.name, "link", "set", "rts0", "up")
		// CPU 1 takes everything rts0 receives (netif_rx -> get_rps_cpu).
		run(t, "ip", "netns", "exec", server.name, "sh", "-c", "echo 2 > /sys/class/net/rts0/queues/rx-0/rps_cpus")
		slot := refuse(t, client, dialTo("10.211.7.2"))
		check(t, client, server, slot, false)
	})
}
