/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The owner table: which process made a socket, recorded in process
 * context when the socket is made (connect(), accept(), listen()) and
 * forgotten when it reaches TCP_CLOSE. RSTs arrive in softirq, where
 * `current` is whoever was on the CPU; the table names the socket's owner
 * there without userspace walking /proc for every reset.
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
 * connection costs one map update, not two); that entry is deleted here
 * too, unless the socket is leaving SYN_SENT, whose handler still reads it
 * and deletes it (a socket in SYN_SENT has no owners entry: connect() made
 * it, and a listener's entry went when it stopped listening). A socket has
 * one or the other: the client's, usually in its slot, is looked at first.
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

/* Puts sk's owner in e->proc if the table has it. */
static __always_inline bool owner_fill(const struct sock *sk, struct record *e,
				       bool btf)
{
	__u64 key = (__u64)sk;
	struct proc_info *o;
	struct conn *c;

	if (!(caps & CAP_F_OWNERS))
		return false;
	o = bpf_map_lookup_elem(&owners, &key);
	if (o) {
		e->proc = *o;
	} else {
		/* A client socket: its owner was recorded at connect(). */
		c = conn_find(key);
		if (!c)
			return false;
		conn_proc_to(e, c, sk, btf);
	}
	e->flags |= RECORD_F_PROC_KNOWN | RECORD_F_OWNER_KNOWN;
	return true;
}

/*
 * accept() returned fd (fd_install ran before the syscall returns): the
 * caller owns the connection. Before this the child sat in the accept
 * queue with no owner.
 */
static __always_inline int handle_accept_exit(long ret)
{
	struct proc_info o = {};
	struct sock *sk;
	__u64 ino;

	if (!(caps & CAP_F_OWNERS) || ret < 0)
		return 0;
	sk = fd_tcp_sock(ret, &ino);
	if (!sk)
		return 0;
	if (!port_traced(BPF_CORE_READ(sk, __sk_common.skc_num)) &&
	    !port_traced(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
		return 0;
	current_proc(&o);
	owner_record(sk, &o);
	return 0;
}

#endif /* RSTTRACE_OWNERS_H */
