// Package metrics exposes what rsttrace writes as Prometheus metrics, on
// a registry of its own (with the Go runtime and process collectors).
//
// Labels are bounded: causes and record types are fixed sets, and
// listen-queue overflow is labelled by listener (netns, addr, port) for at
// most MaxListeners distinct listeners; drops of further listeners are
// added to the label set {netns="other",addr="other",port="0"} and counted
// in rsttrace_listen_overflow_unlabeled_records_total. Client addresses and
// ephemeral ports are never labels.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rsttrace/rsttrace/events"
)

// DefaultMaxListeners bounds the listener label sets of
// rsttrace_listen_overflow_drops_total.
const DefaultMaxListeners = 200

// Options configure the metrics.
type Options struct {
	// RingFill returns how full the kernel ring buffer is (0 to 1); nil
	// leaves rsttrace_ring_buffer_fill_ratio out.
	RingFill func() float64
	// Kernel is the kernel release for rsttrace_kernel_info; when empty
	// it is taken from the start record.
	Kernel string
	// MaxListeners is the cap on listener label sets (0: DefaultMaxListeners).
	MaxListeners int
}

// Metrics counts the records rsttrace writes.
type Metrics struct {
	reg *prometheus.Registry

	refusals, timeouts, filtered *prometheus.CounterVec
	resets                       prometheus.Counter
	overflow                     *prometheus.CounterVec
	overflowUnlabeled            prometheus.Counter
	summarized, lost             prometheus.Counter
	written                      *prometheus.CounterVec
	startTime                    prometheus.Gauge
	kernel                       *prometheus.GaugeVec
	degraded                     *prometheus.GaugeVec

	mu           sync.Mutex
	listeners    map[[3]string]bool
	maxListeners int
	lostSeen     uint64 // lost records counted from lost records, for the stop record's total
}

var (
	refusalCauses = []events.Cause{events.CauseNoListener, events.CauseListenerClosed, events.CauseWrongAddress,
		events.CauseOtherNetns, events.CauseBindFailed, events.CauseBacklogFull, events.CauseFirewallReject,
		events.CauseRemote, events.CauseUnknown}
	timeoutCauses = []events.Cause{events.CauseFirewallDrop, events.CauseNoResponse, events.CauseUnknown}
	recordTypes   = []events.Type{events.TypeStart, events.TypeStop, events.TypeLost, events.TypeRefused,
		events.TypeListen, events.TypeListenClose, events.TypeBindFailed, events.TypeListenOverflow,
		events.TypeTimeout, events.TypeReset, events.TypeFiltered, events.TypeSummary}
)

// New makes the metrics and registers them on a new registry.
func New(opts Options) *Metrics {
	m := &Metrics{
		reg:          prometheus.NewRegistry(),
		listeners:    map[[3]string]bool{},
		maxListeners: opts.MaxListeners,
	}
	if m.maxListeners <= 0 {
		m.maxListeners = DefaultMaxListeners
	}
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rsttrace_refusals_total",
		Help: "Refused TCP connection attempts by cause: refused records plus the refusals counted in summary records.",
	}, []string{"cause"})
	m.timeouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rsttrace_timeouts_total",
		Help: "Local connect() attempts whose SYNs got no answer, by cause.",
	}, []string{"cause"})
	m.filtered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rsttrace_filtered_total",
		Help: "SYNs from other hosts discarded by this host's packet filter, by cause.",
	}, []string{"cause"})
	m.resets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rsttrace_resets_total",
		Help: "Established connections ended by a RST.",
	})
	m.overflow = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rsttrace_listen_overflow_drops_total",
		Help: "Connection attempts dropped because a listener's queue was full, by listener (network namespace inode, address, port). At most " +
			strconv.Itoa(m.maxListeners) + " listeners are labelled; the others are summed under netns=\"other\".",
	}, []string{"netns", "addr", "port"})
	m.overflowUnlabeled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rsttrace_listen_overflow_unlabeled_records_total",
		Help: "listen_overflow records whose listener did not get its own label set (the label cap was reached) and were summed under netns=\"other\".",
	})
	m.summarized = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rsttrace_summarized_refusals_total",
		Help: "Refusals counted in the kernel and written in summary records instead of one record each.",
	})
	m.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rsttrace_lost_records_total",
		Help: "Records lost (ring buffer full or output too slow).",
	})
	m.written = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rsttrace_events_written_total",
		Help: "Records written, by type.",
	}, []string{"type"})
	m.startTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rsttrace_start_time_seconds",
		Help: "When tracing started (every program attached), in seconds since the Unix epoch; 0 before.",
	})
	m.kernel = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rsttrace_kernel_info",
		Help: "The running kernel's release, as a label; always 1.",
	}, []string{"release"})
	m.degraded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rsttrace_capability_degraded",
		Help: "1 when a tracing capability cannot be served on this kernel (with or without a fallback), 0 when it is served.",
	}, []string{"capability"})

	for _, c := range refusalCauses {
		m.refusals.WithLabelValues(string(c))
	}
	for _, c := range timeoutCauses {
		m.timeouts.WithLabelValues(string(c))
	}
	for _, c := range []events.Cause{events.CauseFirewallDrop, events.CauseFirewallReject, events.CauseUnknown} {
		m.filtered.WithLabelValues(string(c))
	}
	for _, t := range recordTypes {
		m.written.WithLabelValues(string(t))
	}
	if opts.Kernel != "" {
		m.kernel.WithLabelValues(opts.Kernel).Set(1)
	}
	m.reg.MustRegister(m.refusals, m.timeouts, m.filtered, m.resets, m.overflow, m.overflowUnlabeled,
		m.summarized, m.lost, m.written, m.startTime, m.kernel, m.degraded,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.RingFill != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rsttrace_ring_buffer_fill_ratio",
			Help: "How full the kernel ring buffer is, from 0 to 1.",
		}, opts.RingFill))
	}
	return m
}

// Registry returns the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Observe counts one record written; call it for every record the
// encoder writes. It is safe for concurrent use.
func (m *Metrics) Observe(e *events.Event) {
	m.written.WithLabelValues(string(e.Type)).Inc()
	switch e.Type {
	case events.TypeRefused:
		m.refusals.WithLabelValues(causeOr(e.Cause)).Inc()
	case events.TypeSummary:
		m.refusals.WithLabelValues(causeOr(e.Cause)).Add(float64(e.Refusals))
		m.summarized.Add(float64(e.Refusals))
	case events.TypeTimeout:
		m.timeouts.WithLabelValues(causeOr(e.Cause)).Inc()
	case events.TypeFiltered:
		m.filtered.WithLabelValues(causeOr(e.Cause)).Inc()
	case events.TypeReset:
		m.resets.Inc()
	case events.TypeListenOverflow:
		m.observeOverflow(e)
	case events.TypeLost:
		if e.Lost != nil {
			m.mu.Lock()
			m.lostSeen += *e.Lost
			m.mu.Unlock()
			m.lost.Add(float64(*e.Lost))
		}
	case events.TypeStop:
		// The stop record's count is the total: add what lost records
		// did not already report.
		if e.Lost != nil {
			m.mu.Lock()
			if *e.Lost > m.lostSeen {
				m.lost.Add(float64(*e.Lost - m.lostSeen))
				m.lostSeen = *e.Lost
			}
			m.mu.Unlock()
		}
	case events.TypeStart:
		m.startTime.Set(float64(e.Time.UnixNano()) / 1e9)
		if e.Kernel != "" {
			m.kernel.Reset()
			m.kernel.WithLabelValues(e.Kernel).Set(1)
		}
		for _, a := range e.Plan {
			v := 0.0
			if a.Degraded != "" {
				v = 1
			}
			m.degraded.WithLabelValues(a.Capability).Set(v)
		}
	}
}

func causeOr(c events.Cause) string {
	if c == "" {
		return string(events.CauseUnknown)
	}
	return string(c)
}

func (m *Metrics) observeOverflow(e *events.Event) {
	if e.Dropped == nil || e.Listener == nil {
		return
	}
	netns := e.Netns
	if netns == 0 {
		netns = e.Listener.Netns
	}
	key := [3]string{strconv.FormatUint(uint64(netns), 10), e.Listener.Addr.String(), strconv.Itoa(int(e.Listener.Port))}
	m.mu.Lock()
	if !m.listeners[key] {
		if len(m.listeners) < m.maxListeners {
			m.listeners[key] = true
		} else {
			key = [3]string{"other", "other", "0"}
			m.overflowUnlabeled.Inc()
		}
	}
	m.mu.Unlock()
	m.overflow.WithLabelValues(key[0], key[1], key[2]).Add(float64(e.Dropped.Total))
}

// Handler serves the metrics at /metrics and a liveness answer at /healthz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

// Listen opens the metrics address, saying so clearly when it is taken.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve listens on addr and serves h until ctx is done.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, h)
}

// ServeListener serves h on ln until ctx is done, then shuts down (giving
// scrapes in flight a second) and returns nil.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}
