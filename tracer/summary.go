package tracer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/bpfobj"
	"github.com/rsttrace/rsttrace/internal/correlate"
)

// Summary mode, user side: every interval the tracer reads the kernel's
// cumulative per-destination refusal counters (map summary, one batch
// lookup) and hands them to the correlator's Summarizer, which writes one
// summary record per destination whose counts moved.

// summaryBatch is how many entries one batch lookup reads.
const summaryBatch = 4096

// summaryReader reads the summary map into reusable buffers.
type summaryReader struct {
	m    *ebpf.Map
	keys []bpfobj.RsttraceSummaryKey
	vals []bpfobj.RsttraceSummaryVal
	// What the correlator reads, converted.
	ckeys []correlate.SummaryKey
	cvals []correlate.SummaryCount
}

// poll reads the counters and writes what moved, when due (always when
// final).
func (s *summaryReader) poll(sum *correlate.Summarizer, c *correlate.Correlator, now time.Time, final bool, emit func(*events.Event) error) error {
	if s.m == nil || (!final && !sum.Due(now)) {
		return nil
	}
	if err := s.read(); err != nil {
		return err
	}
	s.ckeys, s.cvals = s.ckeys[:0], s.cvals[:0]
	for i, k := range s.keys {
		s.ckeys = append(s.ckeys, correlate.SummaryKey{Netns: k.Netns, Dport: k.Dport, Family: k.Family, Daddr: k.Daddr})
		s.cvals = append(s.cvals, correlate.SummaryCount{Server: s.vals[i].Server, Client: s.vals[i].Client})
	}
	return sum.Update(c, s.ckeys, s.cvals, now, emit)
}

// read reads every counter of the summary map: batch lookups (5.6+), else
// one lookup per key.
func (s *summaryReader) read() error {
	s.keys, s.vals = s.keys[:0], s.vals[:0]
	keys := make([]bpfobj.RsttraceSummaryKey, summaryBatch)
	vals := make([]bpfobj.RsttraceSummaryVal, summaryBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := s.m.BatchLookup(&cursor, keys, vals, nil)
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
	var k bpfobj.RsttraceSummaryKey
	var v bpfobj.RsttraceSummaryVal
	it := s.m.Iterate()
	for it.Next(&k, &v) {
		s.keys = append(s.keys, k)
		s.vals = append(s.vals, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the summary counters: %w", err)
	}
	return nil
}
