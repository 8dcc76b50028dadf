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
	struct summary_key sk_key = {};
	struct conn_key ck = {};
	struct nat_key nk = {};
	struct nat_flow *nat;
	struct conn *client = NULL;
	struct record *e;
	struct net *net;
	__u32 netns;

	if (!port_traced(p->dport))
		return;
	net = sk ? sk_net_of(sk, btf) : skb_dev_net(skb, btf);
	netns = net_inum(net, btf);
	/* A listener's own RST (backlog_full) is always written: its client
	 * is past SYN_SENT and reads no decision. */
	/* Translated on this host (DNAT, masquerade): the client's socket
	 * knows the connection as it made it, so the decision it reads is
	 * left under that tuple. The entry goes: a refusal ends the flow. */
	nat = nat_lookup(p, &nk);
	if (!sk) {
		/* The client's side of this connection: saddr/sport. */
		if (nat)
			conn_key_of(&ck, p->family, nat->saddr, nat->sport,
				    nat->daddr, nat->dport);
		else
			conn_key_of(&ck, p->family, p->saddr, p->sport,
				    p->daddr, p->dport);
		if (!nat && (caps & CAP_F_CLIENTS))
			client = syn_client(p);
		summary_key_of(&sk_key, SUMMARY_REFUSED, netns, p->family,
			       p->daddr, p->dport);
		if (summarize(&sk_key)) {
			/* A client found here has its side counted too: its
			 * tcp_receive_reset then only drops its entry. */
			if (client) {
				summary_count(&sk_key, SIDE_SERVER_AND_CLIENT_LOCAL);
				client->decided = DECIDED_COUNTED_BOTH;
			} else {
				summary_count(&sk_key, SIDE_SERVER);
				decide(&ck, DECIDED_SUMMARIZED);
			}
			if (nat)
				bpf_map_delete_elem(&nat_flows, &nk);
			return;
		}
	}
	e = reserve(RECORD_RESET_SENT);
	if (!e) {
		if (!sk)
			decide_for(client, &ck, DECIDED_LOST);
		if (nat)
			bpf_map_delete_elem(&nat_flows, &nk);
		return;
	}
	pkt_to_event(p, e);
	e->reason = reason;
	e->state = state;
	record_net(e, net, btf);
	if (sk) {
		e->flags |= RECORD_F_HAS_SK;
		e->sk = (__u64)sk;
		owner_fill(sk, e, btf); /* the listener's owner */
	}
	/* Address translation: the connection as the client made it. */
	if (nat) {
		nat_fill(nat, e);
		bpf_map_delete_elem(&nat_flows, &nk);
	}
	bpf_ringbuf_submit(e, 0);
	/* After the submit: the client's record, reserved once it read
	 * this, comes behind this one in the ring. */
	if (!sk)
		decide_for(client, &ck, DECIDED_WRITTEN);
}

#endif /* RSTTRACE_REFUSALS_H */
