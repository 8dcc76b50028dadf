package diagnose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/host"
	"github.com/rsttrace/rsttrace/tracer"
)

// DefaultProbeWait bounds how long one probe waits for an answer: a SYN
// that is answered is answered in well under a millisecond on one host;
// one that is not is retransmitted after a second.
const DefaultProbeWait = 1500 * time.Millisecond

// prober is a tracer running in this process while probes are made, its
// events kept to be matched to the probes afterwards.
type prober struct {
	tr     *tracer.Tracer
	cancel context.CancelFunc
	done   chan error

	mu  sync.Mutex
	evs []*events.Event
}

type collect struct{ p *prober }

func (c collect) Encode(e *events.Event) error {
	switch e.Type {
	case events.TypeRefused, events.TypeTimeout, events.TypeReset:
		c.p.mu.Lock()
		c.p.evs = append(c.p.evs, e)
		c.p.mu.Unlock()
	}
	return nil
}

func (collect) Flush() error { return nil }

// startProber loads and attaches the tracer's programs for ports.
func startProber(ports []uint16, log *slog.Logger) (*prober, error) {
	tr, err := tracer.New(tracer.Config{Ports: ports, Logger: log, RingSize: 1 << 20})
	if err != nil {
		return nil, fmt.Errorf("starting the tracer for the probe: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &prober{tr: tr, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- tr.Run(ctx, collect{p}) }()
	return p, nil
}

// finish stops the tracer once everything it had was written (held
// refusals included) and returns the events.
func (p *prober) finish() ([]*events.Event, error) {
	p.cancel()
	var err error
	select {
	case err = <-p.done:
	case <-time.After(5 * time.Second):
		err = errors.New("tracer did not stop within 5s")
	}
	err = errors.Join(err, p.tr.Close())
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.evs, err
}

// match gives pr the tracer's record of its attempt: the one whose client
// is pr's socket.
func match(pr *Probe, evs []*events.Event) {
	if !pr.Src.IsValid() {
		return
	}
	for _, e := range evs {
		if e.Src != nil && e.Src.Port == pr.Src.Port() && e.Src.Addr.Unmap() == pr.Src.Addr().Unmap() {
			pr.Event = e
			if e.Type != events.TypeReset { // a refusal or timeout says more
				return
			}
		}
	}
}

// connectProbe makes one non-blocking connection attempt to dst from the
// network namespace of nsPath, waiting at most wait for the answer.
func connectProbe(nsPath string, dst netip.AddrPort, wait time.Duration) *Probe {
	pr := &Probe{Dst: dst}
	start := time.Now()
	err := host.InNetns(nsPath, func() error {
		fam, sa, any := sockaddrOf(dst)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		// Bound first, so the client port is known even when the kernel
		// forgets the address of a refused socket.
		if err := unix.Bind(fd, any); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		err = unix.Connect(fd, sa)
		pr.Src = localAddr(fd)
		switch {
		case err == nil:
			pr.Outcome = "accepted"
			return nil
		case errors.Is(err, unix.EINPROGRESS):
		default:
			setErrno(pr, err)
			return nil
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		deadline := start.Add(wait)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				pr.Outcome = "timeout"
				return nil
			}
			n, err := unix.Poll(fds, int(left.Milliseconds())+1)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("poll: %w", err)
			}
			if n == 0 {
				continue
			}
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return fmt.Errorf("getsockopt SO_ERROR: %w", err)
			}
			if soerr == 0 {
				pr.Outcome = "accepted"
			} else {
				setErrno(pr, unix.Errno(soerr))
			}
			return nil
		}
	})
	pr.WaitedMs = time.Since(start).Milliseconds()
	if err != nil {
		pr.Outcome, pr.Error = "error", err.Error()
	}
	return pr
}

func setErrno(pr *Probe, err error) {
	var en unix.Errno
	if !errors.As(err, &en) {
		pr.Outcome, pr.Error = "error", err.Error()
		return
	}
	pr.Errno = events.ErrnoName(int(en))
	switch en {
	case unix.ECONNREFUSED:
		pr.Outcome = "refused"
	case unix.ECONNRESET:
		pr.Outcome = "reset"
	case unix.ETIMEDOUT:
		pr.Outcome = "timeout"
	default:
		pr.Outcome, pr.Error = "error", "connect: "+pr.Errno
	}
}

func sockaddrOf(ap netip.AddrPort) (fam int, sa, any unix.Sockaddr) {
	if ap.Addr().Unmap().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}, &unix.SockaddrInet4{}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, &unix.SockaddrInet6{}
}

func localAddr(fd int) netip.AddrPort {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}
