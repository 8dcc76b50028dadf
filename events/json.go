package events

import (
	"bufio"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// jsonEncoder writes JSON Lines: one object per line.
//
// The objects are byte for byte what encoding/json's Encoder writes for an
// Event with SetEscapeHTML(false) (field order, omitempty and omitzero,
// string escaping, RFC 3339 times): the tests keep encoding/json as the
// oracle, and fail when a field of Event has no counterpart here. It is
// written by hand because encoding/json's reflection was about half of
// the user-space CPU under a refusal flood (BenchmarkPipeline); this
// appends into one reused buffer and does not allocate.
type jsonEncoder struct {
	w   *bufio.Writer
	buf []byte
	// origin is ,"host":...,"node":... as written after "type", escaped
	// once.
	origin []byte
}

func newJSONEncoder(w *bufio.Writer, o Options) *jsonEncoder {
	j := &jsonEncoder{w: w}
	j.origin = appendOptString(j.origin, `,"host":`, o.Host)
	j.origin = appendOptString(j.origin, `,"node":`, o.Node)
	return j
}

func (j *jsonEncoder) Flush() error { return j.w.Flush() }

func (j *jsonEncoder) Encode(e *Event) error {
	b, err := appendJSON(j.buf[:0], e, j.origin)
	if cap(b) <= maxKeptBuffer {
		j.buf = b[:0]
	}
	if err != nil {
		return err // nothing written, as encoding/json
	}
	_, err = j.w.Write(b)
	return err
}

// maxKeptBuffer bounds the scratch buffer an encoder keeps between records.
const maxKeptBuffer = 64 << 10

// appendJSON appends e as one JSON object and a newline, with origin (the
// encoder's host and node fields) after "type". On error (a time RFC 3339
// cannot represent, which encoding/json refuses too) the appended bytes
// are incomplete and must be dropped.
func appendJSON(b []byte, e *Event, origin []byte) ([]byte, error) {
	var err error
	b = append(b, `{"time":`...)
	if b, err = appendTime(b, e.Time); err != nil {
		return b, err
	}
	b = append(b, `,"type":`...)
	b = appendString(b, string(e.Type))
	b = append(b, origin...)
	if e.Netns != 0 {
		b = append(b, `,"netns":`...)
		b = strconv.AppendUint(b, uint64(e.Netns), 10)
	}
	if e.NetnsNames != nil {
		b = append(b, `,"netns_names":`...)
		b = appendNetnsNames(b, e.NetnsNames)
	}
	if e.Src != nil {
		b = append(b, `,"src":`...)
		b = appendEndpoint(b, e.Src)
	}
	if e.Dst != nil {
		b = append(b, `,"dst":`...)
		b = appendEndpoint(b, e.Dst)
	}
	if e.DstOriginal != nil {
		b = append(b, `,"dst_original":`...)
		b = appendEndpoint(b, e.DstOriginal)
	}
	if e.ClientNetns != 0 {
		b = append(b, `,"client_netns":`...)
		b = strconv.AppendUint(b, uint64(e.ClientNetns), 10)
	}
	if e.Proxy != nil {
		b = append(b, `,"proxy":`...)
		b = appendProcess(b, e.Proxy)
	}
	if e.Cause != "" {
		b = append(b, `,"cause":`...)
		b = appendString(b, string(e.Cause))
	}
	if e.Explanation != "" {
		b = append(b, `,"explanation":`...)
		b = appendString(b, e.Explanation)
	}
	if e.KernelReason != "" {
		b = append(b, `,"kernel_reason":`...)
		b = appendString(b, e.KernelReason)
	}
	if e.Client != nil {
		b = append(b, `,"client":`...)
		b = appendProcess(b, e.Client)
	}
	if e.Listener != nil {
		b = append(b, `,"listener":`...)
		if b, err = appendListener(b, e.Listener); err != nil {
			return b, err
		}
	}
	if e.Bind != nil {
		b = append(b, `,"bind":`...)
		if b, err = appendBind(b, e.Bind); err != nil {
			return b, err
		}
	}
	if e.Answer != "" {
		b = append(b, `,"answer":`...)
		b = appendString(b, e.Answer)
	}
	if f := e.Firewall; f != nil {
		b = appendFirewall(b, f)
	}
	if a := e.Attempt; a != nil {
		b = append(b, `,"attempt":{`...)
		if a.Errno != "" {
			b = append(b, `"errno":`...)
			b = appendString(b, a.Errno)
			b = append(b, ',')
		}
		b = append(b, `"retransmits":`...)
		b = strconv.AppendUint(b, uint64(a.Retransmits), 10)
		b = append(b, `,"waited_ms":`...)
		b = strconv.AppendInt(b, a.WaitedMs, 10)
		if a.StillWaiting {
			b = append(b, `,"still_waiting":true`...)
		}
		b = append(b, '}')
	}
	if e.Process != nil {
		b = append(b, `,"process":`...)
		b = appendProcess(b, e.Process)
	}
	if e.PeerProcess != nil {
		b = append(b, `,"peer_process":`...)
		b = appendProcess(b, e.PeerProcess)
	}
	if e.State != "" {
		b = append(b, `,"state":`...)
		b = appendString(b, e.State)
	}
	if e.Unaccepted {
		b = append(b, `,"unaccepted":true`...)
	}
	if d := e.Dropped; d != nil {
		b = append(b, `,"dropped":{"total":`...)
		b = strconv.AppendUint(b, d.Total, 10)
		b = append(b, `,"syn_accept_queue_full":`...)
		b = strconv.AppendUint(b, d.SynAcceptQueueFull, 10)
		b = append(b, `,"syn_queue_full":`...)
		b = strconv.AppendUint(b, d.SynQueueFull, 10)
		b = append(b, `,"final_ack":`...)
		b = strconv.AppendUint(b, d.FinalAck, 10)
		b = append(b, `,"other":`...)
		b = strconv.AppendUint(b, d.Other, 10)
		b = append(b, '}')
	}
	if e.IntervalMs != 0 {
		b = append(b, `,"interval_ms":`...)
		b = strconv.AppendInt(b, e.IntervalMs, 10)
	}
	if e.AcceptIdleMs != nil {
		b = append(b, `,"accept_idle_ms":`...)
		b = strconv.AppendInt(b, *e.AcceptIdleMs, 10)
	}
	if e.NeverAccepted {
		b = append(b, `,"never_accepted":true`...)
	}
	if e.Somaxconn != 0 {
		b = append(b, `,"somaxconn":`...)
		b = strconv.AppendUint(b, uint64(e.Somaxconn), 10)
	}
	if e.Refusals != 0 {
		b = append(b, `,"refusals":`...)
		b = strconv.AppendUint(b, e.Refusals, 10)
	}
	if e.SummaryOf != "" {
		b = append(b, `,"summary_of":`...)
		b = appendString(b, e.SummaryOf)
	}
	if e.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, int64(e.Version), 10)
	}
	if e.Kernel != "" {
		b = append(b, `,"kernel":`...)
		b = appendString(b, e.Kernel)
	}
	if len(e.Plan) > 0 {
		b = append(b, `,"plan":[`...)
		for i := range e.Plan {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAttach(b, &e.Plan[i])
		}
		b = append(b, ']')
	}
	if len(e.Ports) > 0 {
		b = append(b, `,"ports":[`...)
		for i, p := range e.Ports {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(p), 10)
		}
		b = append(b, ']')
	}
	if e.Lost != nil {
		b = append(b, `,"lost":`...)
		b = strconv.AppendUint(b, *e.Lost, 10)
	}
	if e.Events != 0 {
		b = append(b, `,"events":`...)
		b = strconv.AppendUint(b, e.Events, 10)
	}
	if e.Summarized != 0 {
		b = append(b, `,"summarized":`...)
		b = strconv.AppendUint(b, e.Summarized, 10)
	}
	if e.SummarizedFiltered != 0 {
		b = append(b, `,"summarized_filtered":`...)
		b = strconv.AppendUint(b, e.SummarizedFiltered, 10)
	}
	if e.SummarizedResets != 0 {
		b = append(b, `,"summarized_resets":`...)
		b = strconv.AppendUint(b, e.SummarizedResets, 10)
	}
	if e.SummarizedTimeouts != 0 {
		b = append(b, `,"summarized_timeouts":`...)
		b = strconv.AppendUint(b, e.SummarizedTimeouts, 10)
	}
	return append(b, '}', '\n'), nil
}

func appendEndpoint(b []byte, ep *Endpoint) []byte {
	b = append(b, `{"addr":`...)
	b = appendAddr(b, ep.Addr)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(ep.Port), 10)
	return append(b, '}')
}

// appendProcess appends a Process as an object.
func appendProcess(b []byte, p *Process) []byte {
	b = append(b, '{')
	b = appendProcessFields(b, p)
	return append(b, '}')
}

// appendProcessFields appends the fields of a Process without braces: it
// is embedded in Listener and Bind.
func appendProcessFields(b []byte, p *Process) []byte {
	b = append(b, `"pid":`...)
	b = strconv.AppendUint(b, uint64(p.Pid), 10)
	b = append(b, `,"comm":`...)
	b = appendString(b, p.Comm)
	b = appendRaw(b, `,"comm_raw":`, p.Comm)
	if p.Exe != "" {
		b = append(b, `,"exe":`...)
		b = appendString(b, p.Exe)
		b = appendRaw(b, `,"exe_raw":`, p.Exe)
	}
	if p.Unit != "" {
		b = append(b, `,"unit":`...)
		b = appendString(b, p.Unit)
	}
	if p.Container != nil {
		b = append(b, `,"container":`...)
		b = appendContainer(b, p.Container)
	}
	if p.Pod != nil {
		b = append(b, `,"pod":`...)
		b = appendPod(b, p.Pod)
	}
	return b
}

// appendRaw appends key and the bytes of s in base64 when s is not valid
// UTF-8 (Process.CommRaw says why).
func appendRaw(b []byte, key, s string) []byte {
	if utf8.ValidString(s) {
		return b
	}
	b = append(b, key...)
	b = append(b, '"')
	b = appendBase64(b, s)
	return append(b, '"')
}

// appendBase64 appends s as base64.StdEncoding encodes it, without
// converting s to a []byte.
func appendBase64(b []byte, s string) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := 0
	for ; i+3 <= len(s); i += 3 {
		v := uint(s[i])<<16 | uint(s[i+1])<<8 | uint(s[i+2])
		b = append(b, alphabet[v>>18&0x3f], alphabet[v>>12&0x3f], alphabet[v>>6&0x3f], alphabet[v&0x3f])
	}
	switch len(s) - i {
	case 1:
		v := uint(s[i]) << 16
		b = append(b, alphabet[v>>18&0x3f], alphabet[v>>12&0x3f], '=', '=')
	case 2:
		v := uint(s[i])<<16 | uint(s[i+1])<<8
		b = append(b, alphabet[v>>18&0x3f], alphabet[v>>12&0x3f], alphabet[v>>6&0x3f], '=')
	}
	return b
}

func appendContainer(b []byte, c *Container) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, c.ID)
	b = appendOptString(b, `,"runtime":`, c.Runtime)
	b = appendOptString(b, `,"name":`, c.Name)
	return append(b, '}')
}

func appendPod(b []byte, p *Pod) []byte {
	b = append(b, `{"uid":`...)
	b = appendString(b, p.UID)
	b = appendOptString(b, `,"namespace":`, p.Namespace)
	b = appendOptString(b, `,"name":`, p.Name)
	return append(b, '}')
}

// appendNetnsNames appends NetnsNames as an object; every field may be
// empty ({}).
func appendNetnsNames(b []byte, n *NetnsNames) []byte {
	b, open := openObject(b)
	b = appendOptString(b, `,"name":`, n.Name)
	if n.Container != nil {
		b = append(b, `,"container":`...)
		b = appendContainer(b, n.Container)
	}
	if n.Pod != nil {
		b = append(b, `,"pod":`...)
		b = appendPod(b, n.Pod)
	}
	return closeObject(b, open)
}

// openObject starts an object whose fields are all optional: each field
// is appended with a leading comma, and closeObject drops the first one.
func openObject(b []byte) ([]byte, int) {
	b = append(b, '{')
	return b, len(b)
}

func closeObject(b []byte, open int) []byte {
	if len(b) > open {
		b = append(b[:open], b[open+1:]...) // the first field's comma
	}
	return append(b, '}')
}

// appendOptString appends key (with its leading comma and colon) and s,
// unless s is empty (omitempty).
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, s)
}

func appendListener(b []byte, l *Listener) ([]byte, error) {
	var err error
	b = append(b, '{')
	b = appendProcessFields(b, &l.Process)
	b = append(b, `,"addr":`...)
	b = appendAddr(b, l.Addr)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(l.Port), 10)
	b = append(b, `,"netns":`...)
	b = strconv.AppendUint(b, uint64(l.Netns), 10)
	if l.NetnsNames != nil {
		b = append(b, `,"netns_names":`...)
		b = appendNetnsNames(b, l.NetnsNames)
	}
	if l.Backlog != 0 {
		b = append(b, `,"backlog":`...)
		b = strconv.AppendUint(b, uint64(l.Backlog), 10)
	}
	if l.BacklogRequested != 0 {
		b = append(b, `,"backlog_requested":`...)
		b = strconv.AppendUint(b, uint64(l.BacklogRequested), 10)
	}
	if l.Queued != nil {
		b = append(b, `,"queued":`...)
		b = strconv.AppendUint(b, uint64(*l.Queued), 10)
	}
	if l.V6Only {
		b = append(b, `,"v6only":true`...)
	}
	if !l.Since.IsZero() {
		b = append(b, `,"since":`...)
		if b, err = appendTime(b, l.Since); err != nil {
			return b, err
		}
	}
	if !l.ClosedAt.IsZero() {
		b = append(b, `,"closed_at":`...)
		if b, err = appendTime(b, l.ClosedAt); err != nil {
			return b, err
		}
	}
	if l.ClosedBy != nil {
		b = append(b, `,"closed_by":`...)
		b = appendProcess(b, l.ClosedBy)
	}
	// *Exit is embedded: its fields are the listener's, when it is set.
	if x := l.Exit; x != nil {
		if x.Code != nil {
			b = append(b, `,"exit_code":`...)
			b = strconv.AppendInt(b, int64(*x.Code), 10)
		}
		if x.Signal != "" {
			b = append(b, `,"signal":`...)
			b = appendString(b, x.Signal)
		}
		if x.CoreDumped {
			b = append(b, `,"core_dumped":true`...)
		}
	}
	return append(b, '}'), nil
}

func appendBind(b []byte, x *Bind) ([]byte, error) {
	var err error
	b = append(b, '{')
	b = appendProcessFields(b, &x.Process)
	b = append(b, `,"addr":`...)
	b = appendAddr(b, x.Addr)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(x.Port), 10)
	b = append(b, `,"errno":`...)
	b = appendString(b, x.Errno)
	b = append(b, `,"time":`...)
	if b, err = appendTime(b, x.Time); err != nil {
		return b, err
	}
	if x.Holder != nil {
		b = append(b, `,"holder":`...)
		b = appendProcess(b, x.Holder)
	}
	return append(b, '}'), nil
}

func appendAttach(b []byte, a *Attach) []byte {
	b = append(b, `{"capability":`...)
	b = appendString(b, a.Capability)
	if a.Hook != "" {
		b = append(b, `,"hook":`...)
		b = appendString(b, a.Hook)
	}
	if a.Degraded != "" {
		b = append(b, `,"degraded":`...)
		b = appendString(b, a.Degraded)
	}
	if a.Fallback != "" {
		b = append(b, `,"fallback":`...)
		b = appendString(b, a.Fallback)
	}
	if a.Waiting != "" {
		b = append(b, `,"waiting":`...)
		b = appendString(b, a.Waiting)
	}
	return append(b, '}')
}

// appendFirewall appends ,"firewall":{...}; every field may be empty, as
// omitempty leaves them out.
func appendFirewall(b []byte, f *Firewall) []byte {
	b = append(b, `,"firewall":`...)
	b, open := openObject(b)
	b = appendOptString(b, `,"hook":`, f.Hook)
	b = appendOptString(b, `,"table":`, f.Table)
	if f.SYNs != 0 {
		b = append(b, `,"syns":`...)
		b = strconv.AppendUint(b, uint64(f.SYNs), 10)
	}
	b = appendOptString(b, `,"table_name":`, f.TableName)
	b = appendOptString(b, `,"family":`, f.Family)
	b = appendOptString(b, `,"chain":`, f.Chain)
	if f.Handle != 0 {
		b = append(b, `,"handle":`...)
		b = strconv.AppendUint(b, f.Handle, 10)
	}
	b = appendOptString(b, `,"comment":`, f.Comment)
	b = appendOptString(b, `,"rule":`, f.Rule)
	return closeObject(b, open)
}

// appendAddr appends an address as encoding/json does through its
// MarshalText: a string, empty for the zero Addr. Only an IPv6 zone can
// hold bytes that need escaping.
func appendAddr(b []byte, a netip.Addr) []byte {
	b = append(b, '"')
	if zone := a.Zone(); zone != "" {
		// Escaping the zone alone is escaping the whole: what precedes
		// it is hex digits and colons, then '%'.
		b = a.WithZone("").AppendTo(b)
		b = append(b, '%')
		b = appendEscaped(b, zone)
	} else {
		b = a.AppendTo(b)
	}
	return append(b, '"')
}

// appendTime appends t as Time.MarshalJSON does: RFC 3339 with up to nine
// fractional digits, in t's own zone. Like it, it refuses a year outside
// [0,9999] and a zone offset of 24 hours or more, which RFC 3339 cannot
// say.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	n := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	bad := b[n+len("9999")] != '-'
	if !bad && b[len(b)-1] != 'Z' {
		c := b[len(b)-len("Z07:00")]
		h := 10*int(b[len(b)-5]-'0') + int(b[len(b)-4]-'0')
		bad = '0' <= c && c <= '9' || h >= 24
	}
	if bad {
		if _, err := t.MarshalJSON(); err != nil {
			return b, &timeError{err}
		}
	}
	return append(b, '"'), nil
}

// timeError is the error encoding/json reports for such a time.
type timeError struct{ err error }

func (e *timeError) Error() string {
	return "json: error calling MarshalJSON for type time.Time: " + e.err.Error()
}
func (e *timeError) Unwrap() error { return e.err }

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does
// with SetEscapeHTML(false): ", \ and control characters escaped (\b, \f,
// \n, \r, \t by name, others as \u00XX), invalid UTF-8 replaced by
// \ufffd, and U+2028, U+2029 escaped (they end lines in JavaScript).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends s escaped, without the quotes.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Explanations are plain ASCII: skip 8 bytes at a time while
		// none needs a look (see plain8).
		for i+8 <= len(s) && plain8(load64(s, i)) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// load64 returns the 8 bytes of s at i as a little-endian word.
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plain8 reports whether none of 8 bytes needs a look: each is ASCII, not
// a control character, '"' or '\\'. Explanations are plain ASCII, and this
// skips them 8 bytes at a time. (Per byte b < 0x80, b-0x20 sets the high
// bit exactly when b < 0x20, and (b^c)-1 exactly when b == c; a borrow
// only crosses into higher bytes from a byte that already set its own,
// and bytes >= 0x80 are caught by their own high bit.)
func plain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	t := w | (w - ones*' ') | ((w ^ ones*'"') - ones) | ((w ^ ones*'\\') - ones)
	return t&highs == 0
}
