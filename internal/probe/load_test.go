package probe

import (
	"math/bits"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/rsttrace/rsttrace/internal/bpfobj"
)

// The programs are verified in groups at once: every program is in exactly
// one group, the groups are about the same size, and each group sees every
// map (the maps are shared).
func TestProgramGroups(t *testing.T) {
	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		t.Fatal(err)
	}
	if writesGlobalData(spec) {
		t.Fatal("a program writes global data: the programs would be loaded in one group")
	}
	for _, n := range []int{1, 2, 3, 8} {
		groups := programGroups(spec, n)
		if len(groups) != min(n, len(spec.Programs)) {
			t.Fatalf("%d CPUs: %d groups", n, len(groups))
		}
		seen := map[string]int{}
		var sizes []int
		for _, g := range groups {
			size := 0
			for name, p := range g.Programs {
				seen[name]++
				size += len(p.Instructions)
			}
			sizes = append(sizes, size)
			if len(g.Maps) != len(spec.Maps) {
				t.Errorf("%d CPUs: a group has %d of %d maps", n, len(g.Maps), len(spec.Maps))
			}
		}
		for name := range spec.Programs {
			if seen[name] != 1 {
				t.Errorf("%d CPUs: program %s is in %d groups", n, name, seen[name])
			}
		}
		// Greedy by size: no group exceeds another by more than the
		// largest program.
		largest := 0
		for _, p := range spec.Programs {
			largest = max(largest, len(p.Instructions))
		}
		if d := slices.Max(sizes) - slices.Min(sizes); d > largest {
			t.Errorf("%d CPUs: group sizes %v differ by more than the largest program (%d)", n, sizes, largest)
		}
	}
}

// A program that writes .bss would see its own copy in each group: such a
// spec loads in one group.
func TestProgramGroupsWritableData(t *testing.T) {
	prog := func(ref string) *ebpf.ProgramSpec {
		insns := asm.Instructions{
			asm.LoadMapValue(asm.R1, 0, 0).WithReference(ref),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
		return &ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns}
	}
	spec := &ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{".rodata": {}, ".bss": {}},
		Programs: map[string]*ebpf.ProgramSpec{"a": prog(".rodata"), "b": prog(".rodata")},
	}
	if got := len(programGroups(spec, 2)); got != 2 {
		t.Errorf("read-only data only: %d groups, want 2", got)
	}
	spec.Programs["c"] = prog(".bss")
	if got := len(programGroups(spec, 2)); got != 1 {
		t.Errorf("a program writes .bss: %d groups, want 1", got)
	}
}

// The kernel's TICK_NSEC, (NSEC_PER_SEC + HZ/2) / HZ, for every HZ Kconfig
// offers, gives back HZ; what no tick is gives 0 (the programs then read
// the clock).
func TestHzOfTick(t *testing.T) {
	for _, hz := range []int64{100, 250, 300, 1000} {
		tick := (int64(time.Second) + hz/2) / hz
		if got := hzOfTick(tick); int64(got) != hz {
			t.Errorf("hzOfTick(%d) = %d, want %d", tick, got, hz)
		}
	}
	for _, tick := range []int64{0, 1, int64(time.Second)} {
		if got := hzOfTick(tick); got != 0 {
			t.Errorf("hzOfTick(%d) = %d, want 0", tick, got)
		}
	}
}

// Where the kernel has no BPF exchanges the loader takes them out of the
// programs: the compare-and-exchange and the exchange become moves of 0
// into the register each writes; other atomics (the add every kernel
// has) stay.
func TestWithoutExchanges(t *testing.T) {
	insns := asm.Instructions{
		asm.CmpXchg.Mem(asm.R1, asm.R2, asm.DWord, 8),
		asm.Xchg.Mem(asm.R3, asm.R4, asm.DWord, 0),
		asm.AddAtomic.Mem(asm.R1, asm.R2, asm.DWord, 0),
		asm.Return(),
	}
	withoutExchanges(insns)
	want := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.AddAtomic.Mem(asm.R1, asm.R2, asm.DWord, 0),
		asm.Return(),
	}
	for i := range want {
		if insns[i].OpCode != want[i].OpCode || insns[i].Dst != want[i].Dst || insns[i].Src != want[i].Src || insns[i].Constant != want[i].Constant {
			t.Errorf("instruction %d = %v, want %v", i, insns[i], want[i])
		}
	}
	// The generated object has both, or the test says nothing.
	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		t.Fatal(err)
	}
	found := map[asm.AtomicOp]bool{}
	for _, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if ins.OpCode.Class() == asm.StXClass && ins.OpCode.Mode() == asm.AtomicMode {
				found[ins.OpCode.AtomicOp()] = true
			}
		}
		withoutExchanges(p.Instructions)
		for _, ins := range p.Instructions {
			if op := ins.OpCode.AtomicOp(); ins.OpCode.Class() == asm.StXClass && ins.OpCode.Mode() == asm.AtomicMode && (op == asm.CmpXchg || op == asm.Xchg) {
				t.Fatalf("%s: %v left", p.Name, ins)
			}
		}
	}
	if !found[asm.CmpXchg] || !found[asm.Xchg] {
		t.Errorf("the programs have compare-and-exchange %v, exchange %v: want both", found[asm.CmpXchg], found[asm.Xchg])
	}
}

// The programs' second of a jiffy count j is (j*secMult(hz))>>32: every
// second is hz jiffies long, or hz+1, from jiffies' start value (2^32 -
// 300*hz, INITIAL_JIFFIES) to ten years of uptime, without overflow.
func TestSecMult(t *testing.T) {
	for _, hz := range []uint64{100, 250, 300, 1000} {
		m := secMult(uint32(hz))
		sec := func(j uint64) uint64 { return (j * m) >> 32 }
		for _, start := range []uint64{1<<32 - 300*hz, 1<<32 + 10*365*24*3600*hz} {
			if hi, _ := bits.Mul64(start+20*hz, m); hi != 0 {
				t.Fatalf("hz %d: jiffies %d overflow", hz, start)
			}
			last, lastJ := sec(start), uint64(0)
			for j := start; j < start+20*hz; j++ {
				s := sec(j)
				if s == last {
					continue
				}
				if s != last+1 {
					t.Fatalf("hz %d: second %d after %d at jiffy %d", hz, s, last, j)
				}
				if lastJ != 0 && (j-lastJ < hz || j-lastJ > hz+1) {
					t.Errorf("hz %d: a second of %d jiffies at %d", hz, j-lastJ, j)
				}
				last, lastJ = s, j
			}
		}
	}
	if secMult(0) != 0 {
		t.Error("secMult(0) != 0")
	}
}
