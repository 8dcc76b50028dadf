/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One handler per hook that several capabilities share (tcp_send_reset,
 * inet_sock_set_state, tcp_receive_reset, kfree_skb): it
 * does the work of all of them, dispatching on what the hook saw and on
 * `caps`. A second program on the same hook would pay the tracepoint's
 * dispatch, the argument reads and the packet parse again on every event;
 * under a refusal storm that was most of the cost.
 */
#ifndef RSTTRACE_HOOKS_H
#define RSTTRACE_HOOKS_H

/*
 * Whether a listener's RST for a non-SYN segment is the accept queue
 * overflow of tcp_check_req (net.ipv4.tcp_abort_on_overflow set in the
 * listener's namespace, and its accept queue full as sk_acceptq_is_full
 * says: more than the backlog). No RST reason says it on any kernel (6.10+
 * passes SK_RST_REASON_INVALID_SYN for every embryonic reset). The sysctl
 * was an int before it became a u8: read at its size in this kernel.
 */
static __always_inline bool listener_overflowed(const struct sock *sk, bool btf)
{
	struct net *net = sk_net_of(sk, btf);
	__u32 abort = 0;

	if (bpf_core_field_size(net->ipv4.sysctl_tcp_abort_on_overflow) == 1) {
		__u8 v = 0;

		bpf_core_read(&v, 1, &net->ipv4.sysctl_tcp_abort_on_overflow);
		abort = v;
	} else {
		bpf_core_read(&abort, sizeof(abort), &net->ipv4.sysctl_tcp_abort_on_overflow);
	}
	if (!abort)
		return false;
	return RD(btf, __u32, sk, sk_ack_backlog) > RD(btf, __u32, sk, sk_max_ack_backlog);
}

/*
 * A RST leaves this host's TCP stack. From 6.10 tcp:tcp_send_reset fires
 * for every RST (tcp_v4_send_reset/tcp_v6_send_reset call it even when sk
 * is NULL, and pass enum sk_rst_reason); before, only with a full socket,
 * so refusals come from the senders themselves (fentry/kprobe on
 * tcp_v4_send_reset/tcp_v6_send_reset).
 *
 * refusals: report refused connections (RECORD_RESET_SENT); resets: report
 * every other RST this host sends (RECORD_RST_OUT, tracepoint only): on a
 * connection (no segment answered), or answering a segment of a
 * connection that is gone, whichever socket (none, a listener, a timewait
 * or a dying one) answers it.
 */
static __always_inline int handle_send_reset(const struct sock *sk,
					     const struct sk_buff *skb,
					     __u32 reason, bool btf,
					     bool refusals, bool resets)
{
	struct pkt p = {};
	__u8 state = 0;

	if (!skb) {
		if (resets && sk)
			rst_out_active(sk, reason);
		return 0;
	}
	if (!refusals && !resets && sk)
		return 0;
	if (skb_parse(skb, btf, &p))
		return 0;
	if (sk)
		state = RD(btf, __u8, sk, __sk_common.skc_state);
	if (p.tcp_flags & TCPHDR_SYN) {
		if (refusals)
			refusal_sent(sk, skb, &p, state, reason, btf);
		return 0;
	}
	if (state == TCP_LISTEN) {
		/* A listener answers two kinds of non-SYN segment with a RST:
		 * a final ACK its full accept queue cannot take (only under
		 * tcp_abort_on_overflow: a refusal), and any segment of a
		 * connection that is gone (the 4-tuple now finds only the
		 * listener: tcp_rcv_state_process in LISTEN refuses an ACK),
		 * which is a reset like one sent with no socket. */
		if (listener_overflowed(sk, btf)) {
			if (refusals)
				refusal_sent(sk, skb, &p, state, reason, btf);
		} else if (resets) {
			rst_out_nosock(sk, skb, &p, reason, btf, false);
		}
		return 0;
	}
	/* No socket, or a TIME_WAIT one answering a segment of the
	 * connection it ended (tcp_timewait_state_process gives TCP_TW_RST:
	 * data after the application closed, a SYN inside the window): the
	 * connection is gone as for no socket. A timewait sock is only a
	 * sock_common: nothing past it is read (sk_net_of reads skc_net). */
	if (resets && (!sk || state == TCP_TIME_WAIT))
		rst_out_nosock(sk, skb, &p, reason, btf, false);
	/* A socket answering a segment of its own connection: killed by it
	 * (TCP_CLOSE already: data after shutdown, TCP_ABORT_ON_DATA, where
	 * tcp_reset() ran first), or one in SYN_SENT refusing a bad
	 * SYN-ACK. */
	else if (resets)
		rst_out_nosock(sk, skb, &p, reason, btf, state == TCP_CLOSE);
	return 0;
}

/*
 * Socket state changes (sock:inet_sock_set_state, 4.16+):
 *  CLOSE->LISTEN in inet_csk_listen_start, in the listen() caller's context;
 *  LISTEN->CLOSE when the last reference to the listener goes (close(),
 *    exit, tcp_disconnect), in the context of whoever dropped it;
 *  CLOSE->SYN_SENT in tcp_v4_connect/tcp_v6_connect, the connect() caller:
 *    who connects, for clients, connect failures and the owner table;
 *  anything->CLOSE: the socket's owner is forgotten;
 *  SYN_SENT->anything: the connect attempt is over.
 * LISTEN->SYN_RECV is a child socket in softirq, not a listener: ignored,
 * as is every other transition, before sk is read at all.
 */
static __always_inline int handle_set_state(const struct sock *sk, int oldstate,
					    int newstate)
{
	const __u32 conn_caps = CAP_F_CLIENTS | CAP_F_CONNECT_FAILURES;
	__u64 key = (__u64)sk;
	__u16 family;

	/* Every way out of a TCP socket's life ends in TCP_CLOSE (tcp_done,
	 * tcp_close, tcp_disconnect, tcp_set_state from a listener's close).
	 * The RST a close or disconnect sends comes after this (tcp_close
	 * and tcp_disconnect set CLOSE first), in the closer's context:
	 * RECORD_F_CURRENT covers those. */
	if ((caps & CAP_F_OWNERS) && newstate == TCP_CLOSE)
		owner_forget(sk, oldstate);
	if (oldstate == TCP_SYN_SENT) {
		if (!(caps & conn_caps))
			return 0;
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		/* Connected: the entry stays as the socket's owner record
		 * (owner_forget deletes it at close). */
		if ((caps & CAP_F_OWNERS) && newstate != TCP_CLOSE)
			return 0;
		/* No entry (refused by a RST, or not traced): nothing to delete. */
		if ((caps & CAP_F_CONNECT_FAILURES) && newstate == TCP_CLOSE &&
		    !connect_failed(sk))
			return 0;
		conn_delete(key);
		return 0;
	}
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (caps & (conn_caps | CAP_F_OWNERS))
			connect_started(sk);
		return 0;
	}
	if (!(caps & (CAP_F_LISTENERS | CAP_F_OWNERS)))
		return 0;
	if (!(oldstate == TCP_CLOSE && newstate == TCP_LISTEN) &&
	    !(oldstate == TCP_LISTEN && newstate == TCP_CLOSE))
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if ((caps & CAP_F_OWNERS) && newstate == TCP_LISTEN) {
		struct proc_info o = {};

		current_proc_of(&o, true);
		o.cgroup_id = sk_cgroup_id(sk, true);
		if (!o.cgroup_id)
			o.cgroup_id = bpf_get_current_cgroup_id();
		owner_record(sk, &o);
	}
	if (caps & CAP_F_LISTENERS)
		listener_change(sk, newstate);
	return 0;
}

/* A RST reached a local socket (tcp_reset(), tcp:tcp_receive_reset, 4.15+). */
static __always_inline int handle_receive_reset(const struct sock *sk)
{
	__u8 state = sk->__sk_common.skc_state;

	if (state == TCP_SYN_SENT) {
		if (caps & CAP_F_CLIENTS)
			client_refused(sk);
		return 0;
	}
	if (state == TCP_LISTEN)
		return 0;
	if (caps & CAP_F_RESETS)
		rst_in(sk, state);
	return 0;
}

/*
 * skb:kfree_skb (skb, location[, reason from 5.17][, rx_sk from 6.11]).
 * Every freed-with-a-reason packet on the host comes here, so the reason is
 * compared first. The arguments past location are read only where `caps`
 * says the kernel has them (firewall needs 5.17, final ACK 6.15): elsewhere
 * the verifier prunes the read it would refuse.
 */
static __always_inline int handle_kfree_skb(__u64 *ctx, struct sk_buff *skb, void *location)
{
	__u32 reason;

	if (!(caps & (CAP_F_FIREWALL | CAP_F_FINAL_ACK)))
		return 0;
	reason = (__u32)ctx[2];
	if ((caps & CAP_F_FIREWALL) && reason == netfilter_drop_reason)
		return handle_fw_drop(ctx, skb, location);
	if ((caps & CAP_F_FINAL_ACK) && reason_listen_overflow &&
	    reason == reason_listen_overflow)
		return handle_final_ack_drop((const struct sock *)ctx[3]);
	return 0;
}

/*
 * A packet leaves a device (net:net_dev_queue): the address translation of
 * a first SYN (nat.h). Attached only while the kernel can translate
 * (userspace waits for nf_nat): every packet of the host comes here.
 */
static __always_inline int handle_dev_queue(const struct sk_buff *skb)
{
	if (caps & CAP_F_NAT)
		nat_syn_seen(skb);
	return 0;
}

#endif /* RSTTRACE_HOOKS_H */
