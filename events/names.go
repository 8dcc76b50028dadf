package events

import (
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How things are named in prose: processes, exits, addresses, durations.
// Explanations and the text encoder name things the same way.

// SignalName returns "SIGSEGV" for 11, "signal 99" for unknown numbers.
func SignalName(sig int) string {
	if n := unix.SignalName(syscall.Signal(sig)); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(sig)
}

// ErrnoName returns "EADDRINUSE" for 98.
func ErrnoName(errno int) string {
	if n := unix.ErrnoName(syscall.Errno(errno)); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(errno)
}

func (p Process) String() string { return string(appendProcessText(nil, p)) }

// appendProcessText appends what Process.String returns.
func appendProcessText(b []byte, p Process) []byte {
	b = append(b, p.Comm...)
	b = append(b, " (pid "...)
	b = strconv.AppendUint(b, uint64(p.Pid), 10)
	return append(b, ')')
}

func (x *Exit) String() string { return string(appendExit(nil, x)) }

// appendExit appends how a process ended, as Exit.String says it.
func appendExit(b []byte, x *Exit) []byte {
	switch {
	case x == nil:
		return b
	case x.Signal != "":
		b = append(b, "was killed by "...)
		b = append(b, x.Signal...)
		if x.CoreDumped {
			b = append(b, " (core dumped)"...)
		}
		return b
	case x.Code != nil:
		b = append(b, "exited with code "...)
		return strconv.AppendInt(b, int64(*x.Code), 10)
	}
	return append(b, "exited"...)
}

func appendEndpointText(b []byte, e *Endpoint) []byte {
	if e == nil {
		return append(b, '?')
	}
	return appendHostPort(b, e.Addr, e.Port)
}

// appendHostPort appends 127.0.0.1:80, [::1]:80, or "invalid IP:80" for
// the zero address, as Addr.String would name it.
func appendHostPort(b []byte, a netip.Addr, port uint16) []byte {
	if a.Is6() {
		b = append(b, '[')
		b = a.AppendTo(b)
		b = append(b, ']')
	} else {
		b = appendAddrText(b, a)
	}
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(port), 10)
}

// appendAddrText appends what Addr.String returns ("invalid IP" for the
// zero Addr).
func appendAddrText(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "invalid IP"...)
	}
	return a.AppendTo(b)
}

// appendDuration appends d as explanations say ages, without " ago":
// 250ms, 4.1s, 3m0s; 0ms when negative.
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < 0:
		return append(b, "0ms"...)
	case d < time.Second:
		b = strconv.AppendInt(b, d.Milliseconds(), 10)
		return append(b, "ms"...)
	case d < time.Minute:
		b = strconv.AppendFloat(b, d.Seconds(), 'f', 1, 64)
		return append(b, 's')
	}
	return append(b, d.Round(time.Second).String()...)
}

// appendAgo appends how long before t the past moment was: "250ms ago",
// "1.5s ago", "3m0s ago".
func appendAgo(b []byte, past, t time.Time) []byte {
	b = appendDuration(b, t.Sub(past))
	return append(b, " ago"...)
}
