package correlate

import (
	"net/netip"
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Summary mode. While the ring buffer is more than half full (or always,
// with Config.Summary) the kernel programs count refusals in the summary
// map, by network namespace and destination, instead of writing a record
// for each: a flood costs a map update per refusal, not a record, and
// nothing is lost uncounted. The counters only grow; every interval the
// tracer reads them all (one batch lookup) and writes one summary record
// per destination whose counts moved.

// SummaryKey is a destination the kernel counts refusals to (struct
// summary_key of bpf/rsttrace.h, as the tracer read it).
type SummaryKey struct {
	Netns  uint32
	Dport  uint16
	Family uint8
	Daddr  [16]byte
}

// SummaryCount are the refusals to one destination: answered by this
// host's TCP stack (Server) and received by local clients (Client).
type SummaryCount struct {
	Server, Client uint64
}

// DefaultSummaryInterval is how often summary records are written.
const DefaultSummaryInterval = time.Second

// Summarizer turns the cumulative counters into per-interval records.
type Summarizer struct {
	seen   map[SummaryKey]SummaryCount
	last   time.Time
	total  uint64 // refusals written in summary records
	reason string // why refusals are being summarized
}

// NewSummarizer starts counting intervals at now; always: every refusal
// is summarized (--summary), not only while the ring buffer is filling.
func NewSummarizer(always bool, now time.Time) *Summarizer {
	s := &Summarizer{seen: map[SummaryKey]SummaryCount{}, last: now,
		reason: "the ring buffer was more than half full: the tracer was falling behind"}
	if always {
		s.reason = "--summary"
	}
	return s
}

// Due reports whether an interval has passed since the last Update.
func (s *Summarizer) Due(now time.Time) bool { return now.Sub(s.last) >= DefaultSummaryInterval }

// Total is how many refusals were written in summary records.
func (s *Summarizer) Total() uint64 { return s.total }

// Update takes the current counters (keys[i], vals[i]) and writes a
// summary record for each destination that moved since the last call.
func (s *Summarizer) Update(c *Correlator, keys []SummaryKey, vals []SummaryCount, now time.Time, emit func(*events.Event) error) error {
	interval := now.Sub(s.last)
	s.last = now
	for i, k := range keys {
		v := vals[i]
		old := s.seen[k]
		if v == old {
			continue
		}
		s.seen[k] = v
		d := SummaryCount{Server: v.Server - old.Server, Client: v.Client - old.Client}
		ev := c.summaryEvent(k, d, now, interval)
		if ev == nil {
			continue
		}
		s.total += ev.Refusals
		ev.Explanation = summaryExplanation(ev, s.reason)
		if err := emit(ev); err != nil {
			return err
		}
	}
	return nil
}

// summaryEvent classifies the refusals to one destination as a refusal to
// it would be classified now. Server-side counts are refusals by this
// host's stack; without any, the clients' counts are refusals from
// elsewhere (a remote host or a packet filter).
func (c *Correlator) summaryEvent(k SummaryKey, d SummaryCount, now time.Time, interval time.Duration) *events.Event {
	var a netip.Addr
	if k.Family == record.AFInet {
		a = netip.AddrFrom4([4]byte(k.Daddr[:4]))
	} else {
		a = netip.AddrFrom16(k.Daddr).Unmap()
	}
	ev := &events.Event{
		Time:       now,
		Type:       events.TypeSummary,
		Netns:      k.Netns,
		Dst:        &events.Endpoint{Addr: a, Port: k.Dport},
		IntervalMs: interval.Milliseconds(),
	}
	switch {
	case d.Server > 0:
		ev.Refusals = d.Server
		c.Classify(ev)
	case d.Client > 0:
		ev.Refusals = d.Client
		ev.Cause = events.CauseUnknown
		if c.SeesLocalAnswers {
			ev.Cause = events.CauseRemote
		}
	default:
		return nil
	}
	return ev
}

func summaryExplanation(ev *events.Event, reason string) string {
	why := ""
	switch ev.Cause {
	case events.CauseRemote:
		why = "another host refused them (nothing on this host sent the RSTs)"
	case events.CauseUnknown:
		why = "the RSTs were not sent by this host's TCP stack"
	default:
		why = ev.Explanation
	}
	return "counted in the kernel, not written one by one (" + reason + "): " + why
}
