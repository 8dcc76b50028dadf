# rsttrace build, test and tooling. Everything a bare Debian machine with Go
# needs is installed by the targets here (as root, through apt-get).

SHELL := /bin/bash
GO            ?= go
BPF_CLANG     ?= clang-14
BPF_CFLAGS    ?= -O2 -g -Wall -Werror
export BPF_CLANG BPF_CFLAGS

# Packages: to build the BPF objects (generate), to run the tests (test-deps).
GEN_PKGS  := clang-14 llvm-14 libbpf-dev bpftool
TEST_PKGS := iproute2 kmod qemu-system-x86 busybox-static cpio

.PHONY: all build generate check-generated vmlinux deps gen-deps test-deps \
	test test-unit test-priv test-kernels fuzz bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o rsttrace ./cmd/rsttrace

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
	$(call apt_install,$(TEST_PKGS))

deps: gen-deps test-deps

# Regenerate the BPF objects and Go types (needs clang: make gen-deps).
generate: gen-deps
	cd tracer && $(GO) generate ./...

# vmlinux.h comes from this machine's kernel BTF; CO-RE relocates it elsewhere.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

# Regenerate and fail if the committed objects differ (as CI does).
check-generated: generate
	@git diff --exit-code -- tracer/ || { echo "generated BPF objects are stale: run 'make generate' and commit"; exit 1; }

test-unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

# Privileged tests: load the real programs, real sockets in fresh netns.
test-priv: test-deps
	RSTTRACE_PRIVILEGED=1 $(GO) test -count=1 -v -run 'Priv' ./tracer/ ./cmd/... 2>&1 | tee /tmp/rsttrace-priv.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

fuzz:
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime 20s ./tracer/

test: check-generated test-unit test-priv

clean:
	rm -f rsttrace
