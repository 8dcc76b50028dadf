/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every capability shares: the run-time settings, the ring buffer and
 * its loss counter, the port filter, the owner of a connect() in progress,
 * process capture, network namespace helpers and the packet parse.
 */
#ifndef RSTTRACE_COMMON_H
#define RSTTRACE_COMMON_H

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
#define ECONNREFUSED 111
#define ETIMEDOUT 110

/* Set before load: the verifier prunes what is not used. */
const volatile bool filter_ports = false;
/* enum cap_flag: what the tp_btf programs do (see rsttrace.h). */
const volatile __u32 caps = 0;
/*
 * Ticks a second of jiffies (CONFIG_HZ) where tracing programs may call
 * bpf_jiffies64() (userspace probes it); 0 where they may not, and the
 * clock is read instead. Reading the clock
 * (bpf_ktime_get_ns -> ktime_get_mono_fast_ns) reads the clocksource: on
 * a paravirtualized guest (kvm-clock, pvclock) that was ~150 ns, twice per
 * refusal; jiffies_64 is one load. For what needs no finer time than a
 * tick: which second a rate counts in, how long a connect() waited.
 */
const volatile __u32 jiffies_hz = 0;
/* 2^32 / jiffies_hz (userspace sets both): the second of a jiffy is a
 * multiply and a shift, not a division (tens of cycles, on every refusal). */
const volatile __u64 jiffies_sec_mult = 0;

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
	__u64 ts; /* coarse_ticks() at connect(); 0 unless connect_failures */
	__u32 fw; /* enum conn_fw: what became of its SYNs' firewall drops */
	/* enum decision: a refusing side on this host found this entry by
	 * its SYN (syn_client in summary.h) and decided here, not in the
	 * decisions map; 0 otherwise. */
	__u8 decided;
	__u8 pad[3];
};

/* Bits of conn.fw: the attempt's end follows what its drops did, so that
 * one attempt is one event, or counted once. */
enum conn_fw {
	CONN_FW_WRITTEN = 1 << 0,    /* a drop record names this socket */
	CONN_FW_SUMMARIZED = 1 << 1, /* a drop was counted, or lost */
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
	/* Per-CPU LRU lists: updated on every connection from every CPU;
	 * one common list would serialize them on its lock. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} connecting SEC(".maps");

/*
 * Where a `connecting` entry goes first: a table of slots indexed by a hash
 * of the socket address, taken and given back with one atomic instruction
 * each and no lock. An LRU hash update takes its bucket's and its LRU
 * list's spinlocks with interrupts off, and the delete takes them again:
 * under a refusal storm on this paravirtualized guest the two were ~220 ns
 * of every connect() (turning interrupts back on is a paravirt call). A
 * socket whose slot another live socket holds goes to `connecting`, as
 * every socket does where the kernel has no BPF compare-and-exchange
 * (have_cmpxchg, probed by userspace).
 *
 * A slot is taken at connect() before the first SYN leaves, and read and
 * given back only by the socket's own later events, which its lock
 * serializes; the one reader from elsewhere, the refusing side's
 * syn_client, runs while the socket waits in SYN_SENT for the very SYN it
 * answers (on loopback and veth, inside the connect()). So no program reads
 * a slot while another fills or frees it for the same socket, and a
 * socket whose address a slot does not hold finds nothing there.
 */
#define CONNECT_SLOTS_SHIFT 16

const volatile bool have_cmpxchg = false;
/* connect_slots' size less one (a power of two); userspace sets it. */
const volatile __u32 connect_slots_mask = (1 << CONNECT_SLOTS_SHIFT) - 1;

struct connect_slot {
	__u64 sk; /* the socket holding the slot; 0: free */
	struct conn c;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	/* userspace shrinks it to one slot where have_cmpxchg is false */
	__uint(max_entries, 1 << CONNECT_SLOTS_SHIFT); /* at most */
	__type(key, __u32);
	__type(value, struct connect_slot);
} connect_slots SEC(".maps");

/* Entries put in `connecting` while slots are in use, less those deleted:
 * while 0, a socket without a slot has no entry and the hash is not
 * looked up. LRU evictions are not seen: the count can only err high,
 * which costs a lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} connecting_spilled SEC(".maps");

/* A socket address as a number: the verifier allows no arithmetic on a
 * socket pointer, but a pointer stored in a map value (privileged) reads
 * back as a number. Per CPU; a program interrupting this one between the
 * store and the load is caught by the comparison (no slot then). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} addr_scratch SEC(".maps");

static __always_inline struct connect_slot *connect_slot_of(__u64 key)
{
	__u32 zero = 0, i;
	__u64 *t = bpf_map_lookup_elem(&addr_scratch, &zero);
	__u64 n;

	if (!t)
		return NULL;
	*t = key;
	n = *(volatile __u64 *)t;
	/* n = 0 unless n == key, compared where the compiler cannot see it:
	 * told that they are equal, it would hash key, the pointer. */
	asm volatile("if %[n] == %[k] goto +1; %[n] = 0"
		     : [n] "+r"(n) : [k] "r"(key));
	if (!n)
		return NULL;
	/* Fibonacci hashing: socket addresses are slab objects a few KiB
	 * apart, their low bits alike. */
	i = (n * 0x9E3779B97F4A7C15ULL) >> (64 - CONNECT_SLOTS_SHIFT);
	i &= connect_slots_mask;
	return bpf_map_lookup_elem(&connect_slots, &i);
}

static __always_inline bool connecting_spills(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&connecting_spilled, &zero);

	return n && *n;
}

/* The `connecting` entry of the socket at key, NULL if it has none. */
static __always_inline struct conn *conn_find(__u64 key)
{
	if (have_cmpxchg) {
		struct connect_slot *s = connect_slot_of(key);

		if (s && s->sk == key)
			return &s->c;
		if (!connecting_spills())
			return NULL;
	}
	return bpf_map_lookup_elem(&connecting, &key);
}

/* A new `connecting` entry for the socket at key (its connect()). */
static __always_inline void conn_add(__u64 key, const struct conn *v)
{
	__u32 zero = 0;
	__u64 *n;

	if (have_cmpxchg) {
		struct connect_slot *s = connect_slot_of(key);

		if (s) {
			/* Free, or left held by this address's previous
			 * socket (its close was not seen): ours. */
			__u64 old = __sync_val_compare_and_swap(&s->sk, 0, key);

			if (old == 0 || old == key) {
				s->c = *v;
				return;
			}
		}
	}
	if (bpf_map_update_elem(&connecting, &key, v, BPF_ANY) || !have_cmpxchg)
		return;
	n = bpf_map_lookup_elem(&connecting_spilled, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* The socket at key has no `connecting` entry any more; whether it had. */
static __always_inline bool conn_delete(__u64 key)
{
	__u32 zero = 0;
	__u64 *n;

	if (have_cmpxchg) {
		struct connect_slot *s = connect_slot_of(key);

		if (s && s->sk == key) {
			/* An exchange, not a store: every read of the entry
			 * is done before another socket can take the slot. */
			__sync_lock_test_and_set(&s->sk, 0);
			return true;
		}
		if (!connecting_spills())
			return false;
	}
	/* Looked up before deleted: a delete takes the bucket lock (with
	 * interrupts off) even when the key is absent, a lookup takes none,
	 * and every socket's close comes here. */
	if (!bpf_map_lookup_elem(&connecting, &key) ||
	    bpf_map_delete_elem(&connecting, &key))
		return false;
	if (have_cmpxchg) {
		n = bpf_map_lookup_elem(&connecting_spilled, &zero);
		if (n)
			__sync_fetch_and_add(n, -1);
	}
	return true;
}

/* Monotonic time in ticks: jiffies, or milliseconds where jiffies cannot
 * be read. Differences become milliseconds with ticks_ms, on the record
 * path only. */
static __always_inline __u64 coarse_ticks(void)
{
	if (jiffies_hz)
		return bpf_jiffies64();
	return bpf_ktime_get_ns() / 1000000;
}

static __always_inline __u64 ticks_ms(__u64 ticks)
{
	if (jiffies_hz)
		return ticks * 1000 / jiffies_hz;
	return ticks;
}

/* Monotonic seconds, to a tick: which second a rate counts in. */
static __always_inline __u64 coarse_sec(void)
{
	if (jiffies_hz && jiffies_sec_mult)
		return (bpf_jiffies64() * jiffies_sec_mult) >> 32;
	return bpf_ktime_get_ns() / 1000000000ULL;
}

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

/*
 * The current task, for the owner tables, but its cgroup (the caller's
 * choice: current_proc reads the task's). `btf`: the caller is a tp_btf or
 * fentry program, where the mount namespace is read with plain loads from
 * bpf_get_current_task_btf() (5.11+; the CO-RE check below is a constant
 * at load, so older kernels never see the call): three
 * bpf_probe_read_kernel calls cost ~100 ns on every connect() otherwise.
 * nsproxy is NULL once exit_task_namespaces() ran: either read gives 0.
 */
static __always_inline void current_proc_of(struct proc_info *p, bool btf)
{
	__u64 id = bpf_get_current_pid_tgid();

	p->pid = id >> 32;
	p->tid = (__u32)id;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
	if (btf && bpf_core_enum_value_exists(enum bpf_func_id,
					      BPF_FUNC_get_current_task_btf)) {
		struct task_struct *t = bpf_get_current_task_btf();

		p->mntns = t->nsproxy->mnt_ns->ns.inum;
	} else {
		struct task_struct *task = (void *)bpf_get_current_task();

		p->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	}
}

/*
 * The cgroup (v2) sk was made in: cgroup_sk_alloc() stores it when the
 * socket is made and holds a reference while the socket lives (a field
 * of its own where the kernel has sock_cgroup_data.cgroup; before, a
 * union that cgroup v1's net_cls and net_prio could turn into their data,
 * and the task's is read instead). For the connect()
 * that follows it is the caller's cgroup, read from the socket the
 * program already has in cache: bpf_get_current_cgroup_id() walks
 * task -> css_set -> cgroup -> kernfs node, three loads that missed the
 * cache on every connect() under a storm (~140 ns); the socket's own two
 * loads missed as well (~90 ns), so a connect() records none and a record
 * reads it (conn_proc_to). 0 if not known.
 */
static __always_inline __u64 sk_cgroup_id(const struct sock *sk, bool btf)
{
	struct cgroup *cg;

	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	if (!btf)
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	cg = sk->sk_cgrp_data.cgroup;
	if (!cg)
		return 0;
	return cg->kn->id;
}

/*
 * Who connected: c's process into e. The cgroup, where connect() left it
 * 0, is read from the socket now (sk_cgroup_id): it holds a reference to
 * the cgroup it was made in while it lives, and only a record needs it.
 */
static __always_inline void conn_proc_to(struct record *e, const struct conn *c,
					 const struct sock *sk, bool btf)
{
	e->proc = c->proc;
	if (!e->proc.cgroup_id)
		e->proc.cgroup_id = sk_cgroup_id(sk, btf);
	e->flags |= RECORD_F_PROC_KNOWN;
}

static __always_inline void current_proc(struct proc_info *p)
{
	current_proc_of(p, false);
	p->cgroup_id = bpf_get_current_cgroup_id();
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

static __always_inline struct net *sk_net_of(const struct sock *sk, bool btf)
{
	return RD(btf, struct net *, sk, __sk_common.skc_net.net);
}

/*
 * A namespace's inode number, remembered per CPU by namespace cookie.
 *
 * net->ns.inum shares its cache line with the namespace's reference count
 * (struct ns_common: inum, then the count), which every socket made or
 * freed in the namespace changes (sk_alloc -> get_net, __sk_destruct ->
 * put_net). Under a connection storm on several CPUs that line moves
 * between them, and reading inum missed the cache: about 90 ns per read,
 * two reads per refusal. net_cookie sits on a line nothing writes after
 * setup, and is never reused (a u64 assigned when the namespace is made,
 * 5.12+: commit 3d368ab87cf6). An entry is one u64, cookie's low half
 * above inum, written and read with one instruction each: a program
 * interrupted on this CPU by another never sees half an entry. Two live
 * namespaces share a low half only 2^32 namespaces apart.
 */
#define NETNS_MEMOS 16

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NETNS_MEMOS);
	__type(key, __u32);
	__type(value, __u64);
} netns_memo SEC(".maps");

static __always_inline __u32 net_inum(const struct net *net, bool btf)
{
	__u64 cookie, want, got, *m;
	__u32 idx, inum;

	if (!net)
		return 0;
	/* Before 5.12 the cookie is an atomic64_t set on first use, 0 until
	 * then: nothing to check an entry by. */
	if (!btf || !bpf_core_field_exists(net->net_cookie))
		return RD(btf, __u32, net, ns.inum);
	cookie = net->net_cookie;
	if (!cookie)
		return net->ns.inum;
	want = cookie << 32;
	idx = cookie & (NETNS_MEMOS - 1);
	m = bpf_map_lookup_elem(&netns_memo, &idx);
	if (m) {
		got = *(volatile __u64 *)m;
		if ((got & ~0xffffffffULL) == want)
			return (__u32)got;
	}
	inum = net->ns.inum;
	if (m)
		*(volatile __u64 *)m = want | inum;
	return inum;
}

static __always_inline __u32 sk_netns_of(const struct sock *sk, bool btf)
{
	return net_inum(sk_net_of(sk, btf), btf);
}

/*
 * Until 5.12 net_cookie was an atomic64_t, set on first use by
 * bpf_get_netns_cookie (added in 5.7); commit 3d368ab87cf6 ("net:
 * initialize net->net_cookie at netns setup") made it a u64 assigned when
 * the namespace is made. Same size and offset, but CO-RE does not match a
 * u64 with a struct: one flavour each.
 */
struct net___old {
	atomic64_t net_cookie;
} __attribute__((preserve_access_index));

static __always_inline __u64 net_cookie_of(const struct net *net)
{
	const struct net___old *old = (const void *)net;
	__u64 c = 0;

	if (!net)
		return 0;
	if (bpf_core_field_exists(net->net_cookie))
		bpf_core_read(&c, sizeof(c), &net->net_cookie);
	else if (bpf_core_field_exists(old->net_cookie))
		bpf_core_read(&c, sizeof(c), &old->net_cookie.counter);
	return c;
}

/* The record's network namespace: inode number and cookie. */
static __always_inline void record_net(struct record *e, const struct net *net,
				       bool btf)
{
	e->netns = net_inum(net, btf);
	e->netns_cookie = net_cookie_of(net);
}

/* Inode of the socket's file, as /proc/net/tcp and /proc/PID/fd show it. */
static __always_inline __u64 sk_ino(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
}

/* Network namespace of a received skb: its device's. */
static __always_inline struct net *skb_dev_net(const struct sk_buff *skb, bool btf)
{
	struct net_device *dev = RD(btf, struct net_device *, skb, dev);

	if (!dev)
		return NULL;
	return RD(btf, struct net *, dev, nd_net.net);
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
	__u32 seq; /* the segment's sequence number (skb_parse only) */
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

/* IPv6 next-header values of the extension headers a TCP segment may sit
 * behind (include/net/ipv6.h), and how many of them the parse walks. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_NONE 59
#define NEXTHDR_DEST 60
#define IPV6_EXT_HDRS_MAX 8
/* IPv4 fragment offset bits of frag_off (host order). */
#define IP_OFFSET 0x1fff
/* IPv6 fragment header: offset bits of frag_off (host order). */
#define IP6_OFFSET 0xfff8

/*
 * Offset from head of the TCP header behind an IPv6 header at off whose
 * next header is nexthdr, walking the extension headers (ipv6_skip_exthdr
 * does the same in the kernel); -1 if the packet is not TCP, is a fragment
 * other than the first (only the first carries the TCP header), or has
 * more extension headers than the walk allows.
 */
static __always_inline int ipv6_tcp_offset(const unsigned char *head,
					   __u32 off, __u8 nexthdr)
{
	for (int i = 0; i < IPV6_EXT_HDRS_MAX; i++) {
		struct {
			__u8 nexthdr;
			__u8 hdrlen;
			__be16 frag_off; /* fragment header only */
		} x;

		switch (nexthdr) {
		case IPPROTO_TCP:
			return off;
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_FRAGMENT:
		case NEXTHDR_AUTH:
		case NEXTHDR_DEST:
			break;
		default: /* NEXTHDR_NONE, UDP, ICMPv6, ... */
			return -1;
		}
		if (bpf_probe_read_kernel(&x, sizeof(x), head + off))
			return -1;
		if (nexthdr == NEXTHDR_FRAGMENT) {
			if (bpf_ntohs(x.frag_off) & IP6_OFFSET)
				return -1;
			off += 8;
		} else if (nexthdr == NEXTHDR_AUTH) {
			off += ((__u32)x.hdrlen + 2) * 4; /* 32-bit words, RFC 4302 */
		} else {
			off += ((__u32)x.hdrlen + 1) * 8;
		}
		nexthdr = x.nexthdr;
	}
	return nexthdr == IPPROTO_TCP ? (int)off : -1;
}

/*
 * Addresses, ports and flags of the TCP segment in skb, from its own
 * headers: for a refused SYN the socket is NULL, so the skb is all there
 * is. -1 unless the packet is TCP and carries its TCP header: the packet
 * filter drops UDP and ICMP with the same reason as TCP, and a non-first
 * fragment has no TCP header. The TCP header's offset comes from the IP
 * headers, not skb->transport_header: before the transport layer (IPv6
 * prerouting, input) that points right behind the fixed header.
 *
 * One read covers the IP header and, without IPv4 options or IPv6
 * extension headers, the TCP header right behind it (IPv6 40 + TCP 20
 * bytes). For a short IPv4 segment it reads past the segment's end, still
 * inside the skb's head buffer (skb_shared_info follows it); the bytes
 * past the headers are not used.
 */
static __always_inline int skb_parse(const struct sk_buff *skb, bool btf,
				     struct pkt *p)
{
	unsigned char *head = RD(btf, unsigned char *, skb, head);
	__u16 nh = RD(btf, __u16, skb, network_header);
	union {
		struct iphdr ip;
		struct ipv6hdr ip6;
		__u8 raw[sizeof(struct ipv6hdr) + sizeof(struct tcphdr)];
	} h;
	struct tcphdr tcp;
	const struct tcphdr *t = &tcp;
	__u32 hlen;
	int th;

	if (bpf_probe_read_kernel(&h, sizeof(h), head + nh))
		return -1;
	switch (h.raw[0] >> 4) {
	case 4:
		if (h.ip.protocol != IPPROTO_TCP ||
		    (bpf_ntohs(h.ip.frag_off) & IP_OFFSET))
			return -1;
		hlen = (h.raw[0] & 0x0f) * 4;
		if (hlen < sizeof(struct iphdr))
			return -1;
		p->family = AF_INET;
		__builtin_memcpy(p->saddr, &h.ip.saddr, 4);
		__builtin_memcpy(p->daddr, &h.ip.daddr, 4);
		if (hlen == sizeof(struct iphdr))
			t = (const void *)&h.raw[sizeof(struct iphdr)];
		th = nh + hlen;
		break;
	case 6:
		th = ipv6_tcp_offset(head, nh + sizeof(struct ipv6hdr),
				     h.ip6.nexthdr);
		if (th < 0)
			return -1;
		p->family = AF_INET6;
		__builtin_memcpy(p->saddr, &h.ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &h.ip6.daddr, 16);
		if (th == nh + sizeof(struct ipv6hdr))
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
	p->seq = bpf_ntohl(t->seq);
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

#endif /* RSTTRACE_COMMON_H */
