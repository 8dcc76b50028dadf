/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The packet filter: TCP SYNs nftables/iptables dropped or rejected, the
 * netfilter hook that did it, and whether an ICMP error answered the SYN.
 */
#ifndef RSTTRACE_FIREWALL_H
#define RSTTRACE_FIREWALL_H

/*
 * The value of SKB_DROP_REASON_NETFILTER_DROP in this kernel's enum
 * skb_drop_reason (resolved by name from BTF; the numbering differs between
 * kernels), and the code ranges of the functions that call nf_hook_slow for
 * each netfilter hook, from /proc/kallsyms.
 */
const volatile __u32 netfilter_drop_reason = 0xffffffff;
const volatile __u32 nf_range_count = 0;
const volatile struct code_range nf_ranges[NF_RANGES_MAX] = {};

/* SYN skbs the kernel answered with an ICMP error (icmp:icmp_send), until
 * the packet filter frees them: a `reject` rule, as opposed to `drop`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} fw_icmp_skbs SEC(".maps");

#define FW_STACK_DEPTH 20

/* Whether skb was answered with ICMP (fw_icmp_skbs), forgetting it. Looked
 * up before deleted: a delete takes the bucket lock with interrupts off
 * even when the key is absent, and almost every dropped packet has no
 * entry (a host whose input chain drops by default drops many). */
static __always_inline bool fw_icmp_take(__u64 key)
{
	if (!bpf_map_lookup_elem(&fw_icmp_skbs, &key))
		return false;
	bpf_map_delete_elem(&fw_icmp_skbs, &key);
	return true;
}

/* Network namespace of an skb: its socket's, its device's, or (locally
 * generated, before the output device is set) its route's device's. */
static __always_inline struct net *skb_net(const struct sk_buff *skb)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	unsigned long refdst;

	if (sk)
		return sk_net_of(sk, false);
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net);
	refdst = BPF_CORE_READ(skb, _skb_refdst) & ~1UL;
	if (refdst)
		return BPF_CORE_READ((struct dst_entry *)refdst, dev, nd_net.net);
	return NULL;
}

/* What a kernel address belongs to in nf_ranges, or 0. */
static __always_inline __u32 nf_range_of(__u64 ip)
{
	for (__u32 j = 0; j < NF_RANGES_MAX; j++) {
		__u64 off;

		if (j >= nf_range_count)
			break;
		/* One unsigned compare of ip - start, not two of ip: the
		 * verifier then learns nothing new about ip at each range, and
		 * the states of the stack walk stay few (two compares made it
		 * explore up to its 1M-instruction limit). */
		off = ip - nf_ranges[j].start;
		barrier_var(off);
		if (off < nf_ranges[j].end - nf_ranges[j].start)
			return nf_ranges[j].what;
	}
	return 0;
}

/*
 * The packet filter dropped a packet (skb:kfree_skb with reason
 * NETFILTER_DROP: nf_hook_slow on NF_DROP, or nft_do_chain itself on 6.18).
 * nftables/iptables `drop`, `reject` (ICMP sent first) and `reject with tcp
 * reset` (nf_send_reset sends the RST, no tcp_send_reset fires) all end
 * here. No tracepoint names the hook; the kernel stack does: the first
 * frame in a NF_HOOK caller (ip_local_deliver = input, __ip_local_out =
 * output, ...) is the hook. Only TCP SYNs are reported: UDP and ICMP
 * dropped by the filter come here too, and skb_parse refuses them.
 */
static __always_inline int handle_fw_drop(void *ctx, const struct sk_buff *skb,
					  void *location)
{
	__u64 stack[FW_STACK_DEPTH];
	__u64 key = (__u64)skb;
	struct summary_key sk_key = {};
	struct pkt p = {};
	struct conn *c = NULL;
	struct net *net;
	struct sock *sk;
	struct record *e;
	__u64 skey = 0;
	long n;

	if (skb_parse(skb, true, &p) || !pkt_is_syn(&p) || !port_traced(p.dport)) {
		fw_icmp_take(key);
		return 0;
	}
	net = skb_net(skb);
	/* A locally generated SYN still has its socket before it leaves
	 * (output/postrouting); on loopback input it was orphaned. */
	sk = BPF_CORE_READ(skb, sk);
	if (sk) {
		skey = (__u64)sk;
		c = conn_find(skey);
	}
	summary_key_of(&sk_key, SUMMARY_FILTERED, net_inum(net, false),
		       p.family, p.daddr, p.dport);
	if (summarize(&sk_key)) {
		summary_count(&sk_key, SIDE_SERVER);
		if (c)
			c->fw |= CONN_FW_SUMMARIZED;
		fw_icmp_take(key);
		return 0;
	}
	e = reserve(RECORD_FW_DROP);
	if (!e) {
		if (c)
			c->fw |= CONN_FW_SUMMARIZED;
		fw_icmp_take(key);
		return 0;
	}
	pkt_to_event(&p, e);
	record_net(e, net, false);
	if (fw_icmp_take(key))
		e->flags |= RECORD_F_FW_ICMP;
	if (nf_range_of((__u64)location) == NF_HOOK_ID_NFT)
		e->flags |= RECORD_F_FW_NFT;
	n = bpf_get_stack(ctx, stack, sizeof(stack), 0);
	if (n < 0)
		n = 0;
	for (__u32 i = 0; i < FW_STACK_DEPTH; i++) {
		__u32 what;

		if (i >= (__u64)n / 8)
			break;
		what = nf_range_of(stack[i]);
		if (what == NF_HOOK_ID_NFT) {
			e->flags |= RECORD_F_FW_NFT;
		} else if (what) {
			e->aux = what;
			break;
		}
	}
	if (sk) {
		/*
		 * A `reject` on the output hook answers the SYN with an ICMP
		 * error that loopback delivers before the hook returns: while
		 * connect() owns the socket, tcp_v4_err/tcp_v6_err only store
		 * it in sk_err_soft. Seen here, it says "rejected" for IPv6
		 * too, which has no icmp_send tracepoint.
		 */
		if (c && BPF_CORE_READ(sk, sk_err_soft) == ECONNREFUSED)
			e->flags |= RECORD_F_FW_ICMP;
		if (c) {
			conn_proc_to(e, c, sk, false);
			c->fw |= CONN_FW_WRITTEN;
		}
		e->sk = skey;
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * icmp:icmp_send (6.14+): __icmp_send is about to answer skb with an ICMP
 * error. A packet filter `reject` sends ICMP port-unreachable (or the type
 * the rule names) and then drops the SYN: remember the skb so the drop
 * says "rejected with ICMP". IPv6 has no such tracepoint.
 */
static __always_inline int handle_icmp_send(const struct sk_buff *skb, int type)
{
	__u64 key = (__u64)skb;
	struct pkt p = {};
	__u8 one = 1;

	if (type != ICMP_DEST_UNREACH)
		return 0;
	/* Only a TCP SYN can become a firewall record: an entry for anything
	 * else (a UDP port unreachable) would wait in the table until its
	 * skb's address is reused by a SYN. */
	if (skb_parse(skb, true, &p) || !pkt_is_syn(&p))
		return 0;
	bpf_map_update_elem(&fw_icmp_skbs, &key, &one, BPF_ANY);
	return 0;
}

#endif /* RSTTRACE_FIREWALL_H */
