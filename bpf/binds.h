/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bind() errors are why a service is not listening (EADDRINUSE: another
 * process holds the port). The arguments are taken at the syscall's entry,
 * the result at its exit: no kernel tracepoint reports a failed inet_bind.
 */
#ifndef RSTTRACE_BINDS_H
#define RSTTRACE_BINDS_H

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

static __always_inline int handle_bind_enter(int fd, struct sockaddr *uaddr)
{
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
	a.fd = fd;
	bpf_map_update_elem(&binds, &id, &a, BPF_ANY);
	return 0;
}

static __always_inline int handle_bind_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bind_args *a;
	struct socket *sock;
	struct sock *sk;
	struct file *f;
	struct record *e;

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
	record_net(e, sk_net_of(sk, false), false);
	e->ino = BPF_CORE_READ(f, f_inode, i_ino);
	e->sk = (__u64)sk;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
out:
	bpf_map_delete_elem(&binds, &id);
	return 0;
}

#endif /* RSTTRACE_BINDS_H */
