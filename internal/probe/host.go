package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/internal/privilege"
)

// ErrRequirement wraps every error that says the host cannot run rsttrace
// (as opposed to a failure while running).
var ErrRequirement = errors.New("requirement not met")

func requirement(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRequirement}, args...)...)
}

// CheckHost says, in one line with what to do, why this host cannot run
// rsttrace, or returns nil. It probes features rather than kernel versions.
func CheckHost() error {
	if err := privilege.Check(); err != nil {
		return requirement("%v", err)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return requirement("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): rsttrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.10 or later distribution kernels have it)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return requirement("kernel too old: no BPF ring buffer (%v); rsttrace needs Linux 5.10 or later", err)
	}
	return nil
}

const tracefsMagic = 0x74726163

// EnsureTracefs mounts tracefs at /sys/kernel/tracing when no tracefs is
// mounted: syscall tracepoints (bind errors) are attached through it.
func EnsureTracefs(log *slog.Logger) error {
	for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == tracefsMagic {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return requirement("tracefs is not mounted and mounting it at /sys/kernel/tracing failed (%v): run 'mount -t tracefs tracefs /sys/kernel/tracing'", err)
	}
	log.Info("mounted tracefs at /sys/kernel/tracing")
	return nil
}
