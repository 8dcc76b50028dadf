package tracer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/identity"
	"github.com/rsttrace/rsttrace/internal/netfilter"
	"github.com/rsttrace/rsttrace/internal/record"
)

// The enrich stage: between the correlator and the encoder, an event gets
// the names operators use — the namespace's `ip netns` name, container or
// pod, and the nftables rule behind a firewall verdict — and the filters
// that match those names (--unit, --container, --pod) are applied.
// Process names (unit, container, pod) are filled earlier, by the
// correlator, from the cgroup id the kernel captured when the process acted.

// enricher is the enrich stage.
type enricher struct {
	log    *slog.Logger
	proc   string
	self   uint32 // the tracer's own netns
	names  *identity.Resolver
	filter identity.Filter
	rules  ruleNamer
}

// capture tells the identity resolver about a process while it is alive,
// from records in which the process itself acted (so the netns is its
// own), not from softirq records whose task is whoever was on the CPU.
func (n *enricher) capture(r *record.Record) {
	if r.Proc.Pid == 0 {
		return
	}
	switch {
	case r.Type == record.Listen, r.Type == record.ListenUpdate, r.Type == record.ListenClose, r.Type == record.Bind:
	case r.Flags&(record.FlagProcKnown|record.FlagOwnerKnown) != 0:
	default:
		return
	}
	if n.names != nil {
		n.names.Capture(r.Proc.Pid, r.Proc.CgroupId, r.Proc.Mntns, r.Netns)
	}
	n.rules.saw(r.Netns, r.Proc.Pid, r.Proc.Tid)
}

// enrich adds names to e; it reports false when a filter drops e.
func (n *enricher) enrich(e *events.Event) bool {
	changed := false
	if n.names != nil {
		changed = n.addNames(e)
	}
	if f := e.Firewall; f != nil && f.Chain == "" && n.rules.name(e) {
		changed = true
	}
	if changed && e.Explanation != "" {
		e.Explanation = events.Explain(e)
	}
	return n.matches(e)
}

// addNames gives e's processes the runtime names that arrived since they
// were captured, and its namespaces their names; it reports whether it
// changed anything.
func (n *enricher) addNames(e *events.Event) bool {
	changed := false
	for _, p := range []*events.Process{e.Client, e.Process, e.PeerProcess, e.Proxy} {
		changed = n.refresh(p) || changed
	}
	if l := e.Listener; l != nil {
		changed = n.refresh(&l.Process) || changed
		changed = n.refresh(l.ClosedBy) || changed
		if l.Netns != 0 && l.NetnsNames == nil {
			if nn := n.names.Netns(l.Netns); nn != nil {
				l.NetnsNames, changed = nn, true
			}
		}
	}
	if b := e.Bind; b != nil {
		changed = n.refresh(&b.Process) || changed
		changed = n.refresh(b.Holder) || changed
	}
	if e.Netns != 0 && e.NetnsNames == nil {
		if nn := n.names.Netns(e.Netns); nn != nil {
			e.NetnsNames, changed = nn, true
		}
	}
	return changed
}

// refresh gives p the container and pod names that arrived since it was
// captured; it reports whether they changed.
func (n *enricher) refresh(p *events.Process) bool {
	if p == nil || p.Container == nil {
		return false
	}
	c, pod := p.Container, p.Pod
	n.names.Refresh(p)
	return p.Container != c || p.Pod != pod
}

// matches applies --unit, --container and --pod: an event passes when a
// process it names, or the namespace it happened in, matches. Records
// about the tracer itself always pass.
func (n *enricher) matches(e *events.Event) bool {
	if n.filter.Empty() {
		return true
	}
	switch e.Type {
	case events.TypeStart, events.TypeStop, events.TypeLost:
		return true
	}
	for _, p := range []*events.Process{e.Client, e.Process, e.PeerProcess, e.Proxy} {
		if p != nil && n.filter.Match(p) {
			return true
		}
	}
	if l := e.Listener; l != nil && n.filter.Match(&l.Process) {
		return true
	}
	if b := e.Bind; b != nil && (n.filter.Match(&b.Process) || (b.Holder != nil && n.filter.Match(b.Holder))) {
		return true
	}
	if nn := e.NetnsNames; nn != nil && (nn.Container != nil || nn.Pod != nil) {
		return n.filter.Match(&events.Process{Container: nn.Container, Pod: nn.Pod})
	}
	return false
}

// ruleNamer finds the nftables rule behind a firewall verdict. A lookup
// reads the namespace's ruleset over netlink (a few ms), so answers are
// cached per (netns, hook, destination, verdict) for a while and lookups
// are capped per second: under a flood of drops most events reuse one.
type ruleNamer struct {
	log    *slog.Logger
	proc   string
	self   uint32
	cache  map[ruleKey]ruleAnswer
	window time.Time
	spent  int
	// actors: a task last seen acting in each namespace, to enter it by
	// (a process's threads can be in different namespaces).
	actors map[uint32]task
}

type task struct{ pid, tid uint32 }

// saw notes that task pid/tid acted in namespace netns.
func (r *ruleNamer) saw(netns, pid, tid uint32) {
	if a, ok := r.actors[netns]; ok && a == (task{pid, tid}) {
		return // the usual case on the hot path: the same task again
	}
	if r.actors == nil || len(r.actors) >= ruleCacheMax {
		r.actors = map[uint32]task{}
	}
	r.actors[netns] = task{pid, tid}
}

type ruleKey struct {
	netns   uint32
	hook    string
	dst     string
	verdict string
}

type ruleAnswer struct {
	fw  *events.Firewall // nil: no rule found
	at  time.Time
	err error
}

const (
	ruleCacheFor   = 2 * time.Second
	ruleLookupsSec = 20
	ruleCacheMax   = 4096
)

// name fills e.Firewall's rule fields; it reports whether it did.
func (r *ruleNamer) name(e *events.Event) bool {
	if e.Dst == nil || e.Src == nil {
		return false
	}
	verdict := ""
	switch e.Cause {
	case events.CauseFirewallReject:
		verdict = "reject"
	case events.CauseFirewallDrop:
		verdict = "drop"
	}
	fw := e.Firewall
	k := ruleKey{netns: e.Netns, hook: fw.Hook, dst: e.Dst.AddrPort().String(), verdict: verdict}
	now := time.Now()
	a, ok := r.cache[k]
	if !ok || now.Sub(a.at) > ruleCacheFor {
		if now.Sub(r.window) >= time.Second {
			r.window, r.spent = now, 0
		}
		if r.spent >= ruleLookupsSec {
			return false
		}
		r.spent++
		a = ruleAnswer{at: now}
		a.fw, a.err = r.lookup(e, verdict)
		if a.err != nil && !errors.Is(a.err, netfilter.ErrNoRule) {
			r.log.Debug("naming the firewall rule", "netns", e.Netns, "error", a.err)
		}
		if r.cache == nil || len(r.cache) >= ruleCacheMax {
			r.cache = map[ruleKey]ruleAnswer{}
		}
		r.cache[k] = a
	}
	if a.fw == nil {
		return false
	}
	fw.TableName, fw.Family, fw.Chain, fw.Handle, fw.Comment, fw.Rule =
		a.fw.TableName, a.fw.Family, a.fw.Chain, a.fw.Handle, a.fw.Comment, a.fw.Rule
	if fw.Hook == "" {
		fw.Hook = a.fw.Hook
	}
	return true
}

// lookup asks the ruleset of the event's namespace, entered through a
// process the event names that lives in it.
func (r *ruleNamer) lookup(e *events.Event, verdict string) (*events.Firewall, error) {
	fd := 0
	if e.Netns != r.self {
		f, err := r.openNetns(e)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fd = int(f.Fd())
	}
	family := 4
	if e.Dst.Addr.Unmap().Is6() {
		family = 6
	}
	hooks := []string{e.Firewall.Hook}
	if hooks[0] == "" {
		hooks = []string{"input", "output", "prerouting", "forward"}
	}
	var last error = netfilter.ErrNoRule
	for _, h := range hooks {
		q := netfilter.Query{Family: family, Hook: h, Proto: unix.IPPROTO_TCP, SYN: true, Verdict: verdict,
			Src: e.Src.AddrPort(), Dst: e.Dst.AddrPort()}
		fw, err := netfilter.FindRule(fd, q)
		if err == nil {
			if fw.Hook == "" {
				fw.Hook = h
			}
			return fw, nil
		}
		last = err
	}
	return nil, last
}

// openNetns opens the event's network namespace through a process of the
// event that is still in it.
func (r *ruleNamer) openNetns(e *events.Event) (*os.File, error) {
	var paths []string
	for _, p := range []*events.Process{e.Client, e.Process, e.PeerProcess} {
		if p != nil {
			paths = append(paths, fmt.Sprintf("%s/%d/ns/net", r.proc, p.Pid))
		}
	}
	if e.Listener != nil {
		paths = append(paths, fmt.Sprintf("%s/%d/ns/net", r.proc, e.Listener.Pid))
	}
	if a, ok := r.actors[e.Netns]; ok {
		paths = append(paths, fmt.Sprintf("%s/%d/task/%d/ns/net", r.proc, a.pid, a.tid))
	}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil && uint32(st.Ino) == e.Netns {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("no process of the event is left in netns %d", e.Netns)
}
