package events

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNamesMatchUnix(t *testing.T) {
	for i := 1; i < 134; i++ {
		want := unix.ErrnoName(syscall.Errno(i))
		if want == "" {
			continue
		}
		if got := ErrnoName(i); got != want {
			t.Errorf("ErrnoName(%d) = %q, want %q", i, got, want)
		}
	}
	for i := 1; i < 32; i++ {
		want := unix.SignalName(syscall.Signal(i))
		if want == "" {
			continue
		}
		if got := SignalName(i); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", i, got, want)
		}
	}
	if got := ErrnoName(999); got != "errno 999" {
		t.Errorf("ErrnoName(999) = %q", got)
	}
}
