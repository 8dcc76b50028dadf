# rsttrace build, test and tooling. Everything a bare Debian machine with Go
# needs is installed by the targets here (as root, through apt-get).

SHELL := /bin/bash
GO            ?= go
BPF_CLANG     ?= clang-14
BPF_CFLAGS    ?= -O2 -g -Wall -Werror
export BPF_CLANG BPF_CFLAGS

# Packages: to build the BPF objects (generate), to run the tests (test-deps).
GEN_PKGS  := clang-14 llvm-14 libbpf-dev bpftool
TEST_PKGS := iproute2 kmod nftables iptables qemu-system-x86 busybox-static cpio xz-utils \
	prometheus systemd util-linux libcap2-bin socat python3 curl
# The benchmarks: bpf stats (bpftool), and the busy host (bench/busy.sh): a
# web server, an HTTP load tool, namespaces and a firewall rule.
BENCH_PKGS := bpftool iproute2 nftables nginx-light wrk
# The Docker end-to-end tests (tracer/docker_priv_test.go) start their own
# dockerd; images are imported from busybox-static, curl is the client.
DOCKER_PKGS := docker.io busybox-static curl

.PHONY: all build build-arm64 generate check-generated vmlinux deps gen-deps test-deps \
	bench-deps test test-go test-kernels fuzz bench bench-ab bench-busy clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o rsttrace ./cmd/rsttrace

# Fleets run arm64 too: everything must build for it (objects are generated
# for both architectures).
build-arm64:
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build ./...

# apt-get only what is missing, so a prepared machine does not hit the network.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

gen-deps:
	$(call apt_install,$(GEN_PKGS))

test-deps:
	$(call apt_install,$(TEST_PKGS) $(DOCKER_PKGS))

bench-deps:
	$(call apt_install,$(BENCH_PKGS))

deps: gen-deps test-deps

# Regenerate the BPF objects and Go types (needs clang: make gen-deps).
generate: gen-deps
	cd internal/bpfobj && $(GO) generate ./...

# vmlinux.h comes from this machine's kernel BTF; CO-RE relocates it elsewhere.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

# Regenerate and fail if the committed objects differ (as CI does).
check-generated: generate
	@git diff --exit-code -- internal/bpfobj/ || { echo "generated BPF objects are stale: run 'make generate' and commit"; exit 1; }

# Every Go test: unit tests, plus the privileged tests (names TestPriv*)
# that load the real programs in fresh network namespaces; they need root.
test-go: test-deps
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -v ./... 2>&1 | tee /tmp/rsttrace-test.log | grep -E '^(--- |=== RUN|PASS|FAIL|ok|panic|\s+\S+_test.go)'; exit $${PIPESTATUS[0]}

# A short run of the decoder fuzz target (the seed corpus always runs in test-go).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/record/
FUZZTIME ?= 15s

# The privileged tests again inside Debian kernels under qemu (vmtest/).
KERNELS     ?= 5.10 6.1 6.12
# The Docker suite needs a Docker daemon: it runs on the host kernel only.
VMTEST_ARGS ?= -test.v -test.count=1 -test.run Priv -test.skip Docker
export KERNELS
test-kernels: test-deps
	mkdir -p bin
	CGO_ENABLED=0 $(GO) test -c -o bin/tracer.test ./tracer
	vmtest/run.sh bin/tracer.test $(VMTEST_ARGS)

# What CI runs (.ci/run): generated code current, every test, every kernel.
test: check-generated build-arm64 test-go fuzz test-kernels

# Every performance measurement side by side, and the README's tables
# (bench/README.md); needs root. bench-ab: one A/B run (bench/run.sh);
# bench-busy: the busy-host run alone (bench/busy.sh), its table also in
# bench/results/.
ROUNDS ?= 5
export ROUNDS
bench: build bench-deps
	bench/all.sh
	BUSY_CMD="make bench" bench/busy.sh
bench-ab: build
	bench/run.sh
bench-busy: build bench-deps
	BUSY_CMD="make bench-busy" bench/busy.sh

clean:
	rm -rf rsttrace bin bench/bin
