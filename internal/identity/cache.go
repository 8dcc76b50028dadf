package identity

// genCache is a bounded map that forgets the least recently used entries
// a generation at a time: entries go into the current generation; when it
// is full it becomes the old one and the previous old one is dropped; a
// hit in the old generation moves the entry forward. At most 2*max
// entries, O(1) operations, and no allocation per hit or per entry beyond
// the maps themselves (sized once per generation).
type genCache[K comparable, V any] struct {
	cur, old map[K]V
	max      int
}

func newGenCache[K comparable, V any](max int) *genCache[K, V] {
	if max < 1 {
		max = 1
	}
	return &genCache[K, V]{cur: make(map[K]V, max), old: map[K]V{}, max: max}
}

func (c *genCache[K, V]) get(k K) (V, bool) {
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.put(k, v)
	}
	return v, ok
}

func (c *genCache[K, V]) put(k K, v V) {
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.max {
		c.old = c.cur
		c.cur = make(map[K]V, c.max)
	}
	c.cur[k] = v
}

func (c *genCache[K, V]) len() int { return len(c.cur) + len(c.old) }
