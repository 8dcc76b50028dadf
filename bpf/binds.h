/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bind() errors are why a service is not listening (EADDRINUSE: another
 * process holds the port). No kernel tracepoint reports a failed inet_bind:
 * fexit on inet_bind/inet6_bind where the kernel allows it, else the
 * syscall's arguments at its entry and the result at its exit.
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

static __always_inline long read_from(void *dst, __u32 n, const void *src,
				      bool user)
{
	return user ? bpf_probe_read_user(dst, n, src) :
		      bpf_probe_read_kernel(dst, n, src);
}

/* The address bind() was given, from user memory (the syscall's argument)
 * or kernel memory (inet_bind's copy); false if it is not AF_INET/AF_INET6
 * or cannot be read. */
static __always_inline bool bind_args_of(struct bind_args *a, const void *uaddr,
					 bool user)
{
	if (read_from(&a->family, sizeof(a->family), uaddr, user))
		return false;
	if (a->family == AF_INET) {
		struct sockaddr_in sin;

		if (read_from(&sin, sizeof(sin), uaddr, user))
			return false;
		a->port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(a->addr, &sin.sin_addr, 4);
	} else if (a->family == AF_INET6) {
		struct sockaddr_in6 sin6;

		if (read_from(&sin6, sizeof(sin6), uaddr, user))
			return false;
		a->port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(a->addr, &sin6.sin6_addr, 16);
	} else {
		return false;
	}
	return true;
}

static __always_inline int handle_bind_enter(int fd, struct sockaddr *uaddr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bind_args a = {};

	if (!bind_args_of(&a, uaddr, true) || !port_traced(a.port))
		return 0;
	a.fd = fd;
	bpf_map_update_elem(&binds, &id, &a, BPF_ANY);
	return 0;
}

/* bind() on the socket of file f returned ret: a record for a TCP socket,
 * unless it bound an ephemeral port (holding nothing anyone asked for). */
static __always_inline void bind_done(const struct bind_args *a, long ret,
				      struct file *f)
{
	struct socket *sock;
	struct sock *sk;
	struct record *e;

	if (ret == 0 && a->port == 0)
		return;
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
	    BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
		return;
	e = reserve(RECORD_BIND);
	if (!e)
		return;
	e->family = a->family;
	__builtin_memcpy(e->daddr, a->addr, 16);
	e->dport = a->port;
	e->ret = ret;
	record_net(e, sk_net_of(sk, false), false);
	e->ino = BPF_CORE_READ(f, f_inode, i_ino);
	e->sk = (__u64)sk;
	current_proc(&e->proc);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int handle_bind_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bind_args *a;

	a = bpf_map_lookup_elem(&binds, &id);
	if (!a)
		return 0;
	bind_done(a, ret, fd_file(a->fd));
	bpf_map_delete_elem(&binds, &id);
	return 0;
}

/*
 * inet_bind()/inet6_bind() returned ret (fexit): the socket, the address
 * (the kernel's copy) and the result in one place, with no syscall
 * tracepoint (which puts every syscall of every task on the traced path)
 * and no walk of the file table. Also sees binds that are not bind(2)
 * (io_uring's). A socket with no file is the kernel's own.
 */
static __always_inline int handle_inet_bind_exit(struct socket *sock,
						 const void *uaddr, long ret)
{
	struct bind_args a = {};

	if (!bind_args_of(&a, uaddr, false) || !port_traced(a.port))
		return 0;
	bind_done(&a, ret, BPF_CORE_READ(sock, file));
	return 0;
}

#endif /* RSTTRACE_BINDS_H */
