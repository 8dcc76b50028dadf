package events

import "strconv"

// appendIssue5Text renders the issue 5 records (timeout, reset, filtered)
// as one line; refusals with issue 5 causes use the REFUSED line.
func appendIssue5Text(b []byte, e *Event) []byte {
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

// appendFlow appends "SRC -> DST netns N".
func appendFlow(b []byte, e *Event) []byte {
	b = appendEndpointText(b, e.Src)
	b = append(b, " -> "...)
	b = appendEndpointText(b, e.Dst)
	b = append(b, " netns "...)
	return strconv.AppendUint(b, uint64(e.Netns), 10)
}

// appendBracketed appends prefix, then "COMM PID]".
func appendBracketed(b []byte, prefix string, p Process) []byte {
	b = append(b, prefix...)
	b = append(b, p.Comm...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(p.Pid), 10)
	return append(b, ']')
}
