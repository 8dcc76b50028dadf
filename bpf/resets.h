/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Resets on existing connections: RSTs this host sends (RECORD_RST_OUT) and
 * RSTs its sockets receive past the handshake (RECORD_RST_IN).
 */
#ifndef RSTTRACE_RESETS_H
#define RSTTRACE_RESETS_H

/*
 * What rst_in last did on this CPU with a reset no local sender had decided
 * for, when it counted instead of writing. tcp_reset() fires
 * tcp:tcp_receive_reset also when no RST came: data reaching a socket its
 * application closed (tcp_rcv_state_process in FIN_WAIT1/FIN_WAIT2 with
 * RCV_SHUTDOWN, TCP_ABORT_ON_DATA) kills it, and the tracepoint gives no
 * segment to tell the two apart. The kernel answers that data with a RST
 * right after, on this CPU, from the same socket (tcp_v4_do_rcv's reset:
 * label); rst_out_nosock then takes back the count through this note, as it
 * drops a written RECORD_RST_IN through RECORD_F_SELF_ABORT.
 */
struct rst_in_counted {
	__u64 sk;
	struct summary_key key;
	__u32 where; /* enum summary_counted */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rst_in_counted);
} rst_in_note SEC(".maps");

static __always_inline void rst_in_noted(const struct sock *sk,
					 const struct summary_key *k,
					 enum summary_counted where)
{
	__u32 zero = 0;
	struct rst_in_counted *n = bpf_map_lookup_elem(&rst_in_note, &zero);

	if (!n)
		return;
	n->sk = (__u64)sk;
	n->key = *k;
	n->where = where;
}

/* sk killed itself (self-abort) and rst_in counted that as a reset received:
 * the count goes. */
static __always_inline void rst_in_uncount(const struct sock *sk)
{
	__u32 zero = 0;
	struct rst_in_counted *n = bpf_map_lookup_elem(&rst_in_note, &zero);

	if (!n || n->sk != (__u64)sk)
		return;
	n->sk = 0;
	summary_uncount_client(&n->key, n->where);
}

/*
 * A RST answering a non-SYN segment for which no socket exists (the
 * connection is gone here): the sender is the local side, daddr of the
 * answered segment. sk: the listener that answered it, if one did (its
 * namespace is the sender's; the answered segment's device is not always
 * set by then).
 */
static __always_inline void rst_out_nosock(const struct sock *sk,
					   const struct sk_buff *skb,
					   const struct pkt *p, __u32 reason,
					   bool btf, bool self_abort)
{
	struct record *e;

	struct summary_key sk_key = {};
	struct conn_key ck = {};
	struct net *net;
	__u8 d;

	if ((p->tcp_flags & TCPHDR_RST) || !port_traced(p->dport))
		return;
	net = sk ? sk_net_of(sk, btf) : skb_dev_net(skb, btf);
	if (self_abort) {
		/* tcp_reset() on this socket ran tcp:tcp_receive_reset: what
		 * its receiver side decided is taken out, and said in the
		 * record when it was written. */
		struct conn_key self = {};
		__u8 sd;

		conn_key_of(&self, p->family, p->daddr, p->dport, p->saddr, p->sport);
		sd = decided(&self);
		self_abort = sd == (DECIDED_BY_RECEIVER | DECIDED_WRITTEN);
		if (sd == (DECIDED_BY_RECEIVER | DECIDED_SUMMARIZED) ||
		    sd == (DECIDED_BY_RECEIVER | DECIDED_LOST))
			rst_in_uncount(sk);
	}
	/* Sent by daddr/dport of the answered segment, to saddr/sport. */
	conn_key_of(&ck, p->family, p->saddr, p->sport, p->daddr, p->dport);
	summary_key_of(&sk_key, SUMMARY_RESET, net_inum(net, btf), p->family,
		       p->daddr, p->dport);
	d = decided_marked(&ck);
	if (d & DECIDED_ACTIVE) {
		/* This host reset the connection already and its receiver has
		 * not seen that RST yet: left for it, as decided. */
		decide(&ck, d & ~DECIDED_ACTIVE);
		return;
	}
	if (d & DECIDED_BY_RECEIVER) {
		/* The receiver ran first: the connection is written or
		 * counted as it said, once. */
		if ((d & ~DECIDED_BY_RECEIVER) != DECIDED_WRITTEN)
			return;
		e = reserve_quiet(RECORD_RST_OUT);
		if (!e)
			return;
	} else if (summarize(&sk_key)) {
		summary_count(&sk_key, SIDE_SERVER);
		decide(&ck, DECIDED_SUMMARIZED);
		return;
	} else {
		e = reserve(RECORD_RST_OUT);
		if (!e) {
			decide(&ck, DECIDED_LOST);
			return;
		}
	}
	e->family = p->family;
	e->tcp_flags = p->tcp_flags;
	__builtin_memcpy(e->saddr, p->daddr, 16);
	__builtin_memcpy(e->daddr, p->saddr, 16);
	e->sport = p->dport;
	e->dport = p->sport;
	record_net(e, net, btf);
	e->reason = reason;
	if (self_abort)
		e->flags |= RECORD_F_SELF_ABORT;
	bpf_ringbuf_submit(e, 0);
	if (!(d & DECIDED_BY_RECEIVER))
		decide(&ck, DECIDED_WRITTEN);
}

/*
 * An active reset (no segment answered: tcp_send_active_reset from
 * close() with unread data, SO_LINGER {1,0}, keepalive or memory aborts).
 * It comes with the socket; from 6.10 with an enum sk_rst_reason.
 */
static __always_inline void rst_out_active(const struct sock *sk, __u32 reason)
{
	struct record *e;
	struct pkt p = {};

	struct summary_key sk_key = {};
	struct conn_key ck = {};
	__u32 netns;
	__u8 d;

	sk_pkt(sk, &p);
	if (!port_traced(p.sport) && !port_traced(p.dport))
		return;
	netns = sk_netns_of(sk, true);
	/* The receiver's side: daddr/dport, from saddr/sport (the sender,
	 * the key of its summary). */
	conn_key_of(&ck, p.family, p.daddr, p.dport, p.saddr, p.sport);
	summary_key_of(&sk_key, SUMMARY_RESET, netns, p.family, p.saddr,
		       p.sport);
	d = decided(&ck);
	if (d & DECIDED_BY_RECEIVER) {
		/* The receiver ran first: the connection is written or
		 * counted as it said, once. */
		if ((d & ~DECIDED_BY_RECEIVER) != DECIDED_WRITTEN)
			return;
		e = reserve_quiet(RECORD_RST_OUT);
		if (!e)
			return;
	} else if (summarize(&sk_key)) {
		summary_count(&sk_key, SIDE_SERVER);
		decide(&ck, DECIDED_ACTIVE | DECIDED_SUMMARIZED);
		return;
	} else {
		e = reserve(RECORD_RST_OUT);
		if (!e) {
			decide(&ck, DECIDED_ACTIVE | DECIDED_LOST);
			return;
		}
	}
	pkt_to_event(&p, e);
	e->flags |= RECORD_F_NO_SKB | RECORD_F_HAS_SK;
	/* A child never accepted has no file: its listener was closed. */
	e->state = sk->__sk_common.skc_state;
	record_net(e, sk_net_of(sk, true), true);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	e->reason = reason;
	/* proc is the owner where the table has it; RECORD_F_CURRENT says
	 * it is (also) the task that sent the RST. */
	if (owner_fill(sk, e, true)) {
		if (e->proc.pid == bpf_get_current_pid_tgid() >> 32)
			e->flags |= RECORD_F_CURRENT;
	} else {
		current_proc(&e->proc);
		e->flags |= RECORD_F_CURRENT;
	}
	bpf_ringbuf_submit(e, 0);
	if (!(d & DECIDED_BY_RECEIVER))
		decide(&ck, DECIDED_ACTIVE | DECIDED_WRITTEN);
}

/* Past the handshake (tcp_reset()): the owner sees ECONNRESET (or EPIPE). */
static __always_inline void rst_in(const struct sock *sk, __u8 state)
{
	struct pkt p = {};
	struct record *e;

	struct summary_key sk_key = {};
	struct conn_key ck = {};
	__u8 d;

	sk_pkt(sk, &p);
	if (!port_traced(p.sport) && !port_traced(p.dport))
		return;
	summary_key_of(&sk_key, SUMMARY_RESET, sk_netns_of(sk, true), p.family,
		       p.daddr, p.dport);
	conn_key_of(&ck, p.family, p.saddr, p.sport, p.daddr, p.dport);
	/* A local sender decided for both sides of the connection. */
	d = decided(&ck);
	switch (d) {
	case DECIDED_SUMMARIZED:
		summary_count(&sk_key, SIDE_CLIENT_LOCAL);
		return;
	case DECIDED_LOST:
		return;
	case DECIDED_WRITTEN:
		e = reserve_quiet(RECORD_RST_IN);
		break;
	default:
		/* No local sender decided (yet): a remote sender, or a local
		 * active reset, whose sender runs after this. */
		if (summarize(&sk_key)) {
			rst_in_noted(sk, &sk_key, summary_count(&sk_key, SIDE_CLIENT));
			decide(&ck, DECIDED_BY_RECEIVER | DECIDED_SUMMARIZED);
			return;
		}
		e = reserve(RECORD_RST_IN);
		if (!e) {
			rst_in_noted(sk, &sk_key, COUNTED_LOST);
			decide(&ck, DECIDED_BY_RECEIVER | DECIDED_LOST);
			return;
		}
		decide(&ck, DECIDED_BY_RECEIVER | DECIDED_WRITTEN);
	}
	if (!e)
		return;
	pkt_to_event(&p, e);
	e->state = state;
	e->flags |= RECORD_F_HAS_SK;
	if (d == DECIDED_WRITTEN)
		e->flags |= RECORD_F_SENDER_SEEN;
	record_net(e, sk_net_of(sk, true), true);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	/* Softirq: `current` is whoever was on the CPU; the owner table
	 * names the socket's owner. */
	owner_fill(sk, e, true);
	bpf_ringbuf_submit(e, 0);
}

#endif /* RSTTRACE_RESETS_H */
