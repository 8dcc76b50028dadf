package host

import (
	"cmp"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/correlate"
	"github.com/rsttrace/rsttrace/internal/record"
)

// /proc/net/tcp and tcp6 as Linux 6.x prints them.
const (
	ptHeader4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	ptHeader6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

	ptTCP = ptHeader4 +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0\n" +
		"   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 34567 1 0000000000000000 20 4 30 10 -1\n" +
		"   3: 0100007F:D431 0100007F:1F90 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000\n"

	ptTCP6 = ptHeader6 +
		"   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 45678 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 56789 1 0000000000000000 100 0 0 10 0\n" +
		"   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 67890 1 0000000000000000 100 0 0 10 0\n" +
		"   3: 000080FE000000000000000001000000:01BB 000080FE000000000000000002000000:D000 01 00000000:00000000 00:00000000 00000000  1000        0 78901 1 0000000000000000 20 4 30 10 -1\n"

	// Another network namespace: IPv6 disabled, one listener.
	ptTCPOther = ptHeader4 +
		"   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77777 1 0000000000000000 100 0 0 10 0\n"

	ptNetnsHost  = 4026531840
	ptNetnsOther = 4026532000
)

func ptAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseProcNetTCP(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []procSock
	}{
		{
			name: "tcp",
			in:   ptTCP,
			want: []procSock{
				{local: ptAP("127.0.0.1:8080"), state: tcpListen, ino: 12345},
				{local: ptAP("0.0.0.0:22"), state: tcpListen, ino: 23456},
				{local: ptAP("127.0.0.1:8080"), state: 0x01, ino: 34567},
				{local: ptAP("127.0.0.1:54321"), state: 0x06, ino: 0},
			},
		},
		{
			name: "tcp6",
			in:   ptTCP6,
			want: []procSock{
				{local: ptAP("[::]:80"), state: tcpListen, ino: 45678},
				{local: ptAP("[::1]:8081"), state: tcpListen, ino: 56789},
				{local: ptAP("[::ffff:127.0.0.1]:8082"), state: tcpListen, ino: 67890},
				{local: ptAP("[fe80::1]:443"), state: 0x01, ino: 78901},
			},
		},
		{name: "header only", in: ptHeader4, want: nil},
		{name: "empty", in: "", want: nil},
		{
			name: "short lines are skipped",
			in:   ptHeader4 + "   0: 0100007F:1F90 00000000:0000 0A\n\n" + strings.Split(ptTCP, "\n")[2] + "\n",
			want: []procSock{{local: ptAP("0.0.0.0:22"), state: tcpListen, ino: 23456}},
		},
		{
			name: "no trailing newline",
			in:   strings.TrimSuffix(ptTCPOther, "\n"),
			want: []procSock{{local: ptAP("0.0.0.0:8080"), state: tcpListen, ino: 77777}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNetTCP([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// The listeners-only read stops at the first other socket: what follows
// (here a line that would not even parse) is never looked at.
func TestScanProcListeners(t *testing.T) {
	in := ptTCP + "   4: 0100007G:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 34568 1 0000000000000000 20 4 30 10 -1\n"
	got, err := scanProcNetTCP(strings.NewReader(in), true)
	if err != nil {
		t.Fatal(err)
	}
	want := []procSock{
		{local: ptAP("127.0.0.1:8080"), state: tcpListen, ino: 12345},
		{local: ptAP("0.0.0.0:22"), state: tcpListen, ino: 23456},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if _, err := scanProcNetTCP(strings.NewReader(in), false); err == nil {
		t.Error("the full read parsed the bad line: the listeners-only read proved nothing")
	}
}

func TestParseProcNetTCPErrors(t *testing.T) {
	line := func(local, st, ino string) string {
		return ptHeader4 + "   0: " + local + " 00000000:0000 " + st + " 00000000:00000000 00:00000000 00000000  1000        0 " + ino + " 1 0000000000000000 100 0 0 10 0\n"
	}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"bad address", line("0100007G:1F90", "0A", "1"), "bad hex"},
		{"bad state", line("0100007F:1F90", "XX", "1"), "state \"XX\""},
		{"state too big", line("0100007F:1F90", "100", "1"), "state \"100\""},
		{"bad inode", line("0100007F:1F90", "0A", "-1"), "inode \"-1\""},
		{"hex inode", line("0100007F:1F90", "0A", "0x10"), "inode \"0x10\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNetTCP([]byte(tt.in))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q in it", err, tt.want)
			}
		})
	}
}

func TestParseHexAddrPort(t *testing.T) {
	tests := []struct {
		in      string
		want    netip.AddrPort
		wantErr string
	}{
		{in: "0100007F:1F90", want: ptAP("127.0.0.1:8080")},
		{in: "00000000:0000", want: ptAP("0.0.0.0:0")},
		{in: "0101A8C0:FFFF", want: ptAP("192.168.1.1:65535")},
		{in: "00000000000000000000000000000000:0050", want: ptAP("[::]:80")},
		{in: "00000000000000000000000001000000:1F90", want: ptAP("[::1]:8080")},
		{in: "0000000000000000FFFF00000100007F:1F90", want: ptAP("[::ffff:127.0.0.1]:8080")},
		{in: "B80D0120000000000000000001000000:0016", want: ptAP("[2001:db8::1]:22")},
		{in: "b80d0120000000000000000001000000:0016", want: ptAP("[2001:db8::1]:22")},
		{in: "0100007F", wantErr: "no port"},
		{in: "", wantErr: "no port"},
		{in: ":1F90", wantErr: "bad hex"},
		{in: "0100007:1F90", wantErr: "bad hex"},
		{in: "0100007F00:1F90", wantErr: "bad hex"},
		{in: "0100007Z:1F90", wantErr: "bad hex"},
		{in: "000000000000000000000000010000:1F90", wantErr: "bad hex"},
		{in: "0100007F:", wantErr: "port \"\""},
		{in: "0100007F:XYZ", wantErr: "port \"XYZ\""},
		{in: "0100007F:10000", wantErr: "port \"10000\""},
		{in: "0100007F:1F90:1", wantErr: "port \"1F90:1\""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseHexAddrPort(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("parseHexAddrPort(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want %q in it", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseHexAddrPort(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// ptProc describes one fake /proc/<pid>.
type ptProc struct {
	pid   string
	netns string            // the ns/net link; "" for none
	tcp   *string           // net/tcp; nil for none
	tcp6  *string           // net/tcp6; nil for none (IPv6 disabled)
	fds   map[string]string // fd -> link
	comm  string            // "" for no comm file
}

func ptStr(s string) *string { return &s }

// ptTree builds a fake proc tree:
//
//	100 nginx: host netns, owns 12345 (127.0.0.1:8080) and 45678 ([::]:80)
//	200 sshd: host netns, shares 12345, owns 23456 (0.0.0.0:22) and 67890
//	300 app: other netns (no tcp6), owns 77777 (0.0.0.0:8080)
//	400: no ns/net link (kernel thread or gone)
//	500: a netns whose net/tcp cannot be read
//
// 56789 ([::1]:8081) has no owner; 34567 is an established socket.
func ptTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	procs := []ptProc{
		{pid: "100", netns: "net:[4026531840]", tcp: ptStr(ptTCP), tcp6: ptStr(ptTCP6), comm: "nginx\n",
			fds: map[string]string{"0": "/dev/null", "1": "pipe:[999]", "3": "socket:[12345]", "4": "socket:[45678]", "5": "socket:[34567]", "6": "anon_inode:[eventpoll]"}},
		{pid: "200", netns: "net:[4026531840]", tcp: ptStr(ptTCP), tcp6: ptStr(ptTCP6), comm: "sshd\n",
			fds: map[string]string{"3": "socket:[12345]", "4": "socket:[23456]", "10": "socket:[67890]", "11": "socket:[abc]"}},
		{pid: "300", netns: "net:[4026532000]", tcp: ptStr(ptTCPOther), comm: "app\n",
			fds: map[string]string{"3": "socket:[77777]"}},
		{pid: "400", tcp: ptStr(ptTCP), comm: "kworker/0:1\n"},
		{pid: "500", netns: "net:[4026532111]", comm: "gone\n"},
	}
	mk := func(p ...string) string {
		path := filepath.Join(append([]string{dir}, p...)...)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		mk(p.pid)
		if p.netns != "" {
			if err := os.Symlink(p.netns, filepath.Join(mk(p.pid, "ns"), "net")); err != nil {
				t.Fatal(err)
			}
		}
		net := mk(p.pid, "net")
		if p.tcp != nil {
			write(filepath.Join(net, "tcp"), *p.tcp)
		}
		if p.tcp6 != nil {
			write(filepath.Join(net, "tcp6"), *p.tcp6)
		}
		fd := mk(p.pid, "fd")
		for n, l := range p.fds {
			if err := os.Symlink(l, filepath.Join(fd, n)); err != nil {
				t.Fatal(err)
			}
		}
		if p.comm != "" {
			write(filepath.Join(dir, p.pid, "comm"), p.comm)
		}
	}
	// What else is in /proc: not processes.
	mk("sys", "net")
	write(filepath.Join(dir, "meminfo"), "MemTotal: 1 kB\n")
	if err := os.Symlink("100", filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSnapshot(t *testing.T) {
	proc := ptTree(t)
	got, err := Snapshot(proc)
	if err != nil {
		t.Fatal(err)
	}
	nginx := events.Process{Pid: 100, Comm: "nginx"}
	sshd := events.Process{Pid: 200, Comm: "sshd"}
	app := events.Process{Pid: 300, Comm: "app"}
	lst := func(ino uint64, p events.Process, ap string, ns uint32) SnapshotListener {
		a := ptAP(ap)
		return SnapshotListener{Ino: ino, Listener: events.Listener{Process: p, Addr: a.Addr(), Port: a.Port(), Netns: ns}}
	}
	want := []SnapshotListener{
		lst(12345, nginx, "127.0.0.1:8080", ptNetnsHost),
		lst(23456, sshd, "0.0.0.0:22", ptNetnsHost),
		lst(45678, nginx, "[::]:80", ptNetnsHost),
		lst(56789, events.Process{}, "[::1]:8081", ptNetnsHost),
		lst(67890, sshd, "[::ffff:127.0.0.1]:8082", ptNetnsHost),
		lst(77777, app, "0.0.0.0:8080", ptNetnsOther),
	}
	slices.SortFunc(got, func(a, b SnapshotListener) int { return cmp.Compare(a.Ino, b.Ino) })
	if len(got) != len(want) {
		t.Fatalf("got %d listeners, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		t.Run(want[i].Addr.String()+"/"+want[i].Comm, func(t *testing.T) {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("got  %+v\nwant %+v", got[i], want[i])
			}
		})
	}
}

// TestSnapshotFeedsCorrelator: snapshot listeners keep their owner when
// their close record comes.
func TestSnapshotFeedsCorrelator(t *testing.T) {
	snap, err := Snapshot(ptTree(t))
	if err != nil {
		t.Fatal(err)
	}
	c := correlate.New(nil)
	for _, l := range snap {
		c.AddListener(l.Ino, l.Listener)
	}
	if c.Listeners() != len(snap) {
		t.Fatalf("Listeners() = %d, want %d", c.Listeners(), len(snap))
	}
	var evs []*events.Event
	r := &record.Record{Type: record.ListenClose, Ts: 1, Netns: ptNetnsHost, Family: record.AFInet, Dport: 8080, Ino: 12345}
	copy(r.Daddr[:], []byte{127, 0, 0, 1})
	r.Proc.Pid = 200
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r.Proc.Comm[0])), 16), "sshd")
	if err := c.Handle(r, func(e *events.Event) error { evs = append(evs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Listener == nil {
		t.Fatalf("events = %+v", evs)
	}
	l := evs[0].Listener
	if l.Process != (events.Process{Pid: 100, Comm: "nginx"}) || l.ClosedBy == nil || l.ClosedBy.Pid != 200 {
		t.Errorf("listen_close listener = %+v closed by %v, want nginx (pid 100) closed by pid 200", l, l.ClosedBy)
	}
}

func TestSnapshotErrors(t *testing.T) {
	tests := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }},
		{"empty", func(t *testing.T) string { return t.TempDir() }},
		{"no readable netns", func(t *testing.T) string {
			d := t.TempDir()
			if err := os.MkdirAll(filepath.Join(d, "1", "ns"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("net:[1]", filepath.Join(d, "1", "ns", "net")); err != nil {
				t.Fatal(err)
			}
			return d // no net/tcp
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Snapshot(tt.dir(t))
			if err == nil {
				t.Fatalf("Snapshot = %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), "no readable network namespace") {
				t.Errorf("error = %q", err)
			}
		})
	}
}

func TestNsInode(t *testing.T) {
	dir := t.TempDir()
	links := map[string]string{"1": "net:[4026531840]", "2": "garbage", "3": "net:[99999999999]"}
	for pid, l := range links {
		if err := os.MkdirAll(filepath.Join(dir, pid, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l, filepath.Join(dir, pid, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		pid     string
		want    uint32
		wantErr bool
	}{
		{"1", 4026531840, false},
		{"2", 0, true},
		{"3", 0, true}, // does not fit 32 bits
		{"4", 0, true}, // no such process
	}
	for _, tt := range tests {
		t.Run(tt.pid, func(t *testing.T) {
			got, err := nsInode(dir, tt.pid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("nsInode = %d, %v; want error %v", got, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("nsInode = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestReadProcNetTCP(t *testing.T) {
	proc := ptTree(t)
	tests := []struct {
		pid     string
		want    int
		wantErr bool
	}{
		{"100", 8, false}, // tcp and tcp6
		{"300", 1, false}, // no tcp6: IPv6 disabled is not an error
		{"500", 0, true},  // no tcp
		{"999", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.pid, func(t *testing.T) {
			got, err := readProcNetTCP(proc, tt.pid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readProcNetTCP = %v, %v; want error %v", got, err, tt.wantErr)
			}
			if len(got) != tt.want {
				t.Errorf("got %d sockets, want %d", len(got), tt.want)
			}
		})
	}
	t.Run("parse error names the file", func(t *testing.T) {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, "7", "net"), 0o755); err != nil {
			t.Fatal(err)
		}
		bad := ptHeader4 + "   0: 0100007F:1F90 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1 1\n"
		if err := os.WriteFile(filepath.Join(d, "7", "net", "tcp"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readProcNetTCP(d, "7")
		if err == nil || !strings.Contains(err.Error(), filepath.Join("7", "net", "tcp")) {
			t.Errorf("error = %v, want it to name 7/net/tcp", err)
		}
	})
}

func TestProcHolder(t *testing.T) {
	proc := ptTree(t)
	tests := []struct {
		name string
		pid  uint32
		port uint16
		want *events.Process
	}{
		{"listener in the host netns", 200, 8080, &events.Process{Pid: 100, Comm: "nginx"}},
		{"same port, other netns", 300, 8080, &events.Process{Pid: 300, Comm: "app"}},
		{"IPv6 listener", 100, 80, &events.Process{Pid: 100, Comm: "nginx"}},
		{"v4-mapped listener", 100, 8082, &events.Process{Pid: 200, Comm: "sshd"}},
		{"port held by a socket nobody owns", 100, 8081, nil},
		{"free port", 100, 9999, nil},
		{"TIME_WAIT only (inode 0)", 100, 54321, nil},
		{"free in the other netns", 300, 22, nil},
		{"no such process", 999, 8080, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := procHolder(proc, tt.pid, tt.port); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("procHolder(%d, %d) = %v, want %v", tt.pid, tt.port, got, tt.want)
			}
		})
	}
}

func TestProcHasSocket(t *testing.T) {
	proc := ptTree(t)
	tests := []struct {
		name string
		pid  uint32
		ino  uint64
		want bool
	}{
		{"own socket", 100, 12345, true},
		{"shared socket", 200, 12345, true},
		{"other's socket", 300, 12345, false},
		{"IPv6 socket", 100, 45678, true},
		{"not open", 100, 23456, false},
		{"prefix of an open inode", 100, 1234, false},
		{"no sockets open", 400, 12345, false},
		{"no such process", 999, 12345, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := procHasSocket(proc, tt.pid, tt.ino); got != tt.want {
				t.Errorf("procHasSocket(%d, %d) = %v, want %v", tt.pid, tt.ino, got, tt.want)
			}
		})
	}
}

func TestProcPortOf(t *testing.T) {
	proc := ptTree(t)
	tests := []struct {
		name string
		pid  uint32
		ino  uint64
		want uint16
	}{
		{"IPv4", 100, 12345, 8080},
		{"IPv6", 200, 56789, 8081},
		{"other netns", 300, 77777, 8080},
		{"not in that netns", 300, 12345, 0},
		{"unknown inode", 100, 1, 0},
		{"no such process", 999, 12345, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := procPortOf(proc, tt.pid, tt.ino); got != tt.want {
				t.Errorf("procPortOf(%d, %d) = %d, want %d", tt.pid, tt.ino, got, tt.want)
			}
		})
	}
}
