package tracer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/correlate"
	"github.com/rsttrace/rsttrace/internal/probe"
)

// Privileged tests of refusals through address translation and through a
// userland proxy: a client namespace C and a backend namespace B joined by
// a veth pair. C's nftables translates a service address (on C's link, but
// nobody's) to B's address; B's TCP stack refuses. Each test asserts one
// refused event that names both sides, and nothing else.

var (
	natMACC = net.HardwareAddr{0x02, 0, 0, 0, 0x22, 0x0c}
	natMACB = net.HardwareAddr{0x02, 0, 0, 0, 0x22, 0x0b}
)

// natAddrs are one family's addresses of the rig.
type natAddrs struct {
	client, backend, service, snat netip.Addr
	table                          string // nft family: ip or ip6
}

var (
	natV4 = natAddrs{netip.MustParseAddr("10.202.0.1"), netip.MustParseAddr("10.202.0.2"),
		netip.MustParseAddr("10.202.0.100"), netip.MustParseAddr("10.202.0.50"), "ip"}
	natV6 = natAddrs{netip.MustParseAddr("fd00:202::1"), netip.MustParseAddr("fd00:202::2"),
		netip.MustParseAddr("fd00:202::100"), netip.MustParseAddr("fd00:202::50"), "ip6"}
)

// natRig is C and B joined by veth nat0 (C) / nat1 (B), both families
// addressed, static neighbours both ways (no resolution delays).
type natRig struct {
	c, b *netns
	s    *session
}

func newNATRig(t *testing.T) *natRig {
	t.Helper()
	return newNATRigWith(t, Config{})
}

func newNATRigWith(t *testing.T, cfg Config) *natRig {
	t.Helper()
	r := &natRig{c: newNetns(t), b: newNetns(t)}
	var err error
	nsB := -1
	r.b.run(func() { nsB, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("opening B's netns: %v", err)
	}
	defer unix.Close(nsB)
	r.c.run(func() { err = createVeth("nat0", natMACC, "nat1", natMACB, nsB) })
	if err != nil {
		t.Fatal(err)
	}
	setup := func(n *netns, dev string, peerMAC net.HardwareAddr, local []netip.Prefix, peers []netip.Addr) {
		n.run(func() {
			if err = linkUp(dev); err != nil {
				return
			}
			var idx int
			if idx, err = ifIndex(dev); err != nil {
				return
			}
			for _, p := range local {
				if err = addAddr(idx, p); err != nil {
					return
				}
			}
			for _, a := range peers {
				if err = addNeigh(idx, a, peerMAC); err != nil {
					return
				}
			}
		})
		if err != nil {
			t.Fatalf("setting up %s: %v", dev, err)
		}
	}
	pfx := func(a netip.Addr) netip.Prefix {
		if a.Is4() {
			return netip.PrefixFrom(a, 24)
		}
		return netip.PrefixFrom(a, 64)
	}
	// C also holds the SNAT source address, so B's answers to it come back.
	setup(r.c, "nat0", natMACB,
		[]netip.Prefix{pfx(natV4.client), pfx(natV4.snat), pfx(natV6.client), pfx(natV6.snat)},
		[]netip.Addr{natV4.backend, natV6.backend})
	setup(r.b, "nat1", natMACC,
		[]netip.Prefix{pfx(natV4.backend), pfx(natV6.backend)},
		[]netip.Addr{natV4.client, natV4.snat, natV6.client, natV6.snat})
	r.s = startTracer(t, cfg, r.c, r.b)
	if h := r.s.hook(probe.CapNAT); h != "tp_btf/net_dev_queue" {
		t.Fatalf("capability nat served by %q, want tp_btf/net_dev_queue; plan: %+v", h, r.s.plan)
	}
	return r
}

// translate loads ruleset rs into C. The NAT hook is attached once the
// kernel's address translation is loaded, which the first nat chain does
// if nothing did before: the connections come after that.
func (r *natRig) translate(t *testing.T, rs string) {
	t.Helper()
	waited := false
	for _, a := range r.s.tr.Plan() {
		waited = waited || (a.Capability == probe.CapNAT && a.Waiting != "")
	}
	r.c.nft(t, rs)
	r.s.waitAttached(probe.CapNAT)
	if waited {
		t.Logf("the NAT hook waited for %s, and was attached when the ruleset loaded it", "nf_nat")
	}
}

// dnat is the ruleset of C: the service address's port 8080 goes to the
// backend's port 80; with snat, the source becomes the SNAT address and a
// port from 61000-61099 (so both source fields change).
func dnat(a natAddrs, snat bool) string {
	back := a.backend.String()
	if a.backend.Is6() {
		back = "[" + back + "]"
	}
	rs := fmt.Sprintf("table %s rsttrace_nat {\n chain out {\n  type nat hook output priority -100;\n  %s daddr %s tcp dport 8080 dnat to %s:80\n }\n",
		a.table, a.table, a.service, back)
	if snat {
		src := a.snat.String()
		if a.snat.Is6() {
			src = "[" + src + "]"
		}
		rs += fmt.Sprintf(" chain post {\n  type nat hook postrouting priority 100;\n  %s daddr %s tcp dport 80 snat to %s:61000-61099\n }\n",
			a.table, a.backend, src)
	}
	return rs + "}\n"
}

func refusedIn(ns ...*netns) func(*events.Event) bool {
	return func(e *events.Event) bool {
		if e.Type != events.TypeRefused {
			return false
		}
		for _, n := range ns {
			if e.Netns == n.ino {
				return true
			}
		}
		return false
	}
}

// onlyOne waits for the refused event, lets every hold expire, and
// requires that it is the only refused or reset event in either namespace.
func (r *natRig) onlyOne(t *testing.T) *events.Event {
	t.Helper()
	e := r.s.waitFor("refused", refusedIn(r.c, r.b))
	time.Sleep(2 * correlate.ProxyHold) // longer than every hold
	all := r.s.all(func(e *events.Event) bool {
		return (e.Type == events.TypeRefused || e.Type == events.TypeReset) && (e.Netns == r.c.ino || e.Netns == r.b.ino)
	})
	if len(all) != 1 {
		for _, x := range all {
			t.Logf("event: %+v", *x)
		}
		t.Fatalf("%d refused/reset events, want exactly 1", len(all))
	}
	return e
}

// checkNAT checks a refusal through DNAT from local to service:8080 that
// the backend's port 80 refused for cause.
func (r *natRig) checkNAT(t *testing.T, e *events.Event, a natAddrs, local netip.AddrPort, cause events.Cause) {
	t.Helper()
	if e.Netns != r.b.ino {
		t.Errorf("netns = %d, want the backend's %d", e.Netns, r.b.ino)
	}
	if e.Dst == nil || e.Dst.AddrPort() != netip.AddrPortFrom(a.backend, 80) {
		t.Errorf("dst = %+v, want %v:80", e.Dst, a.backend)
	}
	if e.DstOriginal == nil || e.DstOriginal.AddrPort() != netip.AddrPortFrom(a.service, 8080) {
		t.Errorf("dst_original = %+v, want %v:8080", e.DstOriginal, a.service)
	}
	if e.ClientNetns != r.c.ino {
		t.Errorf("client_netns = %d, want %d", e.ClientNetns, r.c.ino)
	}
	if e.Src == nil || e.Src.AddrPort() != local {
		t.Errorf("src = %+v, want the client as it connected, %v", e.Src, local)
	}
	if e.Client == nil || e.Client.Pid != uint32(os.Getpid()) {
		t.Errorf("client = %+v, want pid %d", e.Client, os.Getpid())
	}
	if e.Cause != cause {
		t.Errorf("cause = %q (%s), want %q", e.Cause, e.Explanation, cause)
	}
	if e.Explanation == "" {
		t.Error("no explanation")
	}
}

func (r *natRig) refuse(t *testing.T, a natAddrs) netip.AddrPort {
	t.Helper()
	err, local, fd := r.c.dialFrom(t, a.client, netip.AddrPortFrom(a.service, 8080), 0)
	unix.Close(fd)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %v:8080: %v, want ECONNREFUSED", a.service, err)
	}
	return local
}

func natFamilies(t *testing.T, f func(t *testing.T, a natAddrs)) {
	t.Run("ipv4", func(t *testing.T) { f(t, natV4) })
	t.Run("ipv6", func(t *testing.T) { f(t, natV6) })
}

func TestPrivNATNoListener(t *testing.T) {
	natFamilies(t, func(t *testing.T, a natAddrs) {
		r := newNATRig(t)
		r.translate(t, dnat(a, false))
		local := r.refuse(t, a)
		r.checkNAT(t, r.onlyOne(t), a, local, events.CauseNoListener)
	})
}

// TestPrivNATAttachedLater: where the kernel's NAT comes after the tracer
// (a service started at boot, Docker later), the NAT hook waits, and at
// the end of the wait its program is loaded again (with nf_conntrack's
// types, where a module brings them) against the tracer's maps and
// attached: the next refusal through DNAT is one event naming both sides.
func TestPrivNATAttachedLater(t *testing.T) {
	var ready atomic.Bool
	r := newNATRigWith(t, Config{natWait: ready.Load})
	for _, a := range r.s.tr.Plan() {
		if a.Capability == probe.CapNAT && a.Waiting == "" {
			t.Fatalf("capability nat does not wait: %+v", a)
		}
	}
	r.c.nft(t, dnat(natV4, false))
	ready.Store(true)
	r.s.waitAttached(probe.CapNAT)
	local := r.refuse(t, natV4)
	r.checkNAT(t, r.onlyOne(t), natV4, local, events.CauseNoListener)
}

func TestPrivNATMasquerade(t *testing.T) {
	natFamilies(t, func(t *testing.T, a natAddrs) {
		r := newNATRig(t)
		r.translate(t, dnat(a, true))
		local := r.refuse(t, a)
		e := r.onlyOne(t)
		r.checkNAT(t, e, a, local, events.CauseNoListener)
	})
}

func TestPrivNATListenerClosed(t *testing.T) {
	r := newNATRig(t)
	r.translate(t, dnat(natV4, false))
	ap := netip.AddrPortFrom(natV4.backend, 80)
	h := r.b.mustStart(t, "backend", "listen", ap)
	r.s.waitFor("listen", ofType(r.b, events.TypeListen, 80))
	h.cmd.Process.Kill()
	h.cmd.Wait()
	r.s.waitFor("listen_close", ofType(r.b, events.TypeListenClose, 80))
	local := r.refuse(t, natV4)
	e := r.onlyOne(t)
	r.checkNAT(t, e, natV4, local, events.CauseListenerClosed)
	checkListener(t, e.Listener, h, r.b, ap)
}

func TestPrivNATWrongAddress(t *testing.T) {
	r := newNATRig(t)
	r.translate(t, dnat(natV4, false))
	ap := netip.MustParseAddrPort("127.0.0.1:80")
	h := r.b.mustStart(t, "backend", "listen", ap)
	r.s.waitFor("listen", ofType(r.b, events.TypeListen, 80))
	local := r.refuse(t, natV4)
	e := r.onlyOne(t)
	r.checkNAT(t, e, natV4, local, events.CauseWrongAddress)
	checkListener(t, e.Listener, h, r.b, ap)
}

// A userland proxy (socat, forking per connection, as docker-proxy
// accepts and connects) in C forwards 127.0.0.1:9000 to the backend, where
// nothing listens. The client sends a request and reads: the proxy's
// connect is refused and it closes the client's connection with the
// request unread, so the client gets a RST (after socat's own FIN). One refused event: the
// backend's refusal, Proxy socat, Client this process.
func TestPrivProxyRefused(t *testing.T) {
	bin, err := exec.LookPath("socat")
	if err != nil {
		t.Fatal("socat not installed: make test-deps installs it")
	}
	r := newNATRig(t)
	front := netip.MustParseAddrPort("127.0.0.1:9000")
	var cmd *exec.Cmd
	r.c.run(func() {
		cmd = exec.Command(bin, "TCP-LISTEN:9000,bind=127.0.0.1,fork,reuseaddr", "TCP:"+natV4.backend.String()+":80")
		cmd.Stderr = os.Stderr
		err = cmd.Start()
	})
	if err != nil {
		t.Fatalf("starting socat: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r.s.waitFor("socat's listen", ofType(r.c, events.TypeListen, 9000))

	var local netip.AddrPort
	var cerr, rerr error
	r.c.run(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			cerr = err
			return
		}
		// Kept open until the end: a client that closes on socat's FIN
		// before socat exits leaves socat's socket in TIME_WAIT, and its
		// exit then sends no RST (the FIN case proxy.go describes).
		t.Cleanup(func() { unix.Close(fd) })
		_, sa := sockaddr(front)
		if cerr = unix.Connect(fd, sa); cerr != nil {
			return
		}
		if ls, err := unix.Getsockname(fd); err == nil {
			local = sockaddrAddrPort(ls)
		}
		if _, cerr = unix.Write(fd, []byte("GET / HTTP/1.0\r\n\r\n")); cerr != nil {
			return
		}
		tv := unix.NsecToTimeval(int64(5 * time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		buf := make([]byte, 64)
		_, rerr = unix.Read(fd, buf)
	})
	if cerr != nil {
		t.Fatalf("client: %v", cerr)
	}
	// socat shuts the connection down (a FIN: the client reads EOF) and
	// then exits with the request unread: its close sends a RST. A proxy
	// that only closes (docker-proxy) gives ECONNRESET at once.
	if rerr != nil && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Fatalf("client read: %v, want EOF or ECONNRESET", rerr)
	}
	e := r.onlyOne(t)
	if e.Netns != r.b.ino || e.Dst == nil || e.Dst.AddrPort() != netip.AddrPortFrom(natV4.backend, 80) {
		t.Errorf("netns %d dst %+v, want the backend's %d, %v:80", e.Netns, e.Dst, r.b.ino, natV4.backend)
	}
	if e.Cause != events.CauseNoListener {
		t.Errorf("cause = %q, want no_listener", e.Cause)
	}
	if e.Proxy == nil || e.Proxy.Comm != "socat" {
		t.Errorf("proxy = %+v, want socat", e.Proxy)
	}
	if e.Client == nil || e.Client.Pid != uint32(os.Getpid()) {
		t.Errorf("client = %+v, want this process (pid %d)", e.Client, os.Getpid())
	}
	if e.Src == nil || e.Src.AddrPort() != local {
		t.Errorf("src = %+v, want the client's %v", e.Src, local)
	}
	if e.DstOriginal == nil || e.DstOriginal.AddrPort() != front {
		t.Errorf("dst_original = %+v, want the proxy's %v", e.DstOriginal, front)
	}
	if e.ClientNetns != r.c.ino {
		t.Errorf("client_netns = %d, want %d", e.ClientNetns, r.c.ino)
	}
	t.Logf("explanation: %s", e.Explanation)
}
