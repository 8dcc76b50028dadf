package host

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestParseDiagV6Only: INET_DIAG_SKV6ONLY sets V6Only; a bound-only
// socket keeps its state and no queue numbers.
func TestParseDiagV6Only(t *testing.T) {
	v6 := netip.MustParseAddrPort("[::]:8080")
	m := diagMsg(unix.AF_INET6, tcpListenState, v6, 5, 0, 511, 0)
	// Append INET_DIAG_SKV6ONLY (u8, padded) inside the message.
	m = append(m, 5, 0, inetDiagSkv6only, 0, 1, 0, 0, 0)
	m[0] = byte(len(m)) // nlmsg_len (little endian, < 256)
	bound := diagMsg(unix.AF_INET, 7, netip.MustParseAddrPort("127.0.0.1:8080"), 6, 9, 9, 0)
	s, _, err := parseDiagSockets(append(m, bound...))
	if err != nil || len(s) != 2 {
		t.Fatalf("got %+v, %v", s, err)
	}
	if !s[0].V6Only || s[0].Backlog != 511 || s[0].State != TCPListen {
		t.Errorf("listener %+v: want v6only, backlog 511", s[0])
	}
	if s[1].V6Only || s[1].State != 7 || s[1].Queued != 0 || s[1].Backlog != 0 || s[1].Ino != 6 {
		t.Errorf("bound socket %+v: want state 7, no queue numbers", s[1])
	}
}
