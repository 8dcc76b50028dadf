/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Refusals this host's TCP stack sends: a RST answering a SYN nothing
 * listens for, or a listener's own RST for a final ACK it cannot take.
 */
#ifndef RSTTRACE_REFUSALS_H
#define RSTTRACE_REFUSALS_H

/*
 * A RST refusing a connection: the answered segment is a SYN (nothing
 * listens), or sk is a listener (final ACK with tcp_abort_on_overflow).
 * saddr/sport is the peer the RST goes to, daddr/dport the refusing side.
 */
static __always_inline void refusal_sent(const struct sock *sk,
					 const struct sk_buff *skb,
					 const struct pkt *p, __u8 state,
					 __u32 reason, bool btf)
{
	struct record *e;

	struct net *net;
	__u32 netns;

	if (!port_traced(p->dport))
		return;
	net = sk ? sk_net_of(sk, btf) : skb_dev_net(skb, btf);
	netns = net_inum(net, btf);
	/* A listener's own RST (backlog_full) is always written. */
	if (!sk && server_summarized(p)) {
		summary_count(p, netns, true);
		return;
	}
	e = reserve(RECORD_RESET_SENT);
	if (!e)
		return;
	pkt_to_event(p, e);
	e->reason = reason;
	e->state = state;
	record_net(e, net, btf);
	if (sk) {
		e->flags |= RECORD_F_HAS_SK;
		e->sk = (__u64)sk;
		owner_fill(sk, e); /* the listener's owner */
	}
	/* Address translation: the connection as the client made it. */
	nat_fill(p, e);
	bpf_ringbuf_submit(e, 0);
}

#endif /* RSTTRACE_REFUSALS_H */
