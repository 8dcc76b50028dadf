package diagnose

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"

	"github.com/rsttrace/rsttrace/events"
)

// DefaultHistory is where a rsttrace run by the shipped systemd unit
// writes its JSON Lines.
const DefaultHistory = "/var/log/rsttrace/rsttrace.jsonl"

// historyTail is how much of the end of an output file is read: recent
// history is what matters, and the file may be large.
const historyTail = 8 << 20

// maxHistory bounds the records reported.
const maxHistory = 10

// ReadHistory reads the records about port from the end of a rsttrace
// JSON Lines file: every record type that names a local port (refused,
// timeout, listen, listen_close, bind_failed, listen_overflow, summary,
// filtered, reset). It returns the newest maxHistory, newest first, and
// the failed binds among all it read, newest first.
func ReadHistory(path string, port uint16) (recent, binds []*events.Event, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	off := st.Size() - historyTail
	skipFirst := off > 0
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return nil, nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var all []*events.Event
	for sc.Scan() {
		if skipFirst { // cut in the middle
			skipFirst = false
			continue
		}
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"port"`)) {
			continue
		}
		var e events.Event
		if json.Unmarshal(line, &e) != nil || !aboutPort(&e, port) {
			continue
		}
		all = append(all, &e)
	}
	for i := len(all) - 1; i >= 0; i-- {
		if len(recent) < maxHistory {
			recent = append(recent, all[i])
		}
		if all[i].Type == events.TypeBindFailed {
			binds = append(binds, all[i])
		}
	}
	return recent, binds, sc.Err()
}

// aboutPort reports whether e is about local port port.
func aboutPort(e *events.Event, port uint16) bool {
	switch e.Type {
	case events.TypeStart, events.TypeStop, events.TypeLost:
		return false
	}
	return e.Dst != nil && e.Dst.Port == port ||
		e.DstOriginal != nil && e.DstOriginal.Port == port ||
		e.Listener != nil && e.Listener.Port == port ||
		e.Bind != nil && e.Bind.Port == port
}
