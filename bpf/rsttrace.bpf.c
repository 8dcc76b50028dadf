// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * rsttrace: what the kernel does when TCP connections fail to be established.
 *
 * Programs here only observe; they never change a packet or a socket.
 *
 * One compilation unit; the work is in one header per capability, and
 * hooks.h holds the one handler of each hook several capabilities share,
 * dispatching on `caps` (enum cap_flag), set before load. This file holds
 * only the attach wrappers: tp_btf where the kernel has the tracepoint,
 * fentry and kprobe wrappers around the same always-inline handler for
 * older kernels, syscall tracepoints for arguments only a syscall sees.
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
#include "common.h"
#include "owners.h"
#include "summary.h"
#include "nat.h"
#include "refusals.h"
#include "resets.h"
#include "clients.h"
#include "listeners.h"
#include "binds.h"
#include "overflow.h"
#include "firewall.h"
#include "hooks.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Force the generated Go types for the enums. */
const enum record_type *unused_event_type __attribute__((unused));
const enum record_flag *unused_event_flag __attribute__((unused));
const enum cap_flag *unused_cap_flag __attribute__((unused));
const struct record *unused_event __attribute__((unused));
const struct listen_stats *unused_listen_stats __attribute__((unused));
const struct summary_key *unused_summary_key __attribute__((unused));
const struct summary_val *unused_summary_val __attribute__((unused));
const enum summary_kind *unused_summary_kind __attribute__((unused));
const enum summary_cell_tag *unused_summary_cell_tag __attribute__((unused));
const enum nf_hook_id *unused_nf_hook_id __attribute__((unused));
const struct code_range *unused_code_range __attribute__((unused));

/*
 * tcp:tcp_send_reset (sk, skb[, reason from 6.10]): from 6.10
 * tcp_v4_send_reset/tcp_v6_send_reset call it for every RST, with
 * enum sk_rst_reason. The reason argument is read only where
 * CAP_F_RST_REASON says it exists: elsewhere the verifier prunes the read,
 * which it would refuse on a two-argument tracepoint.
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
 * tcp_v4_send_reset(sk, skb) / tcp_v6_send_reset: before 6.10
 * tcp:tcp_send_reset fires only with a full socket, so never for "no
 * listener": hook the senders. Static but never inlined (their addresses
 * are taken in the request sock ops), with (sk, skb) up to 6.9. No reason
 * exists there: RST_REASON_NONE.
 */
SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(fentry_tcp_v4_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, true, true, false);
}

/* tcp_v6_send_reset(sk, skb): as tcp_v4_send_reset, for IPv6. */
SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(fentry_tcp_v6_send_reset, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, true, true, false);
}

/* tcp_v4_send_reset: where fentry is not allowed (no BPF trampoline, or
 * lockdown). */
SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(kprobe_tcp_v4_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, false, true, false);
}

/* tcp_v6_send_reset: where fentry is not allowed. */
SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(kprobe_tcp_v6_send_reset, const struct sock *sk,
	       const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, RST_REASON_NONE, false, true, false);
}

/*
 * sock:inet_sock_set_state (4.16+), called from inet_sk_state_store and
 * tcp_set_state: listen(), listener close, connect() start and end, in the
 * context the handler comments describe.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, const struct sock *sk, int oldstate,
	     int newstate)
{
	return handle_set_state(sk, oldstate, newstate);
}

/* tcp:tcp_receive_reset (4.15+), from tcp_reset(): a RST accepted by a
 * local socket, in SYN_SENT (refused client) or later (reset). */
SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_btf_tcp_receive_reset, const struct sock *sk)
{
	return handle_receive_reset(sk);
}

/*
 * skb:kfree_skb, from kfree_skb_reason / sk_skb_reason_drop: packet filter
 * drops (NETFILTER_DROP, 5.17+) and final ACKs dropped for a full accept
 * queue (TCP_LISTEN_OVERFLOW, 6.15+).
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb, struct sk_buff *skb, void *location)
{
	return handle_kfree_skb(ctx, skb, location);
}

/* icmp:icmp_send (6.14+), from __icmp_send: a packet filter `reject`
 * answering a SYN with ICMP before dropping it. */
SEC("tp_btf/icmp_send")
int BPF_PROG(tp_btf_icmp_send, const struct sk_buff *skb, int type, int code)
{
	return handle_icmp_send(skb, type);
}

/* tcp:tcp_retransmit_skb, from __tcp_retransmit_skb: a SYN of a local
 * connect() sent again (the retransmit timer, in softirq). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_tcp_retransmit_skb, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_syn_retransmit(sk);
}

/*
 * net:net_dev_queue (__dev_queue_xmit): every packet a device sends, after
 * the netfilter hooks that translate it; catches the translation of a
 * connection's first SYN (nat.h) while conntrack still holds it.
 */
SEC("tp_btf/net_dev_queue")
int BPF_PROG(tp_btf_net_dev_queue, const struct sk_buff *skb)
{
	return handle_dev_queue(skb);
}

/* bind() (syscalls:sys_enter_bind/sys_exit_bind): the arguments at entry,
 * the result at exit; no kernel tracepoint reports a failed inet_bind. */
SEC("tracepoint/syscalls/sys_enter_bind")
int tp_sys_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	return handle_bind_enter(ctx->args[0], (struct sockaddr *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_sys_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	return handle_bind_exit(ctx->ret);
}

/*
 * inet_bind(sock, uaddr, addr_len) / inet6_bind: every bind of an inet
 * socket, through its proto_ops (exported, never inlined), with the same
 * arguments on every kernel; the result is the return value. Where fexit
 * is allowed these replace the bind() syscall tracepoints, which slow
 * every syscall on the host while attached.
 */
SEC("fexit/inet_bind")
int BPF_PROG(fexit_inet_bind, struct socket *sock, void *uaddr, int addr_len,
	     int ret)
{
	return handle_inet_bind_exit(sock, uaddr, ret);
}

SEC("fexit/inet6_bind")
int BPF_PROG(fexit_inet6_bind, struct socket *sock, void *uaddr, int addr_len,
	     int ret)
{
	return handle_inet_bind_exit(sock, uaddr, ret);
}

/* listen() (syscalls:sys_enter_listen/sys_exit_listen): the backlog asked
 * for, and a listen() on a socket already listening, which changes no
 * state inet_sock_set_state would report. */
SEC("tracepoint/syscalls/sys_enter_listen")
int tp_sys_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return handle_listen_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	return handle_listen_exit(ctx->ret);
}

/*
 * The listen() syscall itself (fentry/fexit on its wrapper, which takes
 * the caller's registers): the backlog as the program asked for it, which
 * __sys_listen clamps to net.core.somaxconn before inet_listen sees it.
 * Where fentry is allowed this replaces the listen() syscall tracepoints,
 * which put every syscall of every task on the traced path while
 * attached; 32-bit callers on a 64-bit kernel (__ia32_sys_listen,
 * socketcall) are not seen.
 */
#if defined(__TARGET_ARCH_arm64)
#define SYSCALL_WRAPPER(name) "__arm64_sys_" #name
#else
#define SYSCALL_WRAPPER(name) "__x64_sys_" #name
#endif

SEC("fentry/" SYSCALL_WRAPPER(listen))
int BPF_PROG(fentry_sys_listen, const struct pt_regs *regs)
{
	return handle_listen_enter(PT_REGS_PARM1_CORE_SYSCALL(regs),
				   PT_REGS_PARM2_CORE_SYSCALL(regs));
}

SEC("fexit/" SYSCALL_WRAPPER(listen))
int BPF_PROG(fexit_sys_listen, const struct pt_regs *regs, long ret)
{
	return handle_listen_exit(ret);
}

/* tcp_conn_request(rsk_ops, af_ops, sk, skb): exported, every kernel; the
 * SYN reaches the listener here before the queue tests drop it (it is then
 * freed with consume_skb, which no drop reason reports). */
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

/* tcp_v4_syn_recv_sock(sk, skb, ...): the final ACK makes the child
 * socket; it fails when the accept queue is full (tcp_check_req ->
 * listen_overflow). */
SEC("fentry/tcp_v4_syn_recv_sock")
int BPF_PROG(fentry_tcp_v4_syn_recv_sock, const struct sock *sk,
	     const struct sk_buff *skb)
{
	return handle_syn_recv_sock(sk, skb, false);
}

/* tcp_v6_syn_recv_sock: as tcp_v4_syn_recv_sock, for IPv6 listeners. */
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

/* accept() and accept4() (syscalls:sys_enter_accept*): the listener's
 * owner takes a connection off its queue. */
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

/* accept() and accept4() returned (syscalls:sys_exit_accept*): the new
 * fd's socket is in the caller's file table; its owner is recorded. */
SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept_exit(ctx->ret);
}

/*
 * inet_csk_accept(sk, ...): every accept of a TCP listener (accept(2),
 * accept4(2), io_uring), through sk_prot->accept (exported, never
 * inlined). Where fentry is allowed these replace the accept syscall
 * tracepoints: no file table walk, and no traced path for every syscall.
 */
SEC("fentry/inet_csk_accept")
int BPF_PROG(fentry_inet_csk_accept, struct sock *sk)
{
	return handle_inet_csk_accept(sk);
}

/*
 * Its return value, the accepted socket, follows the arguments: 6.10
 * made them (sk, struct proto_accept_arg *arg), before (sk, flags, err,
 * kern). The read the verifier would refuse is pruned by the CO-RE check.
 */
SEC("fexit/inet_csk_accept")
int fexit_inet_csk_accept(unsigned long long *ctx)
{
	const struct sock *newsk;

	/* Loads at constant offsets, in asm: clang would otherwise pick the
	 * offset and add it to ctx, which the verifier refuses. */
	if (bpf_core_type_exists(struct proto_accept_arg))
		asm volatile("%[r] = *(u64 *)(%[ctx] + 16)"
			     : [r] "=r"(newsk) : [ctx] "r"(ctx));
	else
		asm volatile("%[r] = *(u64 *)(%[ctx] + 32)"
			     : [r] "=r"(newsk) : [ctx] "r"(ctx));
	return handle_inet_csk_accept_exit(newsk);
}
