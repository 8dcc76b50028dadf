package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// As a service: JSON Lines to a rotated file, metrics scraped while real
// refusals happen and checked against the events written, SIGHUP reopens
// the file (after logrotate moved it), SIGTERM ends it with the stop
// record and no torn line.
func TestPrivServiceOutputMetrics(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "rsttrace.jsonl")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const port = 2096
	p := startMain(t, fmt.Sprintf("--output %s --output-max-size 4096 --output-keep 3 --metrics %s --port %d", out, addr, port))

	// Every JSON line of the output files, oldest first.
	lines := func() []map[string]any {
		var all []map[string]any
		for _, f := range []string{out + ".3", out + ".2", out + ".1", out + ".moved", out} {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if len(b) > 0 && b[len(b)-1] != '\n' {
				t.Errorf("%s ends in a torn line", f)
			}
			sc := bufio.NewScanner(strings.NewReader(string(b)))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Errorf("%s: line %q is not JSON: %v", f, sc.Text(), err)
					continue
				}
				all = append(all, m)
			}
		}
		return all
	}
	count := func(typ string) int {
		n := 0
		for _, m := range lines() {
			if m["type"] == typ {
				n++
			}
		}
		return n
	}
	waitCount := func(typ string, n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for count(typ) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d %s records in the output, want %d (stderr: %s)", count(typ), typ, n, p.stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCount("start", 1)
	host, _ := os.Hostname()
	if m := lines()[0]; m["type"] != "start" || m["host"] != host {
		t.Errorf("first record %v: want the start record with host %q", m, host)
	}

	const refusals = 12 // about 5 KiB with the start record: more than one file
	for range refusals {
		refuseInNewNetns(t, port)
	}
	waitCount("refused", refusals)
	if _, err := os.Stat(out + ".1"); err != nil {
		t.Errorf("no rotated file after %d records with --output-max-size 4096: %v", refusals, err)
	}

	// The metrics say what the events say.
	mf := scrape(t, "http://"+addr+"/metrics")
	if got := metricValue(mf, "rsttrace_refusals_total", "cause", "no_listener"); got != refusals {
		t.Errorf("rsttrace_refusals_total{cause=no_listener} = %v, want %d", got, refusals)
	}
	if got := metricValue(mf, "rsttrace_events_written_total", "type", "refused"); got != float64(count("refused")) {
		t.Errorf("rsttrace_events_written_total{type=refused} = %v, want %d (the events written)", got, count("refused"))
	}

	// logrotate moves the file and sends SIGHUP: the next records go to
	// a new file at the configured path.
	if err := os.Rename(out, out+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		refuseInNewNetns(t, port)
		if b, err := os.ReadFile(out); err == nil && strings.Contains(string(b), `"type":"refused"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refused record in a new %s after SIGHUP", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0 (stderr: %s)", code, p.stderr.String())
	}
	all := lines()
	if last := all[len(all)-1]; last["type"] != "stop" || last["lost"] != 0.0 {
		t.Errorf("last record %v, want the stop record with lost 0", last)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mf
}

// metricValue is the counter or gauge of family name whose label has value.
func metricValue(mf map[string]*dto.MetricFamily, name, label, value string) float64 {
	f := mf[name]
	if f == nil {
		return -1
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
