// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * rsttrace: what the kernel does when TCP connections fail to be established.
 *
 * Programs here only observe; they never change a packet or a socket.
 *
 * One program per tracepoint: where several capabilities need the same
 * hook (tcp_send_reset, inet_sock_set_state, tcp_receive_reset, kfree_skb)
 * a single program does the work of all of them, dispatching on what the
 * hook saw and on `caps` (enum cap_flag), set before load. A second program
 * on the same hook would pay the tracepoint's dispatch, the argument reads
 * and the packet parse again on every event; under a refusal storm that
 * was most of the cost (issue 6). Each handler is always-inline with thin
 * attach wrappers, so fentry/kprobe wrappers share it on older kernels.
 *
 * Every handler decides from the hook's arguments and a parse into a
 * stack copy whether it will report, and only then reserves ring buffer
 * space: RSTs and state changes that are not reported cost a few loads.
 */
#include "../vmlinux.h"
#include "arch.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "rsttrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define PF_EXITING 0x00000004
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define TCPHDR_SYN 0x02
#define TCPHDR_RST 0x04
#define TCPHDR_ACK 0x10
#define ICMP_DEST_UNREACH 3

/* Set before load (pwru's habit): the verifier prunes what is not used. */
const volatile bool filter_ports = false;
/* enum cap_flag: what the tp_btf programs do (see rsttrace.h). */
const volatile __u32 caps = 0;
/* enum skb_drop_reason value of TCP_LISTEN_OVERFLOW on this kernel (6.15+),
 * resolved from BTF by name in userspace; 0 means none. */
const volatile __u32 reason_listen_overflow = 0;
/* Summary mode: always (--summary), or while more than summary_above bytes
 * wait in the ring buffer (userspace sets half its size). */
const volatile bool summary_always = false;
const volatile __u64 summary_above = ~0ULL;
/*
 * The value of SKB_DROP_REASON_NETFILTER_DROP in this kernel's enum
 * skb_drop_reason (resolved by name from BTF; the numbering differs between
 * kernels), and the code ranges of the functions that call nf_hook_slow for
 * each netfilter hook, from /proc/kallsyms.
 */
const volatile __u32 netfilter_drop_reason = 0xffffffff;
const volatile __u32 nf_range_count = 0;
const volatile struct code_range nf_ranges[NF_RANGES_MAX] = {};

/* Force the generated Go types for the enums. */
const enum record_type *unused_event_type __attribute__((unused));
const enum record_flag *unused_event_flag __attribute__((unused));
const enum cap_flag *unused_cap_flag __attribute__((unused));
const struct record *unused_event __attribute__((unused));
const struct listen_stats *unused_listen_stats __attribute__((unused));
const struct summary_key *unused_summary_key __attribute__((unused));
const struct summary_val *unused_summary_val __attribute__((unused));
const enum nf_hook_id *unused_nf_hook_id __attribute__((unused));
const struct code_range *unused_code_range __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* userspace may resize before load */
} records SEC(".maps");

/* Records that did not fit in the ring buffer, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Refusals counted instead of written (summary mode), by destination. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct summary_key);
	__type(value, struct summary_val);
} summary SEC(".maps");

/* --port filter: ports[port] != 0 means traced. Only read if filter_ports. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

/* A local connect() in progress: who called it, and when. */
struct conn {
	struct proc_info proc;
	__u64 ts; /* bpf_ktime_get_ns() at connect(); 0 unless connect_failures */
};

/*
 * Who called connect() on a socket, recorded at CLOSE->SYN_SENT (process
 * context; the source port is not chosen yet there, so the key is the socket
 * address). Read when the RST arrives in softirq, where `current` is
 * whoever was on the CPU, and when the attempt ends. One map for clients and
 * connect failures: both are served by the one inet_sock_set_state
 * program, so the order in which the entry is read and deleted is the
 * program's own, not that of two programs on one tracepoint.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} connecting SEC(".maps");

struct bind_args {
	__u8 addr[16];
	__s32 fd;
	__u16 family;
	__u16 port;
};

/* bind() arguments between sys_enter_bind and sys_exit_bind, per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct bind_args);
} binds SEC(".maps");

/* listen() arguments between sys_enter_listen and sys_exit_listen. */
struct listen_args {
	__s32 fd;
	__u32 backlog;
	__u8 was_listening;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct listen_args);
} listen_calls SEC(".maps");

/* Overflow detail per listener, by socket inode (see struct listen_stats). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct listen_stats);
} listener_stats SEC(".maps");

/* SYN skbs the kernel answered with an ICMP error (icmp:icmp_send), until
 * the packet filter frees them: a `reject` rule, as opposed to `drop`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} fw_icmp_skbs SEC(".maps");

#define FW_STACK_DEPTH 20

static __always_inline bool port_traced(__u16 port)
{
	__u32 key = port;
	__u8 *v;

	if (!filter_ports)
		return true;
	v = bpf_map_lookup_elem(&ports, &key);
	return v && *v;
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1;
}

static __always_inline struct record *reserve(__u8 type)
{
	struct record *e;

	e = bpf_ringbuf_reserve(&records, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->ts = bpf_ktime_get_ns();
	return e;
}

static __always_inline void current_proc(struct proc_info *p)
{
	__u64 id = bpf_get_current_pid_tgid();

	p->pid = id >> 32;
	p->tid = (__u32)id;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

/*
 * A kernel field. tp_btf and fentry programs get typed (BTF) pointers: a
 * plain load, which the verifier turns into a fault-safe load with no
 * helper call (BPF_CORE_READ costs a bpf_probe_read_kernel call per
 * field). kprobe arguments are plain numbers: bpf_probe_read_kernel. `btf`
 * is a constant in every caller, so only one of the two is compiled.
 * Only for fields of the pointer's own type: a cast to a larger type
 * (inet_sock) is beyond what the verifier lets a typed pointer load.
 */
#define RD(btf, type, ptr, field) ({					\
	type __v = 0;							\
	if (btf)							\
		__v = (ptr)->field;					\
	else								\
		bpf_core_read(&__v, sizeof(__v), &(ptr)->field);	\
	__v;								\
})

static __always_inline __u32 sk_netns_of(const struct sock *sk, bool btf)
{
	struct net *net = RD(btf, struct net *, sk, __sk_common.skc_net.net);

	return RD(btf, __u32, net, ns.inum);
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Inode of the socket's file, as /proc/net/tcp and /proc/PID/fd show it. */
static __always_inline __u64 sk_ino(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
}

/* Network namespace of a received skb: its device's. */
static __always_inline __u32 skb_dev_netns(const struct sk_buff *skb, bool btf)
{
	struct net_device *dev = RD(btf, struct net_device *, skb, dev);
	struct net *net;

	if (!dev)
		return 0;
	net = RD(btf, struct net *, dev, nd_net.net);
	return RD(btf, __u32, net, ns.inum);
}

/* A connection's addresses, ports and flags, parsed onto the stack before
 * anything is reserved. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 tcp_flags;
};

static __always_inline void pkt_to_event(const struct pkt *p, struct record *e)
{
	e->family = p->family;
	e->tcp_flags = p->tcp_flags;
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	e->sport = p->sport;
	e->dport = p->dport;
}

/* Local address and port of sk into daddr/dport (listen events); *flags
 * gets RECORD_F_V6ONLY. */
static __always_inline void sk_local(const struct sock *sk, struct pkt *p,
				     __u32 *flags)
{
	p->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	p->dport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (p->family == AF_INET) {
		bpf_core_read(p->daddr, 4, &sk->__sk_common.skc_rcv_saddr);
	} else {
		bpf_core_read(p->daddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_ipv6only))
			*flags |= RECORD_F_V6ONLY;
	}
}

static __always_inline bool pkt_is_syn(const struct pkt *p)
{
	return (p->tcp_flags & (TCPHDR_SYN | TCPHDR_ACK)) == TCPHDR_SYN;
}

/*
 * Addresses of the segment in skb, from its own headers: for a refused SYN
 * the socket is NULL, so the skb is all there is. One read covers the IP
 * header and, without IPv4 options or IPv6 extension headers, the TCP
 * header right behind it (IPv6 40 + TCP 20 bytes). For a short IPv4
 * segment it reads past the segment's end, still inside the skb's head
 * buffer (skb_shared_info follows it); the bytes past the headers are not
 * used.
 */
static __always_inline int skb_parse(const struct sk_buff *skb, bool btf,
				     struct pkt *p)
{
	unsigned char *head = RD(btf, unsigned char *, skb, head);
	__u16 nh = RD(btf, __u16, skb, network_header);
	__u16 th = RD(btf, __u16, skb, transport_header);
	union {
		struct iphdr ip;
		struct ipv6hdr ip6;
		__u8 raw[sizeof(struct ipv6hdr) + sizeof(struct tcphdr)];
	} h;
	struct tcphdr tcp;
	const struct tcphdr *t = &tcp;

	if (bpf_probe_read_kernel(&h, sizeof(h), head + nh))
		return -1;
	switch (h.raw[0] >> 4) {
	case 4:
		p->family = AF_INET;
		__builtin_memcpy(p->saddr, &h.ip.saddr, 4);
		__builtin_memcpy(p->daddr, &h.ip.daddr, 4);
		if (th - nh == sizeof(struct iphdr))
			t = (const void *)&h.raw[sizeof(struct iphdr)];
		break;
	case 6:
		p->family = AF_INET6;
		__builtin_memcpy(p->saddr, &h.ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &h.ip6.daddr, 16);
		if (th - nh == sizeof(struct ipv6hdr))
			t = (const void *)&h.raw[sizeof(struct ipv6hdr)];
		break;
	default:
		return -1;
	}
	if (t == &tcp && bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return -1;
	p->sport = bpf_ntohs(t->source);
	p->dport = bpf_ntohs(t->dest);
	p->tcp_flags = ((const __u8 *)t)[13];
	return 0;
}

/*
 * Local address and port of sk into saddr/sport, remote into daddr/dport.
 * A socket moving to CLOSE has already released its port (tcp_set_state ->
 * inet_put_port zeroes inet_num) when tcp_disconnect sends its RST or
 * tcp_done reports SYN_SENT->CLOSE; inet_sport keeps the port. tp_btf
 * programs only (typed sk).
 */
static __always_inline void sk_pkt(const struct sock *sk, struct pkt *p)
{
	p->family = sk->__sk_common.skc_family;
	p->sport = sk->__sk_common.skc_num;
	if (!p->sport)
		p->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	p->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (p->family == AF_INET) {
		__u32 a = sk->__sk_common.skc_rcv_saddr;
		__u32 b = sk->__sk_common.skc_daddr;

		__builtin_memcpy(p->saddr, &a, 4);
		__builtin_memcpy(p->daddr, &b, 4);
	} else {
		bpf_core_read(p->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(p->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

static __always_inline __u8 syn_retransmits(const struct sock *sk)
{
	return BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits);
}

/* ---- tcp_send_reset: refusals and resets sent ---- */

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

	__u32 netns;

	if (!port_traced(p->dport))
		return;
	netns = sk ? sk_netns_of(sk, btf) : skb_dev_netns(skb, btf);
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
	e->netns = netns;
	if (sk) {
		e->flags |= RECORD_F_HAS_SK;
		e->sk = (__u64)sk;
	}
	bpf_ringbuf_submit(e, 0);
}

/*
 * A RST answering a non-SYN segment for which no socket exists (the
 * connection is gone here): the sender is the local side, daddr of the
 * answered segment.
 */
static __always_inline void rst_out_nosock(const struct sk_buff *skb,
					   const struct pkt *p, __u32 reason,
					   bool btf)
{
	struct record *e;

	if ((p->tcp_flags & TCPHDR_RST) || !port_traced(p->dport))
		return;
	e = reserve(RECORD_RST_OUT);
	if (!e)
		return;
	e->family = p->family;
	e->tcp_flags = p->tcp_flags;
	__builtin_memcpy(e->saddr, p->daddr, 16);
	__builtin_memcpy(e->daddr, p->saddr, 16);
	e->sport = p->dport;
	e->dport = p->sport;
	e->netns = skb_dev_netns(skb, btf);
	e->reason = reason;
	bpf_ringbuf_submit(e, 0);
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

	sk_pkt(sk, &p);
	if (!port_traced(p.sport) && !port_traced(p.dport))
		return;
	e = reserve(RECORD_RST_OUT);
	if (!e)
		return;
	pkt_to_event(&p, e);
	e->flags |= RECORD_F_NO_SKB | RECORD_F_HAS_SK | RECORD_F_CURRENT;
	/* A child never accepted has no file: its listener was closed. */
	e->state = sk->__sk_common.skc_state;
	e->netns = sk_netns_of(sk, true);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	e->reason = reason;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
}

/*
 * A RST leaves this host's TCP stack. From 6.10 tcp:tcp_send_reset fires
 * for every RST (tcp_v4_send_reset/tcp_v6_send_reset call it even when sk
 * is NULL, and pass enum sk_rst_reason); before, only with a full socket,
 * so refusals come from the senders themselves (fentry/kprobe below).
 *
 * refusals: report refused connections (RECORD_RESET_SENT); resets: report
 * RSTs on existing connections (RECORD_RST_OUT, tracepoint only). A segment
 * answered by a listener, request or timewait socket that is not a refusal
 * is neither.
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
	if (!refusals && sk)
		return 0; /* only a socketless RST can be a reset report */
	if (skb_parse(skb, btf, &p))
		return 0;
	if (sk)
		state = RD(btf, __u8, sk, __sk_common.skc_state);
	if ((p.tcp_flags & TCPHDR_SYN) || state == TCP_LISTEN) {
		if (refusals)
			refusal_sent(sk, skb, &p, state, reason, btf);
		return 0;
	}
	if (resets && !sk)
		rst_out_nosock(skb, &p, reason, btf);
	return 0;
}

/*
 * tcp:tcp_send_reset (sk, skb[, reason from 6.10]). The reason argument is
 * read only where CAP_F_RST_REASON says it exists: elsewhere the verifier
 * prunes the read, which it would refuse on a two-argument tracepoint.
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_btf_tcp_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	__u32 reason = RST_REASON_NONE;

	if (caps & CAP_F_RST_REASON)
		reason = (__u32)ctx[2];
	return handle_send_reset(sk, skb, reason, true,
				 caps & CAP_F_REFUSALS, caps & CAP_F_RESETS);
}

/*
 * Before 6.10 tcp:tcp_send_reset fires only with a full socket, so never for
 * "no listener": hook the senders. tcp_v4_send_reset/tcp_v6_send_reset are
 * static but never inlined (their addresses are taken in the request sock
 * ops), with (sk, skb) up to 6.9. No reason exists there: RST_REASON_NONE.
 */
SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(fentry_tcp_v4_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, true, true, false);
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(fentry_tcp_v6_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, true, true, false);
}

/* Where fentry is not allowed (no BPF trampoline, or lockdown). */
SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(kprobe_tcp_v4_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, false, true, false);
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(kprobe_tcp_v6_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, false, true, false);
}

/* ---- inet_sock_set_state: listeners, connect() attempts ---- */

/* CLOSE->LISTEN and LISTEN->CLOSE: a listener appears or goes. */
static __always_inline void listener_change(const struct sock *sk, int newstate)
{
	struct pkt p = {};
	__u32 flags = 0;
	struct record *e;

	sk_local(sk, &p, &flags);
	/* The port of an autobound listener is not known yet at CLOSE->LISTEN
	 * (get_port runs after the state store); userspace learns it later. */
	if (p.dport && !port_traced(p.dport))
		return;
	e = reserve(newstate == TCP_LISTEN ? RECORD_LISTEN : RECORD_LISTEN_CLOSE);
	if (!e)
		return;
	pkt_to_event(&p, e);
	e->flags |= flags;
	e->state = newstate;
	e->netns = sk_netns(sk);
	e->ino = sk_ino(sk);
	e->sk = (__u64)sk;
	e->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	current_proc(&e->proc);
	if (newstate == TCP_LISTEN) {
		/* In listen()'s context: the argument saved at sys_enter_listen. */
		__u64 id = bpf_get_current_pid_tgid();
		struct listen_args *a = bpf_map_lookup_elem(&listen_calls, &id);

		if (a)
			e->backlog_req = a->backlog;
	}
	if (newstate == TCP_CLOSE) {
		struct task_struct *task = (void *)bpf_get_current_task();

		/* do_exit() stores exit_code and sets PF_EXITING before
		 * exit_files() drops the process's sockets. */
		if (BPF_CORE_READ(task, flags) & PF_EXITING) {
			e->flags |= RECORD_F_EXITING;
			e->exit_code = BPF_CORE_READ(task, exit_code);
		}
	}
	bpf_ringbuf_submit(e, 0);
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

	c = bpf_map_lookup_elem(&connecting, &key);
	if (!c)
		return false;
	err = sk->sk_err;
	retrans = syn_retransmits(sk);
	if (err == 0 && retrans == 0)
		return true;
	sk_pkt(sk, &p);
	e = reserve(RECORD_CONNECT_FAILED);
	if (!e)
		return true;
	pkt_to_event(&p, e);
	e->state = TCP_SYN_SENT;
	e->netns = sk_netns_of(sk, true);
	e->sk = key;
	e->ret = -err;
	ms = (bpf_ktime_get_ns() - c->ts) / 1000000;
	if (ms > 0xffffff)
		ms = 0xffffff;
	e->aux = ((__u32)retrans << 24) | (__u32)ms;
	e->proc = c->proc;
	e->flags |= RECORD_F_PROC_KNOWN;
	bpf_ringbuf_submit(e, 0);
	return true;
}

/*
 * Socket state changes (sock:inet_sock_set_state, 4.16+):
 *  CLOSE->LISTEN in inet_csk_listen_start, in the listen() caller's context;
 *  LISTEN->CLOSE when the last reference to the listener goes (close(),
 *    exit, tcp_disconnect), in the context of whoever dropped it;
 *  CLOSE->SYN_SENT in tcp_v4_connect/tcp_v6_connect, the connect() caller:
 *    who connects, for clients and connect failures;
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

	if (oldstate == TCP_SYN_SENT) {
		if (!(caps & conn_caps))
			return 0;
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		/* No entry (refused by a RST, or not traced): nothing to delete. */
		if ((caps & CAP_F_CONNECT_FAILURES) && newstate == TCP_CLOSE &&
		    !connect_failed(sk))
			return 0;
		bpf_map_delete_elem(&connecting, &key);
		return 0;
	}
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		struct conn v = {};

		if (!(caps & conn_caps))
			return 0;
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		family = sk->__sk_common.skc_family;
		if (family != AF_INET && family != AF_INET6)
			return 0;
		if (!port_traced(bpf_ntohs(sk->__sk_common.skc_dport)))
			return 0;
		current_proc(&v.proc);
		if (caps & CAP_F_CONNECT_FAILURES)
			v.ts = bpf_ktime_get_ns();
		bpf_map_update_elem(&connecting, &key, &v, BPF_ANY);
		return 0;
	}
	if (!(caps & CAP_F_LISTENERS))
		return 0;
	if (!(oldstate == TCP_CLOSE && newstate == TCP_LISTEN) &&
	    !(oldstate == TCP_LISTEN && newstate == TCP_CLOSE))
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	listener_change(sk, newstate);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, const struct sock *sk, int oldstate,
	     int newstate)
{
	return handle_set_state(sk, oldstate, newstate);
}

/* ---- tcp_receive_reset: refused clients, resets received ---- */

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
	struct pkt p = {};
	struct conn *c;
	struct record *e;

	c = bpf_map_lookup_elem(&connecting, &key);
	if (!c && filter_ports)
		return; /* not traced at connect() */
	sk_pkt(sk, &p);
	if (client_summarized(&p)) {
		summary_count(&p, sk_netns_of(sk, true), false);
		goto out;
	}
	e = reserve(RECORD_CLIENT_REFUSED);
	if (e) {
		pkt_to_event(&p, e);
		e->state = TCP_SYN_SENT;
		e->netns = sk_netns_of(sk, true);
		e->sk = key;
		if (c) {
			e->proc = c->proc;
			e->flags |= RECORD_F_PROC_KNOWN;
		}
		bpf_ringbuf_submit(e, 0);
	}
out:
	if (c)
		bpf_map_delete_elem(&connecting, &key);
}

/* Past the handshake (tcp_reset()): the owner sees ECONNRESET (or EPIPE). */
static __always_inline void rst_in(const struct sock *sk, __u8 state)
{
	struct pkt p = {};
	struct record *e;

	sk_pkt(sk, &p);
	if (!port_traced(p.sport) && !port_traced(p.dport))
		return;
	e = reserve(RECORD_RST_IN);
	if (!e)
		return;
	pkt_to_event(&p, e);
	e->state = state;
	e->flags |= RECORD_F_HAS_SK;
	e->netns = sk_netns_of(sk, true);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	bpf_ringbuf_submit(e, 0);
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

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_btf_tcp_receive_reset, const struct sock *sk)
{
	return handle_receive_reset(sk);
}

/* The file behind fd in the current task, or NULL. */
static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/*
 * bind() errors are why a service is not listening (EADDRINUSE: another
 * process holds the port). Syscall tracepoints: the arguments at entry, the
 * result at exit. No kernel tracepoint reports a failed inet_bind.
 */
SEC("tracepoint/syscalls/sys_enter_bind")
int tp_sys_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	struct sockaddr *uaddr = (void *)ctx->args[1];
	__u64 id = bpf_get_current_pid_tgid();
	struct bind_args a = {};

	if (bpf_probe_read_user(&a.family, sizeof(a.family), &uaddr->sa_family))
		return 0;
	if (a.family == AF_INET) {
		struct sockaddr_in sin;

		if (bpf_probe_read_user(&sin, sizeof(sin), uaddr))
			return 0;
		a.port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(a.addr, &sin.sin_addr, 4);
	} else if (a.family == AF_INET6) {
		struct sockaddr_in6 sin6;

		if (bpf_probe_read_user(&sin6, sizeof(sin6), uaddr))
			return 0;
		a.port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(a.addr, &sin6.sin6_addr, 16);
	} else {
		return 0;
	}
	if (!port_traced(a.port))
		return 0;
	a.fd = ctx->args[0];
	bpf_map_update_elem(&binds, &id, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_sys_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bind_args *a;
	struct socket *sock;
	struct sock *sk;
	struct file *f;
	struct record *e;
	__s32 ret = ctx->ret;

	a = bpf_map_lookup_elem(&binds, &id);
	if (!a)
		return 0;
	/* A successful bind to port 0 (ephemeral) holds nothing anyone asked for. */
	if (ret == 0 && a->port == 0)
		goto out;
	f = fd_file(a->fd);
	if (!f)
		goto out;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		goto out;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
	    BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
		goto out;

	e = reserve(RECORD_BIND);
	if (!e)
		goto out;
	e->family = a->family;
	__builtin_memcpy(e->daddr, a->addr, 16);
	e->dport = a->port;
	e->ret = ret;
	e->netns = sk_netns(sk);
	e->ino = BPF_CORE_READ(f, f_inode, i_ino);
	e->sk = (__u64)sk;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
out:
	bpf_map_delete_elem(&binds, &id);
	return 0;
}

/* The struct sock behind fd in the current task, if it is a TCP socket. */
static __always_inline struct sock *fd_tcp_sock(int fd, __u64 *ino)
{
	struct file *f = fd_file(fd);
	struct socket *sock;
	struct sock *sk;

	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	return sk;
}

/*
 * listen(): the backlog the program asked for, before net.core.somaxconn
 * clamps it. CLOSE->LISTEN (handle_set_state) picks it up in the same
 * call; a listen() on a socket already listening only changes the
 * backlog, which no state change reports: sys_exit_listen does.
 */
SEC("tracepoint/syscalls/sys_enter_listen")
int tp_sys_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct listen_args a = {};
	struct sock *sk;
	__u64 ino;

	a.fd = ctx->args[0];
	a.backlog = ctx->args[1];
	sk = fd_tcp_sock(a.fd, &ino);
	if (!sk)
		return 0;
	a.was_listening = BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_LISTEN;
	bpf_map_update_elem(&listen_calls, &id, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct listen_args *a;
	struct pkt p = {};
	__u32 flags = 0;
	struct sock *sk;
	struct record *e;
	__u64 ino;

	a = bpf_map_lookup_elem(&listen_calls, &id);
	if (!a)
		return 0;
	if (ctx->ret != 0 || !a->was_listening)
		goto out;
	sk = fd_tcp_sock(a->fd, &ino);
	if (!sk)
		goto out;
	sk_local(sk, &p, &flags);
	if (!port_traced(p.dport))
		goto out;
	e = reserve(RECORD_LISTEN_UPDATE);
	if (!e)
		goto out;
	pkt_to_event(&p, e);
	e->flags |= flags;
	e->state = TCP_LISTEN;
	e->netns = sk_netns(sk);
	e->ino = ino;
	e->sk = (__u64)sk;
	e->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	e->backlog_req = a->backlog;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
out:
	bpf_map_delete_elem(&listen_calls, &id);
	return 0;
}

/* ---- listen-queue overflow (per-packet detail; totals come from the
 * kernel's counters in userspace) ---- */

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

/* tcp_conn_request(rsk_ops, af_ops, sk, skb): exported, every kernel. */
SEC("fentry/tcp_conn_request")
int BPF_PROG(fentry_tcp_conn_request, void *rsk_ops, void *af_ops,
	     const struct sock *sk)
{
	return handle_conn_request(sk);
}

SEC("kprobe/tcp_conn_request")
int BPF_KPROBE(kprobe_tcp_conn_request, void *rsk_ops, void *af_ops,
	       const struct sock *sk)
{
	return handle_conn_request(sk);
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

SEC("fentry/tcp_v4_syn_recv_sock")
int BPF_PROG(fentry_tcp_v4_syn_recv_sock, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_syn_recv_sock(sk, skb, false);
}

SEC("fentry/tcp_v6_syn_recv_sock")
int BPF_PROG(fentry_tcp_v6_syn_recv_sock, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_syn_recv_sock(sk, skb, true);
}

SEC("kprobe/tcp_v4_syn_recv_sock")
int BPF_KPROBE(kprobe_tcp_v4_syn_recv_sock, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_syn_recv_sock(sk, skb, false);
}

SEC("kprobe/tcp_v6_syn_recv_sock")
int BPF_KPROBE(kprobe_tcp_v6_syn_recv_sock, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_syn_recv_sock(sk, skb, true);
}

/*
 * accept(): when the owner last took a connection off a listener's queue,
 * to tell "stopped accepting" from "accepts, but too slowly".
 */
static __always_inline int handle_accept(int fd)
{
	struct listen_stats *s;
	struct sock *sk;
	__u64 ino;

	sk = fd_tcp_sock(fd, &ino);
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 0;
	if (!listener_traced(sk))
		return 0;
	s = stats_of(ino);
	if (s)
		s->last_accept = bpf_ktime_get_ns();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int tp_sys_enter_accept4(struct trace_event_raw_sys_enter *ctx)
{
	return handle_accept(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_accept")
int tp_sys_enter_accept(struct trace_event_raw_sys_enter *ctx)
{
	return handle_accept(ctx->args[0]);
}

/* ---- kfree_skb: packet filter drops, final-ACK overflow; icmp_send;
 * SYN retransmits (issue 5) ---- */

/* Network namespace of an skb: its socket's, its device's, or (locally
 * generated, before the output device is set) its route's device's. */
static __always_inline __u32 skb_netns(const struct sk_buff *skb)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	unsigned long refdst;

	if (sk)
		return sk_netns(sk);
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	refdst = BPF_CORE_READ(skb, _skb_refdst) & ~1UL;
	if (refdst)
		return BPF_CORE_READ((struct dst_entry *)refdst, dev, nd_net.net, ns.inum);
	return 0;
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
 * output, ...) is the hook. Only TCP SYNs are reported.
 */
static __always_inline int handle_fw_drop(void *ctx, const struct sk_buff *skb,
					  void *location)
{
	__u64 stack[FW_STACK_DEPTH];
	__u64 key = (__u64)skb;
	struct pkt p = {};
	struct sock *sk;
	struct record *e;
	long n;

	if (skb_parse(skb, true, &p) || !pkt_is_syn(&p) || !port_traced(p.dport)) {
		bpf_map_delete_elem(&fw_icmp_skbs, &key);
		return 0;
	}
	e = reserve(RECORD_FW_DROP);
	if (!e) {
		bpf_map_delete_elem(&fw_icmp_skbs, &key);
		return 0;
	}
	pkt_to_event(&p, e);
	e->netns = skb_netns(skb);
	if (bpf_map_lookup_elem(&fw_icmp_skbs, &key)) {
		e->flags |= RECORD_F_FW_ICMP;
		bpf_map_delete_elem(&fw_icmp_skbs, &key);
	}
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
	/* A locally generated SYN still has its socket before it leaves
	 * (output/postrouting); on loopback input it was orphaned. */
	sk = BPF_CORE_READ(skb, sk);
	if (sk) {
		__u64 skey = (__u64)sk;
		struct conn *c = bpf_map_lookup_elem(&connecting, &skey);

		if (c) {
			e->proc = c->proc;
			e->flags |= RECORD_F_PROC_KNOWN;
		}
		e->sk = skey;
	}
	bpf_ringbuf_submit(e, 0);
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

/*
 * skb:kfree_skb (skb, location[, reason from 5.17][, rx_sk from 6.11]).
 * Every freed-with-a-reason packet on the host comes here, so the reason is
 * compared first. The arguments past location are read only where `caps`
 * says the kernel has them (firewall needs 5.17, final ACK 6.15): elsewhere
 * the verifier prunes the read it would refuse.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb, struct sk_buff *skb, void *location)
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
 * icmp:icmp_send (6.14+): __icmp_send is about to answer skb with an ICMP
 * error. A packet filter `reject` sends ICMP port-unreachable (or the type
 * the rule names) and then drops the SYN: remember the skb so the drop
 * says "rejected with ICMP". IPv6 has no such tracepoint.
 */
SEC("tp_btf/icmp_send")
int BPF_PROG(tp_btf_icmp_send, const struct sk_buff *skb, int type, int code)
{
	__u64 key = (__u64)skb;
	__u8 one = 1;

	if (type != ICMP_DEST_UNREACH)
		return 0;
	bpf_map_update_elem(&fw_icmp_skbs, &key, &one, BPF_ANY);
	return 0;
}

/* A SYN of a local connect() was retransmitted: no answer yet (timer, in
 * softirq: the process comes from connecting). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_tcp_retransmit_skb, const struct sock *sk,
	     const struct sk_buff *skb)
{
	__u64 key = (__u64)sk;
	struct pkt p = {};
	struct conn *c;
	struct record *e;

	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	c = bpf_map_lookup_elem(&connecting, &key);
	if (!c)
		return 0;
	sk_pkt(sk, &p);
	e = reserve(RECORD_SYN_RETRANS);
	if (!e)
		return 0;
	pkt_to_event(&p, e);
	e->state = TCP_SYN_SENT;
	e->netns = sk_netns_of(sk, true);
	e->sk = key;
	e->aux = syn_retransmits(sk);
	e->proc = c->proc;
	e->flags |= RECORD_F_PROC_KNOWN;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
