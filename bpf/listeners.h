/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Listeners: a socket entering and leaving LISTEN, and the backlog listen()
 * asked for (also when listen() is called again on a listener).
 */
#ifndef RSTTRACE_LISTENERS_H
#define RSTTRACE_LISTENERS_H

/* listen() arguments between its entry and its return, per thread. */
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
	record_net(e, sk_net_of(sk, false), false);
	e->ino = sk_ino(sk);
	e->sk = (__u64)sk;
	e->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	current_proc(&e->proc);
	if (newstate == TCP_LISTEN) {
		/* In listen()'s context: the argument saved at its entry. */
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
 * listen(): the backlog the program asked for, before net.core.somaxconn
 * clamps it. CLOSE->LISTEN (listener_change) picks it up in the same
 * call; a listen() on a socket already listening only changes the
 * backlog, which no state change reports: the return of listen() does.
 * Entry and return come from fentry/fexit on the syscall's wrapper where
 * the kernel allows them, else from the syscall tracepoints.
 */
static __always_inline int handle_listen_enter(int fd, __u32 backlog)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct listen_args a = {};
	struct sock *sk;
	__u64 ino;

	a.fd = fd;
	a.backlog = backlog;
	sk = fd_tcp_sock(a.fd, &ino);
	if (!sk)
		return 0;
	a.was_listening = BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_LISTEN;
	bpf_map_update_elem(&listen_calls, &id, &a, BPF_ANY);
	return 0;
}

static __always_inline int handle_listen_exit(long ret)
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
	if (ret != 0 || !a->was_listening)
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
	record_net(e, sk_net_of(sk, false), false);
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

#endif /* RSTTRACE_LISTENERS_H */
