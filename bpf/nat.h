/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address translation of a connection's first SYN (DNAT: a published
 * port, a Kubernetes Service; SNAT/masquerade on the way out).
 *
 * A refusal through DNAT is seen twice with different 4-tuples: the
 * backend's RST answers client -> backend, the client's connect() was to
 * client -> service. Conntrack holds both, but cannot be asked afterwards:
 * a RST answering a SYN with no reply seen deletes the entry at once
 * (tcp_packet in nf_conntrack_proto_tcp.c). So the translation is caught
 * while the SYN is in flight, keyed by the tuple the backend will see, and
 * the refused-SYN path (refusal_sent) looks it up.
 */
#ifndef RSTTRACE_NAT_H
#define RSTTRACE_NAT_H

/* skb->_nfct is the struct nf_conn pointer with enum ip_conntrack_info in
 * its low three bits (include/linux/skbuff.h, NFCT_INFOMASK). */
#define NFCT_INFOMASK 7UL

/* The connection as the backend sees it: the reply tuple reversed. Ports
 * in host order; AF_INET addresses in the first 4 bytes, the rest zero, as
 * skb_parse leaves them. */
struct nat_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 pad[3];
};

/* The connection as the client made it (the original tuple), and the
 * network namespace whose netfilter translated it. */
struct nat_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 netns;
	__u64 netns_cookie;
};

/*
 * Translated first SYNs. An entry is needed only for the SYN's round trip
 * (the backend's RST comes at once): LRU, so a host opening many
 * translated connections (every connection to a Service is one) keeps the
 * newest, and no entry has to be deleted on the established path. The
 * key has no namespace: the backend's namespace is not the one that
 * translated, and the tuple the backend sees names one connection.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	/* Per-CPU LRU lists: updated on every connection from every CPU;
	 * one common list would serialize them on its lock. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 16384);
	__type(key, struct nat_key);
	__type(value, struct nat_flow);
} nat_flows SEC(".maps");

/*
 * Which backend ports translated SYNs went to: a refusal on any other
 * port skips the nat_flows lookup, which costs a quarter of a refused
 * SYN's handling (hashing a 40-byte key). Marks are never cleared: a
 * stale one costs only that lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} nat_ports SEC(".maps");

/* One side of a conntrack tuple: address (16 bytes, AF_INET in the first
 * 4) and TCP port in host order. */
static __always_inline void ct_side(const union nf_inet_addr *u3,
				    const __be16 *port, __u8 family,
				    __u8 addr[16], __u16 *p)
{
	__be16 v = 0;

	if (family == AF_INET)
		bpf_core_read(addr, 4, u3);
	else
		bpf_core_read(addr, 16, u3);
	bpf_core_read(&v, sizeof(v), port);
	*p = bpf_ntohs(v);
}

/*
 * net:net_dev_queue, in __dev_queue_xmit: every packet a device sends,
 * after the netfilter hooks that translate it (a local SYN passed OUTPUT
 * nat, a forwarded one PREROUTING nat, both POSTROUTING masquerade, and
 * conntrack confirmed the entry there). Crossing into another namespace
 * (veth, __dev_forward_skb -> skb_scrub_packet) drops the conntrack
 * reference, so this is the last place the sender's netns shows it.
 *
 * Per packet: one load of skb->_nfct and a compare. Only the first packet
 * of a connection has ctinfo IP_CT_NEW; only those reach the conntrack
 * reads (status, then the TCP state), and only translated TCP SYNs the map.
 */
static __always_inline void nat_syn_seen(const struct sk_buff *skb)
{
	struct nat_key k = {};
	struct nat_flow v = {};
	const struct nf_conntrack_tuple *o, *r;
	struct nf_conn *ct;
	unsigned long nfct;
	unsigned long status;
	struct net *net;
	__u8 family;

	if (!bpf_core_field_exists(skb->_nfct) ||
	    !bpf_core_type_exists(struct nf_conn))
		return;
	nfct = skb->_nfct;
	if (!nfct || (nfct & NFCT_INFOMASK) != IP_CT_NEW)
		return;
	ct = (struct nf_conn *)(nfct & ~NFCT_INFOMASK);
	status = BPF_CORE_READ(ct, status);
	if (!(status & (IPS_SRC_NAT | IPS_DST_NAT)))
		return;
	o = &ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple;
	r = &ct->tuplehash[IP_CT_DIR_REPLY].tuple;
	if (BPF_CORE_READ(o, dst.protonum) != IPPROTO_TCP)
		return;
	/* A SYN opened it (not a mid-stream pick-up, nf_conntrack_tcp_loose). */
	if (BPF_CORE_READ(ct, proto.tcp.state) != TCP_CONNTRACK_SYN_SENT)
		return;
	family = BPF_CORE_READ(o, src.l3num); /* NFPROTO_IPV4/6 == AF_INET/6 */
	if (family != AF_INET && family != AF_INET6)
		return;
	k.family = family;
	/* The backend answers reply.src -> reply.dst: it sees the SYN as
	 * reply.dst -> reply.src. */
	ct_side(&r->dst.u3, &r->dst.u.tcp.port, family, k.saddr, &k.sport);
	ct_side(&r->src.u3, &r->src.u.tcp.port, family, k.daddr, &k.dport);
	ct_side(&o->src.u3, &o->src.u.tcp.port, family, v.saddr, &v.sport);
	ct_side(&o->dst.u3, &o->dst.u.tcp.port, family, v.daddr, &v.dport);
	net = skb_dev_net(skb, true);
	v.netns = net_inum(net, true);
	v.netns_cookie = net_cookie_of(net);
	bpf_map_update_elem(&nat_flows, &k, &v, BPF_ANY);
	{
		__u32 port = k.dport;
		__u8 *mark = bpf_map_lookup_elem(&nat_ports, &port);

		if (mark && !*mark)
			*mark = 1;
	}
}

/*
 * The translation of the refused SYN p (as the refusing side received
 * it), if it was translated on this host; NULL otherwise.
 */
static __always_inline struct nat_flow *nat_lookup(const struct pkt *p,
						   struct nat_key *k)
{
	__u32 port = p->dport;
	__u8 *mark;

	if (!(caps & CAP_F_NAT))
		return NULL;
	mark = bpf_map_lookup_elem(&nat_ports, &port);
	if (!mark || !*mark)
		return NULL;
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
	k->sport = p->sport;
	k->dport = p->dport;
	k->family = p->family;
	return bpf_map_lookup_elem(&nat_flows, k);
}

/*
 * e gets the connection as the client made it (v, from nat_lookup), the
 * namespace that translated it, and RECORD_F_NAT.
 */
static __always_inline void nat_fill(const struct nat_flow *v, struct record *e)
{
	__builtin_memcpy(e->orig_saddr, v->saddr, 16);
	__builtin_memcpy(e->orig_daddr, v->daddr, 16);
	e->orig_sport = v->sport;
	e->orig_dport = v->dport;
	e->nat_netns = v->netns;
	e->nat_netns_cookie = v->netns_cookie;
	e->flags |= RECORD_F_NAT;
}

#endif /* RSTTRACE_NAT_H */
