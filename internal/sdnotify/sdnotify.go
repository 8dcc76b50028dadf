// Package sdnotify tells systemd (Type=notify) when tracing has started and
// when it is stopping. Outside systemd (no NOTIFY_SOCKET) it does nothing.
package sdnotify

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready says tracing has started: every program is attached and the start
// record is written. systemd then considers the unit started.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping says rsttrace is shutting down (before the stop record).
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading says a SIGHUP is being handled (the output file is reopened);
// call Ready again when done.
func Reloading() error { return notify(daemon.SdNotifyReloading) }

func notify(state string) error {
	// unsetEnvironment false: the tracer's children (none today) and a
	// later notification still see the socket.
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notifying systemd (%s): %w", state, err)
	}
	return nil
}
