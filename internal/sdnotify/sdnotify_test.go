package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestNotifyOverRealSocket listens on a unixgram socket as systemd does and
// checks what arrives.
func TestNotifyOverRealSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	for _, c := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{Reloading, "RELOADING=1"},
		{Stopping, "STOPPING=1"},
	} {
		if err := c.send(); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading notification: %v", err)
		}
		if got := string(buf[:n]); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestNoSocketIsNoError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready(); err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET: %v", err)
	}
}

func TestSocketGoneIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if err := Stopping(); err == nil {
		t.Error("Stopping to a missing socket: want an error")
	}
}
