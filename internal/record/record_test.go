package record

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"unsafe"
)

// dtBytes returns the bytes of r as the kernel would write them.
func dtBytes(r *Record) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(r)), Size))
}

// dtRecords returns a valid record of every type and family.
func dtRecords() map[string]Record {
	full := func(typ Type, family uint8) Record {
		r := Record{
			Type: typ, Family: family, TcpFlags: 0x02, State: 10,
			Flags: FlagProcKnown | FlagV6Only, Ts: 0x0102030405060708, Netns: 4026531840, Reason: 2,
			Sport: 40000, Dport: 8080, Ret: -98, Backlog: 4096, ExitCode: 0x8b,
			Ino: 0x1122334455667788, Sk: 0xffff888012345678,
		}
		for i := range r.Saddr {
			r.Saddr[i], r.Daddr[i] = byte(i+1), byte(0xf0+i)
		}
		r.Proc.Pid, r.Proc.Tid, r.Proc.Comm = 1234, 1235, [16]int8{'n', 'g', 'i', 'n', 'x'}
		return r
	}
	out := map[string]Record{}
	for name, typ := range map[string]Type{
		"reset_sent": ResetSent, "client_refused": ClientRefused, "listen": Listen,
		"listen_close": ListenClose, "bind": Bind,
	} {
		out[name+"/inet"] = full(typ, AFInet)
		out[name+"/inet6"] = full(typ, AFInet6)
	}
	out["listen_close/no family"] = full(ListenClose, 0)
	return out
}

func TestRecordLayout(t *testing.T) {
	// struct event in bpf/rsttrace.h, as clang lays it out for bpfel.
	var r Record
	offsets := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"type", unsafe.Offsetof(r.Type), 0},
		{"family", unsafe.Offsetof(r.Family), 1},
		{"tcp_flags", unsafe.Offsetof(r.TcpFlags), 2},
		{"state", unsafe.Offsetof(r.State), 3},
		{"flags", unsafe.Offsetof(r.Flags), 4},
		{"ts", unsafe.Offsetof(r.Ts), 8},
		{"netns", unsafe.Offsetof(r.Netns), 16},
		{"reason", unsafe.Offsetof(r.Reason), 20},
		{"saddr", unsafe.Offsetof(r.Saddr), 24},
		{"daddr", unsafe.Offsetof(r.Daddr), 40},
		{"sport", unsafe.Offsetof(r.Sport), 56},
		{"dport", unsafe.Offsetof(r.Dport), 58},
		{"ret", unsafe.Offsetof(r.Ret), 60},
		{"backlog", unsafe.Offsetof(r.Backlog), 64},
		{"exit_code", unsafe.Offsetof(r.ExitCode), 68},
		{"backlog_req", unsafe.Offsetof(r.BacklogReq), 72},
		{"aux", unsafe.Offsetof(r.Aux), 76},
		{"ino", unsafe.Offsetof(r.Ino), 80},
		{"sk", unsafe.Offsetof(r.Sk), 88},
		{"proc", unsafe.Offsetof(r.Proc), 96},
		{"proc.pid", unsafe.Offsetof(r.Proc) + unsafe.Offsetof(r.Proc.Pid), 96},
		{"proc.tid", unsafe.Offsetof(r.Proc) + unsafe.Offsetof(r.Proc.Tid), 100},
		{"proc.comm", unsafe.Offsetof(r.Proc) + unsafe.Offsetof(r.Proc.Comm), 104},
		{"proc.cgroup_id", unsafe.Offsetof(r.Proc) + unsafe.Offsetof(r.Proc.CgroupId), 120},
		{"proc.mntns", unsafe.Offsetof(r.Proc) + unsafe.Offsetof(r.Proc.Mntns), 128},
		{"netns_cookie", unsafe.Offsetof(r.NetnsCookie), 136},
		{"orig_saddr", unsafe.Offsetof(r.OrigSaddr), 144},
		{"orig_daddr", unsafe.Offsetof(r.OrigDaddr), 160},
		{"orig_sport", unsafe.Offsetof(r.OrigSport), 176},
		{"orig_dport", unsafe.Offsetof(r.OrigDport), 178},
		{"nat_netns", unsafe.Offsetof(r.NatNetns), 180},
		{"nat_netns_cookie", unsafe.Offsetof(r.NatNetnsCookie), 184},
		{"sizeof", uintptr(Size), 192},
	}
	for _, o := range offsets {
		t.Run(o.name, func(t *testing.T) {
			if o.got != o.want {
				t.Errorf("offset = %d, want %d", o.got, o.want)
			}
		})
	}
}

// TestDecodeLittleEndian decodes a sample built field by field with
// encoding/binary, independently of the Go struct.
func TestDecodeLittleEndian(t *testing.T) {
	raw := make([]byte, Size+8) // the kernel pads samples to 8 bytes
	le := binary.LittleEndian
	raw[0], raw[1], raw[2], raw[3] = byte(ListenClose), AFInet6, 0x12, 10
	le.PutUint32(raw[4:], FlagExiting|FlagProcKnown)
	le.PutUint64(raw[8:], 123456789012345)
	le.PutUint32(raw[16:], 4026531840)
	le.PutUint32(raw[20:], 7)
	copy(raw[24:40], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(raw[40:56], netip.MustParseAddr("::1").AsSlice())
	le.PutUint16(raw[56:], 40000)
	le.PutUint16(raw[58:], 8080)
	le.PutUint32(raw[60:], uint32(0xffffff9e)) // -98
	le.PutUint32(raw[64:], 511)
	le.PutUint32(raw[68:], 9)
	le.PutUint32(raw[72:], 4096)
	le.PutUint32(raw[76:], 77)
	le.PutUint64(raw[80:], 987654321)
	le.PutUint64(raw[88:], 0xffff888012345678)
	le.PutUint32(raw[96:], 4242)
	le.PutUint32(raw[100:], 4243)
	copy(raw[104:120], "nginx: worker pr") // 16 bytes, no NUL
	le.PutUint64(raw[120:], 0x1234)        // cgroup id
	le.PutUint32(raw[128:], 4026531841)    // mount namespace
	le.PutUint64(raw[136:], 0xc00c1e)      // netns cookie
	for i := Size; i < len(raw); i++ {
		raw[i] = 0xee // padding is ignored
	}

	var r Record
	if err := Decode(raw, &r); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"type", r.Type, ListenClose},
		{"family", r.Family, uint8(AFInet6)},
		{"tcp_flags", r.TcpFlags, uint8(0x12)},
		{"state", r.State, uint8(10)},
		{"flags", r.Flags, FlagExiting | FlagProcKnown},
		{"ts", r.Ts, uint64(123456789012345)},
		{"netns", r.Netns, uint32(4026531840)},
		{"reason", r.Reason, uint32(7)},
		{"saddr", Addr(r.Family, &r.Saddr), netip.MustParseAddr("2001:db8::1")},
		{"daddr", Addr(r.Family, &r.Daddr), netip.MustParseAddr("::1")},
		{"sport", r.Sport, uint16(40000)},
		{"dport", r.Dport, uint16(8080)},
		{"ret", r.Ret, int32(-98)},
		{"backlog", r.Backlog, uint32(511)},
		{"exit_code", r.ExitCode, int32(9)},
		{"backlog_req", r.BacklogReq, uint32(4096)},
		{"aux", r.Aux, uint32(77)},
		{"ino", r.Ino, uint64(987654321)},
		{"sk", r.Sk, uint64(0xffff888012345678)},
		{"pid", r.Proc.Pid, uint32(4242)},
		{"tid", r.Proc.Tid, uint32(4243)},
		{"comm", CommString(&r.Proc.Comm), "nginx: worker pr"},
		{"cgroup_id", r.Proc.CgroupId, uint64(0x1234)},
		{"mntns", r.Proc.Mntns, uint32(4026531841)},
		{"netns_cookie", r.NetnsCookie, uint64(0xc00c1e)},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v (%T), want %v (%T)", c.got, c.got, c.want, c.want)
			}
		})
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	for name, rec := range dtRecords() {
		for _, pad := range []int{0, 8} {
			t.Run(name+"/pad"+string(rune('0'+pad)), func(t *testing.T) {
				raw := append(dtBytes(&rec), make([]byte, pad)...)
				var got Record
				if err := Decode(raw, &got); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if got != rec {
					t.Errorf("Decode = %+v, want %+v", got, rec)
				}
				if !bytes.Equal(dtBytes(&got), raw[:Size]) {
					t.Error("re-encoded bytes differ from the input")
				}
			})
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := dtRecords()["reset_sent/inet"]
	with := func(f func(r *Record)) []byte {
		r := valid
		f(&r)
		return dtBytes(&r)
	}
	tests := []struct {
		name string
		raw  []byte
		want string // in the error
	}{
		{"nil", nil, "short record: 0 bytes"},
		{"empty", []byte{}, "short record"},
		{"one byte short", dtBytes(&valid)[:Size-1], "short record"},
		{"header only", dtBytes(&valid)[:16], "short record: 16 bytes"},
		{"type 0", with(func(r *Record) { r.Type = 0 }), "unknown record type 0"},
		{"type 9", with(func(r *Record) { r.Type = 9 }), "unknown record type 9"},
		{"type 255", with(func(r *Record) { r.Type = 255 }), "unknown record type 255"},
		{"family 0", with(func(r *Record) { r.Family = 0 }), "unknown address family 0"},
		{"family AF_UNIX", with(func(r *Record) { r.Family = 1 }), "unknown address family 1"},
		{"listen family 3", with(func(r *Record) { r.Type, r.Family = Listen, 3 }), "unknown address family 3"},
		{"bind family 255", with(func(r *Record) { r.Type, r.Family = Bind, 255 }), "unknown address family 255"},
		{"client family 0", with(func(r *Record) { r.Type, r.Family = ClientRefused, 0 }), "record type 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			err := Decode(tt.raw, &r)
			if err == nil {
				t.Fatalf("Decode accepted %d bytes: %+v", len(tt.raw), r)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestAddr(t *testing.T) {
	var b [16]uint8
	copy(b[:], []byte{127, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
	v6 := netip.MustParseAddr("fe80::1234")
	b6 := v6.As16()
	mapped := netip.MustParseAddr("::ffff:10.1.2.3").As16()
	tests := []struct {
		name   string
		family uint8
		b      [16]uint8
		want   netip.Addr
	}{
		{"inet uses the first 4 bytes", AFInet, b, netip.MustParseAddr("127.0.0.1")},
		{"inet6", AFInet6, b6, v6},
		{"inet6 v4-mapped stays mapped", AFInet6, mapped, netip.MustParseAddr("::ffff:10.1.2.3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Addr(tt.family, &tt.b); got != tt.want {
				t.Errorf("addr = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCommString(t *testing.T) {
	tests := []struct {
		name string
		in   [16]int8
		want string
	}{
		{"empty", [16]int8{}, ""},
		{"short", [16]int8{'c', 'u', 'r', 'l'}, "curl"},
		{"stops at NUL", [16]int8{'a', 0, 'b'}, "a"},
		{"full, no NUL", [16]int8{'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'}, "0123456789abcdef"},
		{"high bytes", [16]int8{-61, -87}, "\xc3\xa9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CommString(&tt.in); got != tt.want {
				t.Errorf("CommString = %q, want %q", got, tt.want)
			}
		})
	}
}

// fuzzKnownTypes lists every record type of bpf/rsttrace.h, written out
// here rather than taken from Decode's own check.
var fuzzKnownTypes = map[Type]bool{
	ResetSent: true, ClientRefused: true, Listen: true, ListenClose: true, Bind: true,
	ListenUpdate: true, FirewallDrop: true, ConnectFailed: true, SynRetransmit: true, ResetOut: true, ResetIn: true,
}

func FuzzDecode(f *testing.F) {
	for _, r := range dtRecords() {
		f.Add(dtBytes(&r))
		f.Add(append(dtBytes(&r), 0, 0, 0, 0, 0, 0, 0, 0))
	}
	var zero Record
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(dtBytes(&zero))
	f.Add(bytes.Repeat([]byte{0xff}, Size))
	f.Add(bytes.Repeat([]byte{0x01, 0x0a}, Size))
	f.Add([]byte(strings.Repeat("garbage!", Size/8+3)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		err := Decode(data, &r)
		if err != nil {
			// Every rejection has a reason Decode documents.
			short := len(data) < Size
			badType := !short && !fuzzKnownTypes[Type(data[0])]
			badFamily := !short && data[1] != AFInet && data[1] != AFInet6 && Type(data[0]) != ListenClose
			if !short && !badType && !badFamily {
				t.Fatalf("Decode rejected a valid record: %v", err)
			}
			return
		}
		if len(data) < Size {
			t.Fatalf("Decode accepted %d bytes, fewer than Size %d", len(data), Size)
		}
		if !fuzzKnownTypes[r.Type] {
			t.Fatalf("Decode accepted unknown type %d", r.Type)
		}
		if r.Type != ListenClose && r.Family != AFInet && r.Family != AFInet6 {
			t.Fatalf("Decode accepted type %d with family %d", r.Type, r.Family)
		}
		if got := dtBytes(&r); !bytes.Equal(got, data[:Size]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, data[:Size])
		}
		// What a decoded record turns into must not panic either.
		_ = Addr(r.Family, &r.Saddr)
		_ = Addr(r.Family, &r.Daddr)
		_ = CommString(&r.Proc.Comm)
	})
}

// TestDecodeEveryType: a record of every type in Types decodes, in both
// families.
func TestDecodeEveryType(t *testing.T) {
	for _, typ := range Types {
		for _, family := range []uint8{AFInet, AFInet6} {
			r := Record{Type: typ, Family: family, Ts: 1}
			var got Record
			if err := Decode(dtBytes(&r), &got); err != nil || got != r {
				t.Errorf("type %d family %d: %v, %+v", typ, family, err, got)
			}
		}
	}
}
