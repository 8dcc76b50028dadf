package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/diagnose"
	"github.com/rsttrace/rsttrace/internal/identity"
)

const whyUsage = `rsttrace why: why is this TCP port refused? The whole checklist in one
command: listeners on the port in every network namespace (address,
IPV6_V6ONLY, owner, backlog, accept queue), sockets bound without listening,
failed binds and recent history recorded by a running rsttrace, one real
connection attempt traced by rsttrace's programs, the firewall and NAT rules
on the path, and the listen-queue counters. Verdict first, evidence under it,
then what to do. Needs root.

Usage: rsttrace why [flags] PORT | ADDR:PORT

Examples:
  sudo rsttrace why 8080                       # every namespace with a listener, and this one
  sudo rsttrace why 10.0.0.5:8080 --netns web  # as seen from one namespace
  sudo rsttrace why 8080 --pid 812             # from the namespace of a process
  sudo rsttrace why 8080 --container web       # from a container's namespace
  sudo rsttrace why 8080 -o json               # one JSON object (see the README)

Exit status: 0 reachable, 1 refused, dropped or unreachable, 2 usage error.

Flags:
`

// runWhy is `rsttrace why ARGS`; it returns the exit status.
func runWhy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rsttrace why", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		format, netns, history, unit, ctr, pod string
		pid                                    uint
		noProbe, verbose                       bool
	)
	fs.StringVar(&format, "o", "text", "output format: text or json")
	fs.StringVar(&netns, "netns", "", "look from this network namespace: an ip netns name, a path (/proc/PID/ns/net) or an inode")
	fs.UintVar(&pid, "pid", 0, "look from the network namespace of this process")
	fs.StringVar(&unit, "unit", "", "look from the network namespace of a process of this systemd unit")
	fs.StringVar(&ctr, "container", "", "look from the network namespace of this container (id prefix or name)")
	fs.StringVar(&pod, "pod", "", "look from the network namespace of this pod (namespace/name, name or uid)")
	fs.StringVar(&history, "history", "", "a rsttrace JSON Lines output file to read failed binds and history from (default "+diagnose.DefaultHistory+" if it exists)")
	fs.BoolVar(&noProbe, "no-probe", false, "make no connection attempt")
	fs.BoolVar(&verbose, "v", false, "log diagnostics to stderr")
	usageErr := func(err error) int {
		fmt.Fprintln(stderr, "rsttrace why:", err)
		return 2
	}
	// Flags may come after the port: parse, take one argument, go on.
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stderr, whyUsage)
				fs.SetOutput(stderr)
				fs.PrintDefaults()
				return 0
			}
			return usageErr(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return usageErr(fmt.Errorf("want one PORT or ADDR:PORT, got %d arguments (see --help)", len(pos)))
	}
	addr, port, err := parseTarget(pos[0])
	if err != nil {
		return usageErr(err)
	}
	if format != "text" && format != "json" {
		return usageErr(fmt.Errorf("-o %q: want text or json", format))
	}
	selectors := 0
	for _, s := range []string{netns, unit, ctr, pod} {
		if s != "" {
			selectors++
		}
	}
	if pid != 0 {
		selectors++
	}
	if selectors > 1 {
		return usageErr(errors.New("give at most one of --netns, --pid, --unit, --container, --pod"))
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if history == "" {
		if _, err := os.Stat(diagnose.DefaultHistory); err == nil {
			history = diagnose.DefaultHistory
		}
	}

	names := identity.New(identity.DefaultOptions())
	defer names.Close()
	o := diagnose.Options{Port: port, Addr: addr, Netns: netns, Pid: uint32(pid), History: history,
		NoProbe: noProbe, Names: names, Logger: log}
	if unit != "" || ctr != "" || pod != "" {
		f := identity.Filter{}
		if unit != "" {
			f.Units = []string{unit}
		}
		if ctr != "" {
			f.Containers = []string{ctr}
		}
		if pod != "" {
			f.Pods = []string{pod}
		}
		p, ok := findProcess(names, f)
		if !ok {
			fmt.Fprintln(stderr, "rsttrace why: no running process matches", strings.TrimSpace(unit+" "+ctr+" "+pod))
			return 1
		}
		o.Pid = p
	}
	if ctx.Err() != nil {
		return 1
	}
	rep, err := diagnose.Diagnose(o)
	if err != nil {
		fmt.Fprintln(stderr, "rsttrace why:", err)
		return 1
	}
	if format == "json" {
		err = diagnose.WriteJSON(stdout, rep)
	} else {
		err = diagnose.WriteText(stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "rsttrace why: writing output:", err)
		return 1
	}
	return rep.Exit
}

// parseTarget parses PORT, ADDR:PORT or [V6]:PORT.
func parseTarget(s string) (netip.Addr, uint16, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			return netip.Addr{}, 0, fmt.Errorf("port %d out of range: want 1 to 65535", n)
		}
		return netip.Addr{}, uint16(n), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.Addr{}, 0, fmt.Errorf("%q: want PORT, ADDR:PORT or [IPV6]:PORT", s)
	}
	return ap.Addr().Unmap(), ap.Port(), nil
}

// findProcess returns the lowest pid whose names match f.
func findProcess(r *identity.Resolver, f identity.Filter) (uint32, bool) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		pid := uint32(n)
		mnt := nsIno(filepath.Join("/proc", e.Name(), "ns", "mnt"))
		net := nsIno(filepath.Join("/proc", e.Name(), "ns", "net"))
		r.Capture(pid, 0, mnt, net)
		p := events.Process{Pid: pid}
		r.Fill(&p, 0, mnt)
		if f.Match(&p) {
			return pid, true
		}
	}
	return 0, false
}

func nsIno(path string) uint32 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}
