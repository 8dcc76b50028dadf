package tracer

// The BPF objects and their Go types are generated from bpf/ by bpf2go and
// committed, so `go build` needs no clang. `make generate` runs this with the
// pinned clang and flags; CI fails when the committed output is stale.
//go:generate go tool bpf2go -cc $BPF_CLANG -cflags $BPF_CFLAGS -target amd64 -type event -type event_type -type event_flag -type proc_info -type listen_stats -type nf_hook_id -type cap_flag -type summary_key -type summary_val rsttrace ../bpf/rsttrace.bpf.c -- -I../bpf
