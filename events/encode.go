package events

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Encoder writes records. Flush pushes buffered output to the writer.
type Encoder interface {
	Encode(*Event) error
	Flush() error
}

// NewEncoder returns the encoder for a -o format: "text" or "json".
func NewEncoder(format string, w io.Writer) (Encoder, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	switch format {
	case "text":
		return &textEncoder{w: bw}, nil
	case "json":
		return &jsonEncoder{w: bw}, nil
	}
	return nil, fmt.Errorf("unknown output format %q (want text or json)", format)
}

// textEncoder writes one human-readable line per record.
type textEncoder struct {
	w *bufio.Writer
	b strings.Builder
}

func (t *textEncoder) Flush() error { return t.w.Flush() }

func (t *textEncoder) Encode(e *Event) error {
	b := &t.b
	b.Reset()
	b.WriteString(e.Time.Local().Format("15:04:05.000000"))
	b.WriteByte(' ')
	switch e.Type {
	case TypeStart:
		fmt.Fprintf(b, "START rsttrace schema %d on Linux %s:", e.Version, e.Kernel)
		for _, a := range e.Plan {
			if a.Degraded != "" {
				fmt.Fprintf(b, " %s=DEGRADED(%s)", a.Capability, a.Degraded)
			} else {
				fmt.Fprintf(b, " %s=%s", a.Capability, a.Hook)
			}
		}
	case TypeStop:
		fmt.Fprintf(b, "STOP %d records written, %d lost", e.Events, deref(e.Lost))
	case TypeLost:
		fmt.Fprintf(b, "LOST %d records (ring buffer full or output too slow)", deref(e.Lost))
	case TypeRefused:
		fmt.Fprintf(b, "REFUSED %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
		if e.Client != nil {
			fmt.Fprintf(b, " [%s %d]", e.Client.Comm, e.Client.Pid)
		}
		fmt.Fprintf(b, " %s: %s", e.Cause, e.Explanation)
		if e.KernelReason != "" {
			fmt.Fprintf(b, " (kernel: %s)", e.KernelReason)
		}
	case TypeListen:
		if l := e.Listener; l != nil {
			fmt.Fprintf(b, "LISTEN %s netns %d %s backlog %d", hostPort(l.Addr.String(), l.Port), l.Netns, l.Process, l.Backlog)
		}
	case TypeListenClose:
		if l := e.Listener; l != nil {
			fmt.Fprintf(b, "CLOSE %s netns %d %s", hostPort(l.Addr.String(), l.Port), l.Netns, l.Process)
			if l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid {
				fmt.Fprintf(b, " closed by %s", l.ClosedBy)
			}
			if l.Exit != nil {
				b.WriteString(" " + l.Exit.String())
			}
		}
	case TypeBindFailed:
		if x := e.Bind; x != nil {
			fmt.Fprintf(b, "BIND-FAILED %s netns %d %s %s", hostPort(x.Addr.String(), x.Port), e.Netns, x.Process, x.Errno)
			if x.Holder != nil {
				fmt.Fprintf(b, "; port held by %s", x.Holder)
			}
		}
	default:
		fmt.Fprintf(b, "%s", e.Type)
	}
	b.WriteByte('\n')
	_, err := t.w.WriteString(b.String())
	return err
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func endpoint(e *Endpoint) string {
	if e == nil {
		return "?"
	}
	return hostPort(e.Addr.String(), e.Port)
}

func hostPort(addr string, port uint16) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}
