// Package bpfobj holds the compiled BPF programs of bpf/ and the Go types
// bpf2go generates from bpf/rsttrace.h: the records, their tags and flags,
// and typed handles to every program, map and variable. It is generated and
// committed, so `go build` needs no clang; `make generate` rebuilds it with
// the pinned clang and flags, for every architecture rsttrace ships.
package bpfobj

//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target amd64,arm64 -type record -type record_type -type record_flag -type proc_info -type listen_stats -type nf_hook_id -type cap_flag -type summary_key -type summary_val -type summary_cell -type summary_cell_tag -type summary_kind Rsttrace ../../bpf/rsttrace.bpf.c -- -I../../bpf -I../..
