package output

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// line returns line number i: varying lengths, a recognisable body.
func line(i int) string {
	return fmt.Sprintf(`{"n":%d,"pad":"%s"}`+"\n", i, strings.Repeat("x", (i*37)%90))
}

// readLines returns the lines of a file, failing on a missing final '\n'.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("%s ends with a torn line: %q", path, b[max(0, len(b)-40):])
	}
	return strings.SplitAfter(string(b), "\n")[:bytes.Count(b, []byte{'\n'})]
}

func TestRotationKeepsWholeLinesAndBounds(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "rsttrace.jsonl")
	const maxBytes, keep, n = 1000, 3, 400
	f, err := Open(path, maxBytes, keep)
	if err != nil {
		t.Fatal(err)
	}
	// A small bufio buffer cuts lines at arbitrary places, as the
	// encoder's does when it fills.
	w := bufio.NewWriterSize(f, 64)
	for i := range n {
		if _, err := w.WriteString(line(i)); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := os.Stat(path + ".4"); !os.IsNotExist(err) {
		t.Errorf("%s.4 exists: want at most %d old files (%v)", path, keep, err)
	}
	// Oldest to newest: .3 .2 .1 and the current file hold consecutive
	// lines ending with the last one written.
	var all []string
	for _, p := range []string{path + ".3", path + ".2", path + ".1", path} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxBytes {
			t.Errorf("%s is %d bytes, more than %d", p, st.Size(), maxBytes)
		}
		if st.Mode().Perm() != 0o640 {
			t.Errorf("%s mode %v, want 0640", p, st.Mode().Perm())
		}
		all = append(all, readLines(t, p)...)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("directory mode: %v %v, want 0750", st.Mode().Perm(), err)
	}
	first := n - len(all)
	if first <= 0 {
		t.Fatalf("no rotation happened: %d lines kept of %d", len(all), n)
	}
	for i, l := range all {
		if l != line(first+i) {
			t.Fatalf("line %d of the kept files is %q, want %q (split or reordered)", i, l, line(first+i))
		}
	}
	// Every file but the newest was closed because the next line did
	// not fit: it is full to within one line.
	for _, p := range []string{path + ".3", path + ".2", path + ".1"} {
		st, _ := os.Stat(p)
		if st.Size() < maxBytes-int64(len(line(0)))-90 {
			t.Errorf("%s rotated early at %d bytes", p, st.Size())
		}
	}
}

func TestLongLineGetsItsOwnFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f, err := Open(path, 100, 5)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("y", 250) + "\n"
	for _, s := range []string{"a\n", long, "b\n"} {
		if _, err := f.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{path + ".2": "a\n", path + ".1": long, path: "b\n"} {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", p, b, err, want)
		}
	}
}

func TestKeepZeroDiscardsOldFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f, err := Open(path, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"12345678\n", "abcdefgh\n"} {
		if _, err := f.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if b, _ := os.ReadFile(path); string(b) != "abcdefgh\n" {
		t.Errorf("current file %q", b)
	}
	if m, _ := filepath.Glob(path + ".*"); len(m) != 0 {
		t.Errorf("old files kept with keep=0: %v", m)
	}
}

func TestReopenAfterRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f, err := Open(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("one\ntw"))
	// logrotate moves the file, then sends SIGHUP.
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("o\n")) // still the open (moved) file until Reopen
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("three\n"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + ".moved"); string(b) != "one\ntwo\n" {
		t.Errorf("moved file %q, want one, two", b)
	}
	if b, _ := os.ReadFile(path); string(b) != "three\n" {
		t.Errorf("new file %q, want three", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("reopened file mode %v", st.Mode().Perm())
	}
}

func TestCloseDropsUnterminatedTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f, _ := Open(path, 0, 0)
	f.Write([]byte("whole\npart"))
	err := f.Close()
	if err == nil || !strings.Contains(err.Error(), "unterminated last line of 4 bytes") {
		t.Errorf("Close = %v, want the dropped tail reported", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "whole\n" {
		t.Errorf("file %q after Close, want only the whole line", b)
	}
	if _, err := f.Write([]byte("x\n")); err != os.ErrClosed {
		t.Errorf("Write after Close = %v", err)
	}
}

func TestOpenTerminatesTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	os.WriteFile(path, []byte("{\"n\":1}\n{\"n\":2,\"pa"), 0o640)
	f, err := Open(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("{\"n\":3}\n"))
	f.Close()
	if b, _ := os.ReadFile(path); string(b) != "{\"n\":1}\n{\"n\":2,\"pa\n{\"n\":3}\n" {
		t.Errorf("file %q: the torn fragment must end its own line", b)
	}
}

const childEnv = "RSTTRACE_OUTPUT_TEST_CHILD"

// TestMain runs the writer child of TestSIGKILLLosesOnlyUnflushed.
func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		writeUntilKilled(path)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writeUntilKilled writes lines through a bufio.Writer, as the encoder
// does, and after each Flush tells the parent on stdout how many lines it
// has flushed.
func writeUntilKilled(path string) {
	f, err := Open(path, 4096, 50)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	w := bufio.NewWriterSize(f, 256)
	for i := 0; i < 1_000_000; i++ {
		w.WriteString(line(i))
		if i%3 == 2 {
			if err := w.Flush(); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println(i + 1)
		}
	}
}

// TestSIGKILLLosesOnlyUnflushed kills a writer with SIGKILL. Guaranteed:
// every line whose Flush returned is in the files, in order, each whole;
// nothing but a fragment of one line follows the last whole line (here,
// with lines written in one write(2) each, none at all).
func TestSIGKILLLosesOnlyUnflushed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	acked := 0
	deadline := time.Now().Add(10 * time.Second)
	for acked < 3000 && time.Now().Before(deadline) && sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child: %s", sc.Text())
		}
		acked = n
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if acked < 3000 {
		t.Fatalf("child flushed only %d lines in 10s", acked)
	}

	// Read every file, oldest first. A SIGKILL in the middle of a
	// rotation can leave a gap in the numbers (PATH.k moved to PATH.k+1,
	// PATH.k-1 not yet moved) or no PATH yet: the lines are all there,
	// in order, whatever the numbers.
	files, _ := filepath.Glob(path + ".*")
	var nums []int
	for _, f := range files {
		if n, err := strconv.Atoi(strings.TrimPrefix(f, path+".")); err == nil {
			nums = append(nums, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	var lines []string
	for _, n := range nums {
		lines = append(lines, readLines(t, path+"."+strconv.Itoa(n))...)
	}
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	cur := string(b)
	tail := ""
	if k := strings.LastIndexByte(cur, '\n'); k+1 < len(cur) {
		tail, cur = cur[k+1:], cur[:k+1]
	}
	if cur != "" {
		lines = append(lines, strings.SplitAfter(cur, "\n")[:strings.Count(cur, "\n")]...)
	}
	first := 0
	if len(lines) > 0 {
		// The oldest files may have been rotated away (keep): start
		// where the kept ones start; from there no line may be missing.
		fmt.Sscanf(lines[0], `{"n":%d`, &first)
	}
	for i, l := range lines {
		if l != line(first+i) {
			t.Fatalf("line %d is %q, want %q", i, l, line(first+i))
		}
	}
	if got := first + len(lines); got < acked {
		t.Errorf("%d lines in the files, but %d were flushed before SIGKILL", got, acked)
	}
	if tail != "" && !strings.HasPrefix(line(first+len(lines)), tail) {
		t.Errorf("the file ends with %q, not a prefix of the next line", tail)
	}
	t.Logf("flushed %d before SIGKILL, found %d whole lines in %d files, torn tail %q", acked, first+len(lines), len(files)+1, tail)
}
