package probe

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/internal/bpfobj"
)

// Settings are what the programs are told before load, besides the plan.
type Settings struct {
	// RingSize is the ring buffer size in bytes (a power of two).
	RingSize int
	// Summary: count every refusal in the kernel instead of writing it.
	// Otherwise refusals are counted only while the ring buffer holds
	// more than SummaryAbove bytes.
	Summary      bool
	SummaryAbove uint64
	// FilterPorts: only the ports put in the ports map are traced.
	FilterPorts bool
	// Proc is where procfs is mounted (for kallsyms).
	Proc string
	// RatePerSecond: events of a kind per destination written in full
	// each second, the rest counted (0: no limit). The kernel counts per
	// CPU, so each CPU gets an equal share (at least one).
	RatePerSecond int
	// ConnectSlots: how many lock-free slots hold connect() owners
	// before the hash does (a power of two below the default, or 0 for
	// the default); tests make it small to make sockets share slots.
	ConnectSlots int
	// KeepNAT: keep the NAT program's spec for Untyped.Reload even when
	// its types were there at load (tests: the reload path on a kernel
	// with conntrack built in).
	KeepNAT bool
}

// Objects is the BPF object on its way into the kernel. Start-up is mostly
// kernel time that needs nothing from the plan: creating a preallocated
// hash or LRU map fills its free list when it is made (htab_map_alloc ->
// prealloc_init), 5-25 ms for each large map here, and reading
// /proc/kallsyms formats every kernel symbol, ~40 ms. So Open starts both
// at once, on their own goroutines, while the caller reads the kernel's BTF
// and chooses the plan; Prepare and Load wait only for what they use.
type Objects struct {
	set Settings

	parsed  chan struct{} // spec (or specErr) is set
	spec    *ebpf.CollectionSpec
	specErr error
	// cmpxchg: the kernel has BPF compare-and-exchange; the programs
	// then keep connect() owners in lock-free slots.
	cmpxchg bool

	made    chan struct{} // every map in maps is made (or mapsErr is set)
	maps    map[string]*ebpf.Map
	mapsErr error

	symbols chan struct{} // ranges is set (nil without kallsyms)
	ranges  []bpfobj.RsttraceCodeRange

	untyped *Untyped // set by Load
}

// Untyped is a program Load loaded without the kernel types its work needs,
// because the module that brings them was not loaded yet (struct nf_conn,
// nf_conntrack's, for the NAT program): Reload loads it again once the
// module is there.
type Untyped struct {
	name      string
	spec      *ebpf.CollectionSpec // the program alone, with every map
	kernelBTF *btf.Spec
}

// Untyped is the program Load loaded without its types, nil if none.
func (o *Objects) Untyped() *Untyped { return o.untyped }

// Program is its name.
func (u *Untyped) Program() string { return u.name }

// Reload loads the program again with the module's types, against maps
// (the collection's, by name), and puts it in coll in place of the one
// loaded without them.
func (u *Untyped) Reload(coll *ebpf.Collection, maps map[string]*ebpf.Map) error {
	m, err := conntrackTypes(u.kernelBTF)
	if err != nil {
		return err
	}
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{},
		Programs: ebpf.ProgramOptions{KernelTypes: u.kernelBTF}}
	if m != nil {
		opts.Programs.ExtraRelocationTargets = []*btf.Spec{m}
	}
	// The maps are coll's; the data sections (constants set before the
	// first load) are made again, as for each group of loadGroups.
	for name, mp := range maps {
		if _, ok := u.spec.Maps[name]; ok && !strings.HasPrefix(name, ".") {
			opts.MapReplacements[name] = mp
		}
	}
	for name := range u.spec.Maps {
		if _, ok := opts.MapReplacements[name]; !ok && !strings.HasPrefix(name, ".") {
			return fmt.Errorf("loading %s again: map %s is not the tracer's", u.name, name)
		}
	}
	c, err := ebpf.NewCollectionWithOptions(u.spec, opts)
	if err != nil {
		return fmt.Errorf("loading %s again with the module's types: %w", u.name, err)
	}
	defer c.Close()
	if old := coll.Programs[u.name]; old != nil {
		old.Close()
	}
	coll.Programs[u.name] = c.Programs[u.name]
	delete(c.Programs, u.name)
	return nil
}

// Open starts loading the BPF object with the settings that need no plan.
// kernelBTF returns the running kernel's BTF (a sync.OnceValues, say: the
// caller reads it too); it is asked only for the flags of maps allocated
// on demand. The caller must Load or Close the Objects.
func Open(set Settings, kernelBTF func() (*btf.Spec, error)) *Objects {
	o := &Objects{set: set, parsed: make(chan struct{}), made: make(chan struct{}), symbols: make(chan struct{})}
	go func() {
		defer close(o.symbols)
		o.ranges, _ = kallsymsRanges(set.Proc+"/kallsyms", nfHookCallers)
	}()
	go func() {
		defer close(o.made)
		o.spec, o.specErr = o.parse()
		close(o.parsed)
		if o.specErr == nil {
			o.maps, o.mapsErr = makeMaps(o.spec, kernelBTF)
		}
	}()
	return o
}

func (o *Objects) parse() (*ebpf.CollectionSpec, error) {
	// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK; from 5.11 on
	// (memcg accounting) this probes and changes nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, requirement("raising RLIMIT_MEMLOCK for BPF maps: %v", err)
	}
	spec, err := bpfobj.LoadRsttrace()
	if err != nil {
		return nil, fmt.Errorf("loading BPF object: %w", err)
	}
	var objs bpfobj.RsttraceSpecs
	if err := spec.Assign(&objs); err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	objs.Records.MaxEntries = uint32(o.set.RingSize)
	if o.cmpxchg = haveCmpxchg(); !o.cmpxchg {
		// Unused: every entry goes to the hashes.
		objs.ConnectSlots.MaxEntries = 1
		objs.SummaryCellsA.MaxEntries = 1
		objs.SummaryCellsB.MaxEntries = 1
		for _, p := range spec.Programs {
			withoutExchanges(p.Instructions)
		}
	} else if n := o.set.ConnectSlots; n > 0 && n < int(objs.ConnectSlots.MaxEntries) && n&(n-1) == 0 {
		objs.ConnectSlots.MaxEntries = uint32(n)
	}
	return spec, nil
}

// withoutExchanges replaces every atomic exchange and compare-and-exchange
// in insns by a move of 0 into the register it would write. The programs
// reach them only where have_cmpxchg is set; a verifier without them
// refuses them even where the program cannot reach them (5.10 checks the
// reserved fields of every instruction before it follows any branch).
func withoutExchanges(insns asm.Instructions) {
	for i, ins := range insns {
		if ins.OpCode.Class() != asm.StXClass || ins.OpCode.Mode() != asm.AtomicMode {
			continue
		}
		var dst asm.Register
		switch ins.OpCode.AtomicOp() {
		case asm.CmpXchg:
			dst = asm.R0
		case asm.Xchg:
			dst = ins.Src
		default:
			continue
		}
		nop := asm.Mov.Imm(dst, 0)
		nop.Metadata = ins.Metadata
		insns[i] = nop
	}
}

// haveCmpxchg: the verifier takes BPF_ATOMIC compare-and-exchange (older
// kernels know only BPF_XADD, and refuse its other operations).
func haveCmpxchg() bool {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.StoreMem(asm.R10, -8, asm.R0, asm.DWord),
			asm.Mov.Imm(asm.R1, 1),
			asm.CmpXchg.Mem(asm.R10, asm.R1, asm.DWord, -8),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return false
	}
	prog.Close()
	return true
}

// makeMaps creates every map of spec but the global data sections (whose
// contents the plan sets), the largest first, on as many goroutines as
// there are CPUs: the work is the kernel's. Where the kernel allows it,
// the maps that are usually nearly empty are allocated on demand (Load
// gives their specs the same type and flags, so the collection takes the
// maps made). spec is only read: Prepare changes it meanwhile.
func makeMaps(spec *ebpf.CollectionSpec, kernelBTF func() (*btf.Spec, error)) (map[string]*ebpf.Map, error) {
	var todo []*ebpf.MapSpec
	for name, ms := range spec.Maps {
		if !strings.HasPrefix(name, ".") {
			todo = append(todo, ms.Copy())
		}
	}
	onDemand := func(ms *ebpf.MapSpec) bool { return slices.Contains(allocatedOnDemand, ms.Name) }
	// On-demand maps last: they wait for the kernel's BTF.
	slices.SortFunc(todo, func(a, b *ebpf.MapSpec) int {
		return cmp.Or(cmp.Compare(b2i(onDemand(a)), b2i(onDemand(b))), cmp.Compare(mapBytes(b), mapBytes(a)))
	})
	made := make([]*ebpf.Map, len(todo))
	errs := make([]error, len(todo))
	next := make(chan int, len(todo))
	for i := range todo {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(runtime.NumCPU(), len(todo)) {
		wg.Go(func() {
			for i := range next {
				ms := todo[i]
				if onDemand(ms) {
					if k, err := kernelBTF(); err == nil && runtimeAllocationSafe(k) {
						ms.Flags |= unix.BPF_F_NO_PREALLOC
						// Per-CPU counts: two CPUs counting to one
						// destination (a storm) would otherwise
						// bounce one cache line per event.
						if ms.Type == ebpf.Hash {
							ms.Type = ebpf.PerCPUHash
						}
					}
				}
				if made[i], errs[i] = ebpf.NewMap(ms); errs[i] != nil {
					errs[i] = fmt.Errorf("creating BPF map %s: %w", ms.Name, errs[i])
				}
			}
		})
	}
	wg.Wait()
	maps := make(map[string]*ebpf.Map, len(todo))
	for i, m := range made {
		if m != nil {
			maps[todo[i].Name] = m
		}
	}
	if err := errors.Join(errs...); err != nil {
		closeMaps(maps)
		return nil, err
	}
	return maps, nil
}

// allocatedOnDemand are the hash maps that hold entries only under a flood
// (the summary counts, one map of the two at a time): preallocating them
// was a third of the kernel's start-up work. Where they are allocated on
// demand they are also per-CPU (a preallocated per-CPU hash would cost one
// percpu allocation per element at start-up); readers sum the CPUs.
var allocatedOnDemand = []string{"summary_a", "summary_b"}

// runtimeAllocationSafe: programs of any kind may use hash maps that
// allocate elements at run time. Before the BPF memory allocator (struct
// bpf_mem_alloc, commit 7c8199e24fa0, 6.1; the restriction lifted in
// 96da3f7d489d) the verifier WARNs for tracing programs that do, and
// panic_on_warn hosts would go down.
func runtimeAllocationSafe(k *btf.Spec) bool {
	var s *btf.Struct
	return k.TypeByName("bpf_mem_alloc", &s) == nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mapBytes is a map's preallocated size, roughly: what its creation costs.
func mapBytes(ms *ebpf.MapSpec) uint64 {
	return uint64(ms.MaxEntries) * uint64(ms.KeySize+ms.ValueSize+64)
}

func closeMaps(maps map[string]*ebpf.Map) {
	for _, m := range maps {
		m.Close()
	}
}

// Prepare makes every setting of plan on this kernel and keeps only the
// programs the plan attaches (the others may not even load here: fentry
// where it is refused, for one). Variables and maps are reached through
// the generated types, so a rename in the C code fails to compile here
// rather than at run time.
func (o *Objects) Prepare(kernelBTF *btf.Spec, plan Plan) error {
	<-o.parsed
	if o.specErr != nil {
		return o.specErr
	}
	var objs bpfobj.RsttraceSpecs
	if err := o.spec.Assign(&objs); err != nil {
		return fmt.Errorf("reading BPF object: %w", err)
	}
	set := o.set
	vars := &objs.RsttraceVariableSpecs
	hz := jiffiesHz()
	settings := []struct {
		what string
		v    *ebpf.VariableSpec
		val  any
	}{
		{"summary mode", vars.SummaryAlways, set.Summary},
		{"summary threshold", vars.SummaryAbove, set.SummaryAbove},
		{"port filter", vars.FilterPorts, set.FilterPorts},
		{"rate per destination", vars.RateLimit, perCPURate(set.RatePerSecond)},
		{"jiffies a second", vars.JiffiesHz, hz},
		{"seconds of a jiffy", vars.JiffiesSecMult, secMult(hz)},
		{"compare-and-exchange", vars.HaveCmpxchg, o.cmpxchg},
		{"connect slots", vars.ConnectSlotsMask, objs.ConnectSlots.MaxEntries - 1},
		{"capabilities of the shared programs", vars.Caps, plan.Caps(SendResetHasReason(kernelBTF))},
	}
	if plan.Kind(CapOverflowFinalAck) == "tp_btf" {
		v, _ := dropReason(kernelBTF, "TCP_LISTEN_OVERFLOW")
		settings = append(settings, struct {
			what string
			v    *ebpf.VariableSpec
			val  any
		}{"listen overflow drop reason", vars.ReasonListenOverflow, v})
	}
	for _, s := range settings {
		if err := s.v.Set(s.val); err != nil {
			return fmt.Errorf("setting %s: %w", s.what, err)
		}
	}
	if plan.Serves(CapFirewall) {
		<-o.symbols
		// Without kallsyms the hook is not named; drops are still seen.
		if err := configureFirewall(vars, kernelBTF, o.ranges); err != nil {
			return err
		}
	}
	keep := plan.Programs()
	for name := range o.spec.Programs {
		if !keep[name] {
			delete(o.spec.Programs, name)
		}
	}
	return nil
}

// jiffiesHz is the kernel's tick rate (CONFIG_HZ) where tracing programs
// may call bpf_jiffies64 (probed: not every kernel lists it among the
// tracing helpers), else 0 and the programs read the clock instead. The
// coarse clocks' resolution is one tick (TICK_NSEC).
func jiffiesHz() uint32 {
	if features.HaveProgramHelper(ebpf.TracePoint, asm.FnJiffies64) != nil {
		return 0
	}
	var ts unix.Timespec
	if unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts) != nil {
		return 0
	}
	return hzOfTick(ts.Nano())
}

// secMult is 2^32/hz rounded down: a jiffy count times it, shifted right
// by 32, is seconds, each hz jiffies long or one more now and then (only
// which second a rate counts in depends on it); 0 for no jiffies.
func secMult(hz uint32) uint64 {
	if hz == 0 {
		return 0
	}
	return (uint64(1) << 32) / uint64(hz)
}

// hzOfTick is the tick rate of a tick of tick ns, 0 if that is no kernel's
// tick (CONFIG_HZ is 100 to 1000; a wider range costs nothing).
func hzOfTick(tick int64) uint32 {
	if tick < int64(time.Second)/10000 || tick > int64(time.Second)/10 {
		return 0
	}
	return uint32((int64(time.Second) + tick/2) / tick)
}

// perCPURate is each CPU's share of rate full records a second (0: no
// limit). Shares rounded down keep the total at most rate; a load all on
// one CPU then gets its share only.
func perCPURate(rate int) uint32 {
	if rate <= 0 {
		return 0
	}
	n, err := ebpf.PossibleCPU()
	if err != nil || n < 1 {
		n = 1
	}
	return uint32(max(1, rate/n))
}

// Load loads the prepared programs into the kernel with the maps Open made.
// The programs are verified in groups, one per CPU, at once (the verifier
// holds no global lock for a privileged load): each group is a collection
// of its own sharing the maps; the read-only data section is made once per
// group with the same contents. Open's maps are given to the collection;
// after Load, Close releases nothing more.
func (o *Objects) Load(kernelBTF *btf.Spec) (*ebpf.Collection, error) {
	<-o.made
	defer func() { closeMaps(o.maps); o.maps = nil }() // the collections hold their own clones
	if o.specErr != nil {
		return nil, o.specErr
	}
	if o.mapsErr != nil {
		return nil, o.mapsErr
	}
	for name, m := range o.maps {
		o.spec.Maps[name].Type, o.spec.Maps[name].Flags = m.Type(), m.Flags()
	}
	opts := ebpf.CollectionOptions{MapReplacements: o.maps, Programs: ebpf.ProgramOptions{KernelTypes: kernelBTF}}
	if p, ok := o.spec.Programs[natProgram]; ok {
		// struct nf_conn lives in the nf_conntrack module's BTF where
		// conntrack is not built in; a module not loaded yet has none
		// (the program then does nothing: bpf_core_type_exists) and it
		// is loaded again once the module is there.
		m, err := conntrackTypes(kernelBTF)
		if err == nil && m != nil {
			opts.Programs.ExtraRelocationTargets = []*btf.Spec{m}
		}
		if err != nil || o.set.KeepNAT {
			alone := *o.spec
			alone.Programs = map[string]*ebpf.ProgramSpec{natProgram: p}
			o.untyped = &Untyped{name: natProgram, spec: &alone, kernelBTF: kernelBTF}
		}
	}
	coll, err := loadGroups(o.spec, opts)
	if err != nil && o.cmpxchg {
		// Debian's 5.10 takes compare-and-exchange in a program made
		// for the probe, and refuses the same instruction in these
		// ("BPF_STX uses reserved fields"): the verifier's answer on
		// the real programs is the probe that counts.
		if e := o.spec.Variables["have_cmpxchg"].Set(false); e != nil {
			return nil, fmt.Errorf("setting compare-and-exchange: %w", e)
		}
		for _, p := range o.spec.Programs {
			withoutExchanges(p.Instructions)
		}
		o.cmpxchg = false
		slog.Debug("the verifier refused BPF exchanges in the programs; loading them without", "error", err)
		coll, err = loadGroups(o.spec, opts)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading BPF programs (verifier): %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	return coll, nil
}

// loadGroups verifies spec's programs in parallel groups (programGroups)
// and gathers them in one collection.
func loadGroups(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions) (*ebpf.Collection, error) {
	groups := programGroups(spec, runtime.NumCPU())
	colls := make([]*ebpf.Collection, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { colls[i], errs[i] = ebpf.NewCollectionWithOptions(g, opts) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range colls {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	coll := colls[0]
	for _, c := range colls[1:] {
		for name, p := range c.Programs {
			coll.Programs[name] = p
			delete(c.Programs, name)
		}
		c.Close() // its map clones and its own data sections: the programs keep theirs
	}
	return coll, nil
}

// programGroups splits spec's programs into at most n collection specs of
// about equal size (by instruction count, which is what verifying costs).
// Programs that write global data stay in one group, since each group has
// its own copy of the data sections.
func programGroups(spec *ebpf.CollectionSpec, n int) []*ebpf.CollectionSpec {
	names := slices.Collect(maps.Keys(spec.Programs))
	size := func(name string) int { return len(spec.Programs[name].Instructions) }
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(size(b), size(a)), cmp.Compare(a, b)) })
	if n < 1 || writesGlobalData(spec) {
		n = 1
	}
	n = min(n, len(names))
	if n <= 1 {
		return []*ebpf.CollectionSpec{spec}
	}
	groups := make([]*ebpf.CollectionSpec, n)
	load := make([]int, n)
	for i := range groups {
		g := *spec
		g.Programs = map[string]*ebpf.ProgramSpec{}
		groups[i] = &g
	}
	for _, name := range names {
		i := slices.Index(load, slices.Min(load))
		groups[i].Programs[name] = spec.Programs[name]
		load[i] += size(name)
	}
	return groups
}

// writesGlobalData: some program refers to a writable data section (.bss,
// .data); only .rodata may be had once per group.
func writesGlobalData(spec *ebpf.CollectionSpec) bool {
	for _, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if ins.IsLoadFromMap() && strings.HasPrefix(ins.Reference(), ".") && !strings.HasPrefix(ins.Reference(), ".rodata") {
				return true
			}
		}
	}
	return false
}

// Close releases what Open made, if Load did not take it: on an error
// between the two.
func (o *Objects) Close() {
	<-o.made
	<-o.symbols
	closeMaps(o.maps)
	o.maps = nil
}

// Attach attaches the programs of every capability the plan serves. A
// capability whose attach fails although its probe passed (a function
// ftrace cannot patch, for one) is served by its next alternate (a
// tracepoint: syscall tracepoints for bind, listen and accept), else
// degraded in the plan with the kernel's reason, rather than failing the
// tracer.
//
// A program shared by several capabilities is attached once: by the first
// capability that needs it. If another of that capability's programs
// fails, the links it made are closed, so a later capability attaches the
// shared one afresh.
func Attach(coll *ebpf.Collection, plan Plan, log *slog.Logger) []link.Link {
	var all []link.Link
	attached := map[string]bool{}
	failed := map[string]error{}
	for i := range plan {
		c := &plan[i]
		if !c.Served() {
			if c.Fallback != "" {
				log.Info("capability partial", "capability", c.Capability, "reason", c.Degraded, "fallback", c.Fallback)
			} else {
				log.Warn("capability degraded", "capability", c.Capability, "reason", c.Degraded)
			}
			continue
		}
		if c.Waiting != "" {
			log.Info("capability waiting", "capability", c.Capability, "hook", c.Hook(), "until", c.Waiting)
			continue
		}
		all = append(all, attachServed(coll, plan, c, attached, failed, log)...)
	}
	return all
}

// AttachWaiting attaches the capabilities whose wait is over (Waiting);
// it returns the links it made. The programs were loaded with the rest.
//
// prepare, if set, runs first with the programs it is about to attach
// (the tracer loads an Untyped one again there); its error degrades the
// capability.
func AttachWaiting(coll *ebpf.Collection, plan Plan, log *slog.Logger, prepare func(progs []string) error) []link.Link {
	var all []link.Link
	for i := range plan {
		c := &plan[i]
		if c.Waiting == "" || !c.Served() || !c.needed() {
			continue
		}
		after := c.Waiting
		c.Waiting, c.needed = "", nil
		if prepare != nil {
			if err := prepare(c.Programs()); err != nil {
				plan.Degrade(c.Capability, err.Error())
				log.Warn("capability degraded", "capability", c.Capability, "reason", err.Error())
				continue
			}
		}
		log.Info("capability attached", "capability", c.Capability, "hook", c.Hook(), "after", after)
		// Each waiting capability has its hook to itself: nothing of
		// it is attached yet.
		all = append(all, attachServed(coll, plan, c, map[string]bool{}, map[string]error{}, log)...)
	}
	return all
}

// Reattach attaches again, hook for hook, what Attach attached, after
// its links were closed: no fallback to another hook. A capability whose
// hook the kernel refuses now is degraded in plan, and the error says why:
// kernels before 5.13 attach a fentry/fexit program only once
// (bpf_tracing_prog_attach returns ENOENT until commit f3a95075549e).
func Reattach(coll *ebpf.Collection, plan Plan) ([]link.Link, error) {
	var all []link.Link
	var errs []error
	attached := map[string]bool{}
	failed := map[string]error{}
	for i := range plan {
		c := &plan[i]
		if !c.Served() || c.Waiting != "" {
			continue
		}
		links, err := attachChoice(coll, c, attached, failed)
		if err != nil {
			plan.Degrade(c.Capability, "not attached again: "+err.Error())
			errs = append(errs, fmt.Errorf("capability %s: %w", c.Capability, err))
			continue
		}
		all = append(all, links...)
	}
	return all, errors.Join(errs...)
}

// attachServed attaches c, falling back to its alternates, else degrading
// it in plan.
func attachServed(coll *ebpf.Collection, plan Plan, c *Choice, attached map[string]bool, failed map[string]error, log *slog.Logger) []link.Link {
	for {
		links, aerr := attachChoice(coll, c, attached, failed)
		if aerr == nil {
			return links
		}
		refused := c.Hook()
		if c.fallBack() {
			log.Info("capability served by its next hook", "capability", c.Capability, "refused", refused, "reason", aerr.Error(), "hook", c.Hook())
			continue
		}
		plan.Degrade(c.Capability, aerr.Error())
		log.Warn("capability degraded", "capability", c.Capability, "reason", aerr.Error())
		return nil
	}
}

// attachChoice attaches c's programs not attached yet; on a failure it
// closes the links it made and says why.
func attachChoice(coll *ebpf.Collection, c *Choice, attached map[string]bool, failed map[string]error) ([]link.Link, error) {
	var links []link.Link
	var made []string
	var aerr error
	for _, name := range c.Programs() {
		if attached[name] {
			continue
		}
		if err, ok := failed[name]; ok {
			aerr = fmt.Errorf("attaching %s: %w", c.Hook(), err)
			break
		}
		l, err := c.Attach(name, coll.Programs[name])
		if err != nil {
			failed[name] = fmt.Errorf("%s: %w", name, err)
			aerr = fmt.Errorf("attaching %s (%s): %w", c.Hook(), name, err)
			break
		}
		attached[name] = true
		links = append(links, l)
		made = append(made, name)
	}
	if aerr != nil {
		for j, l := range links {
			l.Close()
			delete(attached, made[j])
		}
		return nil, aerr
	}
	return links, nil
}

// RSTReasonNames resolves RST reason values by their names in this
// kernel's BTF (enum sk_rst_reason, 6.10+): the numbering differs between
// kernels, so it is never hard-coded.
func RSTReasonNames(spec *btf.Spec) func(uint32) string {
	names := map[uint32]string{}
	var e *btf.Enum
	if err := spec.TypeByName("sk_rst_reason", &e); err == nil {
		for _, v := range e.Values {
			names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
		}
	}
	return func(v uint32) string { return names[v] }
}
