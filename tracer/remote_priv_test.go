package tracer

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/probe"
)

// Privileged tests of a client whose peer is another host: two fresh
// network namespaces joined by a veth pair. A is the client host; B plays
// the remote host without its own TCP stack: A's static neighbour entry
// sends the target addresses to a MAC no interface has (remoteMAC), so B's
// kernel sees A's packets as PACKET_OTHERHOST and ip_rcv/ipv6_rcv discard
// them before routing (no TCP, no ICMP, no netfilter), while an AF_PACKET
// socket opened in B reads them and writes the answer the test asks for.
// So whatever reaches the client was sent by "another host", and B's drops
// are no packet filter's.

var (
	macA      = net.HardwareAddr{0x02, 0, 0, 0, 0x55, 0x0a}
	macB      = net.HardwareAddr{0x02, 0, 0, 0, 0x55, 0x0b}
	remoteMAC = net.HardwareAddr{0x02, 0, 0, 0, 0x55, 0x02} // nobody's
)

// The rig's addresses: the client's in A, the targets "on" B.
var (
	clientV4, targetV4 = netip.MustParseAddr("10.55.0.1"), netip.MustParseAddr("10.55.0.2")
	clientV6, targetV6 = netip.MustParseAddr("fd00:55::1"), netip.MustParseAddr("fd00:55::2")
)

// twoHosts is the rig.
type twoHosts struct {
	a, b *netns
	resp *responder
}

func newTwoHosts(t *testing.T) *twoHosts {
	t.Helper()
	h := &twoHosts{a: newNetns(t), b: newNetns(t)}
	var err error
	nsB := -1
	h.b.run(func() { nsB, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("opening B's netns: %v", err)
	}
	defer unix.Close(nsB)
	h.a.run(func() { err = createVeth("rsta", macA, "rstb", macB, nsB) })
	if err != nil {
		t.Fatal(err)
	}
	h.b.run(func() {
		// No addresses in B; IPv6 off on its veth so it sends no
		// neighbour discovery of its own.
		if err = disableIPv6("rstb"); err != nil {
			return
		}
		if err = linkUp("rstb"); err != nil {
			return
		}
		h.resp, err = newResponder(t, "rstb", targetV4, targetV6)
	})
	if err != nil {
		t.Fatalf("setting up host B: %v", err)
	}
	h.a.run(func() {
		if err = linkUp("rsta"); err != nil {
			return
		}
		var idx int
		if idx, err = ifIndex("rsta"); err != nil {
			return
		}
		for _, p := range []string{"10.55.0.1/24", "fd00:55::1/64"} {
			if err = addAddr(idx, netip.MustParsePrefix(p)); err != nil {
				return
			}
		}
		for _, ip := range []netip.Addr{targetV4, targetV6} {
			if err = addNeigh(idx, ip, remoteMAC); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatalf("setting up host A: %v", err)
	}
	return h
}

func disableIPv6(dev string) error {
	err := writeSysctl("net/ipv6/conf/"+dev+"/disable_ipv6", "1")
	if errors.Is(err, unix.ENOENT) {
		return nil // no IPv6 in this kernel
	}
	return err
}

// writeSysctl writes a /proc/sys/net setting of the calling thread's netns.
func writeSysctl(name, v string) error {
	fd, err := unix.Open("/proc/sys/"+name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(v))
	return err
}

// remoteFamilies runs f for a client on IPv4, on IPv6, and on an IPv6
// socket speaking IPv4 (v4-mapped addresses), with the addresses it binds
// and connects to. Events carry plain IPv4 addresses for the last.
func remoteFamilies(t *testing.T, f func(t *testing.T, client, target netip.Addr)) {
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	for _, c := range []struct {
		name           string
		client, target netip.Addr
	}{
		{"ipv4", clientV4, targetV4},
		{"ipv6", clientV6, targetV6},
		{"ipv4-mapped", mapped(clientV4), mapped(targetV4)},
	} {
		t.Run(c.name, func(t *testing.T) { f(t, c.client, c.target) })
	}
}

// unmap is ap as events and the wire say it (v4-mapped to IPv4).
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// dialFrom connects from the namespace, bound to src (port 0, so the
// client port is known), with TCP_SYNCNT synRetries (0: the default). It
// returns connect's error, the client's address and the socket, still open.
func (n *netns) dialFrom(t *testing.T, src netip.Addr, dst netip.AddrPort, synRetries int) (error, netip.AddrPort, int) {
	t.Helper()
	var cerr error
	var local netip.AddrPort
	fd := -1
	n.run(func() {
		fam, sa := sockaddr(dst)
		fd, cerr = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if cerr != nil {
			return
		}
		if synRetries > 0 {
			if cerr = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, synRetries); cerr != nil {
				return
			}
		}
		_, self := sockaddr(netip.AddrPortFrom(src, 0))
		if cerr = unix.Bind(fd, self); cerr != nil {
			return
		}
		if ls, err := unix.Getsockname(fd); err == nil {
			local = sockaddrAddrPort(ls)
		}
		cerr = unix.Connect(fd, sa)
	})
	if fd < 0 {
		t.Fatalf("socket: %v", cerr)
	}
	return cerr, local, fd
}

// snmp reads a counter of /proc/net/snmp in the namespace ("Tcp",
// "RetransSegs").
func (n *netns) snmp(t *testing.T, group, name string) int {
	t.Helper()
	var b []byte
	var err error
	n.run(func() { b, err = os.ReadFile("/proc/thread-self/net/snmp") })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != group+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := range f {
			if i < len(names) && names[i] == name {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatalf("snmp %s %s: %v", group, name, err)
				}
				return v
			}
		}
	}
	t.Fatalf("no %s %s in /proc/net/snmp", group, name)
	return 0
}

// dialNonblock starts a non-blocking connect() from the namespace, bound
// to src; it returns connect's error (EINPROGRESS), the client's address
// and the socket.
func (n *netns) dialNonblock(t *testing.T, src netip.Addr, dst netip.AddrPort) (error, netip.AddrPort, int) {
	t.Helper()
	var cerr error
	var local netip.AddrPort
	fd := -1
	n.run(func() {
		fam, sa := sockaddr(dst)
		fd, cerr = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if cerr != nil {
			return
		}
		_, self := sockaddr(netip.AddrPortFrom(src, 0))
		if cerr = unix.Bind(fd, self); cerr != nil {
			return
		}
		if ls, err := unix.Getsockname(fd); err == nil {
			local = sockaddrAddrPort(ls)
		}
		cerr = unix.Connect(fd, sa)
	})
	if fd < 0 {
		t.Fatalf("socket: %v", cerr)
	}
	return cerr, local, fd
}

// Answers the responder gives to a SYN.
const (
	answerNone  = ""
	answerRST   = "tcp_reset" // RST|ACK acknowledging the SYN
	answerICMP  = "icmp"      // ICMP (v6) port unreachable
	snapICMPMax = 512         // bytes of the SYN's packet quoted in the ICMP error
)

// responder reads, in B, the frames A sends to the target addresses and
// answers each SYN as told.
type responder struct {
	t       *testing.T
	fd      int
	targets []netip.Addr

	mu     sync.Mutex
	answer string
	syns   []netip.AddrPort // source of each SYN seen (retransmits too)
	errs   []error

	stop chan struct{}
	done chan struct{}
}

// newResponder opens an AF_PACKET socket on dev in the calling thread's
// netns and serves it until the test ends.
func newResponder(t *testing.T, dev string, targets ...netip.Addr) (*responder, error) {
	idx, err := ifIndex(dev)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: idx}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Wake up now and then to see whether the test is over.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	r := &responder{t: t, fd: fd, targets: targets, stop: make(chan struct{}), done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		close(r.stop)
		<-r.done
		unix.Close(r.fd)
		for _, err := range r.errs {
			t.Errorf("responder: %v", err)
		}
	})
	return r, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *responder) setAnswer(a string) {
	r.mu.Lock()
	r.answer = a
	r.mu.Unlock()
}

// synsFrom counts the SYNs seen from client src.
func (r *responder) synsFrom(src netip.AddrPort) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.syns {
		if s == src {
			n++
		}
	}
	return n
}

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(r.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // our own answers
		}
		syn, ok := parseSYN(buf[:n])
		if !ok || !r.isTarget(syn.dst.Addr()) {
			continue
		}
		r.mu.Lock()
		r.syns = append(r.syns, syn.src)
		answer := r.answer
		r.mu.Unlock()
		var reply []byte
		switch answer {
		case answerRST:
			reply = craftRST(syn)
		case answerICMP:
			reply = craftICMP(syn)
		}
		if reply != nil {
			if _, err := unix.Write(r.fd, reply); err != nil {
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}
		}
	}
}

func (r *responder) isTarget(a netip.Addr) bool {
	for _, t := range r.targets {
		if t == a {
			return true
		}
	}
	return false
}

// synPacket is a SYN as read from the wire.
type synPacket struct {
	srcMAC   net.HardwareAddr
	src, dst netip.AddrPort
	seq      uint32
	ip       []byte // the IP packet, header included
}

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	tcpFIN    = 0x01
	tcpSYN    = 0x02
	tcpRST    = 0x04
	tcpACK    = 0x10
)

var be = binary.BigEndian

// parseSYN decodes an Ethernet frame carrying a TCP SYN (no ACK) over
// IPv4 or IPv6 (no extension headers: Linux sends none on a SYN).
func parseSYN(f []byte) (synPacket, bool) {
	var p synPacket
	if len(f) < 14 {
		return p, false
	}
	p.srcMAC = net.HardwareAddr(append([]byte(nil), f[6:12]...))
	ip := f[14:]
	var tcp []byte
	var src, dst netip.Addr
	switch be.Uint16(f[12:]) {
	case etherIPv4:
		if len(ip) < 20 || ip[9] != unix.IPPROTO_TCP {
			return p, false
		}
		hl := int(ip[0]&0x0f) * 4
		tot := int(be.Uint16(ip[2:]))
		if tot > len(ip) || hl+20 > tot {
			return p, false
		}
		ip = ip[:tot]
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		tcp = ip[hl:]
	case etherIPv6:
		if len(ip) < 40 || ip[6] != unix.IPPROTO_TCP {
			return p, false
		}
		tot := 40 + int(be.Uint16(ip[4:]))
		if tot > len(ip) || tot < 60 {
			return p, false
		}
		ip = ip[:tot]
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		tcp = ip[40:]
	default:
		return p, false
	}
	if tcp[13]&(tcpSYN|tcpACK|tcpRST|tcpFIN) != tcpSYN {
		return p, false
	}
	p.src = netip.AddrPortFrom(src, be.Uint16(tcp[0:]))
	p.dst = netip.AddrPortFrom(dst, be.Uint16(tcp[2:]))
	p.seq = be.Uint32(tcp[4:])
	p.ip = append([]byte(nil), ip...)
	return p, true
}

// csum folds the one's complement sum of b onto sum.
func csum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(be.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func csumDone(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoSum is the sum of the pseudo header of an upper-layer packet of
// length n and protocol proto from src to dst (RFC 793, RFC 8200 8.1).
func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	s := csum(0, src.AsSlice())
	s = csum(s, dst.AsSlice())
	return s + uint32(proto) + uint32(n)
}

// ipFrame wraps payload (protocol proto) from src to dst in IP and an
// Ethernet header to dstMAC.
func ipFrame(dstMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, payload []byte) []byte {
	f := make([]byte, 14, 14+40+len(payload))
	copy(f[0:], dstMAC)
	copy(f[6:], remoteMAC)
	if src.Is4() {
		be.PutUint16(f[12:], etherIPv4)
		h := make([]byte, 20)
		h[0] = 0x45
		be.PutUint16(h[2:], uint16(20+len(payload)))
		be.PutUint16(h[6:], 0x4000) // DF
		h[8] = 64
		h[9] = proto
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		be.PutUint16(h[10:], csumDone(csum(0, h)))
		f = append(f, h...)
	} else {
		be.PutUint16(f[12:], etherIPv6)
		h := make([]byte, 40)
		h[0] = 0x60
		be.PutUint16(h[4:], uint16(len(payload)))
		h[6] = proto
		h[7] = 64
		copy(h[8:], src.AsSlice())
		copy(h[24:], dst.AsSlice())
		f = append(f, h...)
	}
	return append(f, payload...)
}

// craftRST answers syn as a host with nothing on the port: RST|ACK, seq
// 0, acknowledging the SYN (RFC 9293 3.10.7.1).
func craftRST(syn synPacket) []byte {
	tcp := make([]byte, 20)
	be.PutUint16(tcp[0:], syn.dst.Port())
	be.PutUint16(tcp[2:], syn.src.Port())
	be.PutUint32(tcp[8:], syn.seq+1)
	tcp[12] = 5 << 4
	tcp[13] = tcpRST | tcpACK
	be.PutUint16(tcp[16:], csumDone(csum(pseudoSum(syn.dst.Addr(), syn.src.Addr(), unix.IPPROTO_TCP, len(tcp)), tcp)))
	return ipFrame(syn.srcMAC, syn.dst.Addr(), syn.src.Addr(), unix.IPPROTO_TCP, tcp)
}

// craftICMP answers syn with port unreachable (ICMP type 3 code 3, ICMPv6
// type 1 code 4), quoting the start of the SYN's packet.
func craftICMP(syn synPacket) []byte {
	quote := syn.ip
	if len(quote) > snapICMPMax {
		quote = quote[:snapICMPMax]
	}
	m := make([]byte, 8, 8+len(quote))
	m = append(m, quote...)
	if syn.src.Addr().Is4() {
		m[0], m[1] = 3, 3
		be.PutUint16(m[2:], csumDone(csum(0, m)))
		return ipFrame(syn.srcMAC, syn.dst.Addr(), syn.src.Addr(), unix.IPPROTO_ICMP, m)
	}
	m[0], m[1] = 1, 4
	be.PutUint16(m[2:], csumDone(csum(pseudoSum(syn.dst.Addr(), syn.src.Addr(), unix.IPPROTO_ICMPV6, len(m)), m)))
	return ipFrame(syn.srcMAC, syn.dst.Addr(), syn.src.Addr(), unix.IPPROTO_ICMPV6, m)
}

// degradedReason is why the plan does not serve capability c, "" if it does.
func degradedReason(s *session, c string) string {
	for _, a := range s.plan {
		if a.Capability == c && a.Degraded != "" {
			return a.Degraded
		}
	}
	return ""
}

// noEventsIn asserts the tracer reported nothing in n's namespace (call
// after s.stop): B must not look like a local sender.
func noEventsIn(t *testing.T, s *session, n *netns, what string) {
	t.Helper()
	for _, e := range s.all(func(e *events.Event) bool { return e.Netns == n.ino }) {
		t.Errorf("event in %s's netns: %+v", what, *e)
	}
}

// A remote host refuses the client: a RST|ACK or an ICMP port unreachable
// arrives in SYN_SENT, connect() fails with ECONNREFUSED, and nothing on
// this host sent the answer. One refused event, cause remote, names the
// client (this test process) and the remote address. Without the hooks that
// would see this host's own RSTs and packet filter drops (before 5.17), the
// tracer cannot rule this host out: cause unknown.
func TestPrivRemoteRefusal(t *testing.T) {
	for _, answer := range []string{answerRST, answerICMP} {
		t.Run(answer, func(t *testing.T) {
			remoteFamilies(t, func(t *testing.T, client, target netip.Addr) {
				h := newTwoHosts(t)
				s := startTracer(t, Config{}, h.a, h.b)
				if answer == answerRST {
					requireCap(t, s, probe.CapClients)
				} else {
					requireCap(t, s, probe.CapConnectFailures)
				}
				want := events.CauseRemote
				for _, c := range []string{probe.CapRefusals, probe.CapFirewall} {
					if why := degradedReason(s, c); why != "" {
						want = events.CauseUnknown
						t.Logf("this kernel cannot serve %s (%s): the cause must be %s", c, why, want)
					}
				}
				h.resp.setAnswer(answer)
				err, local, fd := h.a.dialFrom(t, client, netip.AddrPortFrom(target, 2094), 0)
				unix.Close(fd)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("connect: %v, want ECONNREFUSED", err)
				}
				local, dst := unmap(local), netip.AddrPortFrom(target.Unmap(), 2094)
				if n := h.resp.synsFrom(local); n != 1 {
					t.Errorf("the remote host saw %d SYNs, want 1", n)
				}
				e := s.waitFor("refused", toDst(h.a, events.TypeRefused, dst))
				if e.Cause != want {
					t.Errorf("cause %q (%s), want %q", e.Cause, e.Explanation, want)
				}
				checkClient(t, e, local)
				if e.Firewall != nil || e.Listener != nil || e.KernelReason != "" {
					t.Errorf("firewall %+v listener %+v kernel_reason %q: nothing on this host answered", e.Firewall, e.Listener, e.KernelReason)
				}
				if answer == answerICMP && e.Answer != answer {
					t.Errorf("answer %q, want %q", e.Answer, answer)
				}
				if want == events.CauseRemote {
					if e.Answer != answer {
						t.Errorf("answer %q, want %q", e.Answer, answer)
					}
					if !strings.Contains(e.Explanation, dst.String()+" refused") || !strings.Contains(e.Explanation, "that host") {
						t.Errorf("explanation %q does not name the remote host", e.Explanation)
					}
				}
				if answer == answerICMP && (e.Attempt == nil || e.Attempt.Errno != "ECONNREFUSED" || e.Attempt.Retransmits != 0) {
					t.Errorf("attempt = %+v, want ECONNREFUSED after no retransmit", e.Attempt)
				}
				onlyOne(t, s, h.a, dst)
				noEventsIn(t, s, h.b, "the remote host")
			})
		})
	}
}

// Nothing answers: the remote host's kernel discards the SYNs (not a
// packet filter; before 5.17 no drop is seen at all, so the cause is
// unknown there). Either connect() with TCP_SYNCNT 1 fails with ETIMEDOUT,
// or the client gives up first (a non-blocking connect() closed after its
// first retransmit, as a client with its own connect timeout does). One
// timeout event, cause no_response, names the client and counts the SYNs
// the kernel sent.
func TestPrivNoResponse(t *testing.T) {
	for _, how := range []string{"timedout", "gave_up"} {
		t.Run(how, func(t *testing.T) {
			remoteFamilies(t, func(t *testing.T, client, target netip.Addr) {
				h := newTwoHosts(t)
				s := startTracer(t, Config{}, h.a, h.b)
				requireCap(t, s, probe.CapConnectFailures)
				want := events.CauseNoResponse
				if why := degradedReason(s, probe.CapFirewall); why != "" {
					want = events.CauseUnknown
					t.Logf("this kernel cannot serve %s (%s): this host's packet filter is not ruled out, the cause must be %s", probe.CapFirewall, why, want)
				}
				ap := netip.AddrPortFrom(target, 2095)

				start := time.Now()
				var err error
				var local netip.AddrPort
				var fd int
				wantErrno := "ETIMEDOUT"
				if how == "timedout" {
					err, local, fd = h.a.dialFrom(t, client, ap, 1)
					if !errors.Is(err, syscall.ETIMEDOUT) {
						unix.Close(fd)
						t.Fatalf("connect: %v, want ETIMEDOUT", err)
					}
				} else {
					wantErrno = ""
					err, local, fd = h.a.dialNonblock(t, client, ap)
					if !errors.Is(err, syscall.EINPROGRESS) {
						unix.Close(fd)
						t.Fatalf("connect: %v, want EINPROGRESS", err)
					}
					// The first retransmit goes at 1 s (TCP_TIMEOUT_INIT),
					// the next at 2 s at the earliest.
					time.Sleep(1500 * time.Millisecond)
				}
				unix.Close(fd)
				elapsed := time.Since(start)
				local, dst := unmap(local), netip.AddrPortFrom(target.Unmap(), 2095)

				syns := h.resp.synsFrom(local)
				if syns < 2 {
					t.Fatalf("the remote host saw %d SYNs, want the first and at least one retransmit", syns)
				}
				// The kernel's own count (TCP_INFO is no use: a failed
				// connect() disconnects the socket, which zeroes it); A is
				// a fresh netns.
				if n := h.a.snmp(t, "Tcp", "RetransSegs"); n != syns-1 {
					t.Errorf("netns A counted %d retransmitted segments, but the remote host saw %d SYNs", n, syns)
				}
				e := s.waitFor("timeout", toDst(h.a, events.TypeTimeout, dst))
				if e.Cause != want {
					t.Errorf("cause %q (%s), want %q", e.Cause, e.Explanation, want)
				}
				checkClient(t, e, local)
				if e.Firewall != nil {
					t.Errorf("firewall %+v: no packet filter dropped anything", e.Firewall)
				}
				// The attempt lasted at least one initial RTO (1 s) per SYN
				// when it timed out, past the last retransmit when the
				// client gave up.
				minMs := int64(syns)*1000 - 100
				if how == "gave_up" {
					minMs = int64(syns-1)*1000 - 100
				}
				if a := e.Attempt; a == nil || a.Errno != wantErrno || int(a.Retransmits) != syns-1 || a.StillWaiting ||
					a.WaitedMs < minMs || a.WaitedMs > elapsed.Milliseconds()+100 {
					t.Errorf("attempt = %+v; want errno %q, retransmits %d (the remote host saw %d SYNs), waited %d..%d ms",
						e.Attempt, wantErrno, syns-1, syns, minMs, elapsed.Milliseconds()+100)
				}
				says := map[events.Cause]string{events.CauseNoResponse: "did not drop them", events.CauseUnknown: "not ruled out"}[want]
				if !strings.Contains(e.Explanation, says) || !strings.Contains(e.Explanation, "ip route get "+dst.Addr().String()) {
					t.Errorf("explanation %q (want %q and the route to check)", e.Explanation, says)
				}
				if how == "gave_up" && !strings.Contains(e.Explanation, "gave up") {
					t.Errorf("explanation %q does not say the client gave up", e.Explanation)
				}
				onlyOne(t, s, h.a, dst)
				noEventsIn(t, s, h.b, "the remote host")
			})
		})
	}
}
