package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rsttrace/rsttrace/internal/identity"
	"github.com/rsttrace/rsttrace/tracer"
)

func TestParseFlags(t *testing.T) {
	def := config{format: "text", ringSize: tracer.DefaultRingSize, overflow: tracer.DefaultOverflowInterval,
		outputSize: 100 << 20, outputKeep: 5, rate: tracer.DefaultRatePerSecond, filter: identity.Filter{}}
	with := func(f func(c *config)) config {
		c := def
		f(&c)
		return c
	}
	page := os.Getpagesize()
	tests := []struct {
		name string
		args []string
		want config
	}{
		{"defaults", nil, def},
		{"empty args", []string{}, def},
		{"-o json", []string{"-o", "json"}, with(func(c *config) { c.format = "json" })},
		{"--o=json", []string{"--o=json"}, with(func(c *config) { c.format = "json" })},
		{"-o text", []string{"-o", "text"}, def},
		{"one port", []string{"--port", "80"}, with(func(c *config) { c.ports = []uint16{80} })},
		{"repeated port", []string{"--port", "80", "--port", "443"}, with(func(c *config) { c.ports = []uint16{80, 443} })},
		{"comma-separated ports", []string{"--port=80,443, 8080"}, with(func(c *config) { c.ports = []uint16{80, 443, 8080} })},
		{"both forms", []string{"-port", "1,65535", "--port", "22"}, with(func(c *config) { c.ports = []uint16{1, 65535, 22} })},
		{"duration", []string{"--duration", "30s"}, with(func(c *config) { c.duration = 30 * time.Second })},
		{"duration 0", []string{"--duration=0"}, def},
		{"ring size page", []string{"--ring-size", strconv.Itoa(page)}, with(func(c *config) { c.ringSize = page })},
		{"ring size 64MiB", []string{"--ring-size", "67108864"}, with(func(c *config) { c.ringSize = 64 << 20 })},
		{"verbose", []string{"-v"}, with(func(c *config) { c.verbose = true })},
		{"everything", []string{"-o", "json", "--port", "80", "--duration", "5m", "-v", "--ring-size", "1048576"},
			with(func(c *config) {
				c.format, c.ports, c.duration, c.ringSize, c.verbose = "json", []uint16{80}, 5*time.Minute, 1<<20, true
			})},
		{"flags end at --", []string{"-o", "json", "--"}, with(func(c *config) { c.format = "json" })},
		{"names", []string{"--unit", "nginx.service", "--container", "web,3f2a", "--pod", "shop/web-7f9c"}, with(func(c *config) {
			c.filter = identity.Filter{Units: []string{"nginx.service"}, Containers: []string{"web", "3f2a"}, Pods: []string{"shop/web-7f9c"}}
		})},
		{"output and metrics", []string{"--output", "/var/log/rsttrace/rsttrace.jsonl", "--output-max-size", "1048576", "--output-keep", "2", "--metrics", "127.0.0.1:9637"},
			with(func(c *config) {
				c.output, c.outputSize, c.outputKeep, c.metrics = "/var/log/rsttrace/rsttrace.jsonl", 1<<20, 2, "127.0.0.1:9637"
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseFlags(tt.args, &stderr)
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
			if stderr.Len() != 0 {
				t.Errorf("wrote to stderr: %q", stderr.String())
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // in the error message
	}{
		{"port 0", []string{"--port", "0"}, []string{`"0"`, "1 to 65535"}},
		{"port 65536", []string{"--port", "65536"}, []string{`"65536"`, "1 to 65535"}},
		{"port abc", []string{"--port", "abc"}, []string{`"abc"`, "1 to 65535"}},
		{"port negative", []string{"--port=-1"}, []string{"1 to 65535"}},
		{"port empty", []string{"--port", ""}, []string{"1 to 65535"}},
		{"bad port in a list", []string{"--port", "80,99999"}, []string{`"99999"`, "1 to 65535"}},
		{"trailing comma", []string{"--port", "80,"}, []string{"1 to 65535"}},
		{"port missing value", []string{"--port"}, []string{"needs an argument", "-port"}},
		{"negative duration", []string{"--duration", "-5s"}, []string{"--duration", "-5s", "negative"}},
		{"bad duration", []string{"--duration", "soon"}, []string{"soon"}},
		{"bad format", []string{"-o", "yaml"}, []string{`"yaml"`, "text or json"}},
		{"format case", []string{"-o", "JSON"}, []string{`"JSON"`, "text or json"}},
		{"positional", []string{"extra"}, []string{`unexpected argument "extra"`}},
		{"positional after flags", []string{"-o", "json", "foo", "bar"}, []string{`unexpected argument "foo"`}},
		{"positional after --", []string{"--", "-o"}, []string{`unexpected argument "-o"`}},
		{"ring size not a power of two", []string{"--ring-size", "1000000"}, []string{"--ring-size 1000000", "power of two"}},
		{"overflow interval too short", []string{"--overflow-interval", "10ms"}, []string{"--overflow-interval 10ms", "at least 100ms"}},
		{"ring size 3 pages", []string{"--ring-size", strconv.Itoa(3 * os.Getpagesize())}, []string{"power of two"}},
		{"ring size below a page", []string{"--ring-size", strconv.Itoa(os.Getpagesize() / 2)}, []string{"power of two", "at least " + strconv.Itoa(os.Getpagesize())}},
		{"ring size 0", []string{"--ring-size", "0"}, []string{"power of two"}},
		{"ring size negative", []string{"--ring-size", "-8388608"}, []string{"power of two"}},
		{"unknown flag", []string{"--verbose"}, []string{"-verbose"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseFlags(tt.args, &stderr)
			if err == nil {
				t.Fatalf("parseFlags(%q) = %+v, want an error", tt.args, got)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Fatalf("parseFlags(%q) = ErrHelp, want a usage error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want %q in it", err, w)
				}
			}
		})
	}
}

func TestParseFlagsHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"-o", "json", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := parseFlags(args, &stderr)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("parseFlags(%q) error = %v, want flag.ErrHelp", args, err)
			}
			out := stderr.String()
			for _, w := range []string{"Usage: rsttrace", "Examples:", "rsttrace -o json", "--port 80", "-duration", "-ring-size", "-port", "no_listener"} {
				if !strings.Contains(out, w) {
					t.Errorf("usage does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPortListString(t *testing.T) {
	tests := []struct {
		name string
		p    portList
		want string
	}{
		{"empty", nil, ""},
		{"one", portList{80}, "80"},
		{"several", portList{80, 443, 65535}, "80,443,65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
