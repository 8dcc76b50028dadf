/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flood control: past a per-destination rate, while the ring buffer fills,
 * or always when asked, events are counted per destination and kind in a
 * map instead of written one record each; and the two sides of one
 * connection on this host (a refusal's server and client, a reset's
 * sender and receiver) are written or counted the same way, decided once
 * per connection by the side that runs first.
 */
#ifndef RSTTRACE_SUMMARY_H
#define RSTTRACE_SUMMARY_H

/* Summary mode: always (--summary), or while more than summary_above bytes
 * wait in the ring buffer (userspace sets half its size). */
const volatile bool summary_always = false;
const volatile __u64 summary_above = ~0ULL;
/* Full records per destination and kind per second, per CPU (userspace
 * divides its per-destination setting by the number of CPUs); 0: no
 * limit, every event is written while the ring buffer has room. */
const volatile __u32 rate_limit = 0;

/*
 * Two summary maps taking turns, named by summary_slot[0] (0: summary_a,
 * 1: summary_b). Userspace flips the slot every interval and empties the
 * map retired one interval before: no program can still be counting in
 * it (a program runs to its end in microseconds, without sleeping), so
 * nothing is counted twice or lost between reading and deleting. A delete
 * after a read on one map would lose what was added in between, and an
 * atomic exchange per entry needs BPF atomics (5.12+) that older kernels
 * this tracer supports lack.
 */
struct summary_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct summary_key);
	__type(value, struct summary_val);
};

struct summary_map summary_a SEC(".maps");
struct summary_map summary_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} summary_slot SEC(".maps");

/* Summary mode: count instead of writing, when asked to always or while
 * the ring buffer is more than half full (a flood the reader is falling
 * behind on). */
static __always_inline bool summary_due(void)
{
	return summary_always ||
	       bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= summary_above;
}

/* Full records written to one destination in the current second, per CPU
 * (no atomics needed, and the counts of two CPUs never race). */
struct rate_key {
	struct summary_key dest;
	__u32 cpu;
	__u32 pad;
};

struct rate_val {
	__u64 second;
	__u64 n;
};

struct {
	/* One entry per destination and CPU rather than a per-CPU hash: a
	 * per-CPU value is one percpu allocation per preallocated element,
	 * which made this map the slowest to create (and it grows with the
	 * number of CPUs). Per-CPU LRU lists: updated on every connection
	 * from every CPU, one common list would serialize them on its lock;
	 * a CPU only ever takes entries keyed by itself. */
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1 << 14);
	__type(key, struct rate_key);
	__type(value, struct rate_val);
} rates SEC(".maps");

static __always_inline void summary_key_of(struct summary_key *k, __u8 kind,
					   __u32 netns, __u8 family,
					   const __u8 *addr, __u16 port)
{
	k->netns = netns;
	k->dport = port;
	k->family = family;
	k->kind = kind;
	__builtin_memcpy(k->daddr, addr, 16);
}

/*
 * What this CPU last found past its rate: a destination and the second it
 * was past it in. A storm is one destination again and again; this
 * answers it without the rates lookup (hashing the 32-byte key and
 * walking a bucket was ~150 ns a refusal here). `second` is written last
 * and cleared first: a program interrupting this one on the CPU between
 * the two sees 0, no second, and takes the lookup.
 */
struct rate_memo {
	struct summary_key dest;
	__u64 second;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rate_memo);
} rate_memos SEC(".maps");

static __always_inline bool summary_key_eq(const struct summary_key *a,
					   const struct summary_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

/*
 * Count instead of writing: summary mode, past the rate, or while the ring
 * buffer is filling. The rate is looked at first: a destination past it
 * (a storm) is counted without asking the ring buffer how full it is
 * (bpf_ringbuf_query reads the producer and consumer positions, lines the
 * writers on every CPU and the reader change). One more full record is
 * taken from this second's quota only when it will be written.
 */
static __always_inline bool summarize(const struct summary_key *k)
{
	struct rate_key rk = {};
	struct rate_memo *memo = NULL;
	struct rate_val *v = NULL;
	__u32 zero = 0;
	__u64 sec = 0;

	if (summary_always)
		return true;
	if (rate_limit) {
		sec = coarse_sec();
		memo = bpf_map_lookup_elem(&rate_memos, &zero);
		if (memo && memo->second == sec && summary_key_eq(&memo->dest, k))
			return true;
		/* Past the memo only: a helper call and a key copy. */
		rk.dest = *k;
		rk.cpu = bpf_get_smp_processor_id();
		v = bpf_map_lookup_elem(&rates, &rk);
		if (v && v->second == sec && v->n >= rate_limit) {
			if (memo) {
				memo->second = 0;
				asm volatile("" ::: "memory");
				memo->dest = *k;
				asm volatile("" ::: "memory");
				memo->second = sec;
			}
			return true;
		}
	}
	if (summary_due())
		return true;
	if (!rate_limit)
		return false;
	if (!v) {
		struct rate_val first = { .second = sec, .n = 1 };

		bpf_map_update_elem(&rates, &rk, &first, BPF_ANY);
		return false;
	}
	if (v->second != sec) {
		v->second = sec;
		v->n = 0;
	}
	v->n++;
	return false;
}

/* Which side of summary_val a count goes to. */
enum summary_side {
	SIDE_SERVER,
	SIDE_CLIENT,
	SIDE_CLIENT_LOCAL,
	/* SIDE_SERVER and SIDE_CLIENT_LOCAL in one, when the sending side
	 * knows its client is on this host. */
	SIDE_SERVER_AND_CLIENT_LOCAL,
};

/* Where an event was counted (summary_count's answer). */
enum summary_counted {
	COUNTED_LOST = 0, /* the table was full: counted lost instead */
	COUNTED_A = 1,	  /* summary_a */
	COUNTED_B = 2,	  /* summary_b */
	COUNTED_A_CELL = 3, /* this CPU's summary_cells_a */
	COUNTED_B_CELL = 4, /* this CPU's summary_cells_b */
};

/*
 * Where a count goes first: per CPU, SUMMARY_CELLS cells indexed by a hash
 * of the key, in two arrays that take turns as the maps do (summary_slot
 * names the one counted in; userspace reads and zeroes the other one an
 * interval after it retired it). A storm is one key again and again: its
 * cell is this CPU's own memory, found without a hash table walk and
 * counted without sharing a cache line. The hash-table lookup it replaces
 * was ~160 ns a refusal under the storm. A key whose cell holds another
 * key goes to the maps, as every key does where the kernel has no BPF
 * compare-and-exchange (have_cmpxchg): the cell is claimed with one, so
 * that a program interrupting this one on the CPU mid-claim sees it busy
 * and counts in the maps instead.
 */
#define SUMMARY_CELLS 256

enum summary_cell_tag {
	CELL_FREE = 0,
	CELL_BUSY = 1,	/* being claimed */
	CELL_KEYED = 2, /* key is set */
};

struct summary_cell {
	__u64 tag; /* enum summary_cell_tag */
	struct summary_key key;
	struct summary_val val;
};

struct summary_cells {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SUMMARY_CELLS);
	__type(key, __u32);
	__type(value, struct summary_cell);
};

struct summary_cells summary_cells_a SEC(".maps");
struct summary_cells summary_cells_b SEC(".maps");

/* k's cell index: the key's three words mixed, the top bits taken. */
static __always_inline __u32 summary_cell_index(const struct summary_key *k)
{
	const __u64 *x = (const __u64 *)k;
	__u64 h = (x[0] ^ (x[1] * 0xC2B2AE3D27D4EB4FULL) ^
		   (x[2] * 0x165667B19E3779F9ULL)) * 0x9E3779B97F4A7C15ULL;

	return h >> (64 - 8); /* SUMMARY_CELLS = 1 << 8 */
}

/* This CPU's cell for k in cells, taken if free; NULL if another key (or
 * an interrupted claim) holds it. cells is a constant at each call. */
static __always_inline struct summary_val *summary_cell(void *cells,
							const struct summary_key *k)
{
	__u32 i = summary_cell_index(k);
	struct summary_cell *c = bpf_map_lookup_elem(cells, &i);

	if (!c)
		return NULL;
	if (c->tag == CELL_KEYED)
		return summary_key_eq(&c->key, k) ? &c->val : NULL;
	if (c->tag != CELL_FREE ||
	    __sync_val_compare_and_swap(&c->tag, CELL_FREE, CELL_BUSY) != CELL_FREE)
		return NULL;
	/* Free cells are zero (userspace zeroes what it read): only the key. */
	c->key = *k;
	asm volatile("" ::: "memory");
	c->tag = CELL_KEYED;
	return &c->val;
}

/* The entry of k in m, made if missing; NULL if the table is full. m is
 * a constant at each inlined call: the verifier then inlines the lookups
 * (a map chosen at run time is called through its ops). */
static __always_inline struct summary_val *summary_entry(void *m,
							 const struct summary_key *k)
{
	struct summary_val *v = bpf_map_lookup_elem(m, k);

	if (!v) {
		struct summary_val nil = {};

		bpf_map_update_elem(m, k, &nil, BPF_NOEXIST);
		v = bpf_map_lookup_elem(m, k);
	}
	return v;
}

/* Counts one event to k (or, if the table is full, as lost); says where. */
static __always_inline enum summary_counted summary_count(const struct summary_key *k,
							  enum summary_side side)
{
	__u32 zero = 0, *slot = bpf_map_lookup_elem(&summary_slot, &zero);
	enum summary_counted where;
	struct summary_val *v = NULL;

	if (slot && *slot) {
		if (have_cmpxchg)
			v = summary_cell(&summary_cells_b, k);
		where = COUNTED_B_CELL;
		if (!v) {
			where = COUNTED_B;
			v = summary_entry(&summary_b, k);
		}
	} else {
		if (have_cmpxchg)
			v = summary_cell(&summary_cells_a, k);
		where = COUNTED_A_CELL;
		if (!v) {
			where = COUNTED_A;
			v = summary_entry(&summary_a, k);
		}
	}
	if (!v) {
		count_lost();
		return COUNTED_LOST;
	}
	switch (side) {
	case SIDE_SERVER_AND_CLIENT_LOCAL:
		__sync_fetch_and_add(&v->client_local, 1);
		__sync_fetch_and_add(&v->server, 1);
		break;
	case SIDE_SERVER:
		__sync_fetch_and_add(&v->server, 1);
		break;
	case SIDE_CLIENT:
		__sync_fetch_and_add(&v->client, 1);
		break;
	default:
		__sync_fetch_and_add(&v->client_local, 1);
	}
	return where;
}

/*
 * Takes back a SIDE_CLIENT count summary_count made to k in the map
 * `where` named, microseconds before in the same softirq: userspace empties
 * a map only an interval after it retired it, so the count is still there.
 */
static __always_inline void summary_uncount_client(const struct summary_key *k,
						   enum summary_counted where)
{
	struct summary_val *v;
	struct summary_cell *c;
	__u32 zero = 0, i;
	__u64 *n;

	switch (where) {
	case COUNTED_A:
		v = bpf_map_lookup_elem(&summary_a, k);
		break;
	case COUNTED_B:
		v = bpf_map_lookup_elem(&summary_b, k);
		break;
	case COUNTED_A_CELL:
	case COUNTED_B_CELL:
		/* This CPU's cell still holds k: the same softirq counted
		 * there, and only userspace frees a cell, an interval after
		 * the array's turn ended. */
		i = summary_cell_index(k);
		if (where == COUNTED_A_CELL)
			c = bpf_map_lookup_elem(&summary_cells_a, &i);
		else
			c = bpf_map_lookup_elem(&summary_cells_b, &i);
		if (!c)
			return;
		v = &c->val;
		break;
	default:
		n = bpf_map_lookup_elem(&lost, &zero);
		if (n && *n)
			*n -= 1;
		return;
	}
	if (v)
		__sync_fetch_and_add(&v->client, -1);
}

/*
 * What the sending side of a connection's RST did, for its receiving side
 * on this host. The refused client's tcp_receive_reset (and a reset
 * receiver's) may run on another CPU than the RST's sender, or after
 * other refusals' senders interleaved: the decision is kept per
 * connection, keyed by the 4-tuple as the receiver sees it (its socket's
 * local then remote side). IPv4 addresses are kept v4-mapped, so an
 * AF_INET6 socket connected to a v4-mapped address finds what the sender
 * parsed from an IPv4 packet.
 */
enum decision {
	DECIDED_WRITTEN = 1,	/* the sender's record was written */
	DECIDED_SUMMARIZED = 2,	/* counted in the summary */
	DECIDED_LOST = 3,	/* its record did not fit: counted lost */
	/* Counted in the summary with the receiving side's count too: the
	 * sender found its local client (syn_client), so the client has
	 * nothing left to count. */
	DECIDED_COUNTED_BOTH = 4,
	/* Or'ed in: the receiving side ran first and decided. An active
	 * reset's RST (tcp_send_active_reset) is transmitted before
	 * tcp:tcp_send_reset fires, and on loopback the receiver handles it
	 * inside that transmit; the sender then follows the receiver. */
	DECIDED_BY_RECEIVER = 0x10,
	/* Or'ed in by an active reset's sender (tcp_send_active_reset).
	 * What its peer sent before the RST reached it (the FIN of its own
	 * close(), data) meets no socket here and is answered with a second
	 * RST on the same connection (tcp_v4_send_reset from the listener or
	 * with no socket): the same reset, not counted again. Seen once, the
	 * flag goes, so an entry left for a remote peer silences at most one
	 * later RST on its 4-tuple. */
	DECIDED_ACTIVE = 0x20,
};

struct conn_key {
	__u8 local[16];
	__u8 remote[16];
	__u16 lport;
	__u16 rport;
};

/* Bounded: the receiver reads (and deletes) its entry microseconds after
 * the sender made it; an entry whose receiver never comes (a remote client,
 * a lost segment) ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	/* Per-CPU LRU lists: written and deleted on every refusal, from
	 * every CPU; one common list would serialize them on its lock. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1 << 14);
	__type(key, struct conn_key);
	__type(value, __u8);
} decisions SEC(".maps");

static __always_inline void mapped_addr(__u8 *dst, const __u8 *src, __u8 family)
{
	if (family == AF_INET) {
		__builtin_memset(dst, 0, 10);
		dst[10] = 0xff;
		dst[11] = 0xff;
		__builtin_memcpy(dst + 12, src, 4);
	} else {
		__builtin_memcpy(dst, src, 16);
	}
}

/* The key of the receiver (local) <- sender (remote). */
static __always_inline void conn_key_of(struct conn_key *k, __u8 family,
					const __u8 *local, __u16 lport,
					const __u8 *remote, __u16 rport)
{
	mapped_addr(k->local, local, family);
	mapped_addr(k->remote, remote, family);
	k->lport = lport;
	k->rport = rport;
}

static __always_inline void decide(const struct conn_key *k, __u8 d)
{
	bpf_map_update_elem(&decisions, k, &d, BPF_ANY);
}

/* The sender's decision for the receiver's connection k as written, with
 * the DECIDED_ACTIVE mark, taken out of the table; 0 if no local sender
 * decided (the RST came from elsewhere). Only the second RST of an active
 * reset (rst_out_nosock) reads the mark. */
static __always_inline __u8 decided_marked(const struct conn_key *k)
{
	__u8 *v = bpf_map_lookup_elem(&decisions, k);
	__u8 d;

	if (!v)
		return 0;
	d = *v;
	bpf_map_delete_elem(&decisions, k);
	return d;
}

/* The sender's decision for the receiver's connection k, taken out of
 * the table; 0 if no local sender decided (the RST came from elsewhere). */
static __always_inline __u8 decided(const struct conn_key *k)
{
	return decided_marked(k) & ~DECIDED_ACTIVE;
}

/*
 * The socket that last began a connect() on this CPU (CLOSE->SYN_SENT, in
 * the caller's context: connect_started). Loopback and veth hand a packet
 * to the receiving stack on the CPU that sent it (loopback_xmit, veth_xmit
 * -> netif_rx into this CPU's backlog, run when the sender re-enables
 * bottom halves at the end of __dev_queue_xmit, still inside that
 * connect()), and with nothing listening tcp_v4_send_reset and
 * tcp_v6_send_reset answer the SYN there. The refusing side then finds
 * the client's `connecting` entry through this slot and writes its
 * decision into it (conn.decided), where the client's tcp_receive_reset
 * reads it with the entry it looks up anyway: no decisions entry made,
 * looked up and deleted, three bucket locks taken with interrupts off, on
 * every local refusal; and no program on every packet a device sends to
 * learn which SYN is whose. Anything else (another CPU, a SYN a queueing
 * discipline or ksoftirqd held while another connect() began, a
 * translated one) finds no match and goes through the decisions map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_connecting SEC(".maps");

/* sk begins a connect() on this CPU (connect_started). */
static __always_inline void connect_on_cpu(__u64 sk)
{
	__u32 zero = 0;
	__u64 *s = bpf_map_lookup_elem(&cpu_connecting, &zero);

	if (s)
		*s = sk;
}

/*
 * The `connecting` entry of the local client whose SYN p is (as the
 * refusing side parsed it); NULL if it is not the socket that last began
 * a connect() on this CPU. The address alone is no proof (another
 * connect() on the CPU since, a socket freed and its memory reused): the
 * SYN's sequence number must be the socket's first (snd_una stays at the
 * initial sequence number, random per connection, until the SYN is
 * acknowledged; tcp_connect_init), and the socket must still have its
 * entry. One read of the socket: each is a helper call here (the address
 * comes from a map, not as a typed pointer), ~25 ns. The slot is emptied.
 */
static __always_inline struct conn *syn_client(const struct pkt *p)
{
	__u32 zero = 0;
	__u64 *s = bpf_map_lookup_elem(&cpu_connecting, &zero);
	__u64 key;

	if (!s || !*s)
		return NULL;
	key = *s;
	if (BPF_CORE_READ((const struct tcp_sock *)key, snd_una) != p->seq)
		return NULL;
	*s = 0;
	return conn_find(key);
}

/* The sender's decision d for connection k: in its client's entry when
 * syn_client found it, else in the decisions map. */
static __always_inline void decide_for(struct conn *client,
				       const struct conn_key *k, __u8 d)
{
	if (client)
		client->decided = d;
	else
		decide(k, d);
}

/* A record the receiving side writes for a connection whose sender's
 * record is written: if it does not fit, the refusal or reset is still
 * reported once (by the sender's record), so it is not counted lost. */
static __always_inline struct record *reserve_quiet(__u8 type)
{
	struct record *e = bpf_ringbuf_reserve(&records, sizeof(*e), 0);

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->ts = bpf_ktime_get_ns();
	return e;
}

#endif /* RSTTRACE_SUMMARY_H */
