/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types that vmlinux.h (dumped from an x86-64 kernel) lacks on other
 * architectures bpf2go builds for.
 *
 * On arm64, libbpf's PT_REGS_PARMn read struct user_pt_regs, the leading
 * part of the arm64 struct pt_regs (arch/arm64/include/uapi/asm/ptrace.h).
 * Its layout is uapi, so this copy is exact on every arm64 kernel; kprobe
 * programs read their arguments from it.
 */
#ifndef RSTTRACE_ARCH_H
#define RSTTRACE_ARCH_H

#if defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif

#endif /* RSTTRACE_ARCH_H */
