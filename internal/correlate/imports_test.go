package correlate

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The correlator is pure: it turns records into events and asks the host
// only through interfaces (Host, NetnsSource, Names). This holds its
// imports to that, so no file, socket, namespace or kernel access creeps in.
func TestImportsNoIO(t *testing.T) {
	allowed := map[string]bool{
		"bytes": true, "cmp": true, "encoding/binary": true, "errors": true, "fmt": true, "log/slog": true, "math": true,
		"net/netip": true, "slices": true, "sort": true, "strconv": true, "strings": true,
		"sync/atomic": true, "time": true, "unsafe": true,
		"github.com/rsttrace/rsttrace/events":          true,
		"github.com/rsttrace/rsttrace/internal/record": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %s: the correlator must stay free of I/O (put host access behind an interface)", f, path)
			}
		}
	}
}
