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

// Summaries, user side: the kernel counts in one of two maps (summary_a,
// summary_b), the one map summary_slot names. Every interval the tracer
// empties the map it retired at the previous poll (no program can still
// be counting in it an interval later: programs run to their end without
// sleeping), then retires the other one by flipping the slot. Each count
// is read exactly once, one interval late; at shutdown both maps are read.
// Where the kernel allocates them on demand the maps are per-CPU: a key's
// counts are the sum over CPUs. Where it has BPF compare-and-exchange,
// counts go first to per-CPU cells (summary_cells_a, summary_cells_b: a
// small array per CPU, indexed by a hash of the key) that take turns with
// the maps and are read and zeroed with them; a key counted in both has
// its counts added.

// summaryBatch is how many entries one batch lookup reads.
const summaryBatch = 4096

// summaryReader empties the summary maps into reusable buffers.
type summaryReader struct {
	maps  [2]*ebpf.Map
	cells [2]*ebpf.Map
	slot  *ebpf.Map
	cur   uint32 // the slot the programs count in
	// Batch buffers (a key's per-CPU values side by side).
	bkeys []bpfobj.RsttraceSummaryKey
	bvals []bpfobj.RsttraceSummaryVal
	// The cells of one array, every CPU's side by side, and zeroes to
	// write back.
	cellv, cellz []bpfobj.RsttraceSummaryCell
	// What the correlator reads, converted.
	ckeys []correlate.SummaryKey
	cvals []correlate.SummaryCount
}

// poll empties the retired map and writes what it counted, when due; final:
// both maps, at shutdown.
func (s *summaryReader) poll(sum *correlate.Summarizer, c *correlate.Correlator, now time.Time, final bool, emit func(*events.Event) error) error {
	if s.slot == nil || (!final && !sum.Due(now)) {
		return nil
	}
	s.ckeys, s.cvals = s.ckeys[:0], s.cvals[:0]
	retired := 1 - s.cur
	if err := s.drain(s.maps[retired]); err != nil {
		return err
	}
	if err := s.drainCells(s.cells[retired]); err != nil {
		return err
	}
	if final {
		if err := s.drain(s.maps[s.cur]); err != nil {
			return err
		}
		if err := s.drainCells(s.cells[s.cur]); err != nil {
			return err
		}
	} else {
		if err := s.slot.Put(uint32(0), retired); err != nil {
			return fmt.Errorf("switching summary maps: %w", err)
		}
		s.cur = retired
	}
	return sum.Update(c, s.ckeys, s.cvals, now, emit)
}

func (s *summaryReader) add(k *bpfobj.RsttraceSummaryKey, perCPU []bpfobj.RsttraceSummaryVal) {
	var n correlate.SummaryCount
	for _, v := range perCPU {
		n.Server += v.Server
		n.Client += v.Client
		n.ClientLocal += v.ClientLocal
	}
	s.ckeys = append(s.ckeys, correlate.SummaryKey{Netns: k.Netns, Dport: k.Dport, Family: k.Family, Kind: correlate.SummaryKind(k.Kind), Daddr: k.Daddr})
	s.cvals = append(s.cvals, n)
}

// drainCells reads every CPU's keyed cells of one cell array, appending to
// ckeys and cvals, and zeroes the cells it read (a program takes a cell
// only while it is zero). Nil: the kernel counts in the maps only.
func (s *summaryReader) drainCells(m *ebpf.Map) error {
	if m == nil {
		return nil
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("reading the summary cells: %w", err)
	}
	if len(s.cellv) != ncpu {
		s.cellv = make([]bpfobj.RsttraceSummaryCell, ncpu)
		s.cellz = make([]bpfobj.RsttraceSummaryCell, ncpu)
	}
	one := make([]bpfobj.RsttraceSummaryVal, 1)
	for i := range m.MaxEntries() {
		if err := m.Lookup(i, s.cellv); err != nil {
			return fmt.Errorf("reading the summary cells: %w", err)
		}
		keyed := false
		for c := range s.cellv {
			if s.cellv[c].Tag != uint64(bpfobj.RsttraceSummaryCellTagCELL_KEYED) {
				continue
			}
			keyed = true
			one[0] = s.cellv[c].Val
			s.add(&s.cellv[c].Key, one)
		}
		if keyed {
			if err := m.Put(i, s.cellz); err != nil {
				return fmt.Errorf("emptying the summary cells: %w", err)
			}
		}
	}
	return nil
}

// drain reads and deletes every entry of m, appending to ckeys and cvals:
// batch lookup-and-delete (5.6+), else one lookup and delete per key.
func (s *summaryReader) drain(m *ebpf.Map) error {
	ncpu := 1
	perCPU := m.Type() == ebpf.PerCPUHash
	if perCPU {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return fmt.Errorf("reading the summary counters: %w", err)
		}
		ncpu = n
	}
	if len(s.bkeys) != summaryBatch || len(s.bvals) != summaryBatch*ncpu {
		s.bkeys = make([]bpfobj.RsttraceSummaryKey, summaryBatch)
		s.bvals = make([]bpfobj.RsttraceSummaryVal, summaryBatch*ncpu)
	}
	start := len(s.ckeys)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, s.bkeys, s.bvals, nil)
		for i := range n {
			s.add(&s.bkeys[i], s.bvals[i*ncpu:(i+1)*ncpu])
		}
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
	s.ckeys, s.cvals = s.ckeys[:start], s.cvals[:start]
	var k bpfobj.RsttraceSummaryKey
	v := make([]bpfobj.RsttraceSummaryVal, ncpu)
	var del []bpfobj.RsttraceSummaryKey
	it := m.Iterate()
	for {
		var ok bool
		if perCPU {
			ok = it.Next(&k, &v)
		} else {
			ok = it.Next(&k, &v[0])
		}
		if !ok {
			break
		}
		s.add(&k, v)
		del = append(del, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the summary counters: %w", err)
	}
	for i := range del {
		if err := m.Delete(&del[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("emptying the summary counters: %w", err)
		}
	}
	return nil
}
