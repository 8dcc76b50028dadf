/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The owner tables: which process made a socket, recorded in process
 * context when the socket is made (connect(), accept(), listen()) and
 * forgotten when it reaches TCP_CLOSE. RSTs arrive in softirq, where
 * `current` is whoever was on the CPU; the tables name the socket's owner
 * there without userspace walking /proc for every reset. Connected and
 * accepted sockets, a connection each, have their entry in `connecting`
 * (common.h: a slot of a lock-free table, else its LRU hash); listeners,
 * few and long-lived, theirs in `owners`.
 */
#ifndef RSTTRACE_OWNERS_H
#define RSTTRACE_OWNERS_H

/*
 * Keyed by socket address (a key, never dereferenced). 65536 entries: as
 * many as the ephemeral port range has ports, more than the connections
 * most hosts hold; a fixed, preallocated ~7 MiB. LRU: on a host with more
 * live sockets the least recently recorded owners go (their resets arrive
 * without an owner, as for sockets made before the tracer started), never
 * the newest.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	/* Per-CPU LRU lists: updated on every connection from every CPU;
	 * one common list would serialize them on its lock. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct proc_info);
} owners SEC(".maps");

static __always_inline void owner_record(const struct sock *sk,
					 const struct proc_info *p)
{
	__u64 key = (__u64)sk;

	bpf_map_update_elem(&owners, &key, p, BPF_ANY);
}

/*
 * sk is closing: its owner goes. A client socket's owner is its entry in
 * `connecting` (recorded at connect(), kept past the handshake so that a
 * connection costs one map update, not two), as is an accepted socket's;
 * that entry is deleted here, unless the socket is leaving SYN_SENT, whose
 * handler still reads it and deletes it (a socket in SYN_SENT has no
 * owners entry: connect() made it, and a listener's entry went when it
 * stopped listening). A socket has one or the other: `connecting`, usually
 * a slot, is looked at first.
 *
 * Looked up before deleted: a delete takes the bucket lock (with
 * interrupts off) even when the key is absent, a lookup takes none, and
 * every socket's close comes here while most miss one of the two tables.
 */
static __always_inline void owner_forget(const struct sock *sk, int oldstate)
{
	__u64 key = (__u64)sk;

	if (oldstate == TCP_SYN_SENT)
		return;
	if (conn_delete(key))
		return;
	if (bpf_map_lookup_elem(&owners, &key))
		bpf_map_delete_elem(&owners, &key);
}

/* Puts sk's owner in e->proc if the tables have it: a client's or an
 * accepted socket's entry in `connecting`, else a listener's in `owners`. */
static __always_inline bool owner_fill(const struct sock *sk, struct record *e,
				       bool btf)
{
	__u64 key = (__u64)sk;
	struct proc_info *o;
	struct conn *c;

	if (!(caps & CAP_F_OWNERS))
		return false;
	c = conn_find(key);
	if (c) {
		conn_proc_to(e, c, sk, btf);
	} else {
		o = bpf_map_lookup_elem(&owners, &key);
		if (!o)
			return false;
		e->proc = *o;
	}
	e->flags |= RECORD_F_PROC_KNOWN | RECORD_F_OWNER_KNOWN;
	return true;
}

/* The caller of accept() owns the connection sk it took off a listener's
 * queue. Before this the child sat in the accept queue with no owner. */
static __always_inline void accepted(const struct sock *sk)
{
	struct conn v = {};

	/* Reset while it waited in the queue: closed already, and no state
	 * change is left to free an entry made now. */
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE)
		return;
	if (!port_traced(BPF_CORE_READ(sk, __sk_common.skc_num)) &&
	    !port_traced(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
		return;
	/* The acceptor's cgroup, not the socket's: a child socket keeps the
	 * listener's (sk_clone_lock copies sk_cgrp_data). */
	current_proc(&v.proc);
	/* In the table connect() uses (a slot, one compare-and-exchange; an
	 * LRU update took a bucket lock with interrupts off on every accepted
	 * connection, and its close another): the socket never enters
	 * SYN_SENT, so nothing reads the entry as a connect attempt, and
	 * owner_forget frees it at close. */
	conn_add((__u64)sk, &v);
}

/* accept() returned fd (syscall tracepoint; fd_install ran before the
 * syscall returns). */
static __always_inline int handle_accept_exit(long ret)
{
	struct sock *sk;
	__u64 ino;

	if (!(caps & CAP_F_OWNERS) || ret < 0)
		return 0;
	sk = fd_tcp_sock(ret, &ino);
	if (sk)
		accepted(sk);
	return 0;
}

/* inet_csk_accept returned newsk (fexit; NULL on error), in the context of
 * whoever accepted it: no file table walk, no syscall tracepoint. */
static __always_inline int handle_inet_csk_accept_exit(const struct sock *newsk)
{
	if (!(caps & CAP_F_OWNERS) || !newsk)
		return 0;
	if (BPF_CORE_READ(newsk, sk_protocol) != IPPROTO_TCP)
		return 0;
	accepted(newsk);
	return 0;
}

#endif /* RSTTRACE_OWNERS_H */
