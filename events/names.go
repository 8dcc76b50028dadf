package events

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// How things are named in prose: processes, exits, addresses, durations.
// Explanations and the text encoder name things the same way.

// SignalName returns "SIGSEGV" for 11, "signal 99" for unknown numbers.
func SignalName(sig int) string {
	if sig > 0 && sig < len(signalNames) && signalNames[sig] != "" {
		return signalNames[sig]
	}
	return "signal " + strconv.Itoa(sig)
}

// ErrnoName returns "EADDRINUSE" for 98.
func ErrnoName(errno int) string {
	if errno > 0 && errno < len(errnoNames) && errnoNames[errno] != "" {
		return errnoNames[errno]
	}
	return "errno " + strconv.Itoa(errno)
}

// String names p as explanations do: "nginx.service (pid 812)",
// "httpd (pid 5) in container web (docker 3f2a9c1b2d4e)", "app (pid 7) in
// pod shop/web-7f9c (container 3f2a9c1b2d4e)".
func (p Process) String() string { return string(appendProcessName(nil, p)) }

// appendProcessName appends what Process.String returns.
func appendProcessName(b []byte, p Process) []byte {
	b = appendProcessBareName(b, p)
	switch {
	case p.Pod != nil:
		b = append(b, " in "...)
		b = appendPodName(b, p.Pod)
		if p.Container != nil {
			b = append(b, " (container "...)
			b = appendShortID(b, p.Container.ID)
			b = append(b, ')')
		}
	case p.Container != nil:
		b = append(b, " in "...)
		b = appendContainerName(b, p.Container)
	}
	return b
}

// appendProcessBareName appends "COMM (pid PID)", or the systemd service
// instead of the command name: "nginx.service (pid 812)". Scopes (login
// sessions, containers) say less than the command name, so they are not
// used.
func appendProcessBareName(b []byte, p Process) []byte {
	if p.Pid == 0 && p.Comm == "" {
		// A socket no process holds a descriptor of (found at start-up).
		return append(b, "an unknown process"...)
	}
	if p.Container == nil && p.Pod == nil && strings.HasSuffix(p.Unit, ".service") {
		b = append(b, p.Unit...)
	} else {
		b = append(b, p.Comm...)
	}
	b = append(b, " (pid "...)
	b = strconv.AppendUint(b, uint64(p.Pid), 10)
	return append(b, ')')
}

// appendContainerName appends "container web (docker 3f2a9c1b2d4e)", or
// "container 3f2a9c1b2d4e (docker)" when the runtime gave no name.
func appendContainerName(b []byte, c *Container) []byte {
	b = append(b, "container "...)
	if c.Name != "" {
		b = append(b, c.Name...)
		b = append(b, " ("...)
		if c.Runtime != "" {
			b = append(b, c.Runtime...)
			b = append(b, ' ')
		}
		b = appendShortID(b, c.ID)
		return append(b, ')')
	}
	b = appendShortID(b, c.ID)
	if c.Runtime != "" {
		b = append(b, " ("...)
		b = append(b, c.Runtime...)
		b = append(b, ')')
	}
	return b
}

// appendShortID appends the first 12 characters of a container id, as
// docker ps shows it; JSON keeps the full id.
func appendShortID(b []byte, id string) []byte {
	if len(id) > 12 {
		id = id[:12]
	}
	return append(b, id...)
}

// appendPodName appends "pod shop/web-7f9c", or "pod UID" when the
// runtime gave no name.
func appendPodName(b []byte, p *Pod) []byte {
	b = append(b, "pod "...)
	if p.Name == "" {
		return append(b, p.UID...)
	}
	if p.Namespace != "" {
		b = append(b, p.Namespace...)
		b = append(b, '/')
	}
	return append(b, p.Name...)
}

// appendNetnsName names a network namespace by what lives in it:
// "container web's netns (4026532177)", "pod shop/web-7f9c's netns
// (4026532177)", "netns web (4026532177)" for an `ip netns` name, else
// "netns 4026532177".
func appendNetnsName(b []byte, id uint32, n *NetnsNames) []byte {
	switch {
	case n != nil && n.Pod != nil:
		b = appendPodName(b, n.Pod)
		b = append(b, "'s netns ("...)
	case n != nil && n.Container != nil:
		b = append(b, "container "...)
		if n.Container.Name != "" {
			b = append(b, n.Container.Name...)
		} else {
			b = appendShortID(b, n.Container.ID)
		}
		b = append(b, "'s netns ("...)
	case n != nil && n.Name != "":
		b = append(b, "netns "...)
		b = append(b, n.Name...)
		b = append(b, " ("...)
	default:
		b = append(b, "netns "...)
		return strconv.AppendUint(b, uint64(id), 10)
	}
	b = strconv.AppendUint(b, uint64(id), 10)
	return append(b, ')')
}

// appendNetnsPlace says where in a network namespace something is: "in
// container web (docker 3f2a9c1b2d4e)", "in pod shop/web-7f9c", "in netns
// web (4026532177)", "in netns 4026532177".
func appendNetnsPlace(b []byte, id uint32, n *NetnsNames) []byte {
	b = append(b, "in "...)
	switch {
	case n != nil && n.Pod != nil:
		return appendPodName(b, n.Pod)
	case n != nil && n.Container != nil:
		return appendContainerName(b, n.Container)
	}
	return appendNetnsName(b, id, n)
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
