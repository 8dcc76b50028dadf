/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Local clients: who called connect() (recorded at CLOSE->SYN_SENT), a
 * connect() refused by a RST, attempts that ended without one (timeout,
 * ICMP error, given up) and the SYN retransmits on the way.
 */
#ifndef RSTTRACE_CLIENTS_H
#define RSTTRACE_CLIENTS_H

static __always_inline __u8 syn_retransmits(const struct sock *sk)
{
	return BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits);
}

/*
 * CLOSE->SYN_SENT in tcp_v4_connect/tcp_v6_connect runs in the connect()
 * caller's context: who connects, for clients, connect failures and the
 * owner table.
 */
static __always_inline void connect_started(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn v = {};
	__u16 family;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return;
	if (!port_traced(bpf_ntohs(sk->__sk_common.skc_dport)))
		return;
	current_proc_of(&v.proc, true);
	/* Read from the socket when a record needs it (conn_proc_to),
	 * where the kernel keeps it there. */
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		v.proc.cgroup_id = bpf_get_current_cgroup_id();
	/* The entry is also the socket's owner record (owner_fill reads it)
	 * until it closes: one map update per connection. */
	if (caps & CAP_F_CONNECT_FAILURES)
		v.ts = coarse_ticks();
	conn_add(key, &v);
	/* For a refusing side on this CPU (syn_client, summary.h). */
	if (caps & CAP_F_CLIENTS)
		connect_on_cpu(key);
}

/*
 * SYN_SENT->CLOSE: the connect() attempt is over. tcp_done_with_error()
 * stores sk_err before the state change: ECONNREFUSED (ICMP port
 * unreachable), ETIMEDOUT (SYN retransmits exhausted: tcp_write_err),
 * EHOSTUNREACH... An attempt closed by its owner has sk_err 0: reported
 * only if SYNs were retransmitted (the client gave up waiting). An attempt
 * refused by a RST is not here: tcp_receive_reset reported it and deleted
 * its entry (handle_receive_reset). Returns whether sk had an entry.
 */
static __always_inline bool connect_failed(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn *c;
	struct record *e;
	struct pkt p = {};
	__u8 retrans;
	__u64 ms;
	int err;

	c = conn_find(key);
	if (!c)
		return false;
	err = sk->sk_err;
	retrans = syn_retransmits(sk);
	/* An attempt whose drop was written always ends with a record:
	 * userspace holds the drop until it does. One whose drops were
	 * only counted was counted. */
	if (!(c->fw & CONN_FW_WRITTEN)) {
		struct summary_key sk_key = {};

		if (c->fw & CONN_FW_SUMMARIZED)
			return true;
		if (err == 0 && retrans == 0)
			return true;
		/* Userspace reports refusals, timeouts and attempts given up
		 * after retransmits; other errors (EHOSTUNREACH) are none. */
		if (err != 0 && err != ECONNREFUSED && err != ETIMEDOUT)
			return true;
		sk_pkt(sk, &p);
		/* An ICMP port unreachable from elsewhere is a refusal;
		 * the rest (timeouts, given up) are timeouts. */
		summary_key_of(&sk_key,
			       err == ECONNREFUSED ? SUMMARY_REFUSED : SUMMARY_TIMEOUT,
			       sk_netns_of(sk, true), p.family, p.daddr, p.dport);
		if (summarize(&sk_key)) {
			summary_count(&sk_key, SIDE_CLIENT);
			return true;
		}
	} else {
		sk_pkt(sk, &p);
	}
	e = reserve(RECORD_CONNECT_FAILED);
	if (!e)
		return true;
	pkt_to_event(&p, e);
	e->state = TCP_SYN_SENT;
	record_net(e, sk_net_of(sk, true), true);
	e->sk = key;
	e->ret = -err;
	ms = ticks_ms(coarse_ticks() - c->ts);
	if (ms > 0xffffff)
		ms = 0xffffff;
	e->aux = ((__u32)retrans << 24) | (__u32)ms;
	conn_proc_to(e, c, sk, true);
	bpf_ringbuf_submit(e, 0);
	return true;
}

/*
 * In SYN_SENT a RST is the refusal the client sees as ECONNREFUSED; the
 * client process is the one recorded at connect(). The entry is deleted
 * here: the attempt is reported, and SYN_SENT->CLOSE right after it
 * (tcp_reset -> tcp_done_with_error, sk_err ECONNREFUSED) must not report
 * it again as a connect failure.
 */
static __always_inline void client_refused(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct summary_key sk_key = {};
	struct conn_key ck = {};
	struct pkt p = {};
	struct conn *c;
	struct record *e;
	__u32 netns;
	__u8 d;

	c = conn_find(key);
	if (!c && filter_ports)
		return; /* not traced at connect() */
	/* The server side decided for both when it ran on this host: in
	 * this entry when it found it by the SYN (syn_client), else in the
	 * decisions map. Counted for both already: nothing to read. */
	d = c ? c->decided : 0;
	if (d == DECIDED_COUNTED_BOTH)
		goto out;
	sk_pkt(sk, &p);
	netns = sk_netns_of(sk, true);
	summary_key_of(&sk_key, SUMMARY_REFUSED, netns, p.family, p.daddr,
		       p.dport);
	conn_key_of(&ck, p.family, p.saddr, p.sport, p.daddr, p.dport);
	if (!d)
		d = decided(&ck);
	switch (d) {
	case DECIDED_SUMMARIZED:
		summary_count(&sk_key, SIDE_CLIENT_LOCAL);
		goto out;
	case DECIDED_LOST:
		goto out; /* counted lost once, by the server side */
	case DECIDED_WRITTEN:
		e = reserve_quiet(RECORD_CLIENT_REFUSED);
		break;
	default:
		/* No local stack answered: a remote host or a packet filter. */
		if (summarize(&sk_key)) {
			summary_count(&sk_key, SIDE_CLIENT);
			goto out;
		}
		e = reserve(RECORD_CLIENT_REFUSED);
	}
	if (e) {
		pkt_to_event(&p, e);
		e->state = TCP_SYN_SENT;
		record_net(e, sk_net_of(sk, true), true);
		e->sk = key;
		if (d == DECIDED_WRITTEN)
			e->flags |= RECORD_F_SENDER_SEEN;
		if (c)
			conn_proc_to(e, c, sk, true);
		bpf_ringbuf_submit(e, 0);
	}
out:
	if (c)
		conn_delete(key);
}

/* A SYN of a local connect() was retransmitted: no answer yet (timer, in
 * softirq: the process comes from connecting). */
static __always_inline int handle_syn_retransmit(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct pkt p = {};
	struct conn *c;
	struct record *e;

	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	c = conn_find(key);
	if (!c || c->fw == CONN_FW_SUMMARIZED)
		return 0; /* the attempt was counted, not written */
	sk_pkt(sk, &p);
	e = reserve(RECORD_SYN_RETRANS);
	if (!e)
		return 0;
	pkt_to_event(&p, e);
	e->state = TCP_SYN_SENT;
	record_net(e, sk_net_of(sk, true), true);
	e->sk = key;
	e->aux = syn_retransmits(sk);
	conn_proc_to(e, c, sk, true);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#endif /* RSTTRACE_CLIENTS_H */
