package host

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/rsttrace/rsttrace/internal/correlate"
	"golang.org/x/sys/unix"
)

// Per-namespace handles for the overflow poller. The kernel's listen-drop
// counters (TcpExtListenDrops) and each listener's drop counter (sk_drops,
// SK_MEMINFO_DROPS over sock_diag) are per network namespace. Files under
// /proc/thread-self/net and /proc/sys/net, and netlink sockets, stay bound
// to the namespace they were opened in: the poller enters a namespace once,
// opens them, and reads them from anywhere afterwards.

// NetnsFiles is what the poller keeps open for one network namespace.
type NetnsFiles struct {
	netstat   *os.File // /proc/thread-self/net/netstat
	somaxconn *os.File // /proc/sys/net/core/somaxconn
	cookies   *os.File // /proc/sys/net/ipv4/tcp_syncookies
	diag      int      // NETLINK_SOCK_DIAG socket
}

func (f *NetnsFiles) Close() error {
	var errs []error
	for _, c := range []*os.File{f.netstat, f.somaxconn, f.cookies} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	if f.diag > 0 {
		errs = append(errs, unix.Close(f.diag))
		f.diag = -1
	}
	return errors.Join(errs...)
}

// OpenNetns opens the handles of the network namespace of process pid,
// which must be netns (the inode): a pid can move or be reused.
func OpenNetns(proc string, pid, netns uint32) (*NetnsFiles, error) {
	target, err := os.Open(fmt.Sprintf("%s/%d/ns/net", proc, pid))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &st); err != nil {
		return nil, err
	}
	if uint32(st.Ino) != netns {
		return nil, fmt.Errorf("process %d is no longer in netns %d", pid, netns)
	}
	type result struct {
		f   *NetnsFiles
		err error
	}
	done := make(chan result, 1)
	go func() {
		// A thread that cannot go back to its namespace must not run
		// anything else: it stays locked and ends with the goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{nil, err}
			runtime.UnlockOSThread()
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, fmt.Errorf("setns to netns %d: %w", netns, err)}
			runtime.UnlockOSThread()
			return
		}
		f, oerr := openHere()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			if f != nil {
				f.Close()
			}
			done <- result{nil, fmt.Errorf("setns back from netns %d: %w", netns, err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{f, oerr}
	}()
	r := <-done
	return r.f, r.err
}

// openHere opens the handles of the calling thread's network namespace.
func openHere() (*NetnsFiles, error) {
	f := &NetnsFiles{diag: -1}
	var err error
	if f.netstat, err = os.Open("/proc/thread-self/net/netstat"); err != nil {
		return nil, err
	}
	// The sysctls are optional: only explanations use them.
	f.somaxconn, _ = os.Open("/proc/sys/net/core/somaxconn")
	f.cookies, _ = os.Open("/proc/sys/net/ipv4/tcp_syncookies")
	if f.diag, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening sock_diag netlink socket: %w", err)
	}
	return f, nil
}

// Counters reads TcpExtListenDrops and TcpExtListenOverflows.
func (f *NetnsFiles) Counters() (correlate.ListenCounters, error) {
	buf := make([]byte, 8192)
	n, err := f.netstat.ReadAt(buf, 0)
	if n == 0 && err != nil {
		return correlate.ListenCounters{}, err
	}
	return ParseNetstat(buf[:n])
}

// ParseNetstat finds ListenOverflows and ListenDrops in the TcpExt lines
// of /proc/net/netstat (a header line of names, then a line of values).
func ParseNetstat(b []byte) (correlate.ListenCounters, error) {
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) || values[0] != "TcpExt:" {
			continue
		}
		var c correlate.ListenCounters
		found := 0
		for j := 1; j < len(names); j++ {
			var dst *uint64
			switch names[j] {
			case "ListenDrops":
				dst = &c.Drops
			case "ListenOverflows":
				dst = &c.Overflows
			default:
				continue
			}
			v, err := strconv.ParseUint(values[j], 10, 64)
			if err != nil {
				return c, fmt.Errorf("netstat: TcpExt %s: %w", names[j], err)
			}
			*dst = v
			found++
		}
		if found != 2 {
			return c, errors.New("netstat: no TcpExt ListenDrops/ListenOverflows")
		}
		return c, nil
	}
	return correlate.ListenCounters{}, errors.New("netstat: no TcpExt lines")
}

func (f *NetnsFiles) Sysctls() (somaxconn, syncookies int) {
	return sysctl(f.somaxconn), sysctl(f.cookies)
}

// sysctl reads an integer sysctl file, -1 if unknown.
func sysctl(f *os.File) int {
	if f == nil {
		return -1
	}
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	v, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return -1
	}
	return v
}

// sock_diag wire format (linux/inet_diag.h, linux/sock_diag.h).
const (
	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
	inetDiagSkmeminfo   = 7 // INET_DIAG_SKMEMINFO
	tcpListenState      = 10
)

// Listeners dumps the namespace's TCP listeners with their drop counters.
func (f *NetnsFiles) Listeners() ([]correlate.QueueListener, error) {
	var out []correlate.QueueListener
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ls, err := diagDump(f.diag, fam)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

func diagDump(fd int, family uint8) ([]correlate.QueueListener, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // seq
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagSkmeminfo - 1)    // idiag_ext
	ne.PutUint32(r[4:], 1<<tcpListenState) // idiag_states
	// The socket id (r[8:56]) stays zero: no filter, every listener.
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []correlate.QueueListener
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		ls, done, err := parseDiag(buf[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
		if done {
			return out, nil
		}
	}
}

// parseDiag parses one datagram of a sock_diag dump reply; done is set at
// NLMSG_DONE.
func parseDiag(b []byte) (out []correlate.QueueListener, done bool, err error) {
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

// parseDiagMsg decodes struct inet_diag_msg and its SKMEMINFO attribute.
func parseDiagMsg(m []byte) (correlate.QueueListener, bool) {
	var d correlate.QueueListener
	if len(m) < sizeofInetDiagMsg {
		return d, false
	}
	ne := binary.NativeEndian
	family, state := m[0], m[1]
	if state != tcpListenState {
		return d, false
	}
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
	d.Ino = uint64(ne.Uint32(m[68:]))
	attrs := m[sizeofInetDiagMsg:]
	for len(attrs) >= 4 {
		al := int(ne.Uint16(attrs[0:]))
		at := ne.Uint16(attrs[2:])
		if al < 4 || al > len(attrs) {
			break
		}
		if at == inetDiagSkmeminfo {
			v := attrs[4:al]
			if off := unix.SK_MEMINFO_DROPS * 4; len(v) >= off+4 {
				d.Drops = ne.Uint32(v[off:])
			}
		}
		adv := (al + 3) &^ 3
		if adv > len(attrs) {
			break
		}
		attrs = attrs[adv:]
	}
	return d, true
}
