// Package output writes JSON Lines (or text lines) to a file with
// size-based rotation, a bounded number of old files, and reopening for
// logrotate (SIGHUP).
//
// What is guaranteed:
//
//   - Only whole lines reach a file. Callers may write any chunks (a
//     bufio.Writer cuts lines where its buffer fills): a File keeps the
//     unterminated tail of a Write in memory until its '\n' arrives, so
//     rotation happens only between lines and no line is split across
//     files.
//   - A file holds at most maxBytes, unless a single line is longer: such a
//     line gets a file of its own.
//   - Nothing complete is buffered: every complete line handed to Write is
//     in the kernel (page cache) when Write returns, so a crash or SIGKILL
//     loses only what the caller had not yet written (its own buffer) plus
//     at most one unterminated line. Call the encoder's Flush at least once
//     a second (and after every event when idle) to bound that loss.
//   - A file never ends in a torn line after a clean Close. After a SIGKILL
//     during write(2) the file may end with part of one line (the kernel can
//     stop a write to a regular file part way for a fatal signal); the next
//     Open terminates that fragment with '\n' so the next line starts
//     cleanly, and line readers (Fluent Bit, Vector, the OpenTelemetry
//     collector) see one unparsable line instead of two merged ones.
//   - Data is not fsynced: a power loss may lose what the kernel had not
//     written back.
//
// Old files are PATH.1 (newest) to PATH.KEEP (oldest), as logrotate names
// them without dateext; files are created 0640, the directory 0750.
package output

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// File is a line-oriented output file with rotation. Its methods may be
// called from several goroutines.
type File struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
	partial  []byte // the unterminated tail of the last Write
	closed   bool
}

const (
	fileMode = 0o640
	dirMode  = 0o750
)

// Open opens (appending) or creates the file at path. When it would grow
// past maxBytes (0: never rotate) it is renamed PATH.1 and a new one is
// started, keeping at most keep old files.
func Open(path string, maxBytes int64, keep int) (*File, error) {
	if maxBytes < 0 || keep < 0 {
		return nil, fmt.Errorf("opening output %s: size limit and number of old files must not be negative", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("creating output directory: %w", err)
	}
	o := &File{path: path, maxBytes: maxBytes, keep: keep}
	if err := o.open(); err != nil {
		return nil, err
	}
	return o, nil
}

// open opens o.path for appending; a torn last line (a crash during write)
// is terminated so the next line starts on its own.
func (o *File) open() error {
	f, err := os.OpenFile(o.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("opening output: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening output: %w", err)
	}
	size := st.Size()
	if size == 0 {
		// A new file: the umask must not widen or narrow the mode
		// operators rely on (readable by the log shipper's group).
		if err := f.Chmod(fileMode); err != nil {
			f.Close()
			return fmt.Errorf("setting mode of output: %w", err)
		}
	} else if torn, err := endsTorn(o.path, size); err != nil {
		f.Close()
		return fmt.Errorf("opening output: %w", err)
	} else if torn {
		if _, err := f.Write([]byte{'\n'}); err != nil {
			f.Close()
			return fmt.Errorf("terminating a torn last line of output: %w", err)
		}
		size++
	}
	o.f, o.size = f, size
	return nil
}

// endsTorn says whether the file's last byte is not a newline.
func endsTorn(path string, size int64) (bool, error) {
	r, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer r.Close()
	var b [1]byte
	if _, err := r.ReadAt(b[:], size-1); err != nil && err != io.EOF {
		return false, err
	}
	return b[0] != '\n', nil
}

// Write writes the complete lines of p (with a tail kept from the previous
// Write) and keeps p's unterminated tail for the next Write. It returns
// len(p) when every complete line was written.
func (o *File) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, os.ErrClosed
	}
	last := bytes.LastIndexByte(p, '\n')
	if last < 0 {
		o.partial = append(o.partial, p...)
		return len(p), nil
	}
	lines := p[:last+1]
	if len(o.partial) > 0 {
		lines = append(o.partial, lines...)
	}
	if err := o.writeLines(lines); err != nil {
		// What was not written is lost rather than retried out of
		// order; the caller sees the error.
		o.partial = o.partial[:0]
		return 0, err
	}
	o.partial = append(o.partial[:0], p[last+1:]...)
	return len(p), nil
}

// writeLines writes whole lines, rotating between them.
func (o *File) writeLines(b []byte) error {
	if o.f == nil {
		// A failed rotation or reopen left no file: try again.
		if err := o.open(); err != nil {
			return err
		}
	}
	for len(b) > 0 {
		n := len(b)
		if o.maxBytes > 0 && o.size+int64(n) > o.maxBytes {
			// The longest run of whole lines that still fits.
			room := o.maxBytes - o.size
			n = 0
			if room > 0 {
				n = bytes.LastIndexByte(b[:min(int64(len(b)), room)], '\n') + 1
			}
			if n == 0 {
				if o.size > 0 {
					if err := o.rotate(); err != nil {
						return err
					}
					continue
				}
				// A line longer than maxBytes: a file of its own.
				n = bytes.IndexByte(b, '\n') + 1
			}
		}
		w, err := o.f.Write(b[:n])
		o.size += int64(w)
		if err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// rotate renames PATH.i to PATH.i+1 (dropping what is beyond keep), PATH to
// PATH.1, and starts a new PATH.
func (o *File) rotate() error {
	if err := o.f.Close(); err != nil {
		return fmt.Errorf("closing output for rotation: %w", err)
	}
	o.f = nil
	if o.keep == 0 {
		if err := os.Remove(o.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating output: %w", err)
		}
	} else {
		if err := os.Remove(o.old(o.keep)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating output: %w", err)
		}
		for i := o.keep - 1; i >= 1; i-- {
			if err := os.Rename(o.old(i), o.old(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("rotating output: %w", err)
			}
		}
		if err := os.Rename(o.path, o.old(1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating output: %w", err)
		}
	}
	return o.open()
}

func (o *File) old(i int) string { return o.path + "." + strconv.Itoa(i) }

// Reopen closes the file and opens the configured path again: after
// logrotate renamed the file (SIGHUP), the next line goes to a new file at
// the path.
func (o *File) Reopen() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return os.ErrClosed
	}
	if o.f != nil {
		if err := o.f.Close(); err != nil {
			return fmt.Errorf("closing output to reopen it: %w", err)
		}
		o.f = nil
	}
	return o.open()
}

// Close closes the file. An unterminated tail left by the last Write (a
// caller that did not end its output with a newline) is not written, so
// the file ends with a whole line; Close reports it.
func (o *File) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return os.ErrClosed
	}
	o.closed = true
	var errs []error
	if len(o.partial) > 0 {
		errs = append(errs, fmt.Errorf("closing output: dropped an unterminated last line of %d bytes", len(o.partial)))
	}
	if o.f != nil {
		if err := o.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing output: %w", err))
		}
	}
	return errors.Join(errs...)
}
