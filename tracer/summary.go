package tracer

import (
	"errors"
	"fmt"
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/rsttrace/rsttrace/events"
)

// Summary mode. While the ring buffer is more than half full (or always,
// with Config.Summary) the kernel programs count refusals in the summary
// map, by network namespace and destination, instead of writing a record
// for each: a flood costs a map update per refusal, not a record, and
// nothing is lost uncounted. The counters only grow; every interval the
// tracer reads them all (one batch lookup) and writes one summary record
// per destination whose counts moved.

// summaryKey and summaryVal are struct summary_key and summary_val of
// bpf/rsttrace.h: a destination, and its refusals answered by this host's
// TCP stack (Server) and received by local clients (Client).
type (
	summaryKey = bpfobj.RsttraceSummaryKey
	summaryVal = bpfobj.RsttraceSummaryVal
)

// DefaultSummaryInterval is how often summary records are written.
const DefaultSummaryInterval = time.Second

// summarizer turns the cumulative counters into per-interval records.
type summarizer struct {
	seen   map[summaryKey]summaryVal
	last   time.Time
	total  uint64 // refusals written in summary records
	reason string // why refusals are being summarized
	keys   []summaryKey
	vals   []summaryVal
}

// poll reads the counters and writes what moved (when due, or always when
// final) as summary records.
func (s *summarizer) poll(m *ebpf.Map, c *Correlator, now time.Time, final bool, emit func(*events.Event) error) error {
	if m == nil || (!final && now.Sub(s.last) < DefaultSummaryInterval) {
		return nil
	}
	if err := s.read(m); err != nil {
		return err
	}
	return s.update(c, s.keys, s.vals, now, emit)
}

func newSummarizer(always bool, now time.Time) *summarizer {
	s := &summarizer{seen: map[summaryKey]summaryVal{}, last: now,
		reason: "the ring buffer was more than half full: the tracer was falling behind"}
	if always {
		s.reason = "--summary"
	}
	return s
}

// update takes the current counters (keys[i], vals[i]) and writes a
// summary record for each destination that moved since the last call.
func (s *summarizer) update(c *Correlator, keys []summaryKey, vals []summaryVal, now time.Time, emit func(*events.Event) error) error {
	interval := now.Sub(s.last)
	s.last = now
	for i, k := range keys {
		v := vals[i]
		old := s.seen[k]
		if v == old {
			continue
		}
		s.seen[k] = v
		d := summaryVal{Server: v.Server - old.Server, Client: v.Client - old.Client}
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
func (c *Correlator) summaryEvent(k summaryKey, d summaryVal, now time.Time, interval time.Duration) *events.Event {
	var a netip.Addr
	if k.Family == afInet {
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
		if c.x5.remoteKnown {
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

// summaryBatch is how many entries one batch lookup reads.
const summaryBatch = 4096

// readSummary reads every counter of the summary map into the summarizer's
// buffers: batch lookups (5.6+), else one lookup per key.
func (s *summarizer) read(m *ebpf.Map) error {
	s.keys, s.vals = s.keys[:0], s.vals[:0]
	keys := make([]summaryKey, summaryBatch)
	vals := make([]summaryVal, summaryBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		s.keys = append(s.keys, keys[:n]...)
		s.vals = append(s.vals, vals[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the summary counters: %w", err)
		}
	}
	s.keys, s.vals = s.keys[:0], s.vals[:0]
	var k summaryKey
	var v summaryVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		s.keys = append(s.keys, k)
		s.vals = append(s.vals, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the summary counters: %w", err)
	}
	return nil
}
