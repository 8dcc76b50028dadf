package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The JSON encoder is written by hand; encoding/json (Encoder,
// SetEscapeHTML(false), one object per line) is what it must reproduce byte
// for byte. These tests keep encoding/json as the oracle.

// oracleJSON encodes e as the JSON encoder did before it was hand-written.
func oracleJSON(e *Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(e)
	return buf.Bytes(), err
}

// oracleJSONWith is oracleJSON with the host and node fields of o put
// after "type", found by encoding the time and type alone.
func oracleJSONWith(e *Event, o Options) ([]byte, error) {
	out, err := oracleJSON(e)
	if err != nil || o == (Options{}) {
		return out, err
	}
	head, err := marshalNoHTML(struct {
		Time time.Time `json:"time"`
		Type Type      `json:"type"`
	}{e.Time, e.Type})
	if err != nil {
		return nil, err
	}
	head = head[:len(head)-1] // the closing brace
	if !bytes.HasPrefix(out, head) {
		return nil, fmt.Errorf("encoding/json output %s does not start with %s", out, head)
	}
	fields, err := marshalNoHTML(struct {
		Host string `json:"host,omitempty"`
		Node string `json:"node,omitempty"`
	}{o.Host, o.Node})
	if err != nil {
		return nil, err
	}
	var with []byte
	with = append(with, head...)
	if len(fields) > 2 {
		with = append(with, ',')
		with = append(with, fields[1:len(fields)-1]...)
	}
	return append(with, out[len(head):]...), nil
}

// marshalNoHTML is json.Marshal without HTML escaping.
func marshalNoHTML(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ourJSON encodes e through the public encoder.
func ourJSON(e *Event) ([]byte, error) { return ourJSONWith(e, Options{}) }

// ourJSONWith encodes e through the public encoder with options o.
func ourJSONWith(e *Event, o Options) ([]byte, error) {
	var buf bytes.Buffer
	enc, err := NewEncoderWith("json", &buf, o)
	if err != nil {
		return nil, err
	}
	err = enc.Encode(e)
	if ferr := enc.Flush(); ferr != nil {
		return nil, ferr
	}
	return buf.Bytes(), err
}

// originOptions are the host and node the oracle tests encode with, beside
// none: names that need escaping, and one of them empty.
var originOptions = []Options{
	{Host: "web-1", Node: "node-a"},
	{Host: "h\"o\\st\n\xff\u2028<&>"},
	{Node: "n"},
}

// sameAsOracle fails t unless our encoder writes exactly what encoding/json
// writes for e, or fails as it does (writing nothing), without host and
// node, and with each of originOptions.
func sameAsOracle(t *testing.T, e *Event) {
	t.Helper()
	sameAsOracleWith(t, e, Options{})
	for _, o := range originOptions {
		sameAsOracleWith(t, e, o)
	}
}

func sameAsOracleWith(t *testing.T, e *Event, o Options) {
	t.Helper()
	deriveRaw(reflect.ValueOf(e))
	want, werr := oracleJSONWith(e, o)
	got, gerr := ourJSONWith(e, o)
	switch {
	case werr != nil && gerr == nil:
		t.Fatalf("encoding/json fails (%v), we wrote %s", werr, got)
	case werr == nil && gerr != nil:
		t.Fatalf("we fail (%v), encoding/json wrote %s", gerr, want)
	case werr != nil:
		if gerr.Error() != werr.Error() {
			t.Errorf("error %q, encoding/json says %q", gerr, werr)
		}
		if len(got) != 0 {
			t.Errorf("wrote %q with an error", got)
		}
	case !bytes.Equal(got, want):
		t.Fatalf("differs from encoding/json:\n got %s\nwant %s", got, want)
	}
}

// deriveRaw sets CommRaw and ExeRaw of every Process reachable from v as
// the JSON encoder derives them, for encoding/json to write the same.
func deriveRaw(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			deriveRaw(v.Elem())
		}
	case reflect.Slice:
		for i := range v.Len() {
			deriveRaw(v.Index(i))
		}
	case reflect.Struct:
		if p, ok := v.Addr().Interface().(*Process); ok {
			p.CommRaw, p.ExeRaw = "", ""
			if !utf8.ValidString(p.Comm) {
				p.CommRaw = RawBytes(p.Comm)
			}
			if p.Exe != "" && !utf8.ValidString(p.Exe) {
				p.ExeRaw = RawBytes(p.Exe)
			}
		}
		if v.Type() == timeType || v.Type() == addrType {
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				deriveRaw(v.Field(i))
			}
		}
	}
}

func u32p(n uint32) *uint32 { return &n }
func i64p(n int64) *int64   { return &n }

func TestJSONMatchesEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		ev   *Event
	}{
		{"zero event", &Event{}},
		{"zero time in a zone", &Event{Time: time.Time{}.In(time.FixedZone("X", 3600)), Type: TypeLost}},
		{"local time", &Event{Time: time.Unix(1763769600, 123456789), Type: TypeLost, Lost: u64p(1)}},
		{"whole second", &Event{Time: time.Unix(1763769600, 0).UTC(), Type: TypeStop, Lost: u64p(0)}},
		{"trailing zeros trimmed", &Event{Time: time.Unix(1763769600, 120000000).UTC(), Type: TypeStop}},
		{"negative offset", &Event{Time: t0.In(time.FixedZone("", -(9*3600 + 30*60))), Type: TypeStop}},
		{"offset with seconds", &Event{Time: t0.In(time.FixedZone("", 5*3600+45*60+59)), Type: TypeStop}},
		{"offset 23:59", &Event{Time: t0.In(time.FixedZone("", 23*3600+59*60)), Type: TypeStop}},
		{"offset 24h refused", &Event{Time: t0.In(time.FixedZone("", 24*3600)), Type: TypeStop}},
		{"offset -24h refused", &Event{Time: t0.In(time.FixedZone("", -24*3600)), Type: TypeStop}},
		{"offset 100h refused", &Event{Time: t0.In(time.FixedZone("", 100*3600)), Type: TypeStop}},
		{"year 0", &Event{Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Type: TypeStop}},
		{"year 9999", &Event{Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Type: TypeStop}},
		{"year 10000 refused", &Event{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Type: TypeStop}},
		{"year -1 refused", &Event{Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), Type: TypeStop}},
		{"bad since refused", &Event{Time: t0, Type: TypeListen, Listener: &Listener{Since: time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"bad closed_at refused", &Event{Time: t0, Type: TypeListenClose, Listener: &Listener{ClosedAt: time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"bad bind time refused", &Event{Time: t0, Type: TypeBindFailed, Bind: &Bind{}}},
		{"zero addresses", &Event{Time: t0, Type: TypeRefused, Src: &Endpoint{}, Dst: &Endpoint{}}},
		{"v4-mapped and zoned addresses", &Event{Time: t0, Type: TypeRefused,
			Src: &Endpoint{Addr: netip.MustParseAddr("::ffff:10.0.0.1"), Port: 1},
			Dst: &Endpoint{Addr: netip.MustParseAddr("fe80::1%eth0"), Port: 65535}}},
		{"zone that needs escaping", &Event{Time: t0, Type: TypeRefused,
			Src: &Endpoint{Addr: netip.MustParseAddr("fe80::1").WithZone("a\"b\\c\n\xff\u2028<&>")}}},
		{"strings that need escaping", &Event{Time: t0, Type: "ty\"pe", Cause: "c\\a\x00use",
			Explanation:  "<b> & \b\f\n\r\t\x01\x1f\x7f \xff\xfe \xe2\x80 \u2028\u2029 é 日本 \U0001F600 \xed\xa0\x80",
			KernelReason: "\u2027\u202a", Kernel: strings.Repeat("x", 300)}},
		{"client with empty comm", &Event{Time: t0, Type: TypeRefused, Client: &Process{}}},
		{"exit code 0 kept, exit empty", &Event{Time: t0, Type: TypeListenClose, Listener: &Listener{Exit: &Exit{Code: intp(0)}}}},
		{"empty exit", &Event{Time: t0, Type: TypeListenClose, Listener: &Listener{Exit: &Exit{}}}},
		{"negative exit code", &Event{Time: t0, Type: TypeListenClose, Listener: &Listener{Exit: &Exit{Code: intp(-1), Signal: "SIGSEGV", CoreDumped: true}}}},
		{"overflow", &Event{Time: t0, Type: TypeListenOverflow, Netns: 4026532177, Cause: CauseBacklogFull,
			Listener: &Listener{Process: server, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Netns: 4026532177,
				Backlog: 128, BacklogRequested: 511, Queued: u32p(129)},
			Dropped:    &Drops{Total: 312, SynAcceptQueueFull: 300, FinalAck: 12},
			IntervalMs: 1000, AcceptIdleMs: i64p(4100)}},
		{"overflow zeros", &Event{Time: t0, Type: TypeListenOverflow, Listener: &Listener{Queued: u32p(0)},
			Dropped: &Drops{}, IntervalMs: -1, AcceptIdleMs: i64p(0)}},
		{"empty plan and ports omitted", &Event{Time: t0, Type: TypeStart, Plan: []Attach{}, Ports: []uint16{}}},
		{"extremes", &Event{Time: t0, Type: TypeStop, Netns: ^uint32(0), Version: -1 << 63,
			Lost: u64p(^uint64(0)), Events: ^uint64(0), IntervalMs: -1 << 63, AcceptIdleMs: i64p(1<<63 - 1),
			Ports: []uint16{0, 65535}, Plan: []Attach{{}, {Capability: "c", Hook: "h", Degraded: "d"}, {Capability: "n", Hook: "h", Waiting: "w"}}}},
	}
	for _, s := range sampleEvents() {
		tests = append(tests, struct {
			name string
			ev   *Event
		}{"sample " + s.name, s.ev})
	}
	for _, e := range benchEvents()[:110] {
		tests = append(tests, struct {
			name string
			ev   *Event
		}{"bench " + string(e.Type) + " " + string(e.Cause), e})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { sameAsOracle(t, tt.ev) })
	}
}

// TestJSONStringEscaping compares the escaper alone with encoding/json for
// every single byte, every rune around the special ones, and bad UTF-8.
func TestJSONStringEscaping(t *testing.T) {
	var in []string
	for c := range 256 {
		in = append(in, string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"z")
	}
	for _, r := range []rune{0x7f, 0x80, 0x7ff, 0x800, 0x2027, 0x2028, 0x2029, 0x202a, 0xfffd, 0xfffe, 0xffff, 0x10000, 0x10ffff} {
		in = append(in, string(r), "x"+string(r)+"y")
	}
	in = append(in, "\xc3", "\xc3(", "\xe2\x80", "\xe2\x80\xa8\xe2\x80", "\xf0\x9f\x98", "\xf4\x90\x80\x80",
		"\xed\xa0\x80", "\xc0\xaf", "\xff\xff\xff", "", strings.Repeat("<&>", 10))
	for _, s := range in {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

// A filler sets the fields of a value by reflection, so that a field added
// to Event (or to a type it holds) is filled, encoding/json writes it, and
// the comparison fails until the hand-written encoder writes it too.
type filler struct {
	// set says whether the field at path gets a value (else its zero).
	set func(path string) bool
	// value sources, for fields that are set
	src valueSource
	// paths records every path visited.
	paths []string
}

// valueSource makes the non-zero-able values of a filled Event.
type valueSource interface {
	Bool() bool
	Uint(bits int) uint64
	Int(bits int) int64
	String() string
	Time() time.Time
	Addr() netip.Addr
	Len() int // of a slice that is set; 0 is allowed
}

var (
	timeType = reflect.TypeFor[time.Time]()
	addrType = reflect.TypeFor[netip.Addr]()
)

func (f *filler) fill(t testing.TB, v reflect.Value, path string) {
	if path != "" {
		f.paths = append(f.paths, path)
		if !f.set(path) {
			v.SetZero()
			return
		}
	}
	switch v.Type() {
	case timeType:
		v.Set(reflect.ValueOf(f.src.Time()))
		return
	case addrType:
		v.Set(reflect.ValueOf(f.src.Addr()))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			sf := v.Type().Field(i)
			if !sf.IsExported() && !sf.Anonymous {
				continue // encoding/json ignores it too
			}
			name := sf.Name
			if path != "" {
				name = path + "." + name
			}
			f.fill(t, v.Field(i), name)
		}
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		f.fill(t, p.Elem(), path+"*")
		v.Set(p)
	case reflect.Slice:
		n := f.src.Len()
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			f.fill(t, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		v.SetString(f.src.String())
	case reflect.Bool:
		v.SetBool(f.src.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(f.src.Int(v.Type().Bits()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(f.src.Uint(v.Type().Bits()))
	default:
		// A new kind of field (a map, a float, an interface): teach the
		// filler and the encoder about it.
		t.Fatalf("%s: the filler cannot fill a %s (%s)", path, v.Kind(), v.Type())
	}
}

// richSource makes every value non-zero and valid, cycling through values
// that are hard to encode.
type richSource struct{ n int }

var richStrings = []string{"nginx", "a\"b\\c\n\t\x01\x1f\x7f <>&", "\xff\xfeinvalid\xc3", "\u2028\u2029", "é日本\U0001F600", "x"}

func (s *richSource) next() int  { s.n++; return s.n }
func (s *richSource) Bool() bool { return true }
func (s *richSource) Len() int   { return 2 }
func (s *richSource) String() string {
	return richStrings[s.next()%len(richStrings)]
}
func (s *richSource) Uint(bits int) uint64 {
	n := s.next()
	if n%3 == 0 {
		return 1<<bits - 1 // the maximum
	}
	return uint64(n)
}
func (s *richSource) Int(bits int) int64 {
	switch n := s.next(); n % 3 {
	case 0:
		return -1 << (bits - 1)
	case 1:
		return -int64(n)
	default:
		return int64(n)
	}
}
func (s *richSource) Time() time.Time {
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", -(3*3600 + 30*60))}
	n := s.next()
	return time.Unix(1763769600+int64(n), int64(n)*10_000_000).In(zones[n%len(zones)])
}
func (s *richSource) Addr() netip.Addr {
	addrs := []string{"127.0.0.1", "::1", "::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8::42", "0.0.0.0", "::"}
	return netip.MustParseAddr(addrs[s.next()%len(addrs)])
}

// TestJSONEveryField fills every field of Event (and of everything it
// holds), then, for each field in turn, leaves only that field out, and
// sets only that field: encoding/json decides what is written.
func TestJSONEveryField(t *testing.T) {
	all := &filler{set: func(string) bool { return true }, src: &richSource{}}
	var full Event
	all.fill(t, reflect.ValueOf(&full).Elem(), "")
	t.Run("all set", func(t *testing.T) { sameAsOracle(t, &full) })

	// Every field must appear in the output when set: a field encoding/json
	// skips (json:"-") is fine for the oracle but this catches a filler
	// that silently stopped reaching fields.
	for _, key := range jsonKeys(reflect.TypeFor[Event]()) {
		if key == "comm_raw" || key == "exe_raw" {
			continue // derived from comm and exe: TestJSONRawComm
		}
		if got, _ := ourJSON(&full); !bytes.Contains(got, []byte(`"`+key+`":`)) {
			t.Errorf("key %q missing from the filled event: %s", key, got)
		}
	}
	paths := all.paths
	if len(paths) < 50 {
		t.Fatalf("only %d fields visited: %v", len(paths), paths)
	}
	for _, p := range paths {
		t.Run("without "+p, func(t *testing.T) {
			f := &filler{set: func(q string) bool { return q != p }, src: &richSource{}}
			var e Event
			f.fill(t, reflect.ValueOf(&e).Elem(), "")
			sameAsOracle(t, &e)
		})
		t.Run("only "+p, func(t *testing.T) {
			// p and what leads to it; Time stays set (a zero Time is fine
			// but would hide nothing).
			f := &filler{set: func(q string) bool { return strings.HasPrefix(p, q) || q == "Time" }, src: &richSource{}}
			var e Event
			f.fill(t, reflect.ValueOf(&e).Elem(), "")
			sameAsOracle(t, &e)
		})
	}
}

// jsonKeys lists the JSON keys of struct type t and of the structs it
// holds (through pointers, slices and embedding).
func jsonKeys(t reflect.Type) []string {
	var keys []string
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == timeType || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if !sf.Anonymous && name != "" && name != "-" {
				keys = append(keys, name)
			}
			walk(sf.Type)
		}
	}
	walk(t)
	return keys
}

// fuzzSource makes values from fuzz bytes: zero or not, nil or not,
// arbitrary bytes in strings, times in and out of RFC 3339's range.
type fuzzSource struct{ data []byte }

func (s *fuzzSource) byte() byte {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return b
}

func (s *fuzzSource) u64() uint64 {
	var b [8]byte
	n := copy(b[:], s.data)
	s.data = s.data[n:]
	return binary.LittleEndian.Uint64(b[:])
}

func (s *fuzzSource) Bool() bool { return s.byte()&1 != 0 }
func (s *fuzzSource) Len() int   { return int(s.byte() % 4) }

func (s *fuzzSource) Uint(bits int) uint64 {
	switch s.byte() % 4 {
	case 0:
		return 0
	case 1:
		return uint64(s.byte())
	}
	return s.u64() & (1<<bits - 1)
}

func (s *fuzzSource) Int(bits int) int64 {
	switch s.byte() % 4 {
	case 0:
		return 0
	case 1:
		return int64(int8(s.byte()))
	}
	return int64(s.u64()<<(64-bits)) >> (64 - bits)
}

func (s *fuzzSource) String() string {
	n := min(int(s.byte()), len(s.data))
	str := string(s.data[:n])
	s.data = s.data[n:]
	return str
}

func (s *fuzzSource) Time() time.Time {
	var loc *time.Location
	switch k := s.byte(); k % 4 {
	case 0:
		loc = time.UTC
	case 1:
		loc = time.Local
	default:
		// Offsets up to ±36h, in seconds: some RFC 3339 cannot say.
		loc = time.FixedZone("", int(int32(s.u64())%(36*3600)))
	}
	switch s.byte() % 4 {
	case 0:
		return time.Time{}.In(loc)
	case 1: // within a few centuries of now
		return time.Unix(int64(s.u64()%(1<<34)), int64(s.u64()%1e9)).In(loc)
	}
	return time.Unix(int64(s.u64())>>int(s.byte()%64), int64(s.u64()%1e9)).In(loc)
}

func (s *fuzzSource) Addr() netip.Addr {
	switch s.byte() % 5 {
	case 0:
		return netip.Addr{}
	case 1:
		return netip.AddrFrom4([4]byte{s.byte(), s.byte(), s.byte(), s.byte()})
	}
	var a [16]byte
	binary.LittleEndian.PutUint64(a[:], s.u64())
	binary.LittleEndian.PutUint64(a[8:], s.u64())
	ip := netip.AddrFrom16(a)
	if s.Bool() {
		ip = ip.WithZone(s.String())
	}
	return ip
}

// fuzzEvent builds an Event from fuzz bytes: the first byte says which
// fields are set (every other one, the pointers of one kind, ...).
func fuzzEvent(t testing.TB, data []byte) *Event {
	src := &fuzzSource{data: data}
	f := &filler{set: func(string) bool { return src.Bool() }, src: src}
	var e Event
	f.fill(t, reflect.ValueOf(&e).Elem(), "")
	return &e
}

func FuzzJSONEncoder(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 600))
	f.Add(bytes.Repeat([]byte{0x01}, 600))
	f.Add(bytes.Repeat([]byte{0x03, 0x05, 0x07, '"', '\\', 0xe2, 0x80, 0xa8}, 200))
	f.Add([]byte(strings.Repeat("\x01\x02\x03\x10<tag>&\xff\xfe\u2028", 40)))
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsOracle(t, fuzzEvent(t, data))
	})
}

// TestPlain8 checks the word-at-a-time test against the byte rule: every
// byte value at every position, then random words.
func TestPlain8(t *testing.T) {
	plain := func(c byte) bool { return c >= ' ' && c < utf8.RuneSelf && c != '"' && c != '\\' }
	check := func(w [8]byte) {
		want := true
		for _, c := range w {
			want = want && plain(c)
		}
		if got := plain8(binary.LittleEndian.Uint64(w[:])); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
		}
		if got := plain8(load64(string(w[:]), 0)); got != want {
			t.Fatalf("plain8(load64(%q)) = %v, want %v", w, got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			for _, fill := range []byte{'a', ' ', 0x7f, 0, 0xff, '"', '!', '#', '[', ']'} {
				w := [8]byte{}
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				check(w)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64()&0x7f7f7f7f7f7f7f7f|0x2020202020202020*uint64(rng.IntN(2)))
		check(w)
	}
}
