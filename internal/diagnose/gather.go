package diagnose

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/host"
	"github.com/rsttrace/rsttrace/internal/identity"
	"github.com/rsttrace/rsttrace/internal/netfilter"
)

// Options say what to diagnose.
type Options struct {
	Port uint16
	// Addr is the destination address; invalid means 127.0.0.1 and ::1.
	Addr netip.Addr
	// Netns is the namespace to look from: an `ip netns` name, a path
	// (/proc/PID/ns/net) or an inode number; empty with Pid 0 means the
	// caller's and every namespace with a listener on the port.
	Netns string
	// Pid: look from this process's namespace.
	Pid uint32
	// History is a rsttrace JSON Lines file; empty: none.
	History string
	// NoProbe skips the connection attempt.
	NoProbe bool
	// ProbeWait bounds one probe; 0 means DefaultProbeWait.
	ProbeWait time.Duration
	// Proc and NetnsDir: "" means /proc and /run/netns.
	Proc, NetnsDir string
	// Names names processes and namespaces; nil: pids and inodes only.
	Names  *identity.Resolver
	Logger *slog.Logger
}

// Diagnose runs the checklist and returns the report.
func Diagnose(o Options) (*Report, error) {
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.NetnsDir == "" {
		o.NetnsDir = "/run/netns"
	}
	if o.ProbeWait <= 0 {
		o.ProbeWait = DefaultProbeWait
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	rep := &Report{Time: time.Now(), Port: o.Port, Addr: o.Addr}
	nss := host.Namespaces(o.Proc, o.NetnsDir)
	self, err := nsInodeOf(filepath.Join(o.Proc, "thread-self", "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("reading this process's network namespace: %w", err)
	}

	// 1, 2, 6: listeners and bound sockets in every namespace, their
	// owners and queues.
	facts := &Facts{Port: o.Port}
	var inodes []uint64
	for _, ns := range nss {
		f, err := host.OpenNetnsPath(ns.Path)
		if err != nil {
			o.Logger.Debug("skipping network namespace", "netns", ns.Inode, "error", err)
			continue
		}
		socks, err := f.Sockets(1<<host.TCPListen | 1<<host.TCPBoundInactive)
		somax, _ := f.Sysctls()
		counters, cerr := f.Counters()
		f.Close()
		if err != nil {
			o.Logger.Debug("dumping sockets", "netns", ns.Inode, "error", err)
			continue
		}
		names := nsNames(o.Names, ns)
		has := false
		for _, s := range socks {
			if s.Local.Port() != o.Port {
				continue
			}
			inodes = append(inodes, s.Ino)
			if s.State != host.TCPListen { // bound only (the reply says TCP_CLOSE)
				facts.Bound = append(facts.Bound, Bound{Addr: s.Local.Addr(), Port: s.Local.Port(), Netns: ns.Inode, Names: names, Ino: s.Ino})
				continue
			}
			has = true
			q := s.Queued
			fam := "ipv4"
			if s.Local.Addr().Is6() {
				fam = "ipv6"
			}
			facts.Listeners = append(facts.Listeners, Listener{
				Listener: events.Listener{Addr: s.Local.Addr(), Port: s.Local.Port(), Netns: ns.Inode, NetnsNames: names,
					Backlog: s.Backlog, Queued: &q, V6Only: s.V6Only},
				Family: fam, Drops: s.Drops, Somaxconn: somax, Full: s.Queued > s.Backlog, Ino: s.Ino,
			})
		}
		if has && cerr == nil {
			rep.Queues = append(rep.Queues, Queue{Netns: ns.Inode, Overflows: counters.Overflows, Drops: counters.Drops, Somaxconn: somax})
		}
	}
	owners := host.Owners(o.Proc, inodes)
	for i := range facts.Listeners {
		l := &facts.Listeners[i]
		l.Process = name(o, owners[l.Ino], l.Netns)
	}
	for i := range facts.Bound {
		b := &facts.Bound[i]
		b.Process = name(o, owners[b.Ino], b.Netns)
	}

	// 7: history.
	if o.History != "" {
		recent, binds, err := ReadHistory(o.History, o.Port)
		if err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("history not read: %v", err))
		} else {
			rep.History, rep.HistoryFile, facts.BindFailures = recent, o.History, binds
			requestedBacklogs(facts.Listeners, recent)
		}
	}

	// Targets.
	targets, err := chooseTargets(o, nss, self, facts)
	if err != nil {
		return nil, err
	}

	// 4, 5: firewall and NAT on each target's path.
	ports := []uint16{o.Port}
	for i := range targets {
		t := &targets[i]
		if err := pathRules(t, facts); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("ruleset of %s not read: %v", netnsPlace(t.Netns, t.NetnsNames), err))
		}
		for _, n := range t.NAT {
			if n.To.IsValid() && n.To.Port() != o.Port {
				ports = append(ports, n.To.Port())
			}
		}
	}

	// 3: the probes, traced.
	if !o.NoProbe {
		p, err := startProber(ports, o.Logger)
		if err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("no probe: %v", err))
		} else {
			for i := range targets {
				targets[i].Probe = connectProbe(targets[i].path, targets[i].Dst, o.ProbeWait)
			}
			evs, err := p.finish()
			if err != nil {
				o.Logger.Warn("stopping the probe's tracer", "error", err)
			}
			for i := range targets {
				match(targets[i].Probe, evs)
			}
		}
	}

	for i := range targets {
		Judge(facts, &targets[i].Target)
	}
	rep.Listeners, rep.Bound = facts.Listeners, facts.Bound
	if !o.Addr.IsValid() {
		targets = oneLoopbackEnough(rep, targets)
	}
	conclude(rep, targets)
	return rep, nil
}

// target is a Target with the file that refers to its namespace.
type target struct {
	Target
	path string
}

func chooseTargets(o Options, nss []host.Namespace, self uint32, f *Facts) ([]target, error) {
	var chosen []host.Namespace
	find := func(ino uint32) (host.Namespace, bool) {
		for _, n := range nss {
			if n.Inode == ino {
				return n, true
			}
		}
		return host.Namespace{}, false
	}
	switch {
	case o.Pid != 0:
		p := filepath.Join(o.Proc, strconv.FormatUint(uint64(o.Pid), 10), "ns", "net")
		ino, err := nsInodeOf(p)
		if err != nil {
			return nil, fmt.Errorf("process %d: %w", o.Pid, err)
		}
		chosen = append(chosen, host.Namespace{Inode: ino, Path: p, Pid: o.Pid})
	case o.Netns != "":
		n, err := resolveNetns(o, nss)
		if err != nil {
			return nil, err
		}
		chosen = append(chosen, n)
	default:
		if n, ok := find(self); ok {
			chosen = append(chosen, n)
		}
		seen := map[uint32]bool{self: true}
		for _, l := range f.Listeners {
			if !seen[l.Netns] {
				seen[l.Netns] = true
				if n, ok := find(l.Netns); ok {
					chosen = append(chosen, n)
				}
			}
		}
	}
	addrs := []netip.Addr{o.Addr}
	if !o.Addr.IsValid() {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	}
	var out []target
	for _, n := range chosen {
		names := nsNames(o.Names, n)
		for _, a := range addrs {
			out = append(out, target{Target: Target{Netns: n.Inode, NetnsNames: names, Dst: netip.AddrPortFrom(a, o.Port)}, path: n.Path})
		}
	}
	return out, nil
}

// resolveNetns finds the namespace o.Netns names: a name in NetnsDir, a
// path, or an inode number.
func resolveNetns(o Options, nss []host.Namespace) (host.Namespace, error) {
	if ino, err := strconv.ParseUint(o.Netns, 10, 32); err == nil {
		for _, n := range nss {
			if n.Inode == uint32(ino) {
				return n, nil
			}
		}
		return host.Namespace{}, fmt.Errorf("no network namespace with inode %d", ino)
	}
	p := o.Netns
	if filepath.Base(p) == p {
		p = filepath.Join(o.NetnsDir, p)
	}
	ino, err := nsInodeOf(p)
	if err != nil {
		return host.Namespace{}, fmt.Errorf("network namespace %q: %w", o.Netns, err)
	}
	return host.Namespace{Inode: ino, Path: p, Name: filepath.Base(p)}, nil
}

func nsInodeOf(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

func nsNames(r *identity.Resolver, ns host.Namespace) *events.NetnsNames {
	var n *events.NetnsNames
	if r != nil {
		n = r.Netns(ns.Inode)
	}
	if n == nil && ns.Name != "" {
		n = &events.NetnsNames{Name: ns.Name}
	}
	return n
}

// name fills p's unit, container and pod while it lives.
func name(o Options, p events.Process, netns uint32) events.Process {
	if o.Names == nil || p.Pid == 0 {
		return p
	}
	mnt, _ := nsInodeOf(filepath.Join(o.Proc, strconv.FormatUint(uint64(p.Pid), 10), "ns", "mnt"))
	o.Names.Capture(p.Pid, 0, mnt, netns)
	o.Names.Fill(&p, 0, mnt)
	return p
}

// requestedBacklogs sets BacklogRequested from the listen records of the
// history when one names the same socket (namespace, address, owner).
func requestedBacklogs(ls []Listener, hist []*events.Event) {
	for i := range ls {
		l := &ls[i]
		for _, e := range hist {
			h := e.Listener
			if e.Type == events.TypeListen && h != nil && h.Netns == l.Netns && h.Addr == l.Addr && h.Port == l.Port && h.Pid == l.Pid {
				l.BacklogRequested = h.BacklogRequested
				break
			}
		}
	}
}

// pathRules finds the packet filter and NAT rules on t's path.
func pathRules(t *target, f *Facts) error {
	nsf, err := os.Open(t.path)
	if err != nil {
		return err
	}
	defer nsf.Close()
	fd := int(nsf.Fd())
	fam := 4
	if !t.Dst.Addr().Unmap().Is4() {
		fam = 6
	}
	var errs []error
	nat, err := netfilter.DNATRules(fd, t.Dst)
	errs = append(errs, err)
	dst := t.Dst
	for _, r := range nat {
		n := NAT{Hook: r.Hook, Table: r.TableName, Family: r.Family, Chain: r.Chain, Handle: r.Handle, Comment: r.Comment, Rule: r.Rule, To: r.To}
		if !n.To.IsValid() && r.Addr.IsValid() {
			n.To = netip.AddrPortFrom(r.Addr, t.Dst.Port())
		}
		if n.To.IsValid() {
			n.Backend = backendState(f, t.Netns, n.To)
			if dst == t.Dst {
				dst = n.To
			}
		}
		t.NAT = append(t.NAT, n)
	}
	// Local traffic crosses output, then input; the filter sees the
	// translated destination.
	src := netip.AddrPortFrom(dst.Addr(), 40000)
	for _, hook := range []string{"output", "input"} {
		for _, verdict := range []string{"reject", "drop"} {
			fw, err := netfilter.FindRule(fd, netfilter.Query{Family: fam, Hook: hook, Proto: unix.IPPROTO_TCP,
				Src: src, Dst: dst, Verdict: verdict, SYN: true})
			if err != nil {
				if !errors.Is(err, netfilter.ErrNoRule) {
					errs = append(errs, err)
				}
				continue
			}
			t.Firewall = append(t.Firewall, Rule{Hook: hook, Verdict: verdict, Firewall: *fw})
			break
		}
	}
	return errors.Join(errs...)
}

// backendState says whether a listener in namespace netns, or one on
// that address in any namespace, takes connections to to.
func backendState(f *Facts, netns uint32, to netip.AddrPort) string {
	for i := range f.Listeners {
		l := &f.Listeners[i]
		if l.Port != to.Port() || !covers(l, to.Addr()) {
			continue
		}
		if l.Netns == netns || !l.Addr.IsUnspecified() && !l.Addr.IsLoopback() {
			return "listening"
		}
	}
	if to.Addr().IsLoopback() {
		return "nothing listens"
	}
	return "" // maybe another host
}

// oneLoopbackEnough: asked about a bare port, a namespace where the
// service answers on 127.0.0.1 or on ::1 is reachable; the other
// loopback address failing is a note, not the verdict.
func oneLoopbackEnough(rep *Report, ts []target) []target {
	ok := map[uint32]bool{}
	for _, t := range ts {
		if t.Cause == CauseReachable {
			ok[t.Netns] = true
		}
	}
	var out []target
	for _, t := range ts {
		if ok[t.Netns] && t.Cause != CauseReachable {
			rep.Notes = append(rep.Notes, "also: "+t.Summary)
			continue
		}
		out = append(out, t)
	}
	return out
}

// conclude orders the targets worst first and sets the report's verdict:
// reachable only if every target is.
func conclude(rep *Report, ts []target) {
	rank := func(t *Target) int {
		if t.Cause == CauseReachable {
			return 1
		}
		return 0
	}
	sort.SliceStable(ts, func(i, j int) bool { return rank(&ts[i].Target) < rank(&ts[j].Target) })
	seen := map[string]bool{}
	for _, t := range ts {
		rep.Targets = append(rep.Targets, t.Target)
		if s := Todo(&t.Target); s != "" && !seen[s] {
			seen[s] = true
			rep.Todo = append(rep.Todo, s)
		}
	}
	if len(rep.Targets) == 0 {
		rep.Verdict, rep.Cause, rep.Summary, rep.Exit = "unreachable", CauseUnknown, "no network namespace to look from", 1
		return
	}
	first := rep.Targets[0]
	rep.Verdict, rep.Cause, rep.Summary = first.Verdict, first.Cause, first.Summary
	rep.Exit = 1
	if first.Cause == CauseReachable {
		rep.Exit = 0
	}
}
