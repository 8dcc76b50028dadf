package events

import (
	"bufio"
	"encoding/binary"
	"strconv"
	"time"
	"unicode/utf8"
)

// textEncoder writes one human-readable line per record. Like the JSON
// encoder it appends into reused buffers: a refusal line costs no
// allocation.
//
// One record is one line, always: the line is escaped as a whole (see
// appendTextEscaped), so no name a process, a container or a ruleset
// chose can end it or forge another.
type textEncoder struct {
	w        *bufio.Writer
	raw, buf []byte
}

func (t *textEncoder) Flush() error { return t.w.Flush() }

func (t *textEncoder) Encode(e *Event) error {
	raw := appendLine(t.raw[:0], e)
	b := appendTextEscaped(t.buf[:0], raw)
	b = append(b, '\n')
	if cap(raw) <= maxKeptBuffer {
		t.raw = raw[:0]
	}
	if cap(b) <= maxKeptBuffer {
		t.buf = b[:0]
	}
	_, err := t.w.Write(b)
	return err
}

// appendTextEscaped appends s with every byte that could end the line,
// move the cursor or hide text shown as a Go escape, so that the line
// reads the same on any terminal and the original bytes can be recovered:
//
//   - \\ for a backslash, so that every escape is unambiguous;
//   - \n, \r, \t, and \xNN for the other ASCII control bytes and DEL;
//   - \xNN for each byte that is not part of valid UTF-8;
//   - \uNNNN (or \UNNNNNNNN) for a valid rune strconv.IsPrint rejects:
//     C1 controls (U+0080-U+009F), U+2028 and U+2029, format characters
//     such as bidirectional overrides, spaces other than U+0020.
//
// Unescaping (as strconv.Unquote does, with \xNN a raw byte) gives the
// bytes back. The rsttrace sentences themselves have none of these.
func appendTextEscaped(b, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && textPlain8(load64b(s, i)) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c >= ' ' && c < 0x7f && c != '\\' {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if size > 1 && strconv.IsPrint(r) {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			switch {
			case size == 1: // not UTF-8
				b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			case r > 0xffff:
				b = append(b, '\\', 'U')
				b = appendHex(b, uint32(r), 8)
			default:
				b = append(b, '\\', 'u')
				b = appendHex(b, uint32(r), 4)
			}
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(b, s[start:]...)
}

// textPlain8 reports whether none of 8 bytes needs escaping in text: each
// is ASCII, not a control character, DEL or '\\' (the reasoning of
// plain8).
func textPlain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	t := w | (w - ones*' ') | ((w ^ ones*0x7f) - ones) | ((w ^ ones*'\\') - ones)
	return t&highs == 0
}

// load64b returns the 8 bytes of s at i as a little-endian word.
func load64b(s []byte, i int) uint64 { return binary.LittleEndian.Uint64(s[i : i+8]) }

// appendHex appends the low digits hex digits of v.
func appendHex(b []byte, v uint32, digits int) []byte {
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b = append(b, hexDigits[v>>shift&0xf])
	}
	return b
}

// appendLine appends the line of e, unescaped and without the newline.
func appendLine(b []byte, e *Event) []byte {
	b = appendClock(b, e.Time.Local())
	b = append(b, ' ')
	switch e.Type {
	case TypeStart:
		b = appendStartText(b, e)
	case TypeStop:
		b = append(b, "STOP "...)
		b = strconv.AppendUint(b, e.Events, 10)
		b = append(b, " records written, "...)
		b = strconv.AppendUint(b, deref(e.Lost), 10)
		b = append(b, " lost"...)
		for _, k := range [...]struct {
			n    uint64
			what string
		}{{e.Summarized, " refusals"}, {e.SummarizedFiltered, " firewall drops"}, {e.SummarizedResets, " resets"}, {e.SummarizedTimeouts, " timeouts"}} {
			if k.n != 0 {
				b = append(b, ", "...)
				b = strconv.AppendUint(b, k.n, 10)
				b = append(b, k.what...)
				b = append(b, " summarized"...)
			}
		}
	case TypeSummary:
		b = append(b, "SUMMARY "...)
		b = strconv.AppendUint(b, e.Refusals, 10)
		b = append(b, " refused -> "...)
		b = appendEndpointText(b, e.Dst)
		b = append(b, ' ')
		b = appendNetnsName(b, e.Netns, e.NetnsNames)
		b = append(b, " in "...)
		b = strconv.AppendInt(b, e.IntervalMs, 10)
		b = append(b, "ms "...)
		b = append(b, e.Cause...)
		b = append(b, ": "...)
		b = append(b, e.Explanation...)
	case TypeLost:
		b = append(b, "LOST "...)
		b = strconv.AppendUint(b, deref(e.Lost), 10)
		b = append(b, " records (ring buffer full or output too slow)"...)
	case TypeRefused:
		b = append(b, "REFUSED "...)
		b = appendFlow(b, e)
		if e.Client != nil {
			b = appendBracketed(b, " [", *e.Client)
		}
		if e.Proxy != nil {
			b = appendBracketed(b, " via [", *e.Proxy)
		}
		b = append(b, ' ')
		b = append(b, e.Cause...)
		b = append(b, ": "...)
		b = append(b, e.Explanation...)
		if e.KernelReason != "" {
			b = append(b, " (kernel: "...)
			b = append(b, e.KernelReason...)
			b = append(b, ')')
		}
	case TypeListen:
		if l := e.Listener; l != nil {
			b = append(b, "LISTEN "...)
			b = appendListenerText(b, l)
			b = append(b, " backlog "...)
			b = strconv.AppendUint(b, uint64(l.Backlog), 10)
		}
	case TypeListenClose:
		if l := e.Listener; l != nil {
			b = append(b, "CLOSE "...)
			b = appendListenerText(b, l)
			if l.ClosedBy != nil && l.ClosedBy.Pid != l.Pid {
				b = append(b, " closed by "...)
				b = appendProcessName(b, *l.ClosedBy)
			}
			if l.Exit != nil {
				b = append(b, ' ')
				b = appendExit(b, l.Exit)
			}
		}
	case TypeListenOverflow:
		b = appendOverflowText(b, e)
	case TypeBindFailed:
		if x := e.Bind; x != nil {
			b = append(b, "BIND-FAILED "...)
			b = appendHostPort(b, x.Addr, x.Port)
			b = append(b, ' ')
			b = appendNetnsName(b, e.Netns, e.NetnsNames)
			b = append(b, ' ')
			b = appendProcessName(b, x.Process)
			b = append(b, ' ')
			b = append(b, x.Errno...)
			if x.Holder != nil {
				b = append(b, "; port held by "...)
				b = appendProcessName(b, *x.Holder)
			}
		}
	case TypeTimeout, TypeReset, TypeFiltered:
		b = appendAttemptText(b, e)
	default:
		b = append(b, e.Type...)
	}
	return b
}

// appendAttemptText appends the line of a timeout, reset or filtered
// record; refusals, whatever their cause, use the REFUSED line.
func appendAttemptText(b []byte, e *Event) []byte {
	switch e.Type {
	case TypeTimeout:
		b = append(b, "TIMEOUT "...)
		b = appendFlow(b, e)
		if e.Client != nil {
			b = appendBracketed(b, " [", *e.Client)
		}
	case TypeFiltered:
		b = append(b, "FILTERED "...)
		b = appendFlow(b, e)
	case TypeReset:
		b = append(b, "RESET "...)
		b = appendFlow(b, e)
		if e.Process != nil {
			b = appendBracketed(b, " from [", *e.Process)
		}
		if e.PeerProcess != nil {
			b = appendBracketed(b, " to [", *e.PeerProcess)
		}
	}
	if e.Cause != "" {
		b = append(b, ' ')
		b = append(b, e.Cause...)
		b = append(b, ':')
	}
	b = append(b, ' ')
	b = append(b, e.Explanation...)
	if e.KernelReason != "" {
		b = append(b, " (kernel: "...)
		b = append(b, e.KernelReason...)
		b = append(b, ')')
	}
	return b
}

// appendFlow appends "SRC -> DST NETNS", with the destination the client
// used when address translation rewrote it: "SRC -> ORIG (DNAT to DST)".
func appendFlow(b []byte, e *Event) []byte {
	b = appendEndpointText(b, e.Src)
	b = append(b, " -> "...)
	if e.DstOriginal != nil {
		b = appendEndpointText(b, e.DstOriginal)
		b = append(b, " (DNAT to "...)
		b = appendEndpointText(b, e.Dst)
		b = append(b, ')')
	} else {
		b = appendEndpointText(b, e.Dst)
	}
	b = append(b, ' ')
	return appendNetnsName(b, e.Netns, e.NetnsNames)
}

// appendBracketed appends prefix, then the process name and ']'.
func appendBracketed(b []byte, prefix string, p Process) []byte {
	b = append(b, prefix...)
	b = appendProcessName(b, p)
	return append(b, ']')
}

// maxStartText bounds the START line after the time: what is degraded is
// listed while it fits; the JSON start record has the whole plan.
const maxStartText = 160

// appendStartText says in one short line what is traced and what is
// degraded and why:
//
//	START rsttrace on 6.18.0: all 12 capabilities traced
//	START rsttrace on 5.10.0, ports 80,443: 10 of 12 capabilities fully traced; degraded: firewall (no drop reason before 5.17), resets
func appendStartText(b []byte, e *Event) []byte {
	start := len(b)
	b = append(b, "START rsttrace on "...)
	b = append(b, e.Kernel...)
	for i, p := range e.Ports {
		if i == 0 {
			b = append(b, ", ports "...)
		} else {
			b = append(b, ',')
		}
		if i == 8 {
			b = append(b, "..."...)
			break
		}
		b = strconv.AppendUint(b, uint64(p), 10)
	}
	full := 0
	for _, a := range e.Plan {
		if a.Degraded == "" {
			full++
		}
	}
	b = append(b, ": "...)
	if full == len(e.Plan) {
		b = append(b, "all "...)
		b = strconv.AppendInt(b, int64(len(e.Plan)), 10)
		return append(b, " capabilities traced"...)
	}
	b = strconv.AppendInt(b, int64(full), 10)
	b = append(b, " of "...)
	b = strconv.AppendInt(b, int64(len(e.Plan)), 10)
	b = append(b, " capabilities fully traced; degraded:"...)
	// Each degraded capability with its reason while they fit, then
	// by name alone, then how many more; room is kept for ", and N more".
	listed, degraded, reasons := 0, len(e.Plan)-full, true
	for _, a := range e.Plan {
		if a.Degraded == "" {
			continue
		}
		item := len(", ") + len(a.Capability)
		if reasons && len(b)-start+item+len(" ()")+min(len(a.Degraded), 60)+len(", and 99 more") > maxStartText {
			reasons = false
		}
		if !reasons && len(b)-start+item+len(", and 99 more") > maxStartText {
			break
		}
		if listed > 0 {
			b = append(b, ',')
		}
		b = append(b, ' ')
		b = append(b, a.Capability...)
		if reasons {
			b = append(b, " ("...)
			b = appendCut(b, a.Degraded, 60)
			b = append(b, ')')
		}
		listed++
	}
	if listed < degraded {
		if listed > 0 {
			b = append(b, ',')
		}
		b = append(b, " and "...)
		b = strconv.AppendInt(b, int64(degraded-listed), 10)
		b = append(b, " more"...)
	}
	return b
}

// appendCut appends s, cut to at most n bytes at a rune boundary with
// "..." when it is longer.
func appendCut(b []byte, s string, n int) []byte {
	if len(s) <= n {
		return append(b, s...)
	}
	n -= len("...")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	b = append(b, s[:n]...)
	return append(b, "..."...)
}

// appendOverflowText says which listener dropped connection attempts, how
// many at which stage, and, when the tracer knows, for how long its owner
// has not called accept():
//
//	OVERFLOW 127.0.0.1:8080 netns 4026532 nginx (pid 812) backlog 128 (requested 511) queued 129: dropped 312 (syn 300, syn-queue 0, final-ack 12, other 0) in 1000ms; no accept() for 4.1s backlog_full: ...
func appendOverflowText(b []byte, e *Event) []byte {
	b = append(b, "OVERFLOW"...)
	if l := e.Listener; l != nil {
		b = append(b, ' ')
		b = appendListenerText(b, l)
		b = append(b, " backlog "...)
		b = strconv.AppendUint(b, uint64(l.Backlog), 10)
		if l.BacklogRequested != 0 && l.BacklogRequested != l.Backlog {
			b = append(b, " (requested "...)
			b = strconv.AppendUint(b, uint64(l.BacklogRequested), 10)
			b = append(b, ')')
		}
		if l.Queued != nil {
			b = append(b, " queued "...)
			b = strconv.AppendUint(b, uint64(*l.Queued), 10)
		}
	}
	if d := e.Dropped; d != nil {
		b = append(b, ": dropped "...)
		b = strconv.AppendUint(b, d.Total, 10)
		b = append(b, " (syn "...)
		b = strconv.AppendUint(b, d.SynAcceptQueueFull, 10)
		b = append(b, ", syn-queue "...)
		b = strconv.AppendUint(b, d.SynQueueFull, 10)
		b = append(b, ", final-ack "...)
		b = strconv.AppendUint(b, d.FinalAck, 10)
		b = append(b, ", other "...)
		b = strconv.AppendUint(b, d.Other, 10)
		b = append(b, ')')
	}
	if e.IntervalMs != 0 {
		b = append(b, " in "...)
		b = strconv.AppendInt(b, e.IntervalMs, 10)
		b = append(b, "ms"...)
	}
	if e.AcceptIdleMs != nil {
		b = append(b, "; no accept() for "...)
		b = appendDuration(b, time.Duration(*e.AcceptIdleMs)*time.Millisecond)
	}
	if e.Cause != "" {
		b = append(b, ' ')
		b = append(b, e.Cause...)
		if e.Explanation != "" {
			b = append(b, ": "...)
			b = append(b, e.Explanation...)
		}
	}
	return b
}

// appendClock appends t as the layout "15:04:05.000000" formats it.
func appendClock(b []byte, t time.Time) []byte {
	h, m, s := t.Clock()
	us := t.Nanosecond() / 1000
	b = append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10), ':',
		byte('0'+s/10), byte('0'+s%10), '.')
	for d := 100000; d > 0; d /= 10 {
		b = append(b, byte('0'+us/d%10))
	}
	return b
}

// appendListenerText appends "ADDR:PORT NETNS PROCESS", each as names.go
// names it.
func appendListenerText(b []byte, l *Listener) []byte {
	b = appendHostPort(b, l.Addr, l.Port)
	b = append(b, ' ')
	b = appendNetnsName(b, l.Netns, l.NetnsNames)
	b = append(b, ' ')
	return appendProcessName(b, l.Process)
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
