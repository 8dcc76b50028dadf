package host

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/correlate"
)

// Sockets as sock_diag sees them, per network namespace: what `ss -ltn`
// prints, with what /proc/net/tcp lacks (the effective backlog, IPV6_V6ONLY,
// the listener's drop counter) and the sockets /proc/net/tcp never lists
// (bound but neither listening nor connected).

// TCP states (include/net/tcp_states.h) a dump can ask for.
// TCPBoundInactive is not a socket's state but sock_diag's name for a
// socket that is bound and neither listens nor connects (Linux 6.10+).
const (
	TCPListen        = tcpListenState
	TCPBoundInactive = 13
)

// inetDiagSkv6only is INET_DIAG_SKV6ONLY: inet_diag_msg_attrs_fill puts it
// in every reply about an AF_INET6 socket, whatever idiag_ext asks.
const inetDiagSkv6only = 11

// Socket is one TCP socket as sock_diag reports it.
type Socket struct {
	Local netip.AddrPort
	// State is the TCP state: TCPListen, or TCP_CLOSE (7) for a bound-only
	// socket dumped for TCPBoundInactive.
	State uint8
	Ino   uint64
	UID   uint32
	// Queued is the accept queue length and Backlog the effective backlog
	// (sk_ack_backlog and sk_max_ack_backlog) for a listener.
	Queued, Backlog uint32
	// Drops is sk_drops (SK_MEMINFO_DROPS).
	Drops uint32
	// V6Only is IPV6_V6ONLY of an AF_INET6 socket.
	V6Only bool
}

// Sockets dumps the namespace's TCP sockets in the states of the bit mask
// states (1<<TCPListen | 1<<TCPBoundInactive). Bound sockets that neither
// listen nor connect are dumped from Linux 6.10 on, when TCPBoundInactive
// is asked for (inet_diag walks the bind hash since commit 91051f003948,
// "tcp: Dump bound-only sockets in inet_diag"); earlier kernels return
// none.
func (f *NetnsFiles) Sockets(states uint32) ([]Socket, error) {
	var out []Socket
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		s, err := diagDump(f.diag, fam, states)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

func queueListeners(socks []Socket) []correlate.QueueListener {
	var out []correlate.QueueListener
	for _, s := range socks {
		if s.State == tcpListenState {
			out = append(out, correlate.QueueListener{Local: s.Local, Ino: s.Ino, Queued: s.Queued, Backlog: s.Backlog, Drops: s.Drops})
		}
	}
	return out
}

func diagDump(fd int, family uint8, states uint32) ([]Socket, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // seq
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagSkmeminfo - 1) // idiag_ext
	ne.PutUint32(r[4:], states)         // idiag_states
	// The socket id (r[8:56]) stays zero: no filter, every socket.
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []Socket
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		s, done, err := parseDiagSockets(buf[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
		if done {
			return out, nil
		}
	}
}

// parseDiag parses one datagram of a listener dump reply; done is set at
// NLMSG_DONE.
func parseDiag(b []byte) (out []correlate.QueueListener, done bool, err error) {
	s, done, err := parseDiagSockets(b)
	return queueListeners(s), done, err
}

// parseDiagSockets parses one datagram of a sock_diag dump reply.
func parseDiagSockets(b []byte) (out []Socket, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return out, false, fmt.Errorf("sock_diag: bad message length %d", l)
		}
		msg := b[unix.NLMSG_HDRLEN:l]
		switch typ {
		case unix.NLMSG_DONE:
			return out, true, nil
		case unix.NLMSG_ERROR:
			if len(msg) >= 4 {
				if e := int32(ne.Uint32(msg)); e != 0 {
					return out, false, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
				}
			}
			return out, true, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			if d, ok := parseDiagMsg(msg); ok {
				out = append(out, d)
			}
		}
		adv := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return out, false, nil
}

// parseDiagMsg decodes struct inet_diag_msg and its SKMEMINFO and
// SKV6ONLY attributes.
func parseDiagMsg(m []byte) (Socket, bool) {
	var d Socket
	if len(m) < sizeofInetDiagMsg {
		return d, false
	}
	ne := binary.NativeEndian
	family := m[0]
	d.State = m[1]
	port := binary.BigEndian.Uint16(m[4:])
	var a netip.Addr
	switch family {
	case unix.AF_INET:
		a = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		a = netip.AddrFrom16([16]byte(m[8:24]))
	default:
		return d, false
	}
	d.Local = netip.AddrPortFrom(a, port)
	d.Queued = ne.Uint32(m[56:])  // idiag_rqueue: sk_ack_backlog for listeners
	d.Backlog = ne.Uint32(m[60:]) // idiag_wqueue: sk_max_ack_backlog
	d.UID = ne.Uint32(m[64:])
	d.Ino = uint64(ne.Uint32(m[68:]))
	if d.State != tcpListenState {
		d.Queued, d.Backlog = 0, 0 // other states: bytes in the queues
	}
	attrs := m[sizeofInetDiagMsg:]
	for len(attrs) >= 4 {
		al := int(ne.Uint16(attrs[0:]))
		at := ne.Uint16(attrs[2:])
		if al < 4 || al > len(attrs) {
			break
		}
		v := attrs[4:al]
		switch at {
		case inetDiagSkmeminfo:
			if off := unix.SK_MEMINFO_DROPS * 4; len(v) >= off+4 {
				d.Drops = ne.Uint32(v[off:])
			}
		case inetDiagSkv6only:
			d.V6Only = len(v) >= 1 && v[0] != 0
		}
		adv := (al + 3) &^ 3
		if adv > len(attrs) {
			break
		}
		attrs = attrs[adv:]
	}
	return d, true
}

// InNetns runs fn on a thread that entered the network namespace of the
// file nsPath (/proc/PID/ns/net, /run/netns/NAME). Sockets, and files
// under /proc/thread-self/net and /proc/sys/net, opened by fn stay bound
// to that namespace after it returns.
func InNetns(nsPath string, fn func() error) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		// A thread that cannot go back to its namespace must not run
		// anything else: it stays locked and ends with the goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering network namespace %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leaving network namespace %s: %w", nsPath, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// OpenNetnsPath opens the handles of the network namespace of the file
// nsPath.
func OpenNetnsPath(nsPath string) (*NetnsFiles, error) {
	var f *NetnsFiles
	err := InNetns(nsPath, func() error {
		var err error
		f, err = openHere()
		return err
	})
	if err != nil && f != nil {
		f.Close()
		f = nil
	}
	return f, err
}

// Namespace is a network namespace on this host and a file that refers
// to it.
type Namespace struct {
	Inode uint32
	// Path is /proc/PID/ns/net of one process in it, or its /run/netns
	// bind mount when no process is in it.
	Path string
	// Pid is that process, 0 without one.
	Pid uint32
	// Name is its `ip netns` name, if it has one.
	Name string
}

// Namespaces lists the network namespaces that have a process in them
// (one process each, the lowest pid) and those that only have an `ip
// netns` name in netnsDir, sorted by inode.
func Namespaces(proc, netnsDir string) []Namespace {
	byIno := map[uint32]*Namespace{}
	for _, pid := range pids(proc) {
		ns, err := nsInode(proc, pid)
		if err != nil || byIno[ns] != nil {
			continue
		}
		n, _ := strconv.ParseUint(pid, 10, 32)
		byIno[ns] = &Namespace{Inode: ns, Path: filepath.Join(proc, pid, "ns", "net"), Pid: uint32(n)}
	}
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			p := filepath.Join(netnsDir, e.Name())
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || st.Ino == 0 {
				continue
			}
			ino := uint32(st.Ino)
			if n := byIno[ino]; n != nil {
				if n.Name == "" {
					n.Name = e.Name()
				}
				continue
			}
			byIno[ino] = &Namespace{Inode: ino, Path: p, Name: e.Name()}
		}
	}
	out := make([]Namespace, 0, len(byIno))
	for _, n := range byIno {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Inode < out[j].Inode })
	return out
}

// Owners maps socket inodes to the first process that has them open
// (a walk of every /proc/PID/fd: for one-off lookups, never per record).
func Owners(proc string, inodes []uint64) map[uint64]events.Process {
	want := make(map[uint64]bool, len(inodes))
	for _, i := range inodes {
		want[i] = true
	}
	return socketOwners(proc, want)
}

// fillFromDiag sets Backlog and V6Only of snapshot listeners from a
// sock_diag dump of their namespace (/proc/net/tcp has neither). A
// namespace that cannot be entered (gone, or a fake procfs in tests) is
// left as /proc said.
func fillFromDiag(proc string, out []SnapshotListener, nsPid map[uint32]string) {
	idx := map[uint64]int{}
	for i := range out {
		idx[out[i].Ino] = i
	}
	for ns, pid := range nsPid {
		path := filepath.Join(proc, pid, "ns", "net")
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || uint32(st.Ino) != ns {
			continue // exited, or its pid was reused elsewhere
		}
		f, err := OpenNetnsPath(path)
		if err != nil {
			continue
		}
		socks, err := f.Sockets(1 << tcpListenState)
		f.Close()
		if err != nil {
			continue
		}
		for _, s := range socks {
			if i, ok := idx[s.Ino]; ok && out[i].Netns == ns {
				out[i].Backlog = s.Backlog
				out[i].V6Only = s.V6Only
			}
		}
	}
}
