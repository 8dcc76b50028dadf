package probe

import (
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// Reading the running kernel's BTF: what a tracepoint passes, what an enum
// value is called. Kernel differences are found here, by name, never by
// version number.

// tpParams returns the number of arguments of a tracepoint (without the
// leading void *), from its btf_trace_* typedef.
func tpParams(s *btf.Spec, typedef string) (int, error) {
	var td *btf.Typedef
	if err := s.TypeByName(typedef, &td); err != nil {
		return 0, fmt.Errorf("no %s in kernel BTF", typedef)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("unexpected %s type", typedef)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("unexpected %s type", typedef)
	}
	return len(proto.Params) - 1, nil
}

// EnumValue resolves an enumerator by name: the numbering of kernel enums
// such as skb_drop_reason differs between versions.
func EnumValue(s *btf.Spec, enum, name string) (uint64, error) {
	var e *btf.Enum
	if err := s.TypeByName(enum, &e); err != nil {
		return 0, fmt.Errorf("no enum %s in kernel BTF", enum)
	}
	for _, v := range e.Values {
		if v.Name == name {
			return v.Value, nil
		}
	}
	return 0, fmt.Errorf("enum %s has no %s", enum, name)
}

// probeTP: the tracepoint exists in this kernel's BTF.
func probeTP(typedef string) func(*btf.Spec) error {
	return func(s *btf.Spec) error {
		var td *btf.Typedef
		if err := s.TypeByName(typedef, &td); err != nil {
			return fmt.Errorf("no %s in kernel BTF", typedef)
		}
		return nil
	}
}

func probeFunc(s *btf.Spec, fns ...string) error {
	for _, fn := range fns {
		var f *btf.Func
		if err := s.TypeByName(fn, &f); err != nil {
			return fmt.Errorf("no function %s in kernel BTF", fn)
		}
	}
	return nil
}

// probeStructArgs: every pointer argument of fn points to a struct in the
// kernel's BTF. A tracing program reads its arguments through the
// function's BTF, and the verifier before 6.x refuses a pointer to a
// forward declaration ("arg0 type FWD is not a struct"): Debian's 5.10
// declares the syscall wrappers' struct pt_regs so.
func probeStructArgs(s *btf.Spec, fn string) error {
	var f *btf.Func
	if err := s.TypeByName(fn, &f); err != nil {
		return fmt.Errorf("no function %s in kernel BTF", fn)
	}
	proto, ok := f.Type.(*btf.FuncProto)
	if !ok {
		return fmt.Errorf("%s has no prototype in kernel BTF", fn)
	}
	for i, p := range proto.Params {
		ptr, ok := btf.UnderlyingType(p.Type).(*btf.Pointer)
		if !ok {
			continue
		}
		if _, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct); !ok {
			return fmt.Errorf("%s: argument %d points to a %T in kernel BTF, which the verifier refuses to read", fn, i, btf.UnderlyingType(ptr.Target))
		}
	}
	return nil
}

// dropReason returns the value of SKB_DROP_REASON_<name> in this kernel:
// the numbering differs between versions (NO_SOCKET is 2 on 6.1, 3 on 6.2).
func dropReason(s *btf.Spec, name string) (uint32, bool) {
	v, err := EnumValue(s, "skb_drop_reason", "SKB_DROP_REASON_"+name)
	return uint32(v), err == nil
}
