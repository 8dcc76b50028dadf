module github.com/rsttrace/rsttrace

go 1.26.8

require (
	github.com/cilium/ebpf v0.20.0
	golang.org/x/sys v0.49.0
)

tool github.com/cilium/ebpf/cmd/bpf2go
