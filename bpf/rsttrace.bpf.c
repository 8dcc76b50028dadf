// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * rsttrace: what the kernel does when TCP connections fail to be established.
 *
 * Programs here only observe; they never change a packet or a socket. Each
 * hook has one always-inline handler and a thin attach wrapper, so other
 * wrappers (fentry, kprobe) can share the handler on kernels that need them.
 */
#include "../vmlinux.h"
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
#define TCPHDR_ACK 0x10

/* Set before load (pwru's habit): the verifier prunes what is not used. */
const volatile bool filter_ports = false;
/* enum skb_drop_reason value of TCP_LISTEN_OVERFLOW on this kernel (6.15+),
 * resolved from BTF by name in userspace; 0 means none. */
const volatile __u32 reason_listen_overflow = 0;

/* Force the generated Go types for the enums. */
const enum event_type *unused_event_type __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const struct event *unused_event __attribute__((unused));
const struct listen_stats *unused_listen_stats __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* userspace may resize before load */
} events SEC(".maps");

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

/*
 * Who called connect() on a socket, recorded at CLOSE->SYN_SENT (process
 * context; the source port is not chosen yet there, so the key is the socket
 * address). Read when the RST arrives in softirq, where `current` is
 * whoever was on the CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct proc_info);
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

static __always_inline bool port_traced(__u16 port)
{
	__u32 key = port;
	__u8 *v;

	if (!filter_ports)
		return true;
	v = bpf_map_lookup_elem(&ports, &key);
	return v && *v;
}

static __always_inline struct event *reserve(__u8 type)
{
	struct event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			*n += 1;
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

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Inode of the socket's file, as /proc/net/tcp and /proc/PID/fd show it. */
static __always_inline __u64 sk_ino(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
}

/* Local address and port of sk into daddr/dport (listen and bind events). */
static __always_inline void sk_local(const struct sock *sk, struct event *e)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->dport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->family == AF_INET) {
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_rcv_saddr);
	} else {
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_ipv6only))
			e->flags |= EVENT_F_V6ONLY;
	}
}

/*
 * Addresses of the segment a RST answers, from the skb's own headers: for a
 * refused SYN the socket is NULL, so the skb is all there is.
 */
static __always_inline int skb_tuple(const struct sk_buff *skb, struct event *e)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct tcphdr tcp;
	__u8 ver;

	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return -1;
	ver >>= 4;
	if (ver == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return -1;
		e->family = AF_INET;
		__builtin_memcpy(e->saddr, &ip.saddr, 4);
		__builtin_memcpy(e->daddr, &ip.daddr, 4);
	} else if (ver == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return -1;
		e->family = AF_INET6;
		__builtin_memcpy(e->saddr, &ip6.saddr, 16);
		__builtin_memcpy(e->daddr, &ip6.daddr, 16);
	} else {
		return -1;
	}
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return -1;
	e->sport = bpf_ntohs(tcp.source);
	e->dport = bpf_ntohs(tcp.dest);
	e->tcp_flags = ((__u8 *)&tcp)[13];
	return 0;
}

/*
 * A RST leaves this host's TCP stack. Called for every RST from 6.10 on
 * (tcp_v4_send_reset/tcp_v6_send_reset call trace_tcp_send_reset even when
 * sk is NULL, and pass enum sk_rst_reason; before, the tracepoint fired only
 * with a full socket). Only RSTs that refuse a connection are reported:
 * the answered segment is a SYN (nothing listens), or sk is a listener
 * (final ACK with tcp_abort_on_overflow).
 */
static __always_inline int handle_send_reset(const struct sock *sk,
					     const struct sk_buff *skb,
					     __u32 reason)
{
	struct event *e;
	__u8 state = 0;

	if (!skb)
		return 0; /* active reset of an established socket: not a refusal */
	if (sk)
		state = BPF_CORE_READ(sk, __sk_common.skc_state);

	e = reserve(EVENT_RESET_SENT);
	if (!e)
		return 0;
	if (skb_tuple(skb, e) ||
	    !((e->tcp_flags & TCPHDR_SYN) || state == TCP_LISTEN) ||
	    !port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->reason = reason;
	e->state = state;
	if (sk) {
		e->flags |= EVENT_F_HAS_SK;
		e->netns = sk_netns(sk);
		e->sk = (__u64)sk;
	} else {
		e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* 6.10+: the tracepoint carries (sk, skb, reason). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_btf_tcp_send_reset, const struct sock *sk,
	     const struct sk_buff *skb, enum sk_rst_reason reason)
{
	return handle_send_reset(sk, skb, reason);
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
	return handle_send_reset(sk, skb, RST_REASON_NONE);
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(fentry_tcp_v6_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE);
}

/* Where fentry is not allowed (no BPF trampoline, or lockdown). */
SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(kprobe_tcp_v4_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE);
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(kprobe_tcp_v6_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE);
}

/*
 * Socket state changes (sock:inet_sock_set_state, 4.16+):
 *  CLOSE->LISTEN in inet_csk_listen_start, in the listen() caller's context;
 *  LISTEN->CLOSE when the last reference to the listener goes (close(),
 *    exit, tcp_disconnect), in the context of whoever dropped it;
 *  CLOSE->SYN_SENT in tcp_v4_connect/tcp_v6_connect, the connect() caller;
 *  SYN_SENT->anything: the connect attempt is over.
 * LISTEN->SYN_RECV is a child socket in softirq, not a listener: ignored.
 */
static __always_inline int handle_set_state(const struct sock *sk, int oldstate,
					    int newstate)
{
	__u64 key = (__u64)sk;
	struct event *e;
	__u16 family;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		struct proc_info p = {};

		if (!port_traced(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
			return 0;
		current_proc(&p);
		bpf_map_update_elem(&connecting, &key, &p, BPF_ANY);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT) {
		bpf_map_delete_elem(&connecting, &key);
		return 0;
	}

	if (oldstate == TCP_CLOSE && newstate == TCP_LISTEN) {
		e = reserve(EVENT_LISTEN);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		e = reserve(EVENT_LISTEN_CLOSE);
	} else {
		return 0;
	}
	if (!e)
		return 0;
	sk_local(sk, e);
	/* The port of an autobound listener is not known yet at CLOSE->LISTEN
	 * (get_port runs after the state store); userspace learns it later. */
	if (e->dport && !port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->state = newstate;
	e->netns = sk_netns(sk);
	e->ino = sk_ino(sk);
	e->sk = key;
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
			e->flags |= EVENT_F_EXITING;
			e->exit_code = BPF_CORE_READ(task, exit_code);
		}
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, const struct sock *sk, int oldstate,
	     int newstate)
{
	return handle_set_state(sk, oldstate, newstate);
}

/*
 * A RST reached a local socket (tcp_reset(), tcp:tcp_receive_reset, 4.15+).
 * In SYN_SENT it is the refusal the client sees as ECONNREFUSED; the client
 * process is the one recorded at connect().
 */
static __always_inline int handle_receive_reset(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct proc_info *p;
	struct event *e;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_SYN_SENT)
		return 0;
	p = bpf_map_lookup_elem(&connecting, &key);
	if (!p && filter_ports)
		return 0; /* not traced at connect() */

	e = reserve(EVENT_CLIENT_REFUSED);
	if (!e)
		return 0;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	e->state = TCP_SYN_SENT;
	e->netns = sk_netns(sk);
	e->sk = key;
	if (p) {
		e->proc = *p;
		e->flags |= EVENT_F_PROC_KNOWN;
	}
	bpf_ringbuf_submit(e, 0);
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
	struct event *e;
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

	e = reserve(EVENT_BIND);
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
	struct sock *sk;
	struct event *e;
	__u64 ino;

	a = bpf_map_lookup_elem(&listen_calls, &id);
	if (!a)
		return 0;
	if (ctx->ret != 0 || !a->was_listening)
		goto out;
	sk = fd_tcp_sock(a->fd, &ino);
	if (!sk)
		goto out;
	e = reserve(EVENT_LISTEN_UPDATE);
	if (!e)
		goto out;
	sk_local(sk, e);
	if (!port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		goto out;
	}
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
 * 6.15+: a final ACK dropped for a full accept queue is freed with
 * SKB_DROP_REASON_TCP_LISTEN_OVERFLOW, and skb:kfree_skb names the
 * listener as rx_sk (6.11+). Where fentry is refused this is the only
 * per-packet view of the final-ACK stage; SYN drops have none (the SYN is
 * freed with consume_skb).
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb_overflow, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason, struct sock *rx_sk)
{
	struct listen_stats *s;

	if (reason != reason_listen_overflow || !reason_listen_overflow || !rx_sk)
		return 0;
	if (!listener_traced(rx_sk))
		return 0;
	s = stats_of(sk_ino(rx_sk));
	if (s)
		__sync_fetch_and_add(&s->final_ack, 1);
	return 0;
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

/* ---- firewall, timeouts, resets (issue 5) ---- */

/*
 * Set by the Go side before load: the value of SKB_DROP_REASON_NETFILTER_DROP
 * in this kernel's enum skb_drop_reason (resolved by name from BTF; the
 * numbering differs between kernels), and the code ranges of the functions
 * that call nf_hook_slow for each netfilter hook, from /proc/kallsyms.
 */
const volatile __u32 netfilter_drop_reason = 0xffffffff;
const volatile __u32 nf_range_count = 0;
const volatile struct code_range nf_ranges[NF_RANGES_MAX] = {};

const enum nf_hook_id *unused_nf_hook_id __attribute__((unused));
const struct code_range *unused_code_range __attribute__((unused));

/* What the client side of a connect() needs: who called it, and when. */
struct fw_conn {
	struct proc_info proc;
	__u64 ts;
};

/*
 * The connecting process per socket, for connect failures (timeouts,
 * ICMP refusals). Kept apart from `connecting`: that map's entry is
 * deleted at SYN_SENT->x by another program on the same tracepoint, and
 * the order in which two programs on one tracepoint run is not a contract.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fw_conn);
} fw_connecting SEC(".maps");

/* SYN skbs the kernel answered with an ICMP error (icmp:icmp_send), until
 * the packet filter frees them: a `reject` rule, as opposed to `drop`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} fw_icmp_skbs SEC(".maps");

#define FW_STACK_DEPTH 20

static __always_inline bool is_syn(const struct event *e)
{
	return (e->tcp_flags & (TCPHDR_SYN | TCPHDR_ACK)) == TCPHDR_SYN;
}

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
static __always_inline int handle_kfree_skb_fw(void *ctx, const struct sk_buff *skb,
					       void *location, __u32 reason)
{
	__u64 stack[FW_STACK_DEPTH];
	__u64 key = (__u64)skb;
	struct sock *sk;
	struct event *e;
	long n;

	if (reason != netfilter_drop_reason)
		return 0;
	e = reserve(EVENT_FW_DROP);
	if (!e)
		return 0;
	if (skb_tuple(skb, e) || !is_syn(e) || !port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		bpf_map_delete_elem(&fw_icmp_skbs, &key);
		return 0;
	}
	e->netns = skb_netns(skb);
	if (bpf_map_lookup_elem(&fw_icmp_skbs, &key)) {
		e->flags |= EVENT_F_FW_ICMP;
		bpf_map_delete_elem(&fw_icmp_skbs, &key);
	}
	if (nf_range_of((__u64)location) == NF_HOOK_ID_NFT)
		e->flags |= EVENT_F_FW_NFT;
	n = bpf_get_stack(ctx, stack, sizeof(stack), 0);
	if (n < 0)
		n = 0;
	for (__u32 i = 0; i < FW_STACK_DEPTH; i++) {
		__u32 what;

		if (i >= (__u64)n / 8)
			break;
		what = nf_range_of(stack[i]);
		if (what == NF_HOOK_ID_NFT) {
			e->flags |= EVENT_F_FW_NFT;
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
		struct fw_conn *c = bpf_map_lookup_elem(&fw_connecting, &skey);

		if (c) {
			e->proc = c->proc;
			e->flags |= EVENT_F_PROC_KNOWN;
		}
		e->sk = skey;
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* skb:kfree_skb has a reason from 5.17 (and rx_sk from 6.11, not needed). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb_fw, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
	return handle_kfree_skb_fw(ctx, skb, location, reason);
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
	__u8 one = 1;

	if (type != 3) /* ICMP_DEST_UNREACH */
		return 0;
	bpf_map_update_elem(&fw_icmp_skbs, &key, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/icmp_send")
int BPF_PROG(tp_btf_icmp_send_fw, const struct sk_buff *skb, int type, int code)
{
	return handle_icmp_send(skb, type);
}

/*
 * Local address into saddr/sport, remote into daddr/dport. A socket moving
 * to CLOSE has already released its port (tcp_set_state -> inet_put_port
 * zeroes inet_num) when tcp_disconnect sends its RST or tcp_done reports
 * SYN_SENT->CLOSE; inet_sport keeps the port.
 */
static __always_inline void sk_tuple(const struct sock *sk, struct event *e)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

static __always_inline __u8 syn_retransmits(const struct sock *sk)
{
	return BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits);
}

/*
 * The client side of connect(): CLOSE->SYN_SENT records who called it;
 * SYN_SENT->CLOSE ends the attempt. tcp_done_with_error() stores sk_err
 * before the state change: ECONNREFUSED (RST, or ICMP port unreachable),
 * ETIMEDOUT (SYN retransmits exhausted: tcp_write_err), EHOSTUNREACH...
 * An attempt closed by its owner has sk_err 0: reported only if SYNs were
 * retransmitted (the client gave up waiting).
 */
static __always_inline int handle_set_state_fw(const struct sock *sk, int oldstate,
					       int newstate)
{
	__u64 key = (__u64)sk;
	struct fw_conn *c;
	struct event *e;
	__u8 retrans;
	__u64 ms;
	int err;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		struct fw_conn v = {};
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

		if (family != AF_INET && family != AF_INET6)
			return 0;
		if (!port_traced(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
			return 0;
		current_proc(&v.proc);
		v.ts = bpf_ktime_get_ns();
		bpf_map_update_elem(&fw_connecting, &key, &v, BPF_ANY);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	c = bpf_map_lookup_elem(&fw_connecting, &key);
	if (!c)
		return 0;
	err = BPF_CORE_READ(sk, sk_err);
	retrans = syn_retransmits(sk);
	if (newstate != TCP_CLOSE || (err == 0 && retrans == 0)) {
		bpf_map_delete_elem(&fw_connecting, &key);
		return 0;
	}
	e = reserve(EVENT_CONNECT_FAILED);
	if (e) {
		sk_tuple(sk, e);
		e->state = TCP_SYN_SENT;
		e->netns = sk_netns(sk);
		e->sk = key;
		e->ret = -err;
		ms = (bpf_ktime_get_ns() - c->ts) / 1000000;
		if (ms > 0xffffff)
			ms = 0xffffff;
		e->aux = ((__u32)retrans << 24) | (__u32)ms;
		e->proc = c->proc;
		e->flags |= EVENT_F_PROC_KNOWN;
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&fw_connecting, &key);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_set_state_fw, const struct sock *sk, int oldstate, int newstate)
{
	return handle_set_state_fw(sk, oldstate, newstate);
}

/* A SYN of a local connect() was retransmitted: no answer yet (timer, in
 * softirq: the process comes from fw_connecting). */
static __always_inline int handle_retransmit_fw(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct fw_conn *c;
	struct event *e;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_SYN_SENT)
		return 0;
	c = bpf_map_lookup_elem(&fw_connecting, &key);
	if (!c)
		return 0;
	e = reserve(EVENT_SYN_RETRANS);
	if (!e)
		return 0;
	sk_tuple(sk, e);
	e->state = TCP_SYN_SENT;
	e->netns = sk_netns(sk);
	e->sk = key;
	e->aux = syn_retransmits(sk);
	e->proc = c->proc;
	e->flags |= EVENT_F_PROC_KNOWN;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_retransmit_fw, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_retransmit_fw(sk);
}

/*
 * A RST sent on an existing connection. Active resets (skb NULL:
 * tcp_send_active_reset from close() with unread data, SO_LINGER {1,0},
 * keepalive or memory aborts) come with the socket; from 6.10 with an
 * enum sk_rst_reason. A RST answering a non-SYN segment for which no
 * socket exists (the connection is gone here) is reported too; refusals
 * (SYN answered, or a listener) are the core's.
 */
static __always_inline int handle_send_reset_fw(const struct sock *sk,
						const struct sk_buff *skb,
						__u32 reason)
{
	struct event *e;

	if (skb) {
		if (sk)
			return 0; /* a listener/request/timewait answered: core's */
		e = reserve(EVENT_RST_OUT);
		if (!e)
			return 0;
		if (skb_tuple(skb, e) || (e->tcp_flags & TCPHDR_SYN) ||
		    (e->tcp_flags & 0x04 /* RST */) || !port_traced(e->dport)) {
			bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
			return 0;
		}
		/* The answered segment went saddr -> daddr; the RST goes back:
		 * the sender is daddr (local). */
		{
			__u8 tmp[16];
			__u16 p = e->sport;

			__builtin_memcpy(tmp, e->saddr, 16);
			__builtin_memcpy(e->saddr, e->daddr, 16);
			__builtin_memcpy(e->daddr, tmp, 16);
			e->sport = e->dport;
			e->dport = p;
		}
		e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
		e->reason = reason;
		bpf_ringbuf_submit(e, 0);
		return 0;
	}
	if (!sk)
		return 0;
	e = reserve(EVENT_RST_OUT);
	if (!e)
		return 0;
	sk_tuple(sk, e);
	if (!port_traced(e->sport) && !port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->flags |= EVENT_F_NO_SKB | EVENT_F_HAS_SK | EVENT_F_CURRENT;
	/* A child never accepted has no file: its listener was closed. */
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->netns = sk_netns(sk);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	e->reason = reason;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_btf_send_reset_fw, const struct sock *sk,
	     const struct sk_buff *skb, enum sk_rst_reason reason)
{
	return handle_send_reset_fw(sk, skb, reason);
}

/* Before 6.10 (no reason argument; the tracepoint still fires for active
 * resets, which always have a full socket). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_btf_send_reset_fw_noreason, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset_fw(sk, skb, RST_REASON_NONE);
}

/* A RST reached a local socket past the handshake (tcp_reset()): its
 * owner sees ECONNRESET (or EPIPE). SYN_SENT is the core's (a refusal). */
static __always_inline int handle_receive_reset_fw(const struct sock *sk)
{
	struct event *e;
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	if (state == TCP_SYN_SENT || state == TCP_LISTEN)
		return 0;
	e = reserve(EVENT_RST_IN);
	if (!e)
		return 0;
	sk_tuple(sk, e);
	if (!port_traced(e->sport) && !port_traced(e->dport)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->state = state;
	e->flags |= EVENT_F_HAS_SK;
	e->netns = sk_netns(sk);
	e->sk = (__u64)sk;
	e->ino = sk_ino(sk);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_btf_receive_reset_fw, const struct sock *sk)
{
	return handle_receive_reset_fw(sk);
}
