package probe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/rsttrace/rsttrace/internal/bpfobj"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/rsttrace/rsttrace/events"
)

// The attach plan: for every capability, the hooks that can serve it, best
// first. Feature probes at start-up pick the first one this kernel allows;
// programs of the other hooks are not loaded. A capability no hook can serve
// is reported as degraded, with the kernel's reason, never silently missing.

// option is one way to serve a capability: programs and where they attach.
//
// Capabilities that share a tracepoint share its one program (a second
// program on a hook pays the hook's whole cost again on every event): several options list the same program, which is loaded and
// attached once, and the `caps` word set before load (capsOf) tells it
// which capabilities' work to do.
type option struct {
	hook   string // as shown in the plan
	kind   string // tp_btf, fentry, kprobe, tracepoint: what Config.Force names
	progs  []string
	probe  func(*btf.Spec) error // nil error: this kernel allows it
	attach func(prog string, p *ebpf.Program) (link.Link, error)
}

type capability struct {
	name    string
	options []option
	// fallback says what rsttrace still does when no option fits.
	fallback string
	// needed, if set, says whether this host needs the capability yet
	// (nil func: always; see Choice.Waiting).
	needed func(*btf.Spec) (now func() bool, until string)
}

// Capability names, as in the start record's plan.
const (
	CapRefusals   = "refusals"    // RSTs sent for refused SYNs, with no listener
	CapListeners  = "listeners"   // listen() and listener close
	CapClients    = "clients"     // the local process whose connect() was refused
	CapBindErrors = "bind_errors" // failed bind() calls
	// listen() calls: the backlog asked for, and changes of a listener's
	// backlog (a second listen()).
	CapListenCalls = "listen_calls"
	// Listen-queue overflow totals, per listener: the kernel's counters.
	CapOverflow = "overflow"
	// Per-packet view of SYNs dropped at a full queue (stage split).
	CapOverflowSYN = "overflow_syn"
	// Per-packet view of final ACKs dropped at a full accept queue.
	CapOverflowFinalAck = "overflow_final_ack"
	// accept() calls: how long a listener's owner has not accepted.
	CapAcceptCalls = "accept_calls"
	// SYNs the packet filter dropped (nft/iptables drop and reject), with
	// the netfilter hook.
	CapFirewall = "firewall"
	// Which of those drops were answered with an ICMP error (reject).
	CapFirewallICMP = "firewall_icmp"
	// Local connect() attempts that timed out or were refused by ICMP.
	CapConnectFailures = "connect_failures"
	// RSTs on established connections, sent and received.
	CapResets = "resets"
	// Address translation (DNAT, SNAT/masquerade) of first SYNs, so that
	// a refusal through a published port or a Service is one event with
	// both the address the client used and the backend.
	CapNAT = "nat"
)

var capabilities = []capability{
	{name: CapRefusals, options: []option{
		{"tp_btf/tcp_send_reset", "tp_btf", []string{"tp_btf_tcp_send_reset"}, probeSendResetTP, attachTracing},
		{"fentry/tcp_v4_send_reset+tcp_v6_send_reset", "fentry",
			[]string{"fentry_tcp_v4_send_reset", "fentry_tcp_v6_send_reset"}, probeFentry(sendResetFns...), attachTracing},
		{"kprobe/tcp_v4_send_reset+tcp_v6_send_reset", "kprobe",
			[]string{"kprobe_tcp_v4_send_reset", "kprobe_tcp_v6_send_reset"}, probeKprobe(sendResetFns...), attachKprobe},
	}},
	{name: CapListeners, options: []option{
		{"tp_btf/inet_sock_set_state", "tp_btf", []string{"tp_btf_inet_sock_set_state"}, probeTP("btf_trace_inet_sock_set_state"), attachTracing},
	}},
	{name: CapClients, options: []option{
		// The connecting process is recorded at CLOSE->SYN_SENT.
		{"tp_btf/tcp_receive_reset", "tp_btf", []string{"tp_btf_tcp_receive_reset", "tp_btf_inet_sock_set_state"},
			probeTPs("btf_trace_tcp_receive_reset", "btf_trace_inet_sock_set_state"), attachTracing},
	}},
	// bind(), listen() and accept() from the kernel functions where fentry
	// is allowed; the syscall tracepoints otherwise, which put every
	// syscall of every task on the kernel's traced entry and exit path
	// while attached.
	{name: CapBindErrors, options: []option{
		{"fexit/inet_bind+inet6_bind", "fentry", []string{"fexit_inet_bind", "fexit_inet6_bind"}, probeFentry("inet_bind", "inet6_bind"), attachTracing},
		{"tracepoint/syscalls/sys_{enter,exit}_bind", "tracepoint", []string{"tp_sys_enter_bind", "tp_sys_exit_bind"}, nil, attachSyscallTP},
	}},
	{name: CapListenCalls, options: []option{
		// The syscall's own function: inet_listen gets the backlog after
		// net.core.somaxconn clamped it.
		{"fentry+fexit/" + syscallWrapper("listen"), "fentry", []string{"fentry_sys_listen", "fexit_sys_listen"},
			all(probeFentry(syscallWrapper("listen")), func(s *btf.Spec) error { return probeStructArgs(s, syscallWrapper("listen")) }),
			attachTracing},
		{"tracepoint/syscalls/sys_{enter,exit}_listen", "tracepoint", []string{"tp_sys_enter_listen", "tp_sys_exit_listen"}, nil, attachSyscallTP},
	}},
	{name: CapOverflow, options: []option{
		// Userspace only: no program, nothing to attach.
		{"netstat+sock_diag", "user", nil, nil, nil},
	}},
	{name: CapOverflowSYN, options: []option{
		{"fentry/tcp_conn_request", "fentry", []string{"fentry_tcp_conn_request"}, probeFentry("tcp_conn_request"), attachTracing},
		{"kprobe/tcp_conn_request", "kprobe", []string{"kprobe_tcp_conn_request"}, probeKprobe("tcp_conn_request"), attachKprobe},
	}, fallback: "SYN drops are told apart from the namespace's TcpExtListenOverflows instead"},
	{name: CapOverflowFinalAck, options: []option{
		{"tp_btf/kfree_skb(TCP_LISTEN_OVERFLOW)", "tp_btf", []string{"tp_btf_kfree_skb"}, probeListenOverflowReason, attachTracing},
		{"fentry/tcp_v4_syn_recv_sock+tcp_v6_syn_recv_sock", "fentry",
			[]string{"fentry_tcp_v4_syn_recv_sock", "fentry_tcp_v6_syn_recv_sock"}, probeFentry(synRecvFns...), attachTracing},
		{"kprobe/tcp_v4_syn_recv_sock+tcp_v6_syn_recv_sock", "kprobe",
			[]string{"kprobe_tcp_v4_syn_recv_sock", "kprobe_tcp_v6_syn_recv_sock"}, probeKprobe(synRecvFns...), attachKprobe},
	}, fallback: "final-ACK drops are counted with the SYN drops"},
	{name: CapAcceptCalls, options: []option{
		{"fentry/inet_csk_accept", "fentry", []string{"fentry_inet_csk_accept"}, probeFentry("inet_csk_accept"), attachTracing},
		{"tracepoint/syscalls/sys_enter_accept{,4}", "tracepoint", []string{"tp_sys_enter_accept", "tp_sys_enter_accept4"}, nil, attachSyscallTP},
	}},

	// The programs are those of the core capabilities on the same
	// tracepoints (one per hook; see option in plan.go).
	{name: CapFirewall, options: []option{
		{"tp_btf/kfree_skb(NETFILTER_DROP)", "tp_btf", []string{"tp_btf_kfree_skb"}, probeNetfilterDrop, attachTracing},
	}},
	{name: CapFirewallICMP, options: []option{
		{"tp_btf/icmp_send", "tp_btf", []string{"tp_btf_icmp_send"}, probeIcmpSend, attachTracing},
	}},
	{name: CapConnectFailures, options: []option{
		{"tp_btf/inet_sock_set_state+tcp_retransmit_skb", "tp_btf", []string{"tp_btf_inet_sock_set_state", "tp_btf_tcp_retransmit_skb"},
			probeTPs("btf_trace_inet_sock_set_state", "btf_trace_tcp_retransmit_skb"), attachTracing},
	}},
	{name: CapResets, options: []option{
		// 6.10+: the reason (TCP_ABORT_ON_CLOSE, ...) comes with it. The
		// owner of each socket is recorded in the kernel when it is made
		// (connect and listen in inet_sock_set_state, accept() on exit)
		// and forgotten at TCP_CLOSE, so the process a RST reaches is
		// named without walking /proc per reset.
		// Accepted sockets' owners from fexit on inet_csk_accept where
		// the kernel allows it, else from the accept syscalls' exits.
		{"tp_btf/tcp_send_reset+tcp_receive_reset+fexit/inet_csk_accept", "tp_btf", resetProgramsFexit,
			all(probeSendResetTP, probeFentry("inet_csk_accept")), attachMixed},
		{"tp_btf/tcp_send_reset+tcp_receive_reset", "tp_btf", resetPrograms, probeSendResetTP, attachMixed},
		// Before 6.10 tcp:tcp_send_reset still fires for active resets
		// (they always have a full socket), without a reason: the same
		// program, which reads no reason there (CAP_F_RST_REASON clear).
		{"tp_btf/tcp_send_reset(no reason)+tcp_receive_reset+fexit/inet_csk_accept", "tp_btf", resetProgramsFexit,
			all(probeTPs("btf_trace_tcp_send_reset", "btf_trace_tcp_receive_reset", "btf_trace_inet_sock_set_state"),
				probeFentry("inet_csk_accept")), attachMixed},
		{"tp_btf/tcp_send_reset(no reason)+tcp_receive_reset", "tp_btf", resetPrograms,
			probeTPs("btf_trace_tcp_send_reset", "btf_trace_tcp_receive_reset", "btf_trace_inet_sock_set_state"), attachMixed},
	}},
	// Its own hook: no other capability has a program on it. It runs for
	// every packet every device sends, so it is attached only once the
	// kernel can translate addresses at all.
	{name: CapNAT, options: []option{
		{"tp_btf/net_dev_queue", "tp_btf", []string{"tp_btf_net_dev_queue"}, probeNAT, attachTracing},
	}, fallback: "a refusal through address translation is reported at the backend and, separately, at the client",
		needed: natNeeded},
}

// resetPrograms serve the resets capability: the RSTs, and the owner table.
var (
	resetPrograms = []string{"tp_btf_tcp_send_reset", "tp_btf_tcp_receive_reset",
		"tp_btf_inet_sock_set_state", "tp_sys_exit_accept", "tp_sys_exit_accept4"}
	resetProgramsFexit = []string{"tp_btf_tcp_send_reset", "tp_btf_tcp_receive_reset",
		"tp_btf_inet_sock_set_state", "fexit_inet_csk_accept"}
)

// syscallWrapper is the kernel function of syscall name on this
// architecture (arch/*/include/asm/syscall_wrapper.h), which the programs'
// sections name.
func syscallWrapper(name string) string {
	if runtime.GOARCH == "arm64" {
		return "__arm64_sys_" + name
	}
	return "__x64_sys_" + name
}

// all passes when every probe passes; the first failure otherwise.
func all(probes ...func(*btf.Spec) error) func(*btf.Spec) error {
	return func(s *btf.Spec) error {
		for _, p := range probes {
			if err := p(s); err != nil {
				return err
			}
		}
		return nil
	}
}

var (
	sendResetFns = []string{"tcp_v4_send_reset", "tcp_v6_send_reset"}
	synRecvFns   = []string{"tcp_v4_syn_recv_sock", "tcp_v6_syn_recv_sock"}
)

func attachTracing(_ string, p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p})
}

// attachMixed attaches tp_btf programs and syscall tracepoints (tp_sys_X)
// of one option.
func attachMixed(prog string, p *ebpf.Program) (link.Link, error) {
	if strings.HasPrefix(prog, "tp_sys_") {
		return attachSyscallTP(prog, p)
	}
	return attachTracing(prog, p)
}

// attachKprobe: program kprobe_F attaches to kernel function F.
func attachKprobe(prog string, p *ebpf.Program) (link.Link, error) {
	return link.Kprobe(strings.TrimPrefix(prog, "kprobe_"), p, nil)
}

// attachSyscallTP: program tp_sys_X attaches to syscalls:sys_X.
func attachSyscallTP(prog string, p *ebpf.Program) (link.Link, error) {
	return link.Tracepoint("syscalls", strings.TrimPrefix(prog, "tp_"), p, nil)
}

// probeSendResetTP: tcp:tcp_send_reset carries the RST reason, i.e. it is
// the 6.10+ tracepoint that fires for every RST, sk or no sk (the same
// change added enum sk_rst_reason to it). Older ones fire only with a full socket: no refusals.
func probeSendResetTP(s *btf.Spec) error {
	var td *btf.Typedef
	if err := s.TypeByName("btf_trace_tcp_send_reset", &td); err != nil {
		return errors.New("no tcp:tcp_send_reset tracepoint")
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return errors.New("unexpected btf_trace_tcp_send_reset type")
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) < 4 { // (void *, sk, skb, reason)
		return errors.New("tcp:tcp_send_reset has no reason (before 6.10): it does not fire when no socket exists")
	}
	return nil
}

func probeFentry(fns ...string) func(*btf.Spec) error {
	return func(s *btf.Spec) error {
		if err := features.HaveProgramType(ebpf.Tracing); err != nil {
			return fmt.Errorf("fentry programs not allowed: %w", err)
		}
		return probeFunc(s, fns...)
	}
}

func probeKprobe(fns ...string) func(*btf.Spec) error {
	return func(s *btf.Spec) error {
		if _, err := os.Stat("/sys/bus/event_source/devices/kprobe/type"); err != nil {
			return errors.New("kernel has no kprobes (CONFIG_KPROBES)")
		}
		return probeFunc(s, fns...)
	}
}

// probeListenOverflowReason: skb:kfree_skb names the receiving socket
// (rx_sk, 6.11+) and a final ACK dropped at a full accept queue has its own
// drop reason (TCP_LISTEN_OVERFLOW, 6.15+).
func probeListenOverflowReason(s *btf.Spec) error {
	var td *btf.Typedef
	if err := s.TypeByName("btf_trace_kfree_skb", &td); err != nil {
		return errors.New("no skb:kfree_skb tracepoint")
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return errors.New("unexpected btf_trace_kfree_skb type")
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) < 5 { // (void *, skb, location, reason, rx_sk)
		return errors.New("skb:kfree_skb has no rx_sk (before 6.11)")
	}
	if _, ok := dropReason(s, "TCP_LISTEN_OVERFLOW"); !ok {
		return errors.New("no drop reason TCP_LISTEN_OVERFLOW (before 6.15)")
	}
	return nil
}

// capFlags: the enum cap_flag bit of each capability served by a tp_btf
// program that it shares with others. The bit is set when the plan serves
// the capability with tp_btf; a capability served by fentry/kprobe (or not
// at all) leaves it clear, and the verifier prunes that work from the
// shared program.
var capFlags = map[string]bpfobj.RsttraceCapFlag{
	CapRefusals:         bpfobj.RsttraceCapFlagCAP_F_REFUSALS,
	CapListeners:        bpfobj.RsttraceCapFlagCAP_F_LISTENERS,
	CapClients:          bpfobj.RsttraceCapFlagCAP_F_CLIENTS,
	CapFirewall:         bpfobj.RsttraceCapFlagCAP_F_FIREWALL,
	CapOverflowFinalAck: bpfobj.RsttraceCapFlagCAP_F_FINAL_ACK,
	CapConnectFailures:  bpfobj.RsttraceCapFlagCAP_F_CONNECT_FAILURES,
	CapResets:           bpfobj.RsttraceCapFlagCAP_F_RESETS | bpfobj.RsttraceCapFlagCAP_F_OWNERS,
	CapNAT:              bpfobj.RsttraceCapFlagCAP_F_NAT,
}

// SendResetHasReason: tcp:tcp_send_reset has (sk, skb, reason) from 6.10,
// (sk, skb) before; the program reads the reason only where it exists.
func SendResetHasReason(s *btf.Spec) bool {
	n, err := tpParams(s, "btf_trace_tcp_send_reset")
	return err == nil && n >= 3
}

// Choice is what the planner picked for one capability: the option that
// serves it, or why none does.
type Choice struct {
	Capability string
	option     *option // nil: degraded
	// alternates: later options whose probes passed, tried in order if
	// the kernel refuses to attach option; their programs are loaded too.
	alternates []*option
	// Degraded is why no hook serves it; Fallback what rsttrace does
	// instead.
	Degraded string
	Fallback string
	// Waiting: its programs are loaded but not attached until what it
	// says happens (needed tells when); "" once attached.
	Waiting string
	needed  func() bool
}

// Plan is the attach plan: one choice per capability, in the order of the
// capability table. It is the only record of what is served: attach
// failures degrade the capability in it.
type Plan []Choice

// Choose picks an option per capability: the first whose probe passes on
// this kernel. force maps a capability to the hook kind that must be used
// (tests use it to exercise fallbacks).
func Choose(s *btf.Spec, force map[string]string) Plan {
	var out Plan
	for _, c := range capabilities {
		ch := Choice{Capability: c.name}
		var why []string
		for i := range c.options {
			o := &c.options[i]
			if k, ok := force[c.name]; ok && k != o.kind {
				why = append(why, o.kind+": not the forced hook kind")
				continue
			}
			// Past the choice only alternates are wanted: options that
			// can always be attached once loaded (no function for
			// ftrace to patch), kept in case the chosen one's attach
			// is refused after its probe passed.
			if ch.option != nil && o.kind != "tracepoint" && o.kind != "tp_btf" {
				continue
			}
			if o.probe != nil {
				if err := o.probe(s); err != nil {
					why = append(why, o.kind+": "+err.Error())
					continue
				}
			}
			if ch.option == nil {
				ch.option = o
			} else {
				ch.alternates = append(ch.alternates, o)
			}
		}
		if ch.option == nil {
			ch.Degraded = strings.Join(why, "; ")
			ch.Fallback = c.fallback
		} else if c.needed != nil {
			ch.needed, ch.Waiting = c.needed(s)
		}
		out = append(out, ch)
	}
	return out
}

// Served reports whether a hook serves the choice.
func (c *Choice) Served() bool { return c.option != nil }

// Hook is the hook that serves it, as shown in the plan; "" if degraded.
func (c *Choice) Hook() string {
	if c.option == nil {
		return ""
	}
	return c.option.hook
}

// Kind is the hook kind that serves it (tp_btf, fentry, kprobe,
// tracepoint, user); "" if degraded.
func (c *Choice) Kind() string {
	if c.option == nil {
		return ""
	}
	return c.option.kind
}

// Programs are the BPF programs it attaches.
func (c *Choice) Programs() []string {
	if c.option == nil {
		return nil
	}
	return c.option.progs
}

// Attach attaches program name (one of Programs) to its hook.
func (c *Choice) Attach(name string, p *ebpf.Program) (link.Link, error) {
	return c.option.attach(name, p)
}

// Serves reports whether the plan serves capability name.
func (p Plan) Serves(name string) bool {
	for i := range p {
		if p[i].Capability == name {
			return p[i].Served()
		}
	}
	return false
}

// Kind is the hook kind serving capability name, "" if none.
func (p Plan) Kind(name string) string {
	for i := range p {
		if p[i].Capability == name {
			return p[i].Kind()
		}
	}
	return ""
}

// Programs are every program the plan may attach: the ones to load (the
// chosen options' and their alternates').
func (p Plan) Programs() map[string]bool {
	keep := map[string]bool{}
	for i := range p {
		for _, name := range p[i].Programs() {
			keep[name] = true
		}
		for _, o := range p[i].alternates {
			for _, name := range o.progs {
				keep[name] = true
			}
		}
	}
	return keep
}

// fallBack makes the next alternate the choice; false if none is left.
func (c *Choice) fallBack() bool {
	if len(c.alternates) == 0 {
		return false
	}
	c.option, c.alternates = c.alternates[0], c.alternates[1:]
	return true
}

// Wait makes capability name, if served, wait until needed says so
// (until: what it waits for, as the plan shows it).
func (p Plan) Wait(name, until string, needed func() bool) {
	for i := range p {
		if p[i].Capability == name && p[i].Served() {
			p[i].Waiting, p[i].needed = until, needed
		}
	}
}

// Degrade marks capability name as not served, with reason: a probe said
// yes and the kernel still refused to attach.
func (p Plan) Degrade(name, reason string) {
	for i := range p {
		if p[i].Capability != name {
			continue
		}
		p[i].option = nil
		p[i].alternates = nil
		p[i].Degraded = reason
		for _, c := range capabilities {
			if c.name == name {
				p[i].Fallback = c.fallback
			}
		}
	}
}

// Attaches renders the plan as the start record shows it.
func (p Plan) Attaches() []events.Attach {
	out := make([]events.Attach, 0, len(p))
	for i := range p {
		out = append(out, events.Attach{Capability: p[i].Capability, Hook: p[i].Hook(), Degraded: p[i].Degraded,
			Fallback: p[i].Fallback, Waiting: p[i].Waiting})
	}
	return out
}

// Caps is the value of the BPF global `caps` for the plan; rstReason:
// tcp:tcp_send_reset has its reason argument (SendResetHasReason).
func (p Plan) Caps(rstReason bool) uint32 {
	var f bpfobj.RsttraceCapFlag
	for i := range p {
		if p[i].Kind() == "tp_btf" {
			f |= capFlags[p[i].Capability]
		}
	}
	if rstReason {
		f |= bpfobj.RsttraceCapFlagCAP_F_RST_REASON
	}
	return uint32(f)
}
