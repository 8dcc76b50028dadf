/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Listen-queue overflow, per listener: SYNs that met a full SYN or accept
 * queue, final ACKs dropped for a full accept queue, and when the owner last
 * accepted. Per-packet detail only: the totals come from the kernel's own
 * counters, read by userspace.
 */
#ifndef RSTTRACE_OVERFLOW_H
#define RSTTRACE_OVERFLOW_H

/* enum skb_drop_reason value of TCP_LISTEN_OVERFLOW on this kernel (6.15+),
 * resolved from BTF by name in userspace; 0 means none. */
const volatile __u32 reason_listen_overflow = 0;

/* Overflow detail per listener, by socket inode (see struct listen_stats). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct listen_stats);
} listener_stats SEC(".maps");

static __always_inline struct listen_stats *stats_of(__u64 ino)
{
	struct listen_stats *s = bpf_map_lookup_elem(&listener_stats, &ino);
	struct listen_stats zero = {};

	if (s)
		return s;
	bpf_map_update_elem(&listener_stats, &ino, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&listener_stats, &ino);
}

/* sk_acceptq_is_full(): the accept queue holds max_ack_backlog + 1. */
static __always_inline bool acceptq_full(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_ack_backlog) > BPF_CORE_READ(sk, sk_max_ack_backlog);
}

static __always_inline bool listener_traced(const struct sock *sk)
{
	return port_traced(BPF_CORE_READ(sk, __sk_common.skc_num));
}

/*
 * A SYN reached a listener (tcp_conn_request(), before anything is decided).
 * It is dropped if the SYN queue is full and syncookies are off, or if the
 * accept queue is full: the same tests the kernel makes next, in its order.
 */
static __always_inline int handle_conn_request(const struct sock *sk)
{
	const struct inet_connection_sock *icsk = (const void *)sk;
	struct listen_stats *s;
	struct net *net;
	__u32 max, qlen;
	bool reqq = false;

	max = BPF_CORE_READ(sk, sk_max_ack_backlog);
	qlen = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	if (qlen >= max) {
		net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
		/* int before 6.0, u8 after: a sized read handles both. */
		reqq = BPF_CORE_READ_BITFIELD_PROBED(net, ipv4.sysctl_tcp_syncookies) == 0;
	}
	if (!reqq && !acceptq_full(sk))
		return 0;
	if (!listener_traced(sk))
		return 0;
	s = stats_of(sk_ino(sk));
	if (!s)
		return 0;
	if (reqq)
		__sync_fetch_and_add(&s->syn_reqq, 1);
	else
		__sync_fetch_and_add(&s->syn_acceptq, 1);
	return 0;
}

/*
 * The final ACK of a handshake makes the child socket (syn_recv_sock); with
 * the accept queue full it fails, the ACK is dropped (or answered with a
 * RST under tcp_abort_on_overflow). tcp_v6_syn_recv_sock hands IPv4
 * packets (v4-mapped, on a dual-stack listener) to tcp_v4_syn_recv_sock:
 * count those there only.
 */
static __always_inline int handle_syn_recv_sock(const struct sock *sk,
						const struct sk_buff *skb, bool v6)
{
	struct listen_stats *s;

	if (v6 && BPF_CORE_READ(skb, protocol) == bpf_htons(0x0800))
		return 0;
	if (!acceptq_full(sk) || !listener_traced(sk))
		return 0;
	s = stats_of(sk_ino(sk));
	if (s)
		__sync_fetch_and_add(&s->final_ack, 1);
	return 0;
}

/*
 * accept(): when the owner last took a connection off a listener's queue,
 * to tell "stopped accepting" from "accepts, but too slowly". The owner of
 * listener sk (socket inode ino) takes a connection off its queue, or
 * waits for one.
 */
static __always_inline void accept_called(const struct sock *sk, __u64 ino)
{
	struct listen_stats *s;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return;
	if (!listener_traced(sk))
		return;
	s = stats_of(ino);
	if (s)
		s->last_accept = bpf_ktime_get_ns();
}

/* accept()/accept4() entered (syscall tracepoint): the listener by fd. */
static __always_inline int handle_accept(int fd)
{
	struct sock *sk;
	__u64 ino;

	sk = fd_tcp_sock(fd, &ino);
	if (sk)
		accept_called(sk, ino);
	return 0;
}

/* inet_csk_accept(sk, ...) entered (fentry): every accept of a TCP
 * listener, by any caller (accept(2), io_uring), sk in hand. */
static __always_inline int handle_inet_csk_accept(const struct sock *sk)
{
	if (sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP)
		accept_called(sk, sk_ino(sk));
	return 0;
}

/*
 * 6.15+: a final ACK dropped for a full accept queue is freed with
 * SKB_DROP_REASON_TCP_LISTEN_OVERFLOW, and skb:kfree_skb names the
 * listener as rx_sk (6.11+). Where fentry is refused this is the only
 * per-packet view of the final-ACK stage; SYN drops have none (the SYN is
 * freed with consume_skb).
 */
static __always_inline int handle_final_ack_drop(const struct sock *rx_sk)
{
	struct listen_stats *s;

	if (!rx_sk || !listener_traced(rx_sk))
		return 0;
	s = stats_of(sk_ino(rx_sk));
	if (s)
		__sync_fetch_and_add(&s->final_ack, 1);
	return 0;
}

#endif /* RSTTRACE_OVERFLOW_H */
