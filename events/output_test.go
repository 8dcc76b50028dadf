package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Properties of the output that hold for any event, whatever its strings
// hold: the fuzz target checks them on arbitrary events.

// unescapeText undoes appendTextEscaped.
func unescapeText(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("lone backslash at the end of %q", s)
		}
		i++
		switch c := s[i]; c {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			if i+n >= len(s) {
				return "", fmt.Errorf("short \\%c escape in %q", c, s)
			}
			v, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
			if err != nil {
				return "", err
			}
			if c == 'x' {
				b.WriteByte(byte(v))
			} else {
				b.WriteRune(rune(v))
			}
			i += n
		default:
			return "", fmt.Errorf("unknown escape \\%c in %q", c, s)
		}
	}
	return b.String(), nil
}

// checkTextLine fails unless line is one line, printable, valid UTF-8,
// and unescapes to the unescaped line of e.
func checkTextLine(t *testing.T, e *Event, line string) {
	t.Helper()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("not exactly one line: %q", line)
	}
	body := strings.TrimSuffix(line, "\n")
	if !utf8.ValidString(body) {
		t.Fatalf("not valid UTF-8: %q", body)
	}
	for _, r := range body {
		if r != ' ' && !strconv.IsPrint(r) {
			t.Fatalf("unprintable %U in %q", r, body)
		}
	}
	back, err := unescapeText(body)
	if err != nil {
		t.Fatal(err)
	}
	if raw := string(appendLine(nil, e)); back != raw {
		t.Fatalf("unescaped line differs:\n got %q\nwant %q", back, raw)
	}
}

func TestTextNamesCannotForgeLines(t *testing.T) {
	name := `q"b\s` + "\n" + `n` + "\xff" + `z`
	e := refusedEvent(CauseListenerClosed)
	e.Client = &Process{Pid: 7, Comm: name}
	e.Listener.Process = Process{Pid: 8, Comm: name}
	e.Explanation = Explain(e)
	line := ourText(t, e)
	checkTextLine(t, e, line)
	if want := `q"b\\s\nn\xffz`; strings.Count(line, want) < 2 {
		t.Errorf("line %q does not show the name as %s in the client and the explanation", line, want)
	}
	back, _ := unescapeText(strings.TrimSuffix(line, "\n"))
	if !strings.Contains(back, "["+name+" (pid 7)]") || !strings.Contains(back, name+" (pid 8)") {
		t.Errorf("the name is not recovered from %q", back)
	}
}

func TestTextEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, \"quoted\"": "plain text, \"quoted\"",
		"a\\b":                   `a\\b`,
		"\t\r\n\x00\x1b\x7f":     `\t\r\n\x00\x1b\x7f`,
		"\xff\xc3(\xe2\x80":      `\xff\xc3(\xe2\x80`,
		"\u0085\u009f\u2028\u2029\u202e\u00a0\ufeff": `\u0085\u009f\u2028\u2029\u202e\u00a0\ufeff`,
		"\U000E0001":            `\U000e0001`,
		"é日本\U0001F600\ufffd":   "é日本\U0001F600\ufffd",
		"12345678\\2345678\x01": `12345678\\2345678\x01`,
	} {
		got := string(appendTextEscaped(nil, []byte(in)))
		if got != want {
			t.Errorf("escaped %q = %q, want %q", in, got, want)
		}
		if back, err := unescapeText(got); err != nil || back != in {
			t.Errorf("unescape(%q) = %q, %v; want %q", got, back, err, in)
		}
	}
}

func TestJSONRawComm(t *testing.T) {
	e := refusedEvent(CauseNoListener)
	e.Client = &Process{Pid: 7, Comm: "a\xffb", Exe: "/usr/bin/\xc3"}
	got, err := ourJSON(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte(`"comm":"a\ufffdb","comm_raw":"Yf9i","exe":"/usr/bin/\ufffd","exe_raw":"L3Vzci9iaW4vww=="`)) {
		t.Errorf("raw comm and exe missing: %s", got)
	}
	var back Event
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if string(back.Client.CommRaw) != e.Client.Comm || string(back.Client.ExeRaw) != e.Client.Exe {
		t.Errorf("decoded raw %q %q, want %q %q", back.Client.CommRaw, back.Client.ExeRaw, e.Client.Comm, e.Client.Exe)
	}
	e.Client.Comm, e.Client.Exe = "ok", "/ok"
	if got, _ := ourJSON(e); bytes.Contains(got, []byte("_raw")) {
		t.Errorf("raw fields for valid UTF-8: %s", got)
	}
}

// stringsOf lists the non-empty strings reachable from v by path.
func stringsOf(v reflect.Value, path string, out map[string]string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			stringsOf(v.Elem(), path, out)
		}
	case reflect.Slice:
		for i := range v.Len() {
			stringsOf(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Struct:
		if v.Type() == timeType || v.Type() == addrType {
			return
		}
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				stringsOf(v.Field(i), path+"."+f.Name, out)
			}
		}
	case reflect.String:
		if v.String() != "" {
			out[path] = v.String()
		}
	}
}

func FuzzEventOutput(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 600))
	f.Add(bytes.Repeat([]byte{0x03, 0x05, 0x07, '"', '\\', 0xe2, 0x80, 0xa8}, 200))
	f.Add([]byte(strings.Repeat("\x01\x02\x03\x10<tag>&\xff\xfe\u2028\u0085\n", 40)))
	types := []Type{TypeStart, TypeStop, TypeLost, TypeRefused, TypeListen, TypeListenClose, TypeBindFailed,
		TypeListenOverflow, TypeTimeout, TypeReset, TypeFiltered, TypeSummary}
	causes := []Cause{CauseNoListener, CauseListenerClosed, CauseWrongAddress, CauseOtherNetns, CauseBindFailed,
		CauseBacklogFull, CauseUnknown, CauseFirewallReject, CauseFirewallDrop, CauseNoResponse, CauseRemote}
	f.Fuzz(func(t *testing.T, data []byte) {
		e := fuzzEvent(t, data)
		if len(data) > 1 {
			e.Type = types[int(data[0])%len(types)]
			e.Cause = causes[int(data[1])%len(causes)]
		}
		x := Explain(e)
		if y := Explain(e); x != y {
			t.Fatalf("Explain is not deterministic: %q then %q", x, y)
		}
		e.Explanation = x
		checkTextLine(t, e, ourText(t, e))

		got, err := ourJSON(e)
		if err != nil {
			return // a time RFC 3339 cannot say: the oracle tests cover it
		}
		if !json.Valid(got) {
			t.Fatalf("not valid JSON: %s", got)
		}
		want := map[string]string{}
		stringsOf(reflect.ValueOf(e), "", want)
		for _, s := range want {
			if !utf8.ValidString(s) {
				return
			}
		}
		var back Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("decoding %s: %v", got, err)
		}
		have := map[string]string{}
		stringsOf(reflect.ValueOf(&back), "", have)
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("strings decoded back differ:\n got %q\nwant %q", have, want)
		}
	})
}
