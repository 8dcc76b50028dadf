package correlate

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Summaries. Past a rate per destination (the first RatePerSecond events
// of a kind to one destination each second are written in full), while
// the ring buffer is more than half full, or always with Config.Summary,
// the kernel programs count events in the summary maps, by network
// namespace, destination and kind, instead of writing a record for each:
// a flood costs a map update per event, not a record, and nothing is lost
// uncounted. The counts are per interval: the tracer empties a map each
// time it reads it, and writes one summary record per destination and
// kind that counted anything.

// SummaryKind is what a summary counts (enum summary_kind).
type SummaryKind uint8

// Summary kinds. Values are those of enum summary_kind in bpf/rsttrace.h.
const (
	KindRefused  SummaryKind = 0
	KindFiltered SummaryKind = 1
	KindReset    SummaryKind = 2
	KindTimeout  SummaryKind = 3
)

// SummaryKinds lists every kind, in the order of SummaryTotals.
var SummaryKinds = []SummaryKind{KindRefused, KindFiltered, KindReset, KindTimeout}

// Type is the type of the events a summary of kind k stands for.
func (k SummaryKind) Type() events.Type {
	switch k {
	case KindRefused:
		return events.TypeRefused
	case KindFiltered:
		return events.TypeFiltered
	case KindReset:
		return events.TypeReset
	case KindTimeout:
		return events.TypeTimeout
	}
	return events.Type("kind " + strconv.Itoa(int(k)))
}

// SummaryKey is a destination and kind the kernel counts events of
// (struct summary_key of bpf/rsttrace.h, as the tracer read it).
type SummaryKey struct {
	Netns  uint32
	Dport  uint16
	Family uint8
	Kind   SummaryKind
	Daddr  [16]byte
}

// SummaryCount are the events counted for one key in one interval, by
// side (struct summary_val). Refusals and resets: sent by this host's TCP
// stack (Server), received by local clients with no local sender
// (Client), and the receiving side of those counted in Server
// (ClientLocal, not counted again). Filtered: Server dropped SYNs.
// Timeout: Client attempts ended.
type SummaryCount struct {
	Server, Client, ClientLocal uint64
}

// SummaryTotals are the events written in summary records, by kind.
type SummaryTotals struct {
	Refused, Filtered, Reset, Timeout uint64
}

// DefaultSummaryInterval is how often summary records are written.
const DefaultSummaryInterval = time.Second

// Summarizer turns the per-interval counters into summary records.
type Summarizer struct {
	last   time.Time
	totals SummaryTotals
	reason string // why events are being summarized
	// One interval's counts, sorted by key and merged (a reused buffer: a
	// scan counts ~100,000 destinations an interval).
	merged []keyCount
}

type keyCount struct {
	k     SummaryKey
	n     SummaryCount
	first int // where the key first came: records keep the kernel's order
}

func compareKeys(a, b SummaryKey) int {
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Family, b.Family),
		bytes.Compare(a.Daddr[:], b.Daddr[:]), cmp.Compare(a.Dport, b.Dport))
}

// NewSummarizer starts counting intervals at now; always: every refusal
// is summarized (--summary), not only while the ring buffer is filling;
// rate: the events of a kind written in full per destination and second
// (0: no limit).
func NewSummarizer(always bool, rate int, now time.Time) *Summarizer {
	s := &Summarizer{last: now,
		reason: "the ring buffer was more than half full: the tracer was falling behind"}
	if rate > 0 {
		s.reason = "more than " + strconv.Itoa(rate) + " a second to this destination, or the ring buffer more than half full"
	}
	if always {
		s.reason = "--summary"
	}
	return s
}

// Due reports whether an interval has passed since the last Update.
func (s *Summarizer) Due(now time.Time) bool { return now.Sub(s.last) >= DefaultSummaryInterval }

// Total is how many refusals were written in summary records.
func (s *Summarizer) Total() uint64 { return s.totals.Refused }

// Totals is how many events of each kind were written in summary records.
func (s *Summarizer) Totals() SummaryTotals { return s.totals }

// Update takes the counts of one interval (keys[i], vals[i]; a key may
// come more than once) and writes a summary record for each destination
// and kind that counted anything.
func (s *Summarizer) Update(c *Correlator, keys []SummaryKey, vals []SummaryCount, now time.Time, emit func(*events.Event) error) error {
	interval := now.Sub(s.last)
	s.last = now
	s.merged = s.merged[:0]
	for i, k := range keys {
		s.merged = append(s.merged, keyCount{k, vals[i], i})
	}
	slices.SortFunc(s.merged, func(a, b keyCount) int { return cmp.Or(compareKeys(a.k, b.k), cmp.Compare(a.first, b.first)) })
	out := s.merged[:0]
	for _, kc := range s.merged {
		if n := len(out); n > 0 && out[n-1].k == kc.k {
			o := &out[n-1].n
			o.Server, o.Client, o.ClientLocal = o.Server+kc.n.Server, o.Client+kc.n.Client, o.ClientLocal+kc.n.ClientLocal
			continue
		}
		out = append(out, kc)
	}
	s.merged = out
	slices.SortFunc(s.merged, func(a, b keyCount) int { return cmp.Compare(a.first, b.first) })
	for _, kc := range s.merged {
		k := kc.k
		for _, ev := range c.summaryEvents(k, kc.n, now, interval) {
			switch k.Kind {
			case KindRefused:
				s.totals.Refused += ev.Refusals
			case KindFiltered:
				s.totals.Filtered += ev.Refusals
			case KindReset:
				s.totals.Reset += ev.Refusals
			case KindTimeout:
				s.totals.Timeout += ev.Refusals
			}
			ev.Explanation = summaryExplanation(ev, k.Kind, s.reason)
			if err := emit(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// summaryEvents classifies the events counted for one key as one such
// event to its destination would be classified now. Refusals: those by
// this host's stack, and (a second record) those from elsewhere (a remote
// host or a packet filter).
func (c *Correlator) summaryEvents(k SummaryKey, d SummaryCount, now time.Time, interval time.Duration) []*events.Event {
	var a netip.Addr
	if k.Family == record.AFInet {
		a = netip.AddrFrom4([4]byte(k.Daddr[:4]))
	} else {
		a = netip.AddrFrom16(k.Daddr).Unmap()
	}
	mk := func(n uint64) *events.Event {
		return &events.Event{
			Time:       now,
			Type:       events.TypeSummary,
			Netns:      k.Netns,
			Dst:        &events.Endpoint{Addr: a, Port: k.Dport},
			IntervalMs: interval.Milliseconds(),
			Refusals:   n,
			SummaryOf:  string(k.Kind.Type()),
		}
	}
	var out []*events.Event
	switch k.Kind {
	case KindRefused:
		if d.Server > 0 {
			ev := mk(d.Server)
			c.Classify(ev)
			out = append(out, ev)
		}
		if d.Client > 0 {
			ev := mk(d.Client)
			ev.Cause = events.CauseUnknown
			if c.SeesLocalAnswers {
				ev.Cause = events.CauseRemote
			}
			out = append(out, ev)
		}
	case KindFiltered:
		if d.Server > 0 {
			ev := mk(d.Server)
			ev.Cause = events.CauseFirewallDrop
			ev.Listener = c.listenerFor(k.Netns, netip.AddrPortFrom(a, k.Dport))
			out = append(out, ev)
		}
	case KindReset:
		if n := d.Server + d.Client; n > 0 {
			out = append(out, mk(n))
		}
	case KindTimeout:
		if d.Client > 0 {
			ev := mk(d.Client)
			ev.Cause = events.CauseNoResponse
			if !c.SeesFirewallDrops {
				ev.Cause = events.CauseUnknown
			}
			out = append(out, ev)
		}
	}
	return out
}

func summaryExplanation(ev *events.Event, kind SummaryKind, reason string) string {
	why := ""
	switch {
	case kind == KindFiltered:
		why = "SYNs to it this host's packet filter dropped"
	case kind == KindReset:
		why = "RSTs it sent on existing connections"
	case kind == KindTimeout:
		why = "local connect()s to it that got no answer"
	case ev.Cause == events.CauseRemote:
		why = "another host refused them (nothing on this host sent the RSTs)"
	case ev.Cause == events.CauseUnknown:
		why = "the RSTs were not sent by this host's TCP stack"
	default:
		why = ev.Explanation
	}
	return "counted in the kernel, not written one by one (" + reason + "): " + why
}
