// Package host reads the host's own state: /proc (the sockets and their
// owners, as `ss -ltnp` does), network namespaces (entered once with setns),
// their TcpExt counters and sock_diag listener dumps. Nothing here runs per
// record on the hot path: the start-up snapshot, the overflow poller and the
// rare lookups a record cannot answer.
package host

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rsttrace/rsttrace/events"
)

// What /proc says about TCP sockets: the same sources as `ss -ltnp`, read
// once at start-up (listeners that existed before the tracer) and on the
// rare occasions a record lacks something (the holder of a port).

// procSock is one line of /proc/PID/net/tcp{,6}.
type procSock struct {
	local netip.AddrPort
	state uint8
	ino   uint64
}

const tcpListen = 0x0a

// readProcNetTCP parses /proc/<pid>/net/tcp and tcp6: the sockets of the
// network namespace pid lives in.
func readProcNetTCP(proc string, pid string) ([]procSock, error) {
	return readProcNetTCPFiles(proc, pid, false)
}

// readProcListeners is readProcNetTCP for listeners only. The kernel lists
// them first (tcp_seq_start walks the listening hash before the
// established one, for tcp and tcp6 alike), so the read stops at the first
// other socket: on a busy host the rest is every connection and TIME_WAIT
// socket of the namespace, which the kernel would format and this would
// parse for nothing (300 ms of start-up CPU next to a loaded web server).
func readProcListeners(proc string, pid string) ([]procSock, error) {
	return readProcNetTCPFiles(proc, pid, true)
}

func readProcNetTCPFiles(proc string, pid string, listeners bool) ([]procSock, error) {
	var out []procSock
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(filepath.Join(proc, pid, "net", f))
		if err != nil {
			if os.IsNotExist(err) && f == "tcp6" {
				continue // IPv6 disabled
			}
			return nil, err
		}
		s, err := scanProcNetTCP(fh, listeners)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("parsing %s/%s/net/%s: %w", proc, pid, f, err)
		}
		out = append(out, s...)
	}
	return out, nil
}

// parseProcNetTCP parses the text of /proc/net/tcp or /proc/net/tcp6.
func parseProcNetTCP(b []byte) ([]procSock, error) {
	return scanProcNetTCP(bytes.NewReader(b), false)
}

// scanProcNetTCP parses /proc/net/tcp{,6} text from r; listeners: only the
// leading listeners, stopping at the first other line.
func scanProcNetTCP(r io.Reader, listeners bool) ([]procSock, error) {
	var out []procSock
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("state %q: %w", f[3], err)
		}
		if listeners && st != tcpListen {
			break
		}
		local, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, err
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out = append(out, procSock{local: local, state: uint8(st), ino: ino})
	}
	return out, sc.Err()
}

// parseHexAddrPort parses "0100007F:1F90": the address as the kernel's
// 32-bit words printed in host (little endian) order, the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad hex", s)
	}
	for i := 0; i < len(raw); i += 4 { // each word is little endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// nsInode returns the inode of /proc/<pid>/ns/net.
func nsInode(proc, pid string) (uint32, error) {
	l, err := os.Readlink(filepath.Join(proc, pid, "ns", "net"))
	if err != nil {
		return 0, err
	}
	// "net:[4026531840]"
	l = strings.TrimSuffix(strings.TrimPrefix(l, "net:["), "]")
	n, err := strconv.ParseUint(l, 10, 32)
	return uint32(n), err
}

func pids(proc string) []string {
	ents, _ := os.ReadDir(proc)
	var out []string
	for _, e := range ents {
		if n := e.Name(); n[0] >= '0' && n[0] <= '9' {
			out = append(out, n)
		}
	}
	return out
}

func readComm(proc, pid string) string {
	b, _ := os.ReadFile(filepath.Join(proc, pid, "comm"))
	return strings.TrimSuffix(string(b), "\n")
}

// socketOwners maps socket inodes in want to the first process that has
// them open, by reading every /proc/PID/fd link.
func socketOwners(proc string, want map[uint64]bool) map[uint64]events.Process {
	owners := map[uint64]events.Process{}
	for _, pid := range pids(proc) {
		if len(owners) == len(want) {
			break
		}
		dir := filepath.Join(proc, pid, "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or a kernel thread
		}
		comm := ""
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") || !strings.HasSuffix(l, "]") || len(l) <= len("socket:[]") {
				continue
			}
			ino, err := strconv.ParseUint(l[len("socket:["):len(l)-1], 10, 64)
			if err != nil || !want[ino] {
				continue
			}
			if _, seen := owners[ino]; seen {
				continue
			}
			if comm == "" {
				comm = readComm(proc, pid)
			}
			n, _ := strconv.ParseUint(pid, 10, 32)
			owners[ino] = events.Process{Pid: uint32(n), Comm: comm}
		}
	}
	return owners
}

// SnapshotListener is a listener found at start-up.
type SnapshotListener struct {
	Ino uint64
	events.Listener
}

// Snapshot returns the TCP listeners of every network namespace that has a
// process in it, with the processes that own them, their effective
// backlog and IPV6_V6ONLY (from sock_diag, where the namespace can be
// entered).
func Snapshot(proc string) ([]SnapshotListener, error) {
	seen := map[uint32]bool{}
	nsPid := map[uint32]string{}
	var out []SnapshotListener
	want := map[uint64]bool{}
	for _, pid := range pids(proc) {
		ns, err := nsInode(proc, pid)
		if err != nil || seen[ns] {
			continue
		}
		socks, err := readProcListeners(proc, pid)
		if err != nil {
			continue // the process exited under us
		}
		seen[ns] = true
		nsPid[ns] = pid
		for _, s := range socks {
			if s.state != tcpListen || s.ino == 0 || want[s.ino] {
				continue
			}
			want[s.ino] = true
			out = append(out, SnapshotListener{Ino: s.ino, Listener: events.Listener{
				Addr: s.local.Addr(), Port: s.local.Port(), Netns: ns,
			}})
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no readable network namespace under %s", proc)
	}
	owners := socketOwners(proc, want)
	for i := range out {
		out[i].Process = owners[out[i].Ino]
	}
	fillFromDiag(proc, out, nsPid)
	return out, nil
}

// procHolder finds the process holding local TCP port in the netns of pid.
func procHolder(proc string, pid uint32, port uint16) *events.Process {
	socks, err := readProcNetTCP(proc, strconv.FormatUint(uint64(pid), 10))
	if err != nil {
		return nil
	}
	want := map[uint64]bool{}
	for _, s := range socks {
		if s.local.Port() == port && s.ino != 0 {
			want[s.ino] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	for _, p := range socketOwners(proc, want) {
		return &p
	}
	return nil
}

// procPortOf finds the local port of socket inode ino in the netns of pid.
func procPortOf(proc string, pid uint32, ino uint64) uint16 {
	socks, _ := readProcNetTCP(proc, strconv.FormatUint(uint64(pid), 10))
	for _, s := range socks {
		if s.ino == ino {
			return s.local.Port()
		}
	}
	return 0
}

// procHasSocket reports whether pid still has socket inode ino open.
func procHasSocket(proc string, pid uint32, ino uint64) bool {
	dir := filepath.Join(proc, strconv.FormatUint(uint64(pid), 10), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	for _, fd := range fds {
		if l, _ := os.Readlink(filepath.Join(dir, fd.Name())); l == want {
			return true
		}
	}
	return false
}

// Procfs answers the correlator's host lookups from a procfs mount.
type Procfs struct {
	// Root is where procfs is mounted ("/proc").
	Root string
}

// PortHolder finds the process holding local TCP port in the netns of pid.
func (p Procfs) PortHolder(pid uint32, port uint16) *events.Process {
	return procHolder(p.Root, pid, port)
}

// HasSocket reports whether pid still has socket inode ino open.
func (p Procfs) HasSocket(pid uint32, ino uint64) bool { return procHasSocket(p.Root, pid, ino) }

// SocketPort finds the local port of socket inode ino in the netns of pid.
func (p Procfs) SocketPort(pid uint32, ino uint64) uint16 { return procPortOf(p.Root, pid, ino) }

// Netns is the inode of the network namespace of process pid ("self").
func (p Procfs) Netns(pid string) (uint32, error) { return nsInode(p.Root, pid) }
