package host

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/rsttrace/rsttrace/internal/correlate"
	"golang.org/x/sys/unix"
)

const netstatSample = `TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPBacklogDrop
TcpExt: 0 0 17 23 0
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
`

func TestParseNetstat(t *testing.T) {
	c, err := ParseNetstat([]byte(netstatSample))
	if err != nil {
		t.Fatal(err)
	}
	if c.Overflows != 17 || c.Drops != 23 {
		t.Errorf("got %+v, want overflows 17 drops 23", c)
	}
	for name, in := range map[string]string{
		"empty":          "",
		"no TcpExt":      "IpExt: A B\nIpExt: 1 2\n",
		"missing fields": "TcpExt: ListenDrops\nTcpExt: 5\n",
		"bad number":     "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 x\n",
		"short values":   "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
	} {
		if _, err := ParseNetstat([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// diagMsg builds one SOCK_DIAG_BY_FAMILY message as the kernel sends it.
func diagMsg(family uint8, state uint8, ap netip.AddrPort, ino, rq, wq, drops uint32) []byte {
	ne := binary.NativeEndian
	m := make([]byte, sizeofInetDiagMsg)
	m[0], m[1] = family, state
	binary.BigEndian.PutUint16(m[4:], ap.Port())
	a := ap.Addr().AsSlice()
	copy(m[8:], a)
	ne.PutUint32(m[56:], rq)
	ne.PutUint32(m[60:], wq)
	ne.PutUint32(m[68:], ino)
	// An attribute before SKMEMINFO, odd-sized (padded), as the kernel
	// sends INET_DIAG_SHUTDOWN.
	m = append(m, 5, 0, 8, 0, 0, 0, 0, 0)
	mem := make([]byte, 4+9*4)
	ne.PutUint16(mem[0:], uint16(len(mem)))
	ne.PutUint16(mem[2:], inetDiagSkmeminfo)
	ne.PutUint32(mem[4+unix.SK_MEMINFO_DROPS*4:], drops)
	m = append(m, mem...)
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, m)
}

func nlmsg(typ uint16, payload []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestParseDiag(t *testing.T) {
	v4 := netip.MustParseAddrPort("127.0.0.1:8080")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:443")
	var b []byte
	b = append(b, diagMsg(unix.AF_INET, tcpListenState, v4, 111, 3, 2, 9)...)
	b = append(b, diagMsg(unix.AF_INET6, tcpListenState, v6, 222, 0, 4096, 0)...)
	b = append(b, diagMsg(unix.AF_INET, 1, v4, 333, 0, 0, 0)...) // not a listener
	b = append(b, nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0})...)
	ls, done, err := parseDiag(b)
	if err != nil || !done {
		t.Fatalf("done %v err %v", done, err)
	}
	want := []correlate.QueueListener{
		{Local: v4, Ino: 111, Queued: 3, Backlog: 2, Drops: 9},
		{Local: v6, Ino: 222, Queued: 0, Backlog: 4096, Drops: 0},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %d listeners %+v, want %d", len(ls), ls, len(want))
	}
	for i := range want {
		if ls[i] != want[i] {
			t.Errorf("listener %d: got %+v, want %+v", i, ls[i], want[i])
		}
	}

	// A reply that continues in the next datagram.
	if _, done, err := parseDiag(diagMsg(unix.AF_INET, tcpListenState, v4, 1, 0, 0, 0)); done || err != nil {
		t.Errorf("partial reply: done %v err %v", done, err)
	}
	// An error reply.
	e := make([]byte, 4)
	eperm := -int32(unix.EPERM)
	binary.NativeEndian.PutUint32(e, uint32(eperm))
	if _, _, err := parseDiag(nlmsg(unix.NLMSG_ERROR, e)); !errors.Is(err, unix.EPERM) {
		t.Errorf("error reply: %v, want EPERM", err)
	}
	// A length that runs past the datagram.
	bad := diagMsg(unix.AF_INET, tcpListenState, v4, 1, 0, 0, 0)
	binary.NativeEndian.PutUint32(bad[0:], 4096)
	if _, _, err := parseDiag(bad); err == nil {
		t.Error("no error for a message longer than the datagram")
	}
}

// FuzzParseDiag: any datagram parses without panicking, and what it
// returns are listeners.
func FuzzParseDiag(f *testing.F) {
	f.Add(diagMsg(unix.AF_INET, tcpListenState, netip.MustParseAddrPort("127.0.0.1:1"), 1, 2, 3, 4))
	f.Add(nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, _, _ := parseDiag(b)
		for _, l := range ls {
			if !l.Local.IsValid() {
				t.Errorf("invalid address in %+v", l)
			}
		}
	})
}
