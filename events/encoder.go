package events

import (
	"bufio"
	"fmt"
	"io"
)

// Encoders turn records into output: text.go writes lines for people,
// json.go JSON Lines for programs. Both may call Explain; nothing in the
// explanations calls an encoder.

// Encoder writes records. Flush pushes buffered output to the writer.
type Encoder interface {
	Encode(*Event) error
	Flush() error
}

// Options are what an encoder adds to every record.
type Options struct {
	// Host is this machine's host name, Node the Kubernetes node name
	// (NODE_NAME, from the downward API). When set, every JSON record
	// has "host" and "node" right after "type": records from many
	// machines can be merged.
	Host, Node string
}

// NewEncoder returns the encoder for a -o format: "text" or "json".
func NewEncoder(format string, w io.Writer) (Encoder, error) {
	return NewEncoderWith(format, w, Options{})
}

// NewEncoderWith returns the encoder for a -o format ("text" or "json")
// that adds o to every record.
func NewEncoderWith(format string, w io.Writer, o Options) (Encoder, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	switch format {
	case "text":
		return &textEncoder{w: bw}, nil
	case "json":
		return newJSONEncoder(bw, o), nil
	}
	return nil, fmt.Errorf("unknown output format %q (want text or json)", format)
}
