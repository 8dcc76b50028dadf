package tracer

import "testing"

// TestCommCache: the cache returns what commString returns, whatever was
// cached before in the same slot.
func TestCommCache(t *testing.T) {
	var cc commCache
	names := []string{"", "curl", "nginx", "nginx: worker pr", "a\x00b", "\xc3\xa9", "loadgen"}
	for i := range 300 {
		names = append(names, string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	for round := range 3 {
		for _, n := range names {
			c := ctComm(n)
			if got, want := cc.get(&c), commString(&c); got != want {
				t.Fatalf("round %d: get(%q) = %q, want %q", round, n, got, want)
			}
		}
	}
	c := ctComm("loadgen")
	cc.get(&c)
	if n := testing.AllocsPerRun(100, func() { cc.get(&c) }); n != 0 {
		t.Errorf("a cached name costs %v allocations", n)
	}
}
