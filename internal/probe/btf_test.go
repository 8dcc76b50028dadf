package probe

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// A syscall wrapper whose struct pt_regs argument is a forward declaration
// in kernel BTF (Debian's 5.10) cannot be read by a fentry program: the
// probe says so; one pointing to the struct passes.
func TestProbeStructArgs(t *testing.T) {
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	regs := &btf.Struct{Name: "pt_regs", Size: 8, Members: []btf.Member{{Name: "di", Type: long}}}
	fwd := &btf.Fwd{Name: "pt_regs", Kind: btf.FwdStruct}
	wrapper := func(name string, target btf.Type) *btf.Func {
		return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
			Return: long,
			Params: []btf.FuncParam{{Name: "regs", Type: &btf.Pointer{Target: &btf.Const{Type: target}}}},
		}}
	}
	b, err := btf.NewBuilder([]btf.Type{wrapper("with_struct", regs), wrapper("with_fwd", fwd)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := probeStructArgs(spec, "with_struct"); err != nil {
		t.Errorf("pointer to a struct: %v", err)
	}
	if err := probeStructArgs(spec, "with_fwd"); err == nil {
		t.Error("pointer to a forward declaration passed")
	}
	if err := probeStructArgs(spec, "absent"); err == nil {
		t.Error("an absent function passed")
	}
}
