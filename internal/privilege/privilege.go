// Package privilege says whether this process holds the capabilities
// rsttrace needs, and names the missing ones with what each is for.
//
// The set was measured, not guessed: rsttrace was run under setpriv(1) with
// every capability outside the set removed from the bounding, inheritable,
// ambient and effective sets (as uid 0, and as an unprivileged uid with the
// set as ambient capabilities), then with each one of the set removed.
//
//	capability          what breaks without it (Linux 6.18)
//	CAP_BPF             no BPF map or program can be created (the ring buffer probe fails)
//	CAP_PERFMON         tracing programs (tp_btf) and tracepoint perf events are refused
//	CAP_SYS_ADMIN       setns(2) into other network namespaces (listen-queue overflow
//	                    and listeners per namespace), mounting tracefs when it is not mounted
//	CAP_SYS_PTRACE      /proc/PID/fd and /proc/PID/ns/net of other users' processes
//	                    (ptrace_may_access): listener owners are not found, refusals
//	                    get wrong causes
//	CAP_DAC_READ_SEARCH listing /proc/PID/fd of other users' processes (mode 0500), and
//	                    reading tracefs (mode 0700) when not running as uid 0
//	CAP_SYSLOG          /proc/kallsyms addresses (kallsyms_show_value with
//	                    kptr_restrict and perf_event_paranoid > 1): which netfilter hook
//	                    dropped a SYN is not named
//	CAP_NET_ADMIN       reading the nftables ruleset and the conntrack table over
//	                    netlink (nfnetlink_rcv_msg checks it for every message): the
//	                    rule behind a firewall verdict is not named, `why` sees no rules
//
// CAP_BPF and CAP_PERFMON exist from Linux 5.8 (commit a17b53c4a4b5, "bpf,
// capability: Introduce CAP_BPF"); before, CAP_SYS_ADMIN covers both.
// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK (from 5.11, commit
// 3ac1f01b43b6, to the memory cgroup): raising it takes CAP_SYS_RESOURCE
// unless the limit is already high enough.
//
// Not needed (measured): CAP_DAC_OVERRIDE, CAP_NET_RAW. (sock_diag dumps
// and /proc/net need no CAP_NET_ADMIN; only the netfilter netlink does.)
package privilege

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Capability is one Linux capability rsttrace needs.
type Capability struct {
	Name string // as in capabilities(7): "CAP_BPF"
	Bit  uint   // its number in linux/capability.h
	For  string // what rsttrace needs it for
}

// Capability numbers from linux/capability.h.
const (
	capDACReadSearch = 2
	capNetAdmin      = 12
	capSysPtrace     = 19
	capSysAdmin      = 21
	capSysResource   = 24
	capSyslog        = 34
	capPerfmon       = 38
	capBPF           = 39
)

var (
	bpfCap      = Capability{"CAP_BPF", capBPF, "needed to load BPF programs and create BPF maps"}
	perfmonCap  = Capability{"CAP_PERFMON", capPerfmon, "needed to attach tracing programs and tracepoints"}
	sysAdminCap = Capability{"CAP_SYS_ADMIN", capSysAdmin, "needed to enter other network namespaces (setns) and to mount tracefs"}
	ptraceCap   = Capability{"CAP_SYS_PTRACE", capSysPtrace, "needed to find which process owns a socket (/proc/PID/fd of other users)"}
	dacCap      = Capability{"CAP_DAC_READ_SEARCH", capDACReadSearch, "needed to list /proc/PID/fd of other users and to read tracefs"}
	syslogCap   = Capability{"CAP_SYSLOG", capSyslog, "needed to read kernel symbol addresses (/proc/kallsyms) to name netfilter hooks"}
	netAdminCap = Capability{"CAP_NET_ADMIN", capNetAdmin, "needed to read nftables rules and conntrack over netlink (to name the rule behind a firewall verdict)"}
	resourceCap = Capability{"CAP_SYS_RESOURCE", capSysResource, "needed to raise RLIMIT_MEMLOCK for BPF maps on this kernel (before Linux 5.11)"}
)

// Needed returns the capabilities rsttrace needs on a kernel whose highest
// capability number is lastCap (/proc/sys/kernel/cap_last_cap).
// CAP_SYS_RESOURCE is not in it: whether it is needed depends on the
// kernel's BPF memory accounting, which Check probes.
func Needed(lastCap uint) []Capability {
	if lastCap < capBPF {
		// Before 5.8 CAP_SYS_ADMIN is what bpf(2) and perf_event_open(2)
		// check for tracing.
		admin := sysAdminCap
		admin.For = "needed to load BPF programs, attach tracepoints, enter other network namespaces (setns) and mount tracefs"
		return []Capability{admin, ptraceCap, dacCap, syslogCap, netAdminCap}
	}
	return []Capability{bpfCap, perfmonCap, sysAdminCap, ptraceCap, dacCap, syslogCap, netAdminCap}
}

// Effective returns this process's effective capability set as a bit mask.
func Effective() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("reading effective capabilities: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// LastCap returns the highest capability number the kernel knows.
func LastCap() (uint, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("reading the kernel's last capability: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/sys/kernel/cap_last_cap: %w", err)
	}
	return uint(n), nil
}

// MissingFrom returns the capabilities of need that the effective set eff
// lacks.
func MissingFrom(need []Capability, eff uint64) []Capability {
	var out []Capability
	for _, c := range need {
		if eff&(1<<c.Bit) == 0 {
			out = append(out, c)
		}
	}
	return out
}

// Missing returns the capabilities rsttrace needs and this process lacks.
func Missing() ([]Capability, error) {
	eff, err := Effective()
	if err != nil {
		return nil, err
	}
	last, err := LastCap()
	if err != nil {
		return nil, err
	}
	miss := MissingFrom(Needed(last), eff)
	if len(miss) == 0 && eff&(1<<capSysResource) == 0 {
		// With the BPF capabilities held, this probes whether BPF memory
		// is charged to RLIMIT_MEMLOCK and raises it only if so; it fails
		// only when the limit must be raised and cannot be.
		if err := rlimit.RemoveMemlock(); err != nil {
			miss = append(miss, resourceCap)
		}
	}
	return miss, nil
}

// Check returns nil when this process holds every capability rsttrace
// needs, else an error naming each missing one, what it is for, and how to
// grant it.
func Check() error {
	miss, err := Missing()
	if err != nil {
		return err
	}
	return Error(miss)
}

// Error describes missing capabilities in one line (nil when none).
func Error(miss []Capability) error {
	if len(miss) == 0 {
		return nil
	}
	parts := make([]string, len(miss))
	names := make([]string, len(miss))
	for i, c := range miss {
		parts[i] = c.Name + ": " + c.For
		names[i] = c.Name
	}
	return errors.New("missing " + strings.Join(parts, "; missing ") +
		"; run as root or grant them (systemd: AmbientCapabilities=" + strings.Join(names, " ") +
		"; Kubernetes: securityContext.capabilities.add)")
}
