/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one header shared by the BPF programs and the Go side.
 *
 * Every struct that crosses the kernel/user boundary is here; bpf2go
 * generates the Go types from it (-type record -type record_type ...), so the
 * two sides cannot drift apart.
 */
#ifndef RSTTRACE_H
#define RSTTRACE_H

#define RST_COMM_LEN 16

/* What a record in the ring buffer is; userspace dispatches on it. */
enum record_type {
	/* The TCP stack sent a RST in answer to a segment (tcp:tcp_send_reset). */
	RECORD_RESET_SENT = 1,
	/* A local connect() in SYN_SENT received a RST (tcp:tcp_receive_reset). */
	RECORD_CLIENT_REFUSED = 2,
	/* A socket entered LISTEN (sock:inet_sock_set_state CLOSE->LISTEN). */
	RECORD_LISTEN = 3,
	/* A listener left LISTEN (sock:inet_sock_set_state LISTEN->CLOSE). */
	RECORD_LISTEN_CLOSE = 4,
	/* bind() on a TCP socket returned (syscalls:sys_exit_bind). */
	RECORD_BIND = 5,
	/* listen() on a socket already listening changed its backlog
	 * (syscalls:sys_exit_listen); fields as for RECORD_LISTEN. */
	RECORD_LISTEN_UPDATE = 6,

	/* Firewall drops, connect failures and resets: values from 10. */
	/* The packet filter dropped a TCP SYN (skb:kfree_skb NETFILTER_DROP).
	 * saddr/sport sent the SYN, daddr/dport was its destination.
	 * aux: enum nf_hook_id where the kernel's call stack shows it. */
	RECORD_FW_DROP = 10,
	/* A local connect() ended in SYN_SENT->CLOSE with an error or after
	 * SYN retransmits. saddr is the local client; ret = -sk_err;
	 * aux = connect_aux (retransmits and elapsed ms). */
	RECORD_CONNECT_FAILED = 11,
	/* A local connect()'s SYN was retransmitted (tcp:tcp_retransmit_skb in
	 * SYN_SENT); aux = retransmits so far. */
	RECORD_SYN_RETRANS = 12,
	/* This host's TCP stack sent a RST on an existing connection
	 * (tcp:tcp_send_reset). saddr/sport is the local sender, daddr/dport
	 * the receiver; reason as for RECORD_RESET_SENT. */
	RECORD_RST_OUT = 13,
	/* A local socket past SYN_SENT received a RST (tcp:tcp_receive_reset).
	 * saddr/sport is the local receiver, daddr/dport the sender. */
	RECORD_RST_IN = 14,
};

/* Bits of record.flags. */
enum record_flag {
	/* proc was recorded when the socket was created/connected/listened,
	 * not taken from the interrupted context. */
	RECORD_F_PROC_KNOWN = 1 << 0,
	/* The closing task was exiting (PF_EXITING): exit_code is valid. */
	RECORD_F_EXITING = 1 << 1,
	/* The RST carried no segment to answer (active reset): addresses come
	 * from the socket. */
	RECORD_F_NO_SKB = 1 << 2,
	/* A socket (sk) was given to tcp_send_reset. */
	RECORD_F_HAS_SK = 1 << 3,
	/* The IPv6 socket is IPV6_V6ONLY. */
	RECORD_F_V6ONLY = 1 << 4,

	/* Firewall and reset detail: bits from 1 << 8. */
	/* RECORD_FW_DROP: the kernel sent an ICMP error for the dropped SYN
	 * (icmp:icmp_send saw the same skb): an nft/iptables `reject`. */
	RECORD_F_FW_ICMP = 1 << 8,
	/* RECORD_FW_DROP: nft_do_chain is on the stack (nftables, including
	 * iptables-nft); otherwise the table kind is unknown. */
	RECORD_F_FW_NFT = 1 << 9,
	/* RECORD_RST_OUT: proc is the task that sent the RST (process
	 * context, e.g. close()); meaningful for close-type reasons only. */
	RECORD_F_CURRENT = 1 << 10,
	/* proc is the socket's owner from the owner tables (owners.h): the
	 * task that made the socket in process context (connect(), accept(),
	 * listen()), not the interrupted context. RECORD_F_PROC_KNOWN is set
	 * with it. RECORD_RST_IN, RECORD_RST_OUT and RECORD_RESET_SENT from a
	 * listener carry it where the owner was recorded. */
	RECORD_F_OWNER_KNOWN = 1 << 11,
	/* RECORD_RESET_SENT: the refused SYN was translated on this host
	 * (DNAT, SNAT/masquerade): orig_* hold the connection as the client
	 * made it, nat_netns* the namespace that translated it. */
	RECORD_F_NAT = 1 << 12,

	/* Flood control: bits from 1 << 16. */
	/* RECORD_CLIENT_REFUSED, RECORD_RST_IN: this host's TCP stack sent
	 * the RST and its record (RECORD_RESET_SENT, RECORD_RST_OUT) was
	 * written first: the two are one connection's two sides. Set from
	 * the per-connection decision the sending side left in map
	 * `decisions`. */
	RECORD_F_SENDER_SEEN = 1 << 16,
	/* RECORD_RST_OUT: a socket killed by a segment it could not take
	 * (data after shutdown: TCP_ABORT_ON_DATA) answered it. The kernel's
	 * tcp_reset() for it fired tcp:tcp_receive_reset on that socket
	 * before, and its RECORD_RST_IN was written: that one is no RST
	 * received, and userspace drops it. */
	RECORD_F_SELF_ABORT = 1 << 17,
};

/*
 * Which capabilities the tp_btf programs serve, in the global `caps`, set
 * by userspace before load from the attach plan. Several
 * capabilities share a tracepoint; each tracepoint has one program that does
 * the work of all of them, and the verifier prunes the branches of those the
 * plan serves elsewhere (fentry/kprobe) or not at all.
 */
enum cap_flag {
	/* tp_btf/tcp_send_reset: refused SYNs (RECORD_RESET_SENT). */
	CAP_F_REFUSALS = 1 << 0,
	/* tp_btf/inet_sock_set_state: listen() and listener close. */
	CAP_F_LISTENERS = 1 << 1,
	/* tp_btf/tcp_receive_reset (RECORD_CLIENT_REFUSED), with the
	 * connecting process from tp_btf/inet_sock_set_state. */
	CAP_F_CLIENTS = 1 << 2,
	/* tp_btf/kfree_skb NETFILTER_DROP (RECORD_FW_DROP). */
	CAP_F_FIREWALL = 1 << 3,
	/* tp_btf/kfree_skb TCP_LISTEN_OVERFLOW with rx_sk (6.15+). */
	CAP_F_FINAL_ACK = 1 << 4,
	/* tp_btf/inet_sock_set_state + tcp_retransmit_skb
	 * (RECORD_CONNECT_FAILED, RECORD_SYN_RETRANS). */
	CAP_F_CONNECT_FAILURES = 1 << 5,
	/* tp_btf/tcp_send_reset + tcp_receive_reset (RECORD_RST_OUT/IN). */
	CAP_F_RESETS = 1 << 6,
	/* Not a capability: tcp:tcp_send_reset has its reason argument
	 * (6.10+); before, the program must not read it. */
	CAP_F_RST_REASON = 1 << 7,
	/* Keep the owner tables (owners.h): record a socket's owner at
	 * connect (tp_btf/inet_sock_set_state CLOSE->SYN_SENT), listen
	 * (CLOSE->LISTEN) and accept (fexit/inet_csk_accept, else
	 * syscalls:sys_exit_accept, sys_exit_accept4), forget it at
	 * TCP_CLOSE. Needs those programs attached; resets read it. */
	CAP_F_OWNERS = 1 << 8,
	/* tp_btf/net_dev_queue records translated first SYNs (map
	 * nat_flows); the refused-SYN path looks them up (RECORD_F_NAT). */
	CAP_F_NAT = 1 << 9,
};

/* RECORD_FW_DROP aux: the netfilter hook, found by the function that called
 * nf_hook_slow (the NF_HOOK caller) on the kernel stack. */
enum nf_hook_id {
	NF_HOOK_ID_UNKNOWN = 0,
	NF_HOOK_ID_PREROUTING = 1,
	NF_HOOK_ID_INPUT = 2,
	NF_HOOK_ID_FORWARD = 3,
	NF_HOOK_ID_OUTPUT = 4,
	NF_HOOK_ID_POSTROUTING = 5,
	/* Not a hook: marks nft_do_chain in the table of code ranges. */
	NF_HOOK_ID_NFT = 16,
};

/* A kernel function's code range [start, end) and what it means; the Go
 * side fills a table of these from /proc/kallsyms before load. */
struct code_range {
	__u64 start;
	__u64 end;
	__u32 what; /* enum nf_hook_id */
	__u32 pad;
};

#define NF_RANGES_MAX 24

/* record.reason when the hook gives no RST reason (kernels before 6.10). */
#define RST_REASON_NONE 0xffffffff

/*
 * Per-listener overflow detail, in map listener_stats keyed by the listener's
 * socket inode. The exact totals come from the kernel's own counters (read
 * by userspace); these per-packet counts split them by stage where a hook
 * sees the packet on this kernel.
 */
struct listen_stats {
	__u64 syn_acceptq; /* SYN arrived with the accept queue full */
	__u64 syn_reqq;    /* SYN arrived with the SYN queue full, no syncookies */
	__u64 final_ack;   /* handshake completion dropped: accept queue full */
	__u64 last_accept; /* bpf_ktime_get_ns() of the last accept() on it */
};

/*
 * A process, taken from the current task in process context. 40 bytes,
 * 8-byte aligned.
 */
struct proc_info {
	__u32 pid;  /* thread group id: what users call the pid */
	__u32 tid;
	char comm[RST_COMM_LEN];
	/* bpf_get_current_cgroup_id(): the task's cgroup v2 id, the inode
	 * number of its directory on the cgroup2 mount (the root's on a host
	 * whose containers live in v1 hierarchies only). */
	__u64 cgroup_id;
	/* Inode number of the task's mount namespace, as /proc/PID/ns/mnt
	 * shows it: tells containers apart. */
	__u32 mntns;
	__u32 pad;
};

/*
 * One fixed-size record for every kind (192 bytes, 8-byte aligned): the
 * common header (type, flags, timestamp, netns) first, then the connection,
 * then the process, then what was added later (fields are only appended).
 * Addresses are in network order; AF_INET addresses use the first 4 bytes.
 *
 * For RECORD_RESET_SENT, saddr/sport is the peer the RST goes to (the
 * client) and daddr/dport the local side that refused: the segment being
 * answered went saddr -> daddr. For RECORD_CLIENT_REFUSED the same
 * orientation holds: saddr is the local client, daddr the refusing side.
 * For listen and bind events daddr/dport is the local address.
 */
struct record {
	__u8 type;      /* enum record_type */
	__u8 family;    /* AF_INET or AF_INET6 */
	__u8 tcp_flags; /* flags of the segment a RST answers */
	__u8 state;     /* TCP state of sk, when there is one */
	__u32 flags;    /* enum record_flag */
	__u64 ts;       /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 netns;    /* inode number of the network namespace */
	__u32 reason;   /* enum sk_rst_reason value, as this kernel numbers it */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;    /* host order */
	__u16 dport;    /* host order */
	__s32 ret;      /* bind(): return value (0 or -errno) */
	__u32 backlog;  /* listen: sk_max_ack_backlog (effective backlog) */
	__s32 exit_code;/* listen_close while exiting: task->exit_code */
	__u32 backlog_req; /* listen: the backlog argument passed to listen() */
	__u32 aux;      /* type-specific extra value (0 when unused) */
	__u64 ino;      /* socket inode, as in /proc/PID/fd and /proc/net/tcp */
	__u64 sk;       /* socket address: a key, never dereferenced */
	struct proc_info proc;
	/* The network namespace's net->net_cookie: assigned when the namespace
	 * is made and never reused, unlike netns (inode numbers are reused
	 * once a namespace is gone). 0 where the kernel has none (before 5.7)
	 * or the record has no namespace. */
	__u64 netns_cookie;

	/* Address translation (RECORD_F_NAT; zero otherwise). The refused
	 * SYN was translated on this host: saddr/daddr are what the refusing
	 * side saw, these what the client sent (conntrack's original tuple:
	 * client -> the address it connected to), same family, ports in host
	 * order. nat_netns/nat_netns_cookie: the namespace whose netfilter
	 * translated it (the client's for a local connect(), the forwarding
	 * host's otherwise). */
	__u8 orig_saddr[16];
	__u8 orig_daddr[16];
	__u16 orig_sport;
	__u16 orig_dport;
	__u32 nat_netns;
	__u64 nat_netns_cookie;
	/* End of address translation fields. */
};

/* What a summary counts (summary_key.kind). */
enum summary_kind {
	/* Refused connections (daddr/dport: the refused side). */
	SUMMARY_REFUSED = 0,
	/* SYNs the packet filter dropped (daddr/dport: their destination). */
	SUMMARY_FILTERED = 1,
	/* RSTs on existing connections (daddr/dport: the side that sent the
	 * RST, so that one service resetting many clients is one key). */
	SUMMARY_RESET = 2,
	/* Local connect()s that timed out or gave up (daddr/dport: the
	 * destination). */
	SUMMARY_TIMEOUT = 3,
};

/*
 * Summary mode: while the ring buffer is more than half full, always with
 * --summary, or past the per-destination rate (rate_limit), events are
 * counted here instead of written one record each. Two maps (summary_a,
 * summary_b) take turns: the programs count in the one summary_slot names,
 * userspace empties the other. Counts are per interval.
 */
struct summary_key {
	__u32 netns;
	__u16 dport;
	__u8 family;
	__u8 kind; /* enum summary_kind */
	__u8 daddr[16];
};

/*
 * Counts by side. SUMMARY_REFUSED: server = RSTs this host's TCP stack
 * sent to refuse a SYN; client = refusals local clients received that no
 * local stack answered (a remote host or a packet filter); client_local =
 * the client side of refusals counted in server (not a second refusal).
 * SUMMARY_RESET: the same, for RSTs sent (server) and received (client).
 * SUMMARY_FILTERED: server = dropped SYNs. SUMMARY_TIMEOUT: client =
 * connect()s ended.
 */
struct summary_val {
	__u64 server;
	__u64 client;
	__u64 client_local;
};

#endif /* RSTTRACE_H */
