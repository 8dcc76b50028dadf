package correlate

import (
	"encoding/binary"
	"unsafe"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Names fills in the names operators know a process by (executable,
// systemd unit, container, pod) from what the kernel captured when the
// process acted: its cgroup id and mount namespace.
type Names interface {
	Fill(p *events.Process, cgroupID uint64, mntns uint32)
}

// procOf is the process a record names, with its names when a Names is set.
func (c *Correlator) procOf(r *record.Record) events.Process {
	p := events.Process{Pid: r.Proc.Pid, Comm: c.comms.get(&r.Proc.Comm)}
	if c.Names != nil {
		c.Names.Fill(&p, r.Proc.CgroupId, r.Proc.Mntns)
	}
	return p
}

// commCache turns kernel command names into strings without a new string
// per record: under a flood the same few processes are in every record.
// It is direct-mapped by a hash of the name; a miss converts and replaces.
type commCache [64]struct {
	raw [16]int8
	s   string
}

func (cc *commCache) get(c *[16]int8) string {
	b := (*[16]byte)(unsafe.Pointer(c))
	h := (binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])*31) * 0x9e3779b97f4a7c15
	e := &cc[h>>(64-6)]
	if e.raw == *c && e.s != "" {
		return e.s
	}
	e.raw, e.s = *c, record.CommString(c)
	return e.s
}
