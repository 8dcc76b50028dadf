package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
)

// Privileged tests of a busy host: refusal storms, packet filter and reset
// floods, and the one event each connection attempt makes under them.

// fd opens the namespace (for setns from other threads); closed at cleanup.
func (n *netns) fd(t *testing.T) int {
	t.Helper()
	fd := -1
	var err error
	n.run(func() { fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("opening the netns: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// inNetns runs f on workers goroutines, each on its own OS thread moved
// into the namespace nsfd (the threads end with their goroutines, so no
// other goroutine runs in it).
func inNetns(t *testing.T, nsfd, workers int, f func(w int)) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread dies with us
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				errs <- fmt.Errorf("setns: %w", err)
				return
			}
			f(w)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// connectFrom makes one connect() from src to dst (blocking unless
// nonblock, which returns at once with the socket open); it returns the
// error and the socket.
func connectFrom(src, dst netip.AddrPort, nonblock bool) (int, error) {
	fam, sa := sockaddr(dst)
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(fam, typ, 0)
	if err != nil {
		return -1, err
	}
	_, self := sockaddr(src)
	if err := unix.Bind(fd, self); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, unix.Connect(fd, sa)
}

// A loopback refusal storm, several connecting threads, every client
// port used once: each refusal is reported exactly once (a refused event,
// a count in a summary record, or lost), never as a refusal by another
// host, and no connection twice. Once with the default rate per
// destination, once with every event written into a small ring buffer, so
// that summary mode switches on and off under the storm.
func TestPrivRefusalStorm(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		// named: every refused event names its client (nothing is
		// lost, so no client record is).
		named bool
	}{
		// The port filter keeps the clients' bind() records (one per
		// connect here) out of the ring: they would be lost with the
		// refusals and counted with them.
		{"rate", Config{Ports: []uint16{2099}}, true},
		{"small-ring", Config{Ports: []uint16{2099}, RingSize: 64 << 10, RatePerSecond: -1}, false},
		// One lock-free slot for connect() owners: four threads
		// connecting at once share it, and the others' owners go to
		// the hash (where the kernel has slots at all).
		{"one-slot", Config{Ports: []uint16{2099}, connectSlots: 1}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNetns(t)
			nsfd := n.fd(t)
			s := startTracer(t, c.cfg, n)
			dst := netip.MustParseAddrPort("127.0.0.1:2099")
			const firstPort, lastPort = 10000, 60000
			next := atomic.Int32{}
			next.Store(firstPort)
			var refused atomic.Uint64
			deadline := time.Now().Add(8 * time.Second)
			inNetns(t, nsfd, 4, func(int) {
				for time.Now().Before(deadline) {
					p := next.Add(1) - 1
					if p > lastPort {
						return
					}
					fd, err := connectFrom(netip.AddrPortFrom(dst.Addr(), uint16(p)), dst, false)
					if errors.Is(err, syscall.ECONNREFUSED) {
						refused.Add(1)
					}
					if fd >= 0 {
						unix.Close(fd)
					}
				}
			})
			time.Sleep(100 * time.Millisecond)
			s.stop()
			lost := uint64(0)
			for _, e := range s.all(func(e *events.Event) bool { return e.Type == events.TypeLost }) {
				lost += *e.Lost
			}
			var written, summarized uint64
			seen := map[uint16]int{}
			remote, nameless := 0, 0
			for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
				switch {
				case e.Type == events.TypeRefused:
					written++
					seen[e.Src.Port]++
					if e.Cause == events.CauseRemote {
						remote++
					}
					if e.Client == nil || e.Client.Pid != uint32(os.Getpid()) {
						nameless++
					}
				case e.Type == events.TypeSummary && e.SummaryOf == "refused":
					summarized += e.Refusals
					if e.Cause == events.CauseRemote {
						remote++
					}
				}
			}
			twice := 0
			for _, k := range seen {
				if k > 1 {
					twice++
				}
			}
			t.Logf("%d refused by the kernel: %d events, %d in summaries, %d lost", refused.Load(), written, summarized, lost)
			if refused.Load() < 1000 {
				t.Fatalf("only %d refusals: no storm", refused.Load())
			}
			if got := written + summarized + lost; got != refused.Load() {
				t.Errorf("reported %d (events %d + summarized %d + lost %d), want %d: every refusal once",
					got, written, summarized, lost, refused.Load())
			}
			if remote != 0 {
				t.Errorf("%d refusals (or summaries) said another host refused: all were this host's", remote)
			}
			if twice != 0 {
				t.Errorf("%d connections reported twice", twice)
			}
			if c.named && nameless != 0 {
				t.Errorf("%d of %d refused events without this process as their client", nameless, written)
			}
		})
	}
}

// An nft reject on the output hook (the shape kube-proxy gives a Service
// without endpoints): the client gets ECONNREFUSED at once, and one
// refused event names the firewall, the ICMP answer and the client within
// a second, not at shutdown; the attempt's retransmits and end make no
// second event. Non-blocking (SO_ERROR, then close) and blocking connect.
func TestPrivFirewallRejectOutput(t *testing.T) {
	families(t, func(t *testing.T, lo netip.Addr) {
		for _, nonblock := range []bool{true, false} {
			name := map[bool]string{true: "nonblocking", false: "blocking"}[nonblock]
			t.Run(name, func(t *testing.T) {
				n := newNetns(t)
				nsfd := n.fd(t)
				dst := netip.AddrPortFrom(lo, 2097)
				n.nft(t, rule("output", "tcp dport 2097 reject"))
				s := startTracer(t, Config{}, n)
				requireCap(t, s, "firewall")
				start := time.Now()
				var local netip.AddrPort
				var cerr error
				inNetns(t, nsfd, 1, func(int) {
					var fd int
					fd, cerr = connectFrom(netip.AddrPortFrom(lo, 0), dst, nonblock)
					if fd < 0 {
						return
					}
					defer unix.Close(fd)
					if ls, err := unix.Getsockname(fd); err == nil {
						local = sockaddrAddrPort(ls)
					}
					if nonblock && errors.Is(cerr, unix.EINPROGRESS) {
						pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
						unix.Poll(pfd, 2000)
						v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
						cerr = err
						if err == nil && v != 0 {
							cerr = syscall.Errno(v)
						}
					}
				})
				if !errors.Is(cerr, syscall.ECONNREFUSED) {
					t.Fatalf("connect to %v: %v, want ECONNREFUSED", dst, cerr)
				}
				e := s.waitFor("refused to "+dst.String(), toDst(n, events.TypeRefused, dst))
				if nonblock {
					if d := time.Since(start); d > 1500*time.Millisecond {
						t.Errorf("event after %v, want within about a second of connect()", d)
					}
				} else if d := e.Time.Sub(start); d > time.Second {
					t.Errorf("event for a SYN at +%v, want the first SYN's (within a second)", d)
				}
				if e.Cause != events.CauseFirewallReject || e.Answer != "icmp" {
					t.Errorf("cause %s answer %q, want firewall_reject, icmp", e.Cause, e.Answer)
				}
				checkFirewall(t, e, "output", 0)
				checkClient(t, e, local)
				// Let the attempt's end (blocking: the retransmit's second
				// ICMP) pass, then nothing more may come.
				time.Sleep(1500 * time.Millisecond)
				onlyOne(t, s, n, dst)
			})
		}
	})
}

// A local connect() whose SYNs the packet filter drops is written after
// at most fwMaxWait as still waiting, and its end later is no second event.
func TestPrivFirewallDropStillWaiting(t *testing.T) {
	n := newNetns(t)
	nsfd := n.fd(t)
	dst := netip.MustParseAddrPort("127.0.0.1:2098")
	n.nft(t, rule("output", "tcp dport 2098 drop"))
	s := startTracer(t, Config{}, n)
	requireCap(t, s, "firewall")
	fd := -1
	inNetns(t, nsfd, 1, func(int) {
		fd, _ = connectFrom(netip.MustParseAddrPort("127.0.0.1:0"), dst, true)
	})
	if fd < 0 {
		t.Fatal("no socket")
	}
	start := time.Now()
	deadline := start.Add(fwMaxWaitForTest + 5*time.Second)
	var e *events.Event
	for e == nil && time.Now().Before(deadline) {
		if got := s.all(toDst(n, events.TypeTimeout, dst)); len(got) > 0 {
			e = got[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	unix.Close(fd)
	if e == nil {
		t.Fatalf("no timeout event within %v of connect()", time.Since(start))
	}
	if e.Cause != events.CauseFirewallDrop || e.Attempt == nil || !e.Attempt.StillWaiting {
		t.Errorf("event %+v, want firewall_drop still waiting", e)
	}
	time.Sleep(200 * time.Millisecond)
	onlyOne(t, s, n, dst)
}

// fwMaxWaitForTest is the correlator's wait for a claimed drop.
const fwMaxWaitForTest = 15 * time.Second

// nftCounter is the packet count of the first counter in the namespace's
// ruleset.
func (n *netns) nftCounter(t *testing.T) uint64 {
	t.Helper()
	var out []byte
	var err error
	n.run(func() { out, err = exec.Command("nft", "list", "ruleset").CombinedOutput() })
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	m := regexp.MustCompile(`counter packets (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in %s", out)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v
}

// rateBound is the most full events a destination may get in d at rate.
func rateBound(d time.Duration, rate int) uint64 {
	return uint64(rate) * uint64(d/time.Second+2)
}

// A flood of SYNs the packet filter drops, from many client ports: at most
// the rate of full events, and summary records counting exactly the rest
// of what the rule's own counter counted.
func TestPrivFirewallDropFlood(t *testing.T) {
	n := newNetns(t)
	nsfd := n.fd(t)
	dst := netip.MustParseAddrPort("127.0.0.1:2100")
	n.nft(t, rule("input", "tcp dport 2100 counter drop"))
	const rate = 100
	s := startTracer(t, Config{RatePerSecond: rate}, n)
	requireCap(t, s, "firewall")
	start := time.Now()
	next := atomic.Int32{}
	next.Store(20000)
	inNetns(t, nsfd, 2, func(int) {
		for range 1500 {
			p := next.Add(1) - 1
			// Closed at once: one SYN each, no retransmit.
			if fd, _ := connectFrom(netip.AddrPortFrom(dst.Addr(), uint16(p)), dst, true); fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	took := time.Since(start)
	dropped := n.nftCounter(t)
	time.Sleep(2500 * time.Millisecond) // unclaimed drops wait fwClaimHold
	s.stop()
	var full, syns, summarized uint64
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino && e.Dst != nil && e.Dst.AddrPort() == dst }) {
		switch {
		case e.Type == events.TypeFiltered:
			full++
			syns += uint64(e.Firewall.SYNs)
		case e.Type == events.TypeSummary && e.SummaryOf == "filtered":
			summarized += e.Refusals
		default:
			t.Errorf("unexpected event %s/%s", e.Type, e.Cause)
		}
	}
	t.Logf("%d SYNs dropped in %v: %d full events (%d SYNs), %d summarized", dropped, took, full, syns, summarized)
	if dropped < 3000 {
		t.Fatalf("nft counted %d drops, want 3000", dropped)
	}
	if max := rateBound(took, rate); full > max {
		t.Errorf("%d full events in %v, want at most %d", full, took, max)
	}
	if syns+summarized != dropped {
		t.Errorf("events %d SYNs + summarized %d = %d, want the rule's %d", syns, summarized, syns+summarized, dropped)
	}
}

// A server resetting N accepted connections (SO_LINGER {1,0}, close): at
// most the rate of full reset events, and summary records counting exactly
// the rest.
func TestPrivResetFlood(t *testing.T) {
	n := newNetns(t)
	srv := netip.MustParseAddrPort("127.0.0.1:2101")
	const rate, total, batch = 100, 3000, 100
	s := startTracer(t, Config{RatePerSecond: rate}, n)
	requireCap(t, s, "resets")
	start := time.Now()
	var ferr error
	n.run(func() {
		lfd, err := bindSocket(srv)
		if err == nil {
			err = unix.Listen(lfd, batch*2)
		}
		if err != nil {
			ferr = err
			return
		}
		defer unix.Close(lfd)
		for done := 0; done < total && ferr == nil; done += batch {
			clients, conns, err := acceptedPairs(lfd, srv, batch)
			if err != nil {
				closeAll(append(clients, conns...))
				ferr = err
				return
			}
			for _, c := range conns {
				unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				unix.Close(c)
			}
			for _, c := range clients {
				unix.Close(c)
			}
		}
	})
	if ferr != nil {
		t.Fatal(ferr)
	}
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	s.stop()
	full, summarized := resetCounts(t, s, n, srv)
	t.Logf("%d resets in %v: %d full events, %d summarized", total, took, full, summarized)
	if max := rateBound(took, rate); full > max {
		t.Errorf("%d full reset events in %v, want at most %d", full, took, max)
	}
	if full+summarized != total {
		t.Errorf("full %d + summarized %d = %d, want %d: every reset once", full, summarized, full+summarized, total)
	}
}

// A server's reset that crosses its client's FIN: the server aborts
// (SO_LINGER {1,0}, close), and the client closes before that RST reaches
// it (here an output rule drops the RST; on a busy host the RST waits in
// another CPU's backlog). The FIN meets only the listener, which answers
// with a second RST, and that one resets the client. One connection reset,
// one reset counted: full events and summarized alike.
func TestPrivResetCrossedByFIN(t *testing.T) {
	n := newNetns(t)
	srv := netip.MustParseAddrPort("127.0.0.1:2102")
	const rate, total = 5, 20
	s := startTracer(t, Config{RatePerSecond: rate}, n)
	requireCap(t, s, "resets")
	var clients, conns []int
	var ferr error
	n.run(func() {
		lfd, err := bindSocket(srv)
		if err == nil {
			err = unix.Listen(lfd, total)
		}
		if err != nil {
			ferr = err
			return
		}
		t.Cleanup(func() { unix.Close(lfd) })
		clients, conns, ferr = acceptedPairs(lfd, srv, total)
	})
	t.Cleanup(func() { closeAll(append(clients, conns...)) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	n.nft(t, rule("output", "tcp sport 2102 tcp flags & rst == rst counter drop"))
	for _, c := range conns {
		unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(c)
	}
	conns = nil
	n.nft(t, "delete table inet rsttrace_test\n")
	closeAll(clients)
	clients = nil
	time.Sleep(200 * time.Millisecond)
	s.stop()
	full, summarized := resetCounts(t, s, n, srv)
	t.Logf("%d connections reset (first RST dropped, FIN answered): %d full events, %d summarized", total, full, summarized)
	if full+summarized != total {
		t.Errorf("full %d + summarized %d = %d, want %d: one reset per connection", full, summarized, full+summarized, total)
	}
}

// resetCounts is the number of reset events in n and of resets counted in
// its summaries, each checked to name srv as the sender.
func resetCounts(t *testing.T, s *session, n *netns, srv netip.AddrPort) (full, summarized uint64) {
	t.Helper()
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
		switch {
		case e.Type == events.TypeReset:
			full++
			if e.Src == nil || e.Src.AddrPort() != srv {
				t.Errorf("reset from %+v, want the server %v", e.Src, srv)
			}
		case e.Type == events.TypeSummary && e.SummaryOf == "reset":
			summarized += e.Refusals
			if e.Dst.AddrPort() != srv {
				t.Errorf("reset summary keyed by %v, want the sender %v", e.Dst, srv)
			}
		}
	}
	return full, summarized
}

// acceptedPairs makes n loopback connections to the listener lfd on srv,
// each accepted: the clients' and the server's sockets (those made so far
// when it fails).
func acceptedPairs(lfd int, srv netip.AddrPort, n int) (clients, conns []int, err error) {
	for range n {
		fd, err := connectFrom(netip.AddrPortFrom(srv.Addr(), 0), srv, false)
		if err != nil {
			return clients, conns, fmt.Errorf("connect: %w", err)
		}
		clients = append(clients, fd)
		c, _, err := unix.Accept(lfd)
		if err != nil {
			return clients, conns, fmt.Errorf("accept: %w", err)
		}
		conns = append(conns, c)
	}
	return clients, conns, nil
}
