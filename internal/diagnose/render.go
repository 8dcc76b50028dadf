package diagnose

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/rsttrace/rsttrace/events"
)

// WriteJSON writes the report as one indented JSON object.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person: the verdict line first, then
// the evidence, then what to do.
func WriteText(w io.Writer, r *Report) error {
	b := bufio.NewWriter(w)
	fmt.Fprintln(b, r.Summary)
	fmt.Fprintln(b)
	fmt.Fprintln(b, "evidence:")
	for _, t := range r.Targets {
		if len(r.Targets) > 1 {
			fmt.Fprintf(b, "  %v from %s: %s (%s)\n", t.Dst, netnsPlace(t.Netns, t.NetnsNames), t.Verdict, t.Cause)
		}
		if p := t.Probe; p != nil {
			fmt.Fprintf(b, "  probe %v -> %v: %s", p.Src, p.Dst, p.Outcome)
			if p.Errno != "" {
				fmt.Fprintf(b, " (%s)", p.Errno)
			}
			fmt.Fprintf(b, " after %d ms", p.WaitedMs)
			if p.Error != "" {
				fmt.Fprintf(b, ": %s", p.Error)
			}
			fmt.Fprintln(b)
			if e := p.Event; e != nil {
				fmt.Fprintf(b, "    kernel: %s: %s", e.Type, e.Cause)
				if e.Explanation != "" {
					fmt.Fprintf(b, ": %s", e.Explanation)
				}
				fmt.Fprintln(b)
			}
		}
		for _, f := range t.Firewall {
			fmt.Fprintf(b, "  firewall (%s hook): rule %s %ss it: %s\n", f.Hook, ruleName(&f.Firewall), f.Verdict, f.Rule)
		}
		for _, n := range t.NAT {
			fmt.Fprintf(b, "  nat (%s hook): rule %s", n.Hook, natName(&n))
			if n.To.IsValid() {
				fmt.Fprintf(b, " -> %v", n.To)
			}
			if n.Backend != "" {
				fmt.Fprintf(b, " (%s)", n.Backend)
			}
			fmt.Fprintln(b)
		}
	}
	if len(r.Listeners) == 0 {
		fmt.Fprintf(b, "  listeners on port %d: none in any network namespace\n", r.Port)
	} else {
		fmt.Fprintf(b, "  listeners on port %d:\n", r.Port)
		for _, l := range r.Listeners {
			fmt.Fprintf(b, "    %v %s in %s: %s, backlog %d", hostPort(l.Addr, l.Port), l.Family, netnsPlace(l.Netns, l.NetnsNames), ownerName(l.Process), l.Backlog)
			if l.BacklogRequested != 0 && l.BacklogRequested != l.Backlog {
				fmt.Fprintf(b, " (asked %d)", l.BacklogRequested)
			}
			if l.Somaxconn >= 0 {
				fmt.Fprintf(b, ", somaxconn %d", l.Somaxconn)
			}
			fmt.Fprintf(b, ", accept queue %d/%d, drops %d", deref(l.Queued), l.Backlog+1, l.Drops)
			if l.V6Only {
				b.WriteString(", v6only")
			}
			if l.Full {
				b.WriteString(", FULL")
			}
			fmt.Fprintln(b)
		}
	}
	for _, x := range r.Bound {
		fmt.Fprintf(b, "  bound, not listening: %v in %s: %s\n", hostPort(x.Addr, x.Port), netnsPlace(x.Netns, x.Names), ownerName(x.Process))
	}
	for _, q := range r.Queues {
		fmt.Fprintf(b, "  listen queues of netns %d: TcpExtListenOverflows %d, TcpExtListenDrops %d, somaxconn %d\n", q.Netns, q.Overflows, q.Drops, q.Somaxconn)
	}
	if len(r.History) > 0 {
		fmt.Fprintf(b, "  history of port %d (%s, newest first):\n", r.Port, r.HistoryFile)
		var buf bytes.Buffer
		enc, _ := events.NewEncoder("text", &buf)
		for _, e := range r.History {
			buf.Reset()
			if enc.Encode(e) == nil && enc.Flush() == nil {
				fmt.Fprintf(b, "    %s\n", strings.TrimRight(buf.String(), "\n"))
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b, "  note: %s\n", n)
	}
	if len(r.Todo) > 0 {
		fmt.Fprintln(b)
		fmt.Fprintln(b, "what to do:")
		for _, s := range r.Todo {
			fmt.Fprintf(b, "  - %s\n", s)
		}
	}
	return b.Flush()
}

func ownerName(p events.Process) string {
	if p.Pid == 0 {
		return "owner unknown"
	}
	return p.String()
}
