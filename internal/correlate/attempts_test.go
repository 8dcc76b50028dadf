package correlate

import (
	"strings"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/internal/record"

	"github.com/rsttrace/rsttrace/events"
)

// Unit tests of attempts and resets: records in, events out.

func fwRec(typ record.Type, ts uint64, netns uint32, src, dst string) *record.Record {
	r := &record.Record{Type: typ, Ts: ts, Netns: netns}
	r.Family = ctSetAP(&r.Saddr, &r.Sport, src)
	ctSetAP(&r.Daddr, &r.Dport, dst)
	return r
}

func fwDropRec(ts uint64, src, dst string, hook record.HookID, flags uint32) *record.Record {
	r := fwRec(record.FirewallDrop, ts, 7, src, dst)
	r.Aux, r.Flags = uint32(hook), flags
	return r
}

func connFailedRec(ts uint64, src, dst string, errno int32, retrans, ms uint32, p events.Process) *record.Record {
	r := fwRec(record.ConnectFailed, ts, 7, src, dst)
	r.Ret, r.Aux, r.Flags = -errno, retrans<<24|ms, record.FlagProcKnown
	return ctWithProc(r, p)
}

func retransRec(ts uint64, src, dst string, p events.Process) *record.Record {
	r := fwRec(record.SynRetransmit, ts, 7, src, dst)
	r.Flags = record.FlagProcKnown
	return ctWithProc(r, p)
}

var curl = events.Process{Pid: 42, Comm: "curl"}

const ms = uint64(time.Millisecond)

func newX5Correlator() *Correlator {
	c := newTestCorrelator()
	c.SeesLocalAnswers, c.SeesFirewallDrops = true, true
	return c
}

// A RST-refused attempt has no connect failure record (the kernel's
// client_refused deletes its entry): the drop and the client's record are
// the whole of it.
func TestFirewallRejectWithRST(t *testing.T) {
	c, s := newX5Correlator(), &ctSink{}
	ctFeed(t, c, s,
		fwDropRec(1*ms, "10.0.0.1:5000", "10.0.0.2:80", record.HookInput, record.FlagFirewallNFT),
		ctClient(1*ms+1000, 7, "10.0.0.1:5000", "10.0.0.2:80", &curl))
	if err := c.FlushAll(s.emit); err != nil {
		t.Fatal(err)
	}
	if len(s.evs) != 1 {
		t.Fatalf("%d events, want 1: %+v", len(s.evs), s.evs)
	}
	e := s.evs[0]
	if e.Type != events.TypeRefused || e.Cause != events.CauseFirewallReject || e.Answer != "tcp_reset" ||
		e.Firewall == nil || e.Firewall.Hook != "input" || e.Firewall.Table != "nftables" || e.Firewall.SYNs != 1 ||
		e.Client == nil || *e.Client != curl {
		t.Errorf("event = %+v firewall %+v", e, e.Firewall)
	}
}

func TestFirewallICMPRejectClaimedByRetransmit(t *testing.T) {
	c, s := newX5Correlator(), &ctSink{}
	ctFeed(t, c, s,
		fwDropRec(0, "10.0.0.1:5000", "10.0.0.2:80", record.HookInput, record.FlagFirewallICMP),
		retransRec(1000*ms, "10.0.0.1:5000", "10.0.0.2:80", curl),
		fwDropRec(1000*ms+1, "10.0.0.1:5000", "10.0.0.2:80", record.HookInput, record.FlagFirewallICMP))
	// Past the claim hold: the claimed entry waits for its connect().
	if err := c.Expire(5000*ms, s.emit); err != nil || len(s.evs) != 0 {
		t.Fatalf("claimed drop written before its connect() ended: %v %+v", err, s.evs)
	}
	ctFeed(t, c, s, connFailedRec(5001*ms, "10.0.0.1:5000", "10.0.0.2:80", econnrefused, 1, 1000, curl))
	if len(s.evs) != 1 {
		t.Fatalf("%d events, want 1", len(s.evs))
	}
	e := s.evs[0]
	if e.Cause != events.CauseFirewallReject || e.Answer != "icmp" || e.Firewall.SYNs != 2 ||
		e.Attempt == nil || e.Attempt.Errno != "ECONNREFUSED" || *e.Client != curl {
		t.Errorf("event = %+v", e)
	}
}

func TestTimeoutCauses(t *testing.T) {
	cases := []struct {
		name  string
		drop  bool
		errno int32
		cause events.Cause
		want  string
	}{
		{"firewall-drop", true, etimedout, events.CauseFirewallDrop, "ETIMEDOUT"},
		{"no-response", false, etimedout, events.CauseNoResponse, "ETIMEDOUT"},
		{"gave-up", false, 0, events.CauseNoResponse, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := newX5Correlator(), &ctSink{}
			if tc.drop {
				ctFeed(t, c, s, fwDropRec(0, "10.0.0.1:5000", "10.0.0.2:80", record.HookOutput, 0),
					retransRec(1000*ms, "10.0.0.1:5000", "10.0.0.2:80", curl))
			}
			ctFeed(t, c, s, connFailedRec(3000*ms, "10.0.0.1:5000", "10.0.0.2:80", tc.errno, 2, 3000, curl))
			c.FlushAll(s.emit)
			if len(s.evs) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(s.evs), s.evs)
			}
			e := s.evs[0]
			if e.Type != events.TypeTimeout || e.Cause != tc.cause || e.Attempt.Errno != tc.want ||
				e.Attempt.Retransmits != 2 || e.Attempt.WaitedMs != 3000 || *e.Client != curl {
				t.Errorf("event = %+v attempt %+v", e, e.Attempt)
			}
			if tc.drop && e.Firewall.Hook != "output" {
				t.Errorf("firewall = %+v", e.Firewall)
			}
		})
	}
}

// Where packet filter drops cannot be seen (before 5.17), a timeout
// without a seen drop does not say this host dropped nothing.
func TestTimeoutWithoutDropHook(t *testing.T) {
	for _, errno := range []int32{etimedout, 0} {
		c, s := newTestCorrelator(), &ctSink{}
		ctFeed(t, c, s, connFailedRec(3000*ms, "10.0.0.1:5000", "10.0.0.2:80", errno, 1, 3000, curl))
		c.FlushAll(s.emit)
		if len(s.evs) != 1 {
			t.Fatalf("%d events, want 1: %+v", len(s.evs), s.evs)
		}
		e := s.evs[0]
		if e.Type != events.TypeTimeout || e.Cause != events.CauseUnknown || e.Firewall != nil ||
			e.Attempt.Retransmits != 1 || *e.Client != curl {
			t.Errorf("errno %d: event = %+v attempt %+v", errno, e, e.Attempt)
		}
		if strings.Contains(e.Explanation, "did not drop") || !strings.Contains(e.Explanation, "not ruled out") {
			t.Errorf("errno %d: explanation %q", errno, e.Explanation)
		}
	}
}

func TestFirewallUnclaimed(t *testing.T) {
	c, s := newX5Correlator(), &ctSink{}
	ctFeed(t, c, s,
		fwDropRec(0, "192.0.2.9:5000", "10.0.0.2:80", record.HookPrerouting, 0),
		fwDropRec(1*ms, "192.0.2.9:5001", "10.0.0.2:81", record.HookInput, record.FlagFirewallICMP))
	if err := c.Expire(1000*ms, s.emit); err != nil || len(s.evs) != 0 {
		t.Fatalf("written before the claim hold: %+v", s.evs)
	}
	c.Expire(uint64(fwClaimHold)+2*ms, s.emit)
	if len(s.evs) != 2 {
		t.Fatalf("%d events, want 2", len(s.evs))
	}
	if e := s.evs[0]; e.Type != events.TypeFiltered || e.Cause != events.CauseFirewallDrop || e.Firewall.Hook != "prerouting" || e.Client != nil {
		t.Errorf("drop: %+v", e)
	}
	if e := s.evs[1]; e.Type != events.TypeRefused || e.Cause != events.CauseFirewallReject || e.Answer != "icmp" {
		t.Errorf("icmp reject: %+v", e)
	}
}

func TestStillWaitingAtShutdown(t *testing.T) {
	c, s := newX5Correlator(), &ctSink{}
	ctFeed(t, c, s,
		fwDropRec(0, "10.0.0.1:5000", "10.0.0.2:80", record.HookInput, 0),
		retransRec(1000*ms, "10.0.0.1:5000", "10.0.0.2:80", curl),
		fwDropRec(1000*ms, "10.0.0.1:5000", "10.0.0.2:80", record.HookInput, 0))
	c.FlushAll(s.emit)
	if len(s.evs) != 1 {
		t.Fatalf("%d events", len(s.evs))
	}
	e := s.evs[0]
	if e.Type != events.TypeTimeout || !e.Attempt.StillWaiting || e.Attempt.Retransmits != 1 || *e.Client != curl {
		t.Errorf("event = %+v attempt %+v", e, e.Attempt)
	}
}

func TestRemoteRefusal(t *testing.T) {
	for _, known := range []bool{true, false} {
		c, s := newTestCorrelator(), &ctSink{}
		c.SeesLocalAnswers = known
		ctFeed(t, c, s,
			ctClient(0, 7, "10.0.0.1:5000", "198.51.100.1:80", &curl),
			connFailedRec(2, "10.0.0.1:5001", "198.51.100.1:80", econnrefused, 0, 0, curl))
		c.FlushAll(s.emit)
		want := events.CauseUnknown
		if known {
			want = events.CauseRemote
		}
		if len(s.evs) != 2 || s.evs[0].Cause != want || s.evs[1].Cause != want ||
			s.evs[1].Answer != "icmp" || *s.evs[0].Client != curl {
			t.Errorf("remoteKnown %v: %d events %+v", known, len(s.evs), s.evs)
		}
		if known && s.evs[0].Answer != "tcp_reset" {
			t.Errorf("answer %q", s.evs[0].Answer)
		}
	}
}

func TestResetPairsBothSides(t *testing.T) {
	srv := events.Process{Pid: 7, Comm: "srv"}
	for _, order := range []string{"in-first", "out-first"} {
		c, s := newTestCorrelator(), &ctSink{}
		c.RSTReason = func(v uint32) string { return map[uint32]string{11: "TCP_ABORT_ON_CLOSE"}[v] }
		out := ctWithProc(fwRec(record.ResetOut, 1, 7, "10.0.0.2:80", "10.0.0.1:5000"), srv)
		out.Reason, out.Flags, out.Ino = 11, record.FlagCurrent|record.FlagNoSkb, 5
		// The receiver's owner, recorded in the kernel at connect().
		in := ctWithProc(fwRec(record.ResetIn, 2, 7, "10.0.0.1:5000", "10.0.0.2:80"), curl)
		in.Ino, in.State, in.Flags = 99, 1, record.FlagProcKnown|record.FlagOwnerKnown
		if order == "in-first" {
			ctFeed(t, c, s, in, out)
		} else {
			ctFeed(t, c, s, out, in)
		}
		c.FlushAll(s.emit)
		if len(s.evs) != 1 {
			t.Fatalf("%s: %d events", order, len(s.evs))
		}
		e := s.evs[0]
		if e.Type != events.TypeReset || e.Src.Port != 80 || e.Dst.Port != 5000 || e.KernelReason != "TCP_ABORT_ON_CLOSE" ||
			e.Process == nil || *e.Process != srv || e.PeerProcess == nil || *e.PeerProcess != curl {
			t.Errorf("%s: %+v", order, e)
		}
	}
}

func TestResetSenderNotTrustedWithoutCloseReason(t *testing.T) {
	c, s := newTestCorrelator(), &ctSink{}
	out := ctWithProc(fwRec(record.ResetOut, 1, 7, "10.0.0.2:80", "10.0.0.1:5000"), events.Process{Pid: 1, Comm: "swapper"})
	out.Reason, out.Flags = RSTReasonNoneForTest, record.FlagCurrent|record.FlagNoSkb
	ctFeed(t, c, s, out)
	c.FlushAll(s.emit)
	if len(s.evs) != 1 || s.evs[0].Process != nil {
		t.Errorf("events %+v: the interrupted task is not the sender", s.evs)
	}
}

// Before 6.10 a RST has no reason; one sent by a socket already in CLOSE
// comes from close() or disconnect() in the closer's own call: the task
// is the sender. In another state (a timer's reset) it is not.
func TestResetSenderWithoutReasonByState(t *testing.T) {
	closer := events.Process{Pid: 42, Comm: "socat"}
	for _, tc := range []struct {
		state uint8
		named bool
	}{{7, true}, {4, false}} { // TCP_CLOSE, TCP_FIN_WAIT1
		c, s := newTestCorrelator(), &ctSink{}
		out := ctWithProc(fwRec(record.ResetOut, 1, 7, "10.0.0.2:80", "10.0.0.1:5000"), closer)
		out.Reason, out.Flags, out.State = RSTReasonNoneForTest, record.FlagCurrent|record.FlagNoSkb, tc.state
		ctFeed(t, c, s, out)
		c.FlushAll(s.emit)
		if len(s.evs) != 1 || (s.evs[0].Process != nil) != tc.named {
			t.Errorf("state %d: events %+v, want the sender named: %v", tc.state, s.evs, tc.named)
		}
	}
}

const RSTReasonNoneForTest = 0xffffffff
