package correlate

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Test records. Times are record timestamps (ns since boot); the default
// Wall maps them to time.Unix(0, ns).

const (
	ctNsA = 4026531840
	ctNsB = 4026532999
	ctMs  = uint64(time.Millisecond)
)

var (
	ctOwner      = events.Process{Pid: 100, Comm: "server"}
	ctOther      = events.Process{Pid: 200, Comm: "worker"}
	ctThird      = events.Process{Pid: 300, Comm: "squatter"}
	ctClientProc = events.Process{Pid: 777, Comm: "curl"}
)

func ctComm(s string) (c [16]int8) {
	for i := 0; i < len(s) && i < len(c); i++ {
		c[i] = int8(s[i])
	}
	return c
}

// setAP stores ap into b/port and returns the family it implies.
func ctSetAP(b *[16]uint8, port *uint16, ap string) uint8 {
	a := netip.MustParseAddrPort(ap)
	*port = a.Port()
	if a.Addr().Is4() {
		v := a.Addr().As4()
		copy(b[:], v[:])
		return record.AFInet
	}
	*b = a.Addr().As16()
	return record.AFInet6
}

func ctWithProc(r *record.Record, p events.Process) *record.Record {
	r.Proc.Pid, r.Proc.Tid, r.Proc.Comm = p.Pid, p.Pid, ctComm(p.Comm)
	return r
}

// resetRec: the local stack refused a segment src -> dst.
func ctReset(ts uint64, netns uint32, src, dst string) *record.Record {
	r := &record.Record{Type: record.ResetSent, Ts: ts, Netns: netns, TcpFlags: 0x02}
	r.Family = ctSetAP(&r.Saddr, &r.Sport, src)
	ctSetAP(&r.Daddr, &r.Dport, dst)
	return r
}

// clientRec: a local connect() src -> dst got a RST.
func ctClient(ts uint64, netns uint32, src, dst string, p *events.Process) *record.Record {
	r := &record.Record{Type: record.ClientRefused, Ts: ts, Netns: netns, Sk: 0xffff888000001000}
	r.Family = ctSetAP(&r.Saddr, &r.Sport, src)
	ctSetAP(&r.Daddr, &r.Dport, dst)
	if p != nil {
		ctWithProc(r, *p)
		r.Flags |= record.FlagProcKnown
	}
	return r
}

func ctListen(ts uint64, netns uint32, local string, ino uint64, p events.Process, flags uint32) *record.Record {
	r := &record.Record{Type: record.Listen, Ts: ts, Netns: netns, Ino: ino, Sk: 0xffff888000000000 | ino, Flags: flags, Backlog: 4096}
	r.Family = ctSetAP(&r.Daddr, &r.Dport, local)
	return ctWithProc(r, p)
}

func ctClose(ts uint64, netns uint32, local string, ino uint64, p events.Process) *record.Record {
	r := &record.Record{Type: record.ListenClose, Ts: ts, Netns: netns, Ino: ino, Sk: 0xffff888000000000 | ino}
	r.Family = ctSetAP(&r.Daddr, &r.Dport, local)
	return ctWithProc(r, p)
}

func ctExiting(r *record.Record, code int32) *record.Record {
	r.Flags |= record.FlagExiting
	r.ExitCode = code
	return r
}

func ctBind(ts uint64, netns uint32, local string, ino uint64, p events.Process, ret int32) *record.Record {
	r := &record.Record{Type: record.Bind, Ts: ts, Netns: netns, Ino: ino, Sk: 0xffff888000000000 | ino, Ret: ret}
	r.Family = ctSetAP(&r.Daddr, &r.Dport, local)
	return ctWithProc(r, p)
}

// sink collects emitted events.
type ctSink struct{ evs []*events.Event }

func (s *ctSink) emit(e *events.Event) error {
	if e == nil {
		panic("emit(nil)")
	}
	s.evs = append(s.evs, e)
	return nil
}

func (s *ctSink) of(typ events.Type) []*events.Event {
	var out []*events.Event
	for _, e := range s.evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func ctFeed(t *testing.T, c *Correlator, s *ctSink, recs ...*record.Record) {
	t.Helper()
	for _, r := range recs {
		if err := c.Handle(r, s.emit); err != nil {
			t.Fatalf("Handle(type %d): %v", r.Type, err)
		}
	}
}

func ctWall(ns uint64) time.Time { return time.Unix(0, int64(ns)) }

func TestCorrelatorClassify(t *testing.T) {
	tests := []struct {
		name     string
		snapshot map[uint64]events.Listener
		setup    []*record.Record
		refuse   *record.Record // defaults to a refusal to 127.0.0.1:8080 in nsA at 1s
		cause    events.Cause
		// listener: owner, address, closed by, exit; nil means none.
		listener *events.Listener
		bind     *events.Bind
		explain  []string
	}{
		{
			name:    "no_listener",
			cause:   events.CauseNoListener,
			explain: []string{"nothing listens on port 8080 in netns 4026531840"},
		},
		{
			name:     "wrong_address other loopback",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0)},
			refuse:   ctReset(1000*ctMs, ctNsA, "127.0.0.2:40000", "127.0.0.2:8080"),
			cause:    events.CauseWrongAddress,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA},
			explain:  []string{"server (pid 100) listens on port 8080 at 127.0.0.1", "not at 127.0.0.2"},
		},
		{
			name:     "wrong_address IPv6-only listener, IPv4 dst",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "[::]:8080", 10, ctOwner, record.FlagV6Only)},
			cause:    events.CauseWrongAddress,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: ctNsA, V6Only: true},
			explain:  []string{"(IPv6 only)", "not at 127.0.0.1"},
		},
		{
			name:     "wrong_address IPv4 listener, IPv6 dst",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0)},
			refuse:   ctReset(1000*ctMs, ctNsA, "[::1]:40000", "[::1]:8080"),
			cause:    events.CauseWrongAddress,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA},
			explain:  []string{"at 0.0.0.0, not at ::1"},
		},
		{
			name:     "wrong_address IPv6 loopback listener, IPv4 dst",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "[::1]:8080", 10, ctOwner, 0)},
			cause:    events.CauseWrongAddress,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("::1"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "0.0.0.0 covers dst: unknown with listener",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0)},
			refuse:   ctReset(1000*ctMs, ctNsA, "127.0.0.5:40000", "127.0.0.5:8080"),
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "[::] dual-stack covers IPv4 dst: unknown with listener",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "[::]:8080", 10, ctOwner, 0)},
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "[::] v6only covers IPv6 dst: unknown with listener",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "[::]:8080", 10, ctOwner, record.FlagV6Only)},
			refuse:   ctReset(1000*ctMs, ctNsA, "[fe80::1]:40000", "[fe80::2]:8080"),
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("::"), Port: 8080, Netns: ctNsA, V6Only: true},
		},
		{
			name: "covering listener wins over an earlier non-covering one",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "[::1]:8080", 10, ctOther, 0),
				ctListen(2*ctMs, ctNsA, "127.0.0.1:8080", 11, ctOwner, 0),
			},
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA},
		},
		{
			name: "covering listener wins over a later non-covering one",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 11, ctOwner, 0),
				ctListen(2*ctMs, ctNsA, "[::1]:8080", 10, ctOther, 0),
			},
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "other_netns",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsB, "0.0.0.0:8080", 10, ctOwner, 0)},
			cause:    events.CauseOtherNetns,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsB},
			explain:  []string{"in netns 4026532999, not in netns 4026531840"},
		},
		{
			name: "wrong_address in this netns beats a listener elsewhere",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsB, "0.0.0.0:8080", 10, ctOther, 0),
				ctListen(2*ctMs, ctNsA, "10.1.1.1:8080", 11, ctOwner, 0),
			},
			cause:    events.CauseWrongAddress,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("10.1.1.1"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "listener on another port does not count",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsA, "0.0.0.0:8081", 10, ctOwner, 0)},
			cause:    events.CauseNoListener,
			listener: nil,
		},
		{
			name: "listener_closed by owner",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner),
			},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA, ClosedAt: ctWall(500 * ctMs)},
			explain:  []string{"nothing listens on port 8080; server (pid 100) closed its listener 500ms ago"},
		},
		{
			name: "listener_closed by another process",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOther),
			},
			cause: events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				ClosedAt: ctWall(500 * ctMs), ClosedBy: &ctOther},
			explain: []string{"server (pid 100) listened on it until worker (pid 200) closed the socket 500ms ago"},
		},
		{
			name: "listener_closed while exiting with code 3",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				ctExiting(ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner), 3<<8),
			},
			cause: events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				ClosedAt: ctWall(500 * ctMs), Exit: events.ExitFromCode(3 << 8)},
			explain: []string{"server (pid 100) exited with code 3, closing its listener 500ms ago"},
		},
		{
			name: "listener_closed while killed by SIGKILL",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				ctExiting(ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner), 9),
			},
			cause: events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				ClosedAt: ctWall(500 * ctMs), Exit: &events.Exit{Signal: "SIGKILL"}},
			explain: []string{"server (pid 100) was killed by SIGKILL"},
		},
		{
			name: "exit code ignored without the exiting flag",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				func() *record.Record {
					r := ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner)
					r.ExitCode = 9
					return r
				}(),
			},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA, ClosedAt: ctWall(500 * ctMs)},
		},
		{
			name:     "close of a listener never seen open: closer is the owner",
			setup:    []*record.Record{ctClose(500*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOther)},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOther, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA, ClosedAt: ctWall(500 * ctMs)},
		},
		{
			name: "listener closed by socket key when it has no inode",
			setup: []*record.Record{
				func() *record.Record {
					r := ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 0, ctOwner, 0)
					r.Sk = 0xffff888012345678
					return r
				}(),
				func() *record.Record {
					r := ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 0, ctOwner)
					r.Sk = 0xffff888012345678
					return r
				}(),
			},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA, ClosedAt: ctWall(500 * ctMs)},
		},
		{
			name: "listener reopened after a close: not listener_closed",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
				ctClose(500*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner),
				ctListen(600*ctMs, ctNsA, "127.0.0.1:8080", 11, ctOther, 0),
			},
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOther, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA},
		},
		{
			name: "close in another netns does not explain",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsB, "127.0.0.1:8080", 10, ctOwner, 0),
				ctClose(500*ctMs, ctNsB, "127.0.0.1:8080", 10, ctOwner),
			},
			cause: events.CauseNoListener,
		},
		{
			name:  "bind_failed alone",
			setup: []*record.Record{ctBind(500*ctMs, ctNsA, "0.0.0.0:8080", 20, ctOwner, -98)},
			cause: events.CauseBindFailed,
			bind: &events.Bind{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Errno: "EADDRINUSE",
				Time: ctWall(500 * ctMs)},
			explain: []string{"nothing listens on port 8080: server (pid 100) failed to bind it with EADDRINUSE 500ms ago"},
		},
		{
			name: "bind failure newer than a close wins",
			setup: []*record.Record{
				ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOther, 0),
				ctClose(100*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOther),
				ctBind(500*ctMs, ctNsA, "0.0.0.0:8080", 20, ctOwner, -13),
			},
			cause: events.CauseBindFailed,
			bind: &events.Bind{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Errno: "EACCES",
				Time: ctWall(500 * ctMs)},
		},
		{
			name: "older bind failure loses to a newer close",
			setup: []*record.Record{
				ctBind(100*ctMs, ctNsA, "0.0.0.0:8080", 20, ctOther, -98),
				ctListen(200*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0),
				ctClose(500*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner),
			},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA, ClosedAt: ctWall(500 * ctMs)},
		},
		{
			name:  "bind failure in another netns does not explain",
			setup: []*record.Record{ctBind(500*ctMs, ctNsB, "0.0.0.0:8080", 20, ctOwner, -98)},
			cause: events.CauseNoListener,
		},
		{
			name:  "successful bind explains nothing",
			setup: []*record.Record{ctBind(500*ctMs, ctNsA, "0.0.0.0:8080", 20, ctOwner, 0)},
			cause: events.CauseNoListener,
		},
		{
			name:     "snapshot listener covers",
			snapshot: map[uint64]events.Listener{555: {Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA}},
			cause:    events.CauseUnknown,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA},
		},
		{
			name:     "snapshot listener closed by inode keeps its owner",
			snapshot: map[uint64]events.Listener{555: {Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA}},
			setup:    []*record.Record{ctExiting(ctClose(500*ctMs, ctNsA, "0.0.0.0:8080", 555, ctOther), 15)},
			cause:    events.CauseListenerClosed,
			listener: &events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080, Netns: ctNsA,
				ClosedAt: ctWall(500 * ctMs), ClosedBy: &ctOther, Exit: &events.Exit{Signal: "SIGTERM"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			for ino, l := range tt.snapshot {
				c.AddListener(ino, l)
			}
			var s ctSink
			ctFeed(t, c, &s, tt.setup...)
			refuse := tt.refuse
			if refuse == nil {
				refuse = ctReset(1000*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080")
			}
			ctFeed(t, c, &s, refuse)
			if err := c.FlushAll(s.emit); err != nil {
				t.Fatal(err)
			}
			ref := s.of(events.TypeRefused)
			if len(ref) != 1 {
				t.Fatalf("got %d refused events, want 1: %+v", len(ref), ref)
			}
			ev := ref[0]
			if ev.Cause != tt.cause {
				t.Errorf("cause = %q, want %q (%s)", ev.Cause, tt.cause, ev.Explanation)
			}
			if ev.Netns != refuse.Netns || ev.Time != ctWall(refuse.Ts) {
				t.Errorf("netns/time = %d/%v, want %d/%v", ev.Netns, ev.Time, refuse.Netns, ctWall(refuse.Ts))
			}
			wantSrc := netip.AddrPortFrom(record.Addr(refuse.Family, &refuse.Saddr), refuse.Sport)
			wantDst := netip.AddrPortFrom(record.Addr(refuse.Family, &refuse.Daddr), refuse.Dport)
			if ev.Src == nil || ev.Dst == nil || ev.Src.AddrPort() != wantSrc || ev.Dst.AddrPort() != wantDst {
				t.Errorf("src/dst = %v/%v, want %v/%v", ev.Src, ev.Dst, wantSrc, wantDst)
			}
			ctCheckListener(t, ev.Listener, tt.listener)
			ctCheckBind(t, ev.Bind, tt.bind)
			if ev.Explanation != events.Explain(ev) {
				t.Errorf("explanation %q is not Explain(ev) = %q", ev.Explanation, events.Explain(ev))
			}
			for _, w := range tt.explain {
				if !strings.Contains(ev.Explanation, w) {
					t.Errorf("explanation %q, missing %q", ev.Explanation, w)
				}
			}
		})
	}
}

// checkListener compares the fields a refusal reports about a listener.
func ctCheckListener(t *testing.T, got, want *events.Listener) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("listener = %+v, want %+v", got, want)
	}
	if got == nil {
		return
	}
	if got.Process != want.Process || got.Addr != want.Addr || got.Port != want.Port || got.Netns != want.Netns || got.V6Only != want.V6Only {
		t.Errorf("listener = %v %v:%d netns %d v6only %v, want %v %v:%d netns %d v6only %v",
			got.Process, got.Addr, got.Port, got.Netns, got.V6Only, want.Process, want.Addr, want.Port, want.Netns, want.V6Only)
	}
	if !got.ClosedAt.Equal(want.ClosedAt) {
		t.Errorf("closed_at = %v, want %v", got.ClosedAt, want.ClosedAt)
	}
	if !reflect.DeepEqual(got.ClosedBy, want.ClosedBy) {
		t.Errorf("closed_by = %v, want %v", got.ClosedBy, want.ClosedBy)
	}
	if !reflect.DeepEqual(got.Exit, want.Exit) {
		t.Errorf("exit = %v, want %v", got.Exit, want.Exit)
	}
}

func ctCheckBind(t *testing.T, got, want *events.Bind) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("bind = %+v, want %+v", got, want)
	}
	if got == nil {
		return
	}
	if got.Process != want.Process || got.Addr != want.Addr || got.Port != want.Port || got.Errno != want.Errno || !got.Time.Equal(want.Time) {
		t.Errorf("bind = %+v, want %+v", *got, *want)
	}
	if !reflect.DeepEqual(got.Holder, want.Holder) {
		t.Errorf("bind holder = %v, want %v", got.Holder, want.Holder)
	}
}

// TestCorrelatorExplainClosedByExiting: when a process other than the owner
// drops the last reference while exiting (a forked worker that inherited
// the listener and is killed), the exit status is the closer's, not the
// owner's. The explanation must not say the owner was killed.
func TestCorrelatorExplainClosedByExiting(t *testing.T) {
	c := newTestCorrelator()
	var s ctSink
	ctFeed(t, c, &s,
		ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0),
		ctExiting(ctClose(500*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOther), 9),
		ctReset(1000*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080"),
	)
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].Cause != events.CauseListenerClosed {
		t.Fatalf("refused = %+v, want one listener_closed", ref)
	}
	l := ref[0].Listener
	if l.ClosedBy == nil || *l.ClosedBy != ctOther || l.Exit == nil || l.Exit.Signal != "SIGKILL" {
		t.Fatalf("listener = %+v, want closed by %v killed by SIGKILL", l, ctOther)
	}
	x := ref[0].Explanation
	if strings.Contains(x, "server (pid 100) was killed") {
		t.Errorf("explanation %q says the owner was killed; the closer worker (pid 200) was", x)
	}
	if !strings.Contains(x, "worker (pid 200)") {
		t.Errorf("explanation %q does not name the process that closed the listener, worker (pid 200)", x)
	}
}

func TestCorrelatorListenEvents(t *testing.T) {
	tests := []struct {
		name   string
		rec    *record.Record
		portOf func(pid uint32, ino uint64) uint16
		want   events.Event
	}{
		{
			name: "listen",
			rec:  ctListen(5*ctMs, ctNsA, "[::1]:8080", 10, ctOwner, record.FlagV6Only),
			want: events.Event{Time: ctWall(5 * ctMs), Type: events.TypeListen, Netns: ctNsA, Listener: &events.Listener{
				Process: ctOwner, Addr: netip.MustParseAddr("::1"), Port: 8080, Netns: ctNsA, Backlog: 4096, V6Only: true, Since: ctWall(5 * ctMs)}},
		},
		{
			name: "listen on port 0 uses PortOf",
			rec:  ctListen(5*ctMs, ctNsA, "0.0.0.0:0", 42, ctOwner, 0),
			portOf: func(pid uint32, ino uint64) uint16 {
				if pid == ctOwner.Pid && ino == 42 {
					return 39999
				}
				return 0
			},
			want: events.Event{Time: ctWall(5 * ctMs), Type: events.TypeListen, Netns: ctNsA, Listener: &events.Listener{
				Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 39999, Netns: ctNsA, Backlog: 4096, Since: ctWall(5 * ctMs)}},
		},
		{
			name: "listen on port 0 without PortOf",
			rec:  ctListen(5*ctMs, ctNsA, "0.0.0.0:0", 42, ctOwner, 0),
			want: events.Event{Time: ctWall(5 * ctMs), Type: events.TypeListen, Netns: ctNsA, Listener: &events.Listener{
				Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 0, Netns: ctNsA, Backlog: 4096, Since: ctWall(5 * ctMs)}},
		},
		{
			name: "PortOf not asked for a nonzero port",
			rec:  ctListen(5*ctMs, ctNsA, "0.0.0.0:80", 42, ctOwner, 0),
			portOf: func(uint32, uint64) uint16 {
				panic("PortOf called for a bound listener")
			},
			want: events.Event{Time: ctWall(5 * ctMs), Type: events.TypeListen, Netns: ctNsA, Listener: &events.Listener{
				Process: ctOwner, Addr: netip.MustParseAddr("0.0.0.0"), Port: 80, Netns: ctNsA, Backlog: 4096, Since: ctWall(5 * ctMs)}},
		},
		{
			name: "comm of 16 bytes without NUL",
			rec:  ctListen(5*ctMs, ctNsA, "10.0.0.1:80", 42, events.Process{Pid: 9, Comm: "abcdefghijklmnop"}, 0),
			want: events.Event{Time: ctWall(5 * ctMs), Type: events.TypeListen, Netns: ctNsA, Listener: &events.Listener{
				Process: events.Process{Pid: 9, Comm: "abcdefghijklmnop"}, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Netns: ctNsA, Backlog: 4096, Since: ctWall(5 * ctMs)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			fake(c).SocketPort = tt.portOf
			var s ctSink
			ctFeed(t, c, &s, tt.rec)
			if len(s.evs) != 1 {
				t.Fatalf("got %d events, want 1", len(s.evs))
			}
			if !reflect.DeepEqual(*s.evs[0], tt.want) {
				t.Errorf("got  %+v %+v\nwant %+v %+v", *s.evs[0], *s.evs[0].Listener, tt.want, *tt.want.Listener)
			}
			if c.Listeners() != 1 {
				t.Errorf("Listeners() = %d, want 1", c.Listeners())
			}
		})
	}
}

// TestCorrelatorAutobindPortFindsRefusals: a listener whose port came from
// PortOf is indexed under that port.
func TestCorrelatorAutobindPortFindsRefusals(t *testing.T) {
	c := newTestCorrelator()
	fake(c).SocketPort = func(pid uint32, ino uint64) uint16 { return 39999 }
	var s ctSink
	ctFeed(t, c, &s,
		ctListen(5*ctMs, ctNsA, "0.0.0.0:0", 42, ctOwner, 0),
		ctReset(10*ctMs, ctNsA, "127.0.0.1:50000", "127.0.0.1:39999"),
		ctClose(20*ctMs, ctNsA, "0.0.0.0:39999", 42, ctOwner),
		ctReset(30*ctMs, ctNsA, "127.0.0.1:50001", "127.0.0.1:39999"),
	)
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 2 {
		t.Fatalf("got %d refused, want 2", len(ref))
	}
	if ref[0].Cause != events.CauseUnknown || ref[0].Listener == nil || ref[0].Listener.Port != 39999 {
		t.Errorf("first refusal = %s %+v, want unknown with listener on 39999", ref[0].Cause, ref[0].Listener)
	}
	if ref[1].Cause != events.CauseListenerClosed || ref[1].Listener == nil || ref[1].Listener.Process != ctOwner {
		t.Errorf("second refusal = %s %+v, want listener_closed by %v", ref[1].Cause, ref[1].Listener, ctOwner)
	}
	if c.Listeners() != 0 {
		t.Errorf("Listeners() = %d after close, want 0", c.Listeners())
	}
}

func TestCorrelatorListenCloseEvents(t *testing.T) {
	tests := []struct {
		name     string
		snapshot map[uint64]events.Listener
		setup    []*record.Record
		close    *record.Record
		want     events.Listener
	}{
		{
			name:  "by owner",
			setup: []*record.Record{ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0)},
			close: ctClose(50*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner),
			want: events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				Backlog: 4096, Since: ctWall(1 * ctMs), ClosedAt: ctWall(50 * ctMs)},
		},
		{
			name:  "by another pid",
			setup: []*record.Record{ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0)},
			close: ctClose(50*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOther),
			want: events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				Backlog: 4096, Since: ctWall(1 * ctMs), ClosedAt: ctWall(50 * ctMs), ClosedBy: &ctOther},
		},
		{
			name:  "exiting with SIGSEGV and core",
			setup: []*record.Record{ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0)},
			close: ctExiting(ctClose(50*ctMs, ctNsA, "127.0.0.1:8080", 10, ctOwner), 0x8b),
			want: events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: ctNsA,
				Backlog: 4096, Since: ctWall(1 * ctMs), ClosedAt: ctWall(50 * ctMs), Exit: &events.Exit{Signal: "SIGSEGV", CoreDumped: true}},
		},
		{
			name:     "snapshot listener by inode",
			snapshot: map[uint64]events.Listener{555: {Process: ctOwner, Addr: netip.MustParseAddr("::"), Port: 443, Netns: ctNsA}},
			close:    ctExiting(ctClose(50*ctMs, ctNsA, "[::]:443", 555, ctOwner), 0),
			want: events.Listener{Process: ctOwner, Addr: netip.MustParseAddr("::"), Port: 443, Netns: ctNsA,
				ClosedAt: ctWall(50 * ctMs), Exit: events.ExitFromCode(0)},
		},
		{
			name:  "never seen open",
			close: ctClose(50*ctMs, ctNsA, "[::]:443", 556, ctOther),
			want: events.Listener{Process: ctOther, Addr: netip.MustParseAddr("::"), Port: 443, Netns: ctNsA,
				Backlog: 0, ClosedAt: ctWall(50 * ctMs)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			for ino, l := range tt.snapshot {
				c.AddListener(ino, l)
			}
			var s ctSink
			ctFeed(t, c, &s, tt.setup...)
			s.evs = nil
			ctFeed(t, c, &s, tt.close)
			if len(s.evs) != 1 || s.evs[0].Type != events.TypeListenClose {
				t.Fatalf("got %+v, want one listen_close", s.evs)
			}
			ev := s.evs[0]
			if !ev.Time.Equal(ctWall(tt.close.Ts)) || ev.Netns != ctNsA {
				t.Errorf("time/netns = %v/%d", ev.Time, ev.Netns)
			}
			if !reflect.DeepEqual(*ev.Listener, tt.want) {
				t.Errorf("listener:\n got %+v exit %v closedBy %v\nwant %+v exit %v closedBy %v",
					*ev.Listener, ev.Listener.Exit, ev.Listener.ClosedBy, tt.want, tt.want.Exit, tt.want.ClosedBy)
			}
			if c.Listeners() != 0 {
				t.Errorf("Listeners() = %d after close, want 0", c.Listeners())
			}
		})
	}
}

func TestCorrelatorBindHolder(t *testing.T) {
	type scanCall struct {
		pid  uint32
		port uint16
	}
	type aliveCall struct {
		pid uint32
		ino uint64
	}
	tests := []struct {
		name       string
		setup      []*record.Record
		fail       *record.Record // defaults to other failing 0.0.0.0:8080 with EADDRINUSE in nsA
		alive      map[uint64]bool
		scan       *events.Process // HolderScan result; nil scan func when noScan
		noScan     bool
		errno      string
		holder     *events.Process
		wantScan   []scanCall
		wantAlive  []aliveCall
		secondFail bool // fail twice; the second must find the same holder
	}{
		{
			name:   "listener holds the port",
			setup:  []*record.Record{ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0)},
			errno:  "EADDRINUSE",
			holder: &ctOwner,
		},
		{
			name:     "listener in another netns is not the holder",
			setup:    []*record.Record{ctListen(1*ctMs, ctNsB, "0.0.0.0:8080", 10, ctOwner, 0)},
			scan:     &ctThird,
			errno:    "EADDRINUSE",
			holder:   &ctThird,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:      "bound socket holds the port",
			setup:     []*record.Record{ctBind(1*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird, 0)},
			alive:     map[uint64]bool{30: true},
			errno:     "EADDRINUSE",
			holder:    &ctThird,
			wantAlive: []aliveCall{{ctThird.Pid, 30}, {ctThird.Pid, 30}},
			// HolderScan must not be needed.
			scan:       &events.Process{Pid: 1, Comm: "wrong"},
			secondFail: true,
		},
		{
			name:       "dead bound socket is forgotten",
			setup:      []*record.Record{ctBind(1*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird, 0)},
			alive:      map[uint64]bool{30: false},
			errno:      "EADDRINUSE",
			noScan:     true,
			holder:     nil,
			wantAlive:  []aliveCall{{ctThird.Pid, 30}}, // not asked again the second time
			secondFail: true,
		},
		{
			name:      "dead bound socket falls back to HolderScan",
			setup:     []*record.Record{ctBind(1*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird, 0)},
			alive:     map[uint64]bool{30: false},
			scan:      &ctOwner,
			errno:     "EADDRINUSE",
			holder:    &ctOwner,
			wantAlive: []aliveCall{{ctThird.Pid, 30}},
			wantScan:  []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:     "bound socket in another netns is not the holder",
			setup:    []*record.Record{ctBind(1*ctMs, ctNsB, "0.0.0.0:8080", 30, ctThird, 0)},
			alive:    map[uint64]bool{30: true},
			scan:     &ctOwner,
			errno:    "EADDRINUSE",
			holder:   &ctOwner,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:     "bound socket on another port is not the holder",
			setup:    []*record.Record{ctBind(1*ctMs, ctNsA, "0.0.0.0:8081", 30, ctThird, 0)},
			alive:    map[uint64]bool{30: true},
			noScan:   true,
			errno:    "EADDRINUSE",
			holder:   nil,
			wantScan: nil,
		},
		{
			name: "bound socket that started listening is a listener, not a bound socket",
			setup: []*record.Record{
				ctBind(1*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird, 0),
				ctListen(2*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird, 0),
				ctClose(3*ctMs, ctNsA, "0.0.0.0:8080", 30, ctThird),
			},
			alive:    map[uint64]bool{30: true},
			scan:     &ctOwner,
			errno:    "EADDRINUSE",
			holder:   &ctOwner,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:  "a socket's own successful bind does not make it the holder",
			setup: []*record.Record{ctBind(1*ctMs, ctNsA, "0.0.0.0:8080", 40, ctOther, 0)},
			fail:  ctBind(10*ctMs, ctNsA, "0.0.0.0:8080", 40, ctOther, -98),
			alive: map[uint64]bool{40: true},
			scan:  &ctOwner, errno: "EADDRINUSE", holder: &ctOwner,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:     "HolderScan fallback",
			scan:     &ctThird,
			errno:    "EADDRINUSE",
			holder:   &ctThird,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:     "HolderScan for EACCES",
			fail:     ctBind(10*ctMs, ctNsA, "0.0.0.0:80", 40, ctOther, -13),
			scan:     &ctThird,
			errno:    "EACCES",
			holder:   &ctThird,
			wantScan: []scanCall{{ctOther.Pid, 80}},
		},
		{
			name:     "HolderScan finds nobody",
			errno:    "EADDRINUSE",
			holder:   nil,
			wantScan: []scanCall{{ctOther.Pid, 8080}},
		},
		{
			name:   "no HolderScan",
			noScan: true,
			errno:  "EADDRINUSE",
			holder: nil,
		},
		{
			name:   "EADDRNOTAVAIL looks for no holder",
			setup:  []*record.Record{ctListen(1*ctMs, ctNsA, "0.0.0.0:8080", 10, ctOwner, 0)},
			fail:   ctBind(10*ctMs, ctNsA, "192.0.2.1:8080", 40, ctOther, -99),
			scan:   &ctThird,
			errno:  "EADDRNOTAVAIL",
			holder: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			var scans []scanCall
			var alives []aliveCall
			if !tt.noScan {
				fake(c).PortHolder = func(pid uint32, port uint16) *events.Process {
					scans = append(scans, scanCall{pid, port})
					if tt.scan == nil {
						return nil
					}
					p := *tt.scan
					return &p
				}
			}
			if tt.alive != nil {
				fake(c).HasSocket = func(pid uint32, ino uint64) bool {
					alives = append(alives, aliveCall{pid, ino})
					return tt.alive[ino]
				}
			}
			var s ctSink
			ctFeed(t, c, &s, tt.setup...)
			fail := tt.fail
			if fail == nil {
				fail = ctBind(10*ctMs, ctNsA, "0.0.0.0:8080", 40, ctOther, -98)
			}
			s.evs = nil
			ctFeed(t, c, &s, fail)
			if tt.secondFail {
				r := *fail
				r.Ts += ctMs
				r.Ino++
				r.Sk++
				ctFeed(t, c, &s, &r)
			}
			bf := s.of(events.TypeBindFailed)
			if len(bf) == 0 || len(bf) != len(s.evs) {
				t.Fatalf("events = %+v, want only bind_failed", s.evs)
			}
			for i, ev := range bf {
				b := ev.Bind
				if b == nil || b.Process != ctOther || b.Errno != tt.errno || b.Port != fail.Dport || ev.Netns != ctNsA {
					t.Errorf("bind_failed[%d] = %+v netns %d, want %v %s port %d netns %d", i, b, ev.Netns, ctOther, tt.errno, fail.Dport, ctNsA)
					continue
				}
				if !b.Time.Equal(ev.Time) {
					t.Errorf("bind time %v != event time %v", b.Time, ev.Time)
				}
			}
			if got := bf[0].Bind.Holder; !reflect.DeepEqual(got, tt.holder) {
				t.Errorf("holder = %v, want %v", got, tt.holder)
			}
			if tt.secondFail {
				if got := bf[1].Bind.Holder; !reflect.DeepEqual(got, tt.holder) {
					t.Errorf("second holder = %v, want %v", got, tt.holder)
				}
			}
			if !reflect.DeepEqual(scans, tt.wantScan) {
				t.Errorf("HolderScan calls = %v, want %v", scans, tt.wantScan)
			}
			if !reflect.DeepEqual(alives, tt.wantAlive) {
				t.Errorf("Alive calls = %v, want %v", alives, tt.wantAlive)
			}
		})
	}
}

// TestCorrelatorBindFailedRefusalCarriesHolder: the refusal explained by a
// failed bind names the holder too.
func TestCorrelatorBindFailedRefusalCarriesHolder(t *testing.T) {
	c := newTestCorrelator()
	var s ctSink
	ctFeed(t, c, &s,
		ctListen(1*ctMs, ctNsA, "127.0.0.1:8080", 10, ctThird, 0),
		ctBind(2*ctMs, ctNsA, "0.0.0.0:8080", 20, ctOwner, -98),
		ctClose(3*ctMs, ctNsA, "127.0.0.1:8080", 10, ctThird),
		ctBind(4*ctMs, ctNsA, "0.0.0.0:8080", 21, ctOwner, -98),
		ctReset(100*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080"),
	)
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 || ref[0].Cause != events.CauseBindFailed || ref[0].Bind == nil {
		t.Fatalf("refused = %+v, want one bind_failed", ref)
	}
	b := ref[0].Bind
	if !b.Time.Equal(ctWall(4 * ctMs)) {
		t.Errorf("bind time = %v, want the newest failure at %v", b.Time, ctWall(4*ctMs))
	}
	// At 4ms the listener was closed; nothing else holds the port.
	if b.Holder != nil {
		t.Errorf("holder = %v, want nil", b.Holder)
	}
	if !strings.Contains(ref[0].Explanation, "failed to bind it with EADDRINUSE 96ms ago") {
		t.Errorf("explanation = %q", ref[0].Explanation)
	}
	// The first failure (while the listener lived) named it.
	bf := s.of(events.TypeBindFailed)
	if len(bf) != 2 || bf[0].Bind.Holder == nil || *bf[0].Bind.Holder != ctThird {
		t.Errorf("first bind_failed = %+v, want holder %v", bf, ctThird)
	}
}

func TestCorrelatorKernelReason(t *testing.T) {
	tests := []struct {
		name   string
		reason uint32
		want   string
	}{
		{"named", 2, "NO_SOCKET"},
		{"other name", 7, "TCP_ABORT_ON_DATA"},
		{"unnamed", 99, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			var asked []uint32
			c.RSTReason = func(v uint32) string {
				asked = append(asked, v)
				return map[uint32]string{2: "NO_SOCKET", 7: "TCP_ABORT_ON_DATA"}[v]
			}
			var s ctSink
			r := ctReset(1*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080")
			r.Reason = tt.reason
			ctFeed(t, c, &s, r)
			if err := c.FlushAll(s.emit); err != nil {
				t.Fatal(err)
			}
			if len(s.evs) != 1 {
				t.Fatalf("got %d events", len(s.evs))
			}
			if got := s.evs[0].KernelReason; got != tt.want {
				t.Errorf("kernel_reason = %q, want %q", got, tt.want)
			}
			if !reflect.DeepEqual(asked, []uint32{tt.reason}) {
				t.Errorf("RSTReason asked %v, want [%d]", asked, tt.reason)
			}
		})
	}
}

func TestCorrelatorWall(t *testing.T) {
	c := newTestCorrelator()
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	c.Wall = func(ns uint64) time.Time { return base.Add(time.Duration(ns)) }
	var s ctSink
	ctFeed(t, c, &s, ctReset(7*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080"))
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	if len(s.evs) != 1 || !s.evs[0].Time.Equal(base.Add(7*time.Millisecond)) {
		t.Fatalf("events = %+v, want one at %v", s.evs, base.Add(7*time.Millisecond))
	}
}

// step is one action on a correlator in a sequence test.
type ctStep struct {
	rec    *record.Record // Handle it
	expire uint64         // else, if nonzero, Expire at this time
	flush  bool           // else FlushAll
	// emitted is how many refused events must have been emitted in all
	// after this step.
	emitted int
}

func TestCorrelatorClientJoin(t *testing.T) {
	const src, dst = "127.0.0.1:40000", "127.0.0.1:8080"
	tests := []struct {
		name  string
		hold  time.Duration
		steps []ctStep
		// want: the refused events, in order, by (cause, client, ts).
		want []ctRefusal
	}{
		{
			name: "reset then client: one event with the client",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctClient(101*ctMs, ctNsA, src, dst, &ctClientProc), emitted: 1},
				{flush: true, emitted: 1},
			},
			want: []ctRefusal{{events.CauseNoListener, &ctClientProc, 100 * ctMs}},
		},
		{
			name: "IPv6 reset then client",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, "[::1]:40000", "[::1]:8080"), emitted: 0},
				{rec: ctClient(119*ctMs, ctNsA, "[::1]:40000", "[::1]:8080", &ctClientProc), emitted: 1},
				{flush: true, emitted: 1},
			},
			want: []ctRefusal{{events.CauseNoListener, &ctClientProc, 100 * ctMs}},
		},
		{
			name: "client record without a known process joins with no client",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst)},
				{rec: ctClient(101*ctMs, ctNsA, src, dst, nil), emitted: 1},
				{flush: true, emitted: 1},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}},
		},
		{
			name: "reset alone waits for Hold, then a later record releases it",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctBind(119*ctMs, ctNsA, "0.0.0.0:9", 1, ctOwner, 0), emitted: 0},
				{rec: ctBind(120*ctMs, ctNsA, "0.0.0.0:9", 1, ctOwner, 0), emitted: 1},
				{flush: true, emitted: 1},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}},
		},
		{
			name: "reset alone released by Expire",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{expire: 110 * ctMs, emitted: 0},
				{expire: 120 * ctMs, emitted: 1},
				{expire: 500 * ctMs, emitted: 1},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}},
		},
		{
			name: "client after Hold does not join the written event",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctClient(130*ctMs, ctNsA, src, dst, &ctClientProc), emitted: 2},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}, {events.CauseUnknown, &ctClientProc, 130 * ctMs}},
		},
		{
			name: "FlushAll writes everything held, in order",
			hold: time.Hour,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst)},
				{rec: ctReset(101*ctMs, ctNsA, "127.0.0.1:40001", dst)},
				{rec: ctReset(102*ctMs, ctNsA, "127.0.0.1:40002", "127.0.0.1:8081"), emitted: 0},
				{flush: true, emitted: 3},
				{flush: true, emitted: 3},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}, {events.CauseNoListener, nil, 101 * ctMs}, {events.CauseNoListener, nil, 102 * ctMs}},
		},
		{
			name: "clients join their own resets out of order",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst)},
				{rec: ctReset(101*ctMs, ctNsA, "127.0.0.1:40001", dst)},
				{rec: ctClient(102*ctMs, ctNsA, "127.0.0.1:40001", dst, &ctOther), emitted: 1},
				{rec: ctClient(103*ctMs, ctNsA, src, dst, &ctClientProc), emitted: 2},
				{flush: true, emitted: 2},
			},
			want: []ctRefusal{{events.CauseNoListener, &ctOther, 101 * ctMs}, {events.CauseNoListener, &ctClientProc, 100 * ctMs}},
		},
		{
			name: "unmatched client record: unknown with the client",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctClient(100*ctMs, ctNsA, "10.0.0.5:40000", "192.0.2.1:443", &ctClientProc), emitted: 1},
				{flush: true, emitted: 1},
			},
			want: []ctRefusal{{events.CauseUnknown, &ctClientProc, 100 * ctMs}},
		},
		{
			name: "client record for another tuple does not join",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst)},
				{rec: ctClient(101*ctMs, ctNsA, "127.0.0.1:40001", dst, &ctClientProc), emitted: 1},
				{flush: true, emitted: 2},
			},
			want: []ctRefusal{{events.CauseUnknown, &ctClientProc, 101 * ctMs}, {events.CauseNoListener, nil, 100 * ctMs}},
		},
		{
			name: "repeated reset for the same tuple emits the older one",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctReset(105*ctMs, ctNsA, src, dst), emitted: 1},
				{rec: ctClient(106*ctMs, ctNsA, src, dst, &ctClientProc), emitted: 2},
				{flush: true, emitted: 2},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}, {events.CauseNoListener, &ctClientProc, 105 * ctMs}},
		},
		{
			name: "repeated reset, no client: both written once",
			hold: 20 * time.Millisecond,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctReset(105*ctMs, ctNsA, src, dst), emitted: 1},
				{expire: 124 * ctMs, emitted: 1},
				{expire: 125 * ctMs, emitted: 2},
				{flush: true, emitted: 2},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}, {events.CauseNoListener, nil, 105 * ctMs}},
		},
		{
			name: "zero Hold writes at the next record",
			hold: 0,
			steps: []ctStep{
				{rec: ctReset(100*ctMs, ctNsA, src, dst), emitted: 0},
				{rec: ctClient(100*ctMs, ctNsA, src, dst, &ctClientProc), emitted: 2},
			},
			want: []ctRefusal{{events.CauseNoListener, nil, 100 * ctMs}, {events.CauseUnknown, &ctClientProc, 100 * ctMs}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCorrelator()
			c.Hold = tt.hold
			var s ctSink
			for i, st := range tt.steps {
				var err error
				switch {
				case st.rec != nil:
					err = c.Handle(st.rec, s.emit)
				case st.expire != 0:
					err = c.Expire(st.expire, s.emit)
				case st.flush:
					err = c.FlushAll(s.emit)
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if n := len(s.of(events.TypeRefused)); n != st.emitted {
					t.Fatalf("after step %d: %d refused events, want %d", i, n, st.emitted)
				}
			}
			ctCheckRefusals(t, s.of(events.TypeRefused), tt.want)
		})
	}
}

type ctRefusal struct {
	cause  events.Cause
	client *events.Process
	ts     uint64
}

func ctCheckRefusals(t *testing.T, got []*events.Event, want []ctRefusal) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d refused events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Cause != w.cause || !reflect.DeepEqual(g.Client, w.client) || !g.Time.Equal(ctWall(w.ts)) {
			t.Errorf("refused[%d] = %s client %v at %v, want %s client %v at %v", i, g.Cause, g.Client, g.Time, w.cause, w.client, ctWall(w.ts))
		}
		if g.Cause == events.CauseUnknown && g.Listener == nil && !strings.Contains(g.Explanation, "not sent by this host") {
			t.Errorf("refused[%d] explanation = %q", i, g.Explanation)
		}
	}
}

// TestCorrelatorClientJoinV4Mapped: a client on a dual-stack AF_INET6
// socket connecting to 127.0.0.1 (Java's default, or Go with "tcp6" and a
// v4-mapped address) sends an IPv4 SYN: the local RST record is AF_INET
// with 127.0.0.1, the client record is AF_INET6 with ::ffff:127.0.0.1. It
// is one connection and must give one event with its client, not an event
// without client plus an "unknown" one claiming a remote host refused.
func TestCorrelatorClientJoinV4Mapped(t *testing.T) {
	c := newTestCorrelator()
	var s ctSink
	ctFeed(t, c, &s,
		ctReset(100*ctMs, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080"),
		ctClient(101*ctMs, ctNsA, "[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.1]:8080", &ctClientProc),
	)
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	ref := s.of(events.TypeRefused)
	if len(ref) != 1 {
		for i, e := range ref {
			t.Logf("refused[%d]: %s client %v: %s", i, e.Cause, e.Client, e.Explanation)
		}
		t.Fatalf("got %d refused events for one connection, want 1", len(ref))
	}
	if ref[0].Cause != events.CauseNoListener || !reflect.DeepEqual(ref[0].Client, &ctClientProc) {
		t.Errorf("refused = %s client %v, want no_listener client %v", ref[0].Cause, ref[0].Client, ctClientProc)
	}
}

func TestCorrelatorEmitError(t *testing.T) {
	boom := errors.New("boom")
	failing := func(*events.Event) error { return boom }
	tests := []struct {
		name string
		run  func(c *Correlator) error
	}{
		{"listen", func(c *Correlator) error {
			return c.Handle(ctListen(1*ctMs, ctNsA, "0.0.0.0:80", 1, ctOwner, 0), failing)
		}},
		{"listen_close", func(c *Correlator) error {
			return c.Handle(ctClose(1*ctMs, ctNsA, "0.0.0.0:80", 1, ctOwner), failing)
		}},
		{"bind_failed", func(c *Correlator) error {
			return c.Handle(ctBind(1*ctMs, ctNsA, "0.0.0.0:80", 1, ctOwner, -98), failing)
		}},
		{"client refused", func(c *Correlator) error {
			return c.Handle(ctClient(1*ctMs, ctNsA, "127.0.0.1:1", "127.0.0.1:2", &ctClientProc), failing)
		}},
		{"expire", func(c *Correlator) error {
			if err := c.Handle(ctReset(1*ctMs, ctNsA, "127.0.0.1:1", "127.0.0.1:2"), failing); err != nil {
				return errors.New("held reset emitted at once")
			}
			return c.Handle(ctBind(1000*ctMs, ctNsA, "0.0.0.0:80", 1, ctOwner, 0), failing)
		}},
		{"flush", func(c *Correlator) error {
			if err := c.Handle(ctReset(1*ctMs, ctNsA, "127.0.0.1:1", "127.0.0.1:2"), failing); err != nil {
				return errors.New("held reset emitted at once")
			}
			return c.FlushAll(failing)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(newTestCorrelator()); !errors.Is(err, boom) {
				t.Errorf("error = %v, want %v", err, boom)
			}
		})
	}
}

// TestCorrelatorUnknownRecordType: a record type the correlator does not
// know is ignored, but still moves time forward.
func TestCorrelatorUnknownRecordType(t *testing.T) {
	c := newTestCorrelator()
	var s ctSink
	ctFeed(t, c, &s, ctReset(1*ctMs, ctNsA, "127.0.0.1:1", "127.0.0.1:2"), &record.Record{Type: 99, Ts: 1000 * ctMs})
	if len(s.evs) != 1 || s.evs[0].Type != events.TypeRefused {
		t.Fatalf("events = %+v, want the expired refusal only", s.evs)
	}
}

// FuzzCorrelatorHandle feeds arbitrary decoded records to a correlator: it
// must never panic, and every event it emits is well formed.
func FuzzCorrelatorHandle(f *testing.F) {
	var seed []byte
	for _, r := range []*record.Record{
		ctListen(1, ctNsA, "127.0.0.1:8080", 10, ctOwner, 0),
		ctBind(2, ctNsA, "127.0.0.1:8080", 11, ctOther, -98),
		ctClose(3, ctNsA, "127.0.0.1:8080", 10, ctOwner),
		ctReset(4, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080"),
		ctClient(5, ctNsA, "127.0.0.1:40000", "127.0.0.1:8080", &ctClientProc),
		ctReset(6, ctNsA, "[::1]:40000", "[::1]:8080"),
	} {
		seed = append(seed, unsafe.Slice((*byte)(unsafe.Pointer(r)), record.Size)...)
	}
	f.Add(seed)
	f.Add(bytes.Repeat([]byte{0xff}, 3*record.Size))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newTestCorrelator()
		fake(c).PortHolder = func(uint32, uint16) *events.Process { return nil }
		fake(c).HasSocket = func(pid uint32, ino uint64) bool { return pid%2 == 0 }
		fake(c).SocketPort = func(uint32, uint64) uint16 { return 1 }
		check := func(e *events.Event) error {
			if e == nil || e.Type == "" {
				t.Fatalf("emitted %+v", e)
			}
			if e.Type == events.TypeRefused && (e.Src == nil || e.Dst == nil || e.Cause == "" || e.Explanation == "") {
				t.Fatalf("malformed refusal %+v", e)
			}
			return nil
		}
		for len(data) >= record.Size {
			var r record.Record
			if record.Decode(data[:record.Size], &r) == nil {
				if err := c.Handle(&r, check); err != nil {
					t.Fatal(err)
				}
			}
			data = data[record.Size:]
		}
		if err := c.FlushAll(check); err != nil {
			t.Fatal(err)
		}
	})
}

// fakeHost answers the correlator's host lookups with the functions a
// test sets; an unset one finds nothing (a socket is assumed alive).
type fakeHost struct {
	PortHolder func(pid uint32, port uint16) *events.Process
	HasSocket  func(pid uint32, ino uint64) bool
	SocketPort func(pid uint32, ino uint64) uint16
}

func (h *fakeHost) portHolder(pid uint32, port uint16) *events.Process {
	if h.PortHolder == nil {
		return nil
	}
	return h.PortHolder(pid, port)
}

type fakeHostAdapter struct{ h *fakeHost }

func (a fakeHostAdapter) PortHolder(pid uint32, port uint16) *events.Process {
	return a.h.portHolder(pid, port)
}

func (a fakeHostAdapter) HasSocket(pid uint32, ino uint64) bool {
	if a.h.HasSocket == nil {
		return true
	}
	return a.h.HasSocket(pid, ino)
}

func (a fakeHostAdapter) SocketPort(pid uint32, ino uint64) uint16 {
	if a.h.SocketPort == nil {
		return 0
	}
	return a.h.SocketPort(pid, ino)
}

// newTestCorrelator is a correlator whose host lookups a test sets with
// fake(c).
func newTestCorrelator() *Correlator {
	return New(fakeHostAdapter{&fakeHost{}})
}

func fake(c *Correlator) *fakeHost { return c.Host.(fakeHostAdapter).h }

// A namespace inode number reused by a new namespace (a new container
// after one was removed) does not inherit the dead namespace's history:
// the kernel's netns cookie tells them apart.
func TestReusedNetnsInodeForgetsTheDead(t *testing.T) {
	c, s := newTestCorrelator(), &ctSink{}
	withCookie := func(r *record.Record, cookie uint64) *record.Record { r.NetnsCookie = cookie; return r }
	ctFeed(t, c, s,
		withCookie(ctListen(1*ctMs, ctNsA, "0.0.0.0:80", 10, ctOwner, 0), 1001),
		withCookie(ctExiting(ctClose(2*ctMs, ctNsA, "0.0.0.0:80", 10, ctOwner), 9), 1001),
		// The same inode, a new namespace: nothing listened there.
		withCookie(ctReset(50*ctMs, ctNsA, "10.0.0.1:40000", "10.0.0.2:80"), 2002))
	c.FlushAll(s.emit)
	got := s.evs[len(s.evs)-1]
	if got.Type != events.TypeRefused || got.Cause != events.CauseNoListener || got.Listener != nil {
		t.Errorf("refusal in the reused namespace: %+v (cause %s, listener %+v), want no_listener", got, got.Cause, got.Listener)
	}
	// The same namespace (same cookie) keeps its history.
	c, s = newTestCorrelator(), &ctSink{}
	ctFeed(t, c, s,
		withCookie(ctListen(1*ctMs, ctNsA, "0.0.0.0:80", 10, ctOwner, 0), 1001),
		withCookie(ctExiting(ctClose(2*ctMs, ctNsA, "0.0.0.0:80", 10, ctOwner), 9), 1001),
		withCookie(ctReset(50*ctMs, ctNsA, "10.0.0.1:40000", "10.0.0.2:80"), 1001))
	c.FlushAll(s.emit)
	if got := s.evs[len(s.evs)-1]; got.Cause != events.CauseListenerClosed {
		t.Errorf("refusal in the same namespace: cause %s, want listener_closed", got.Cause)
	}
}

// Holding says when the read loop must wake on Hold's time scale: while a
// refusal waits for its client, and not once it is written.
func TestHolding(t *testing.T) {
	src, dst := "10.0.0.1:5000", "10.0.0.2:80"
	c := newTestCorrelator()
	c.Hold = 20 * time.Millisecond
	var s ctSink
	if c.Holding() {
		t.Fatal("holding before any record")
	}
	if err := c.Handle(ctReset(100*ctMs, ctNsA, src, dst), s.emit); err != nil {
		t.Fatal(err)
	}
	if !c.Holding() {
		t.Fatal("a refusal waits for its client, but Holding is false")
	}
	if err := c.Expire(120*ctMs, s.emit); err != nil {
		t.Fatal(err)
	}
	if c.Holding() || len(s.of(events.TypeRefused)) != 1 {
		t.Fatalf("after Hold: holding %v, %d refused events, want false and 1", c.Holding(), len(s.of(events.TypeRefused)))
	}
}
