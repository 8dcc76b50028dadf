package events

import (
	"fmt"
	"strings"
)

// textIssue5 renders the issue 5 records (timeout, reset, filtered) as one
// line; refusals with issue 5 causes use the REFUSED line.
func textIssue5(b *strings.Builder, e *Event) {
	switch e.Type {
	case TypeTimeout:
		fmt.Fprintf(b, "TIMEOUT %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
		if e.Client != nil {
			fmt.Fprintf(b, " [%s %d]", e.Client.Comm, e.Client.Pid)
		}
	case TypeFiltered:
		fmt.Fprintf(b, "FILTERED %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
	case TypeReset:
		fmt.Fprintf(b, "RESET %s -> %s netns %d", endpoint(e.Src), endpoint(e.Dst), e.Netns)
		if e.Process != nil {
			fmt.Fprintf(b, " from [%s %d]", e.Process.Comm, e.Process.Pid)
		}
		if e.PeerProcess != nil {
			fmt.Fprintf(b, " to [%s %d]", e.PeerProcess.Comm, e.PeerProcess.Pid)
		}
	}
	if e.Cause != "" {
		fmt.Fprintf(b, " %s:", e.Cause)
	}
	fmt.Fprintf(b, " %s", e.Explanation)
	if e.KernelReason != "" {
		fmt.Fprintf(b, " (kernel: %s)", e.KernelReason)
	}
}
