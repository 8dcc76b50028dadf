package correlate

// deadlines holds items until they fall due, first in, first out. Every
// item of one queue waits the same time from its record's timestamp, and
// records come in time order, so arrival order is due order: no heap is
// needed, and adding and taking are O(1). The backing array is reused:
// when it is full and at least half of it was taken, the rest moves to the
// front instead of growing.
type deadlines[T any] struct {
	items []dated[T]
	head  int
}

type dated[T any] struct {
	due uint64
	v   T
}

// add queues v until due.
func (q *deadlines[T]) add(due uint64, v T) {
	if len(q.items) == cap(q.items) && q.head > 0 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, dated[T]{due, v})
}

// next takes the oldest item if it is due at now.
func (q *deadlines[T]) next(now uint64) (T, bool) {
	if q.head < len(q.items) && q.items[q.head].due <= now {
		return q.take(), true
	}
	var zero T
	return zero, false
}

// oldest takes the oldest item, due or not (to bound a table by count).
func (q *deadlines[T]) oldest() (T, bool) {
	if q.head < len(q.items) {
		return q.take(), true
	}
	var zero T
	return zero, false
}

func (q *deadlines[T]) take() T {
	it := &q.items[q.head]
	v := it.v
	*it = dated[T]{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return v
}

// len is the number of items waiting.
func (q *deadlines[T]) len() int { return len(q.items) - q.head }
