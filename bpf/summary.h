/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Summary mode: under a flood, or always when asked, refusals are counted
 * per destination in a map instead of written one record each.
 */
#ifndef RSTTRACE_SUMMARY_H
#define RSTTRACE_SUMMARY_H

/* Summary mode: always (--summary), or while more than summary_above bytes
 * wait in the ring buffer (userspace sets half its size). */
const volatile bool summary_always = false;
const volatile __u64 summary_above = ~0ULL;

/* Refusals counted instead of written (summary mode), by destination. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct summary_key);
	__type(value, struct summary_val);
} summary SEC(".maps");

/* Summary mode: count instead of writing, when asked to always or while
 * the ring buffer is more than half full (a flood the reader is falling
 * behind on). */
static __always_inline bool summary_due(void)
{
	return summary_always ||
	       bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= summary_above;
}

/* Counts a refusal to p's destination (or, if the table is full, as lost). */
static __always_inline void summary_count(const struct pkt *p, __u32 netns,
					  bool server)
{
	struct summary_key k = {};
	struct summary_val *v;

	k.netns = netns;
	k.dport = p->dport;
	k.family = p->family;
	__builtin_memcpy(k.daddr, p->daddr, 16);
	v = bpf_map_lookup_elem(&summary, &k);
	if (!v) {
		struct summary_val zero = {};

		bpf_map_update_elem(&summary, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&summary, &k);
		if (!v) {
			count_lost();
			return;
		}
	}
	if (server)
		__sync_fetch_and_add(&v->server, 1);
	else
		__sync_fetch_and_add(&v->client, 1);
}

/*
 * Both sides of a local refusal must be written the same way, or a client
 * record whose server side went into a summary would look like a refusal
 * from another host (and the other way round, be counted twice). On
 * loopback the client's tcp_receive_reset runs on the CPU that sent the
 * RST, right after it: the server side leaves its decision here, by ports.
 */
struct last_refusal {
	__u32 ports; /* client port << 16 | server port; 0: none */
	__u32 summarized;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_refusal);
} last_refusal SEC(".maps");

static __always_inline __u32 refusal_ports(const struct pkt *p)
{
	return ((__u32)p->sport << 16) | p->dport;
}

static __always_inline bool server_summarized(const struct pkt *p)
{
	__u32 zero = 0;
	struct last_refusal *l = bpf_map_lookup_elem(&last_refusal, &zero);
	bool due = summary_due();

	if (l) {
		l->ports = refusal_ports(p);
		l->summarized = due;
	}
	return due;
}

static __always_inline bool client_summarized(const struct pkt *p)
{
	__u32 zero = 0;
	struct last_refusal *l = bpf_map_lookup_elem(&last_refusal, &zero);

	if (l && l->ports == refusal_ports(p)) {
		l->ports = 0;
		return l->summarized;
	}
	return summary_due();
}
#endif /* RSTTRACE_SUMMARY_H */
