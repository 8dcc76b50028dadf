package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rsttrace/rsttrace/events"
)

func u64(v uint64) *uint64 { return &v }

// serve starts the metrics on 127.0.0.1:0 and returns the base URL.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, m.Handler()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener after cancel: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeListener did not return after cancel")
		}
	})
	return "http://" + ln.Addr().String()
}

func scrape(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return b
}

func parse(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want; ok false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsFromRecords(t *testing.T) {
	fill := 0.25
	m := New(Options{RingFill: func() float64 { return fill }, MaxListeners: 2})
	url := serve(t, m)

	start := time.Unix(1700000000, 500_000_000)
	client := &events.Endpoint{Addr: netip.MustParseAddr("10.1.2.3"), Port: 54321}
	dst := &events.Endpoint{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080}
	listener := func(port uint16) *events.Listener {
		return &events.Listener{Addr: netip.MustParseAddr("127.0.0.1"), Port: port, Netns: 4026531840}
	}
	recs := []*events.Event{
		{Type: events.TypeStart, Time: start, Kernel: "6.18.0-test", Plan: []events.Attach{
			{Capability: "refusals", Hook: "tp_btf/tcp_send_reset"},
			{Capability: "overflow_syn", Degraded: "no fentry", Fallback: "netstat"},
		}},
		{Type: events.TypeRefused, Cause: events.CauseNoListener, Src: client, Dst: dst},
		{Type: events.TypeRefused, Cause: events.CauseNoListener, Src: client, Dst: dst},
		{Type: events.TypeRefused, Cause: events.CauseFirewallReject, Src: client, Dst: dst},
		{Type: events.TypeRefused, Src: client, Dst: dst}, // no cause: unknown
		{Type: events.TypeSummary, Cause: events.CauseNoListener, Dst: dst, Refusals: 100},
		{Type: events.TypeTimeout, Cause: events.CauseFirewallDrop, Src: client, Dst: dst},
		{Type: events.TypeFiltered, Cause: events.CauseFirewallDrop, Src: client, Dst: dst},
		{Type: events.TypeReset, Src: client, Dst: dst},
		{Type: events.TypeReset, Src: client, Dst: dst},
		{Type: events.TypeListenOverflow, Listener: listener(80), Dropped: &events.Drops{Total: 5}},
		{Type: events.TypeListenOverflow, Listener: listener(80), Dropped: &events.Drops{Total: 2}},
		{Type: events.TypeListenOverflow, Listener: listener(443), Dropped: &events.Drops{Total: 1}},
		// Past the cap of 2 listeners: summed under "other".
		{Type: events.TypeListenOverflow, Listener: listener(8443), Dropped: &events.Drops{Total: 7}},
		{Type: events.TypeListenOverflow, Listener: listener(9000), Dropped: &events.Drops{Total: 3}},
		{Type: events.TypeLost, Lost: u64(4)},
		{Type: events.TypeStop, Lost: u64(10)}, // total: 6 more than lost records said
	}
	for _, e := range recs {
		m.Observe(e)
	}
	raw := scrape(t, url)
	fams := parse(t, raw)

	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rsttrace_refusals_total", map[string]string{"cause": "no_listener"}, 102},
		{"rsttrace_refusals_total", map[string]string{"cause": "firewall_reject"}, 1},
		{"rsttrace_refusals_total", map[string]string{"cause": "unknown"}, 1},
		{"rsttrace_refusals_total", map[string]string{"cause": "backlog_full"}, 0},
		{"rsttrace_summarized_refusals_total", nil, 100},
		{"rsttrace_timeouts_total", map[string]string{"cause": "firewall_drop"}, 1},
		{"rsttrace_timeouts_total", map[string]string{"cause": "no_response"}, 0},
		{"rsttrace_filtered_total", map[string]string{"cause": "firewall_drop"}, 1},
		{"rsttrace_resets_total", nil, 2},
		{"rsttrace_listen_overflow_drops_total", map[string]string{"netns": "4026531840", "addr": "127.0.0.1", "port": "80"}, 7},
		{"rsttrace_listen_overflow_drops_total", map[string]string{"port": "443"}, 1},
		{"rsttrace_listen_overflow_drops_total", map[string]string{"netns": "other", "addr": "other", "port": "0"}, 10},
		{"rsttrace_listen_overflow_unlabeled_records_total", nil, 2},
		{"rsttrace_lost_records_total", nil, 10},
		{"rsttrace_events_written_total", map[string]string{"type": "refused"}, 4},
		{"rsttrace_events_written_total", map[string]string{"type": "listen_overflow"}, 5},
		{"rsttrace_events_written_total", map[string]string{"type": "listen"}, 0},
		{"rsttrace_start_time_seconds", nil, 1700000000.5},
		{"rsttrace_ring_buffer_fill_ratio", nil, 0.25},
		{"rsttrace_kernel_info", map[string]string{"release": "6.18.0-test"}, 1},
		{"rsttrace_capability_degraded", map[string]string{"capability": "overflow_syn"}, 1},
		{"rsttrace_capability_degraded", map[string]string{"capability": "refusals"}, 0},
	}
	for _, c := range checks {
		got, ok := value(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(fams, "rsttrace_listen_overflow_drops_total", map[string]string{"port": "8443"}); ok {
		t.Error("a listener past the label cap got its own label set")
	}
	for _, name := range []string{"process_start_time_seconds", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("%s missing: the process and Go collectors are registered", name)
		}
	}
	// Client addresses and ports never become labels.
	if s := string(raw); strings.Contains(s, "10.1.2.3") || strings.Contains(s, "54321") {
		t.Error("a client address or ephemeral port appears in the metrics")
	}

	// The gauge follows its callback at scrape time.
	fill = 0.75
	if got, _ := value(parse(t, scrape(t, url)), "rsttrace_ring_buffer_fill_ratio", nil); got != 0.75 {
		t.Errorf("fill ratio after change = %v, want 0.75", got)
	}

	// promtool's linter (Debian package prometheus) accepts the names,
	// types and help texts.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install it (Debian package prometheus; make test-deps does)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz: %v %v", resp, err)
	}
}

func TestServeAddressTaken(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "listening for metrics on "+ln.Addr().String()) {
		t.Errorf("Serve on a taken address = %v, want EADDRINUSE naming the address", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Serve(ctx, "127.0.0.1:0", http.NotFoundHandler()); err != nil {
		t.Errorf("Serve = %v after its context ended, want nil", err)
	}
}
