package host

import (
	"errors"
	"fmt"
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
	socks, err := f.Sockets(1 << tcpListenState)
	if err != nil {
		return nil, err
	}
	return queueListeners(socks), nil
}
