package tracer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

// Any local process can choose its name (prctl PR_SET_NAME, or the file it
// runs from). A client named with a quote, a backslash, a newline and an
// invalid UTF-8 byte is refused: in text mode its event is one line that
// forges nothing, and in JSON its name's bytes are recoverable.
func TestPrivForgedProcessName(t *testing.T) {
	const name = "q\"b\\s\nn\xffz"
	n := newNetns(t)
	s := startTracer(t, Config{}, n)
	h, res := n.start(t, name, "connect", netip.MustParseAddrPort("127.0.0.1:2099"))
	if !strings.HasPrefix(res, "ECONNREFUSED") {
		t.Fatalf("connect: %q, want ECONNREFUSED", res)
	}
	h.in.Close()
	e := s.waitFor("the refusal of the forged client", func(e *events.Event) bool {
		return e.Type == events.TypeRefused && e.Netns == n.ino && e.Client != nil && e.Client.Pid == h.pid
	})
	if e.Client.Comm != name {
		t.Fatalf("client comm %q, want %q", e.Client.Comm, name)
	}

	var text bytes.Buffer
	enc, _ := events.NewEncoder("text", &text)
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	enc.Flush()
	if lines := strings.Count(text.String(), "\n"); lines != 1 || !strings.HasSuffix(text.String(), "\n") {
		t.Errorf("text: %d lines for one event: %q", lines, text.String())
	}
	if !strings.Contains(text.String(), `q"b\\s\nn\xffz`) {
		t.Errorf("text %q does not show the name escaped", text.String())
	}

	var js bytes.Buffer
	enc, _ = events.NewEncoder("json", &js)
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	enc.Flush()
	var m struct {
		Client struct {
			Comm    string `json:"comm"`
			CommRaw string `json:"comm_raw"`
		} `json:"client"`
	}
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatalf("JSON %q: %v", js.String(), err)
	}
	raw, err := base64.StdEncoding.DecodeString(m.Client.CommRaw)
	if err != nil || string(raw) != name {
		t.Errorf("comm_raw %q decodes to %q (%v), want the name's bytes %q", m.Client.CommRaw, raw, err, name)
	}
}
