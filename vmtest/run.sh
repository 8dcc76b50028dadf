#!/usr/bin/env bash
# vmtest/run.sh - run a static Go test binary inside QEMU VMs booting Debian
# kernels (5.10 bullseye, 6.1 bookworm, 6.12 trixie).
#
# Usage:
#   vmtest/run.sh TESTBIN [test args...]   run TESTBIN in a VM per kernel
#   vmtest/run.sh --fetch-only             only download/refresh the kernels
#
# TESTBIN must be statically linked, e.g.
#   CGO_ENABLED=0 go test -c -o TESTBIN ./tracer
#
# Environment (all optional):
#   KERNELS                 kernels to test, default "5.10 6.1 6.12"
#   RSTTRACE_CACHE          cache root, default ${XDG_CACHE_HOME:-$HOME/.cache}/rsttrace
#                           (kernels in $RSTTRACE_CACHE/kernels, apt state in .../apt)
#   VMTEST_REFRESH=1        re-resolve the newest kernel packages even if cached
#   VMTEST_MAX_AGE_DAYS     re-resolve cached kernels older than this (default 7,
#                           0 = never re-resolve on age alone); if the refresh fails
#                           (e.g. offline) the cached kernel is used with a warning
#   VMTEST_TIMEOUT          seconds per kernel (default 900)
#   VMTEST_LOGDIR           console/apt logs (default /tmp/rsttrace-vmtest)
#   VMTEST_MEM              VM memory in MiB (default 1024)
#   VMTEST_SMP              VM CPUs (default 1: with 2, multi-threaded TCG
#                           broke int3 text patching when syscall tracepoints
#                           were enabled: "Oops: int3" on 6.12)
#   VMTEST_ACCEL            qemu accelerator (default tcg; kvm hangs at boot here)
#   VMTEST_APPEND           extra kernel command line arguments
#   VMTEST_PASSENV          space separated names of host env vars to pass to the test
#   VMTEST_WORKDIR          host directory whose contents are copied into the VM's
#                           working directory (e.g. a package dir with testdata/)
#   VMTEST_VERBOSE=1        also stream the VM console to stdout
#   VMTEST_MODULES          kernel modules the VM loads at boot (with their
#                           dependencies), default "inet_diag tcp_diag veth
#                           crc32c_generic nf_tables nft_reject_inet"
#   DEBIAN_MIRROR           default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   DEBIAN_KEYRING          default /usr/share/keyrings/debian-archive-keyring.gpg
#
# Needs: bash, apt-get/apt-cache, dpkg-deb, tar, cpio, gzip, busybox (static,
# from busybox-static), qemu-system-x86_64 (qemu-system-x86), timeout, flock,
# modinfo (kmod), xz (xz-utils); nft (nftables) and ldd to put nft in the VM.
set -euo pipefail

prog=vmtest
die()  { echo "$prog: error: $*" >&2; exit 2; }
warn() { echo "$prog: warning: $*" >&2; }
info() { echo "$prog: $*" >&2; }

KERNELS=${KERNELS:-"5.10 6.1 6.12"}
CACHE=${RSTTRACE_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME not set}/.cache}/rsttrace}
LOGDIR=${VMTEST_LOGDIR:-/tmp/rsttrace-vmtest}
TIMEOUT=${VMTEST_TIMEOUT:-900}
MEM=${VMTEST_MEM:-1024}
SMP=${VMTEST_SMP:-1}
ACCEL=${VMTEST_ACCEL:-tcg}
MAX_AGE_DAYS=${VMTEST_MAX_AGE_DAYS:-7}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
BUSYBOX=${VMTEST_BUSYBOX:-/bin/busybox}
# The VM has no module tree, so the modules the tests need come along:
# sock_diag for TCP (rsttrace's overflow poller), veth (the two-host tests),
# nf_tables with `reject` for the inet family (the firewall tests; `drop`,
# `tcp dport` and filter chains are in nf_tables itself). nf_tables needs
# libcrc32c, which finds crc32c through the crypto API at init (a softdep,
# "pre: crc32c", that insmod does not follow): crc32c_generic comes first.
# A name ending in "?" is optional: a kernel that has it neither as a module
# nor built in (nft_counter became part of nf_tables in 5.13) goes without.
VM_MODULES=${VMTEST_MODULES:-"inet_diag tcp_diag veth crc32c_generic nf_tables nft_reject_inet nft_reject_ipv4 nft_reject_ipv6 nft_chain_nat nf_nat nft_nat nft_masq nft_ct nf_conntrack nft_counter?"}

# kernel series -> Debian codename
codename_for() {
	case "$1" in
	5.10) echo bullseye ;;
	6.1)  echo bookworm ;;
	6.12) echo trixie ;;
	*) return 1 ;;
	esac
}

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

fetch_only=0
case "${1:-}" in
--fetch-only) fetch_only=1; shift ;;
-h|--help|"") usage ;;
esac

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install package $2)"; }
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need tar tar
need flock util-linux
need timeout coreutils
need modinfo kmod
if [ "$fetch_only" = 0 ]; then
	need cpio cpio
	need gzip gzip
	need qemu-system-x86_64 qemu-system-x86
	[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (install package busybox-static)"
fi
[ -r "$KEYRING" ] || die "$KEYRING not found (install package debian-archive-keyring)"

if [ "$fetch_only" = 0 ]; then
	TESTBIN=$1
	shift
	[ -f "$TESTBIN" ] || die "test binary '$TESTBIN' not found"
	if command -v readelf >/dev/null 2>&1 && readelf -lW "$TESTBIN" 2>/dev/null | grep -q 'INTERP'; then
		die "'$TESTBIN' is dynamically linked; build it with CGO_ENABLED=0 go test -c"
	fi
fi

for k in $KERNELS; do
	codename_for "$k" >/dev/null || die "unknown kernel '$k' in KERNELS (known: 5.10 6.1 6.12)"
done

mkdir -p "$CACHE/kernels" "$CACHE/apt" "$LOGDIR" || die "cannot create $CACHE or $LOGDIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsttrace-vmtest.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

###########################################################################
# Kernel fetching (private apt state, system apt configuration untouched)
###########################################################################

# apt options for a private apt state per codename in $CACHE/apt/<codename>.
apt_opts() {
	local st="$CACHE/apt/$1"
	APT_OPTS=(
		-q
		-o "Dir::Etc::SourceList=$st/sources.list"
		-o "Dir::Etc::SourceParts=/dev/null"
		-o "Dir::Etc::Preferences=/dev/null"
		-o "Dir::Etc::PreferencesParts=/dev/null"
		-o "Dir::State=$st/state"
		-o "Dir::State::Lists=$st/lists"
		-o "Dir::State::status=$st/status"
		-o "Dir::Cache=$st/cache"
		-o "Dir::Cache::archives=$st/archives"
		-o "Dir::Cache::pkgcache="
		-o "Dir::Cache::srcpkgcache="
		-o "APT::Architecture=amd64"
		-o "APT::Architectures::=amd64"
		-o "Acquire::Languages=none"
		-o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
		-o "Acquire::Retries=3"
		-o "APT::Get::List-Cleanup=true"
	)
	# apt drops privileges to _apt for downloads, which cannot write into a
	# cache under /root; stay root instead (only when we are root anyway).
	if [ "$(id -u)" = 0 ]; then
		APT_OPTS+=(-o "APT::Sandbox::User=root")
	fi
}

apt_setup() {
	local cn=$1 st="$CACHE/apt/$1"
	mkdir -p "$st/lists/partial" "$st/archives/partial" "$st/cache" "$st/state"
	: >>"$st/status"
	local o="[arch=amd64 signed-by=$KEYRING]"
	cat >"$st/sources.list.new" <<-EOF
	deb $o $MIRROR $cn main
	deb $o $MIRROR $cn-updates main
	deb $o $SEC_MIRROR $cn-security main
	EOF
	mv "$st/sources.list.new" "$st/sources.list"
}

# Print the newest linux-image-<ver>*-amd64 package name for kernel series $1.
resolve_pkg() {
	local ver=$1 cn=$2 dep re
	re="^linux-image-${ver//./\\.}[.+-]([0-9a-z.+~-]*-)?amd64\$"
	# The metapackage linux-image-amd64 depends on the current ABI's image.
	dep=$(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests \
		--no-conflicts --no-breaks --no-replaces --no-enhances linux-image-amd64 2>/dev/null |
		awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-/ { print $2 }' | grep -E "$re" | head -n1 || true)
	if [ -n "$dep" ]; then
		echo "$dep"
		return 0
	fi
	# Fallback: highest-versioned matching image package in the suite.
	local best="" bestv="" p v
	for p in $(apt-cache "${APT_OPTS[@]}" pkgnames linux-image- 2>/dev/null | grep -E "$re" | grep -v -e -unsigned -e -dbg); do
		v=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions "$p" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
		[ -n "$v" ] || continue
		if [ -z "$bestv" ] || dpkg --compare-versions "$v" gt "$bestv"; then
			best=$p bestv=$v
		fi
	done
	[ -n "$best" ] || return 1
	echo "$best"
}

# Refresh kernel series $1 in the cache: apt update, resolve, download if new.
refresh_kernel() {
	local ver=$1 cn dir pkg pkgver release tmp deb vmlinuz
	cn=$(codename_for "$ver")
	dir="$CACHE/kernels/$ver"
	apt_opts "$cn"
	apt_setup "$cn"
	local alog="$LOGDIR/apt-$cn.log"
	info "updating package lists for $cn (log: $alog)"
	if ! apt-get -y --error-on=any "${APT_OPTS[@]}" update >"$alog" 2>&1; then
		warn "apt-get update for $cn failed; last lines of $alog:"
		tail -n 15 "$alog" >&2
		return 1
	fi
	if grep -qE '^(W|E): ' "$alog"; then
		grep -E '^(W|E): ' "$alog" | sed 's/^/  apt: /' >&2
	fi
	if ! pkg=$(resolve_pkg "$ver" "$cn"); then
		warn "could not find a linux-image-$ver*-amd64 package in $cn"
		return 1
	fi
	pkgver=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions "$pkg" | awk '/^Version:/ { print $2; exit }')
	if [ -f "$dir/current" ] && [ "$(cat "$dir/package" 2>/dev/null)" = "$pkg $pkgver" ] &&
		[ -f "$dir/vmlinuz-$(cat "$dir/current")" ] && modules_cached "$dir"; then
		info "kernel $ver: $pkg $pkgver already cached"
		touch "$dir/stamp"
		return 0
	fi
	info "kernel $ver: downloading $pkg $pkgver"
	tmp="$WORK/dl-$ver"
	rm -rf "$tmp" && mkdir -p "$tmp/x"
	if ! (cd "$tmp" && apt-get -y "${APT_OPTS[@]}" download "$pkg=$pkgver") >>"$alog" 2>&1; then
		warn "apt-get download $pkg=$pkgver failed; last lines of $alog:"
		tail -n 15 "$alog" >&2
		return 1
	fi
	deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
	[ -n "$deb" ] || { warn "no .deb downloaded for $pkg"; return 1; }
	# Only ./boot (vmlinuz + config) and the modules in VM_MODULES (with
	# what they depend on) are needed; skip the ~400 MB of other modules.
	if ! dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$tmp/x" --wildcards './boot/*'; then
		warn "cannot extract ./boot from $deb"
		return 1
	fi
	vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* 2>/dev/null | head -n1)
	[ -n "$vmlinuz" ] || { warn "$pkg contains no boot/vmlinuz-*"; return 1; }
	release=${vmlinuz##*/vmlinuz-}
	mkdir -p "$dir" || return 1
	if ! { cp "$vmlinuz" "$dir/vmlinuz-$release.new" && mv "$dir/vmlinuz-$release.new" "$dir/vmlinuz-$release"; }; then
		warn "cannot write $dir/vmlinuz-$release"
		return 1
	fi
	if [ -f "$tmp/x/boot/config-$release" ]; then
		cp "$tmp/x/boot/config-$release" "$dir/config-$release"
	fi
	rm -rf "$dir/modules-$release" && mkdir -p "$dir/modules-$release" || return 1
	extract_modules "$deb" "$tmp" "$dir/modules-$release" || return 1
	# Drop older releases of this series, then switch the pointer.
	find "$dir" -maxdepth 1 -type f \( -name 'vmlinuz-*' -o -name 'config-*' \) \
		! -name "vmlinuz-$release" ! -name "config-$release" -delete
	find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'modules-*' ! -name "modules-$release" -exec rm -rf {} +
	echo "$pkg $pkgver" >"$dir/package"
	echo "$release" >"$dir/current.new" && mv "$dir/current.new" "$dir/current"
	touch "$dir/stamp"
	rm -rf "$tmp"
	info "kernel $ver: cached $dir/vmlinuz-$release"
}

# modules_cached DIR: the cached release in DIR has the modules VM_MODULES
# asks for (a cache made with another list is refreshed).
modules_cached() {
	local m="$1/modules-$(cat "$1/current")"
	[ -f "$m/order" ] && [ "$(cat "$m/wanted" 2>/dev/null)" = "$VM_MODULES" ]
}

# ko_name FILE: the module name of a .ko file (dashes are underscores).
ko_name() {
	local b=${1##*/}
	b=${b%%.ko*}
	echo "${b//-/_}"
}

# extract_modules DEB TMP OUT: put the modules VM_MODULES names, and every
# module they depend on, uncompressed into OUT as NAME.ko, with OUT/order
# listing them dependencies first (the order for insmod). The package has
# no modules.dep (depmod makes it at install): dependencies come from each
# module's own "depends" field, which is what depmod reads. Modules built
# into this kernel (modules.builtin) are skipped.
extract_modules() {
	local deb=$1 tmp=$2 out=$3 p f="" m
	declare -A path=() got=() builtin=()
	# Under ./lib/modules, or ./usr/lib/modules (merged /usr, trixie).
	while read -r p; do
		case $p in
		*/modules.builtin) f=$p ;;
		*) path[$(ko_name "$p")]=$p ;;
		esac
	done < <(dpkg-deb --fsys-tarfile "$deb" | tar -tf - | grep -E '/kernel/.*\.ko(\.xz|\.zst)?$|/modules\.builtin$')
	if [ -n "$f" ]; then
		dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$tmp/x" "$f" || { warn "cannot extract $f from $deb"; return 1; }
		while read -r p; do builtin[$(ko_name "$p")]=1; done <"$tmp/x/$f"
	fi
	# Breadth first: one pass over the package per level of dependencies.
	local want=() next order=()
	declare -A optional=()
	for m in $VM_MODULES; do
		case $m in *\?) m=${m%\?}; optional[${m//-/_}]=1 ;; esac
		want+=("${m//-/_}")
	done
	while [ "${#want[@]}" -gt 0 ]; do
		local files=()
		for m in "${want[@]}"; do
			[ -n "${got[$m]:-}" ] && continue
			got[$m]=1
			if [ -n "${builtin[$m]:-}" ]; then
				continue
			fi
			if [ -z "${path[$m]:-}" ] && [ -n "${optional[$m]:-}" ]; then
				continue # optional, and this kernel has it in nf_tables or not at all
			fi
			[ -n "${path[$m]:-}" ] || { warn "the kernel package has no module $m and it is not built in"; return 1; }
			files+=("${path[$m]}")
		done
		[ "${#files[@]}" -gt 0 ] || break
		dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$tmp/x" "${files[@]}" ||
			{ warn "cannot extract ${files[*]} from $deb"; return 1; }
		next=()
		for p in "${files[@]}"; do
			m=$(ko_name "$p")
			case $p in
			*.xz) xz -dc "$tmp/x/$p" >"$out/$m.ko" ;;
			*.zst) zstd -dqc "$tmp/x/$p" >"$out/$m.ko" ;;
			*) cp "$tmp/x/$p" "$out/$m.ko" ;;
			esac || { warn "cannot unpack $p"; return 1; }
			local d
			for d in $(modinfo -F depends "$out/$m.ko" | tr ',' ' '); do
				next+=("${d//-/_}")
			done
		done
		want=("${next[@]}")
	done
	# insmod order: a module after everything it depends on.
	declare -A placed=()
	place() {
		local m=$1 d
		[ -n "${placed[$m]:-}" ] && return 0
		placed[$m]=1
		[ -f "$out/$m.ko" ] || return 0 # built in
		for d in $(modinfo -F depends "$out/$m.ko" | tr ',' ' '); do
			place "${d//-/_}"
		done
		order+=("$m")
	}
	for m in $VM_MODULES; do m=${m%\?}; place "${m//-/_}"; done
	printf '%s\n' "${order[@]}" >"$out/order"
	echo "$VM_MODULES" >"$out/wanted"
	info "modules for the VM: ${order[*]}"
}

# Make sure kernel series $1 is in the cache; print its vmlinuz path.
ensure_kernel() {
	local ver=$1 dir="$CACHE/kernels/$1" have=0 stale=0
	if [ -f "$dir/current" ] && [ -f "$dir/vmlinuz-$(cat "$dir/current")" ]; then
		have=1
		# Caches made for another module list need a refresh.
		modules_cached "$dir" || stale=1
		if [ "${VMTEST_REFRESH:-0}" = 1 ]; then
			stale=1
		elif [ "$MAX_AGE_DAYS" -gt 0 ] 2>/dev/null &&
			[ -n "$(find "$dir/stamp" -mtime +"$((MAX_AGE_DAYS - 1))" 2>/dev/null)" ]; then
			stale=1
		elif [ ! -f "$dir/stamp" ]; then
			stale=1
		fi
	fi
	if [ "$have" = 0 ] || [ "$stale" = 1 ]; then
		if ! refresh_kernel "$ver" >&2; then
			if [ "$have" = 1 ]; then
				warn "kernel $ver: refresh failed, using cached $(cat "$dir/current")"
			else
				echo "$prog: error: kernel $ver: could not fetch a kernel" >&2
				return 1
			fi
		fi
	fi
	echo "$dir/vmlinuz-$(cat "$dir/current")"
}

# Serialise cache updates between concurrent runs.
exec 9>"$CACHE/.lock"
flock 9

declare -A VMLINUZ=()
fetch_failed=()
for k in $KERNELS; do
	if p=$(ensure_kernel "$k"); then
		VMLINUZ[$k]=$p
	else
		fetch_failed+=("$k")
	fi
done
flock -u 9
exec 9>&-

if [ "$fetch_only" = 1 ]; then
	for k in $KERNELS; do
		[ -n "${VMLINUZ[$k]:-}" ] && echo "kernel $k: ${VMLINUZ[$k]}"
	done
	[ "${#fetch_failed[@]}" = 0 ] || die "could not fetch kernel(s): ${fetch_failed[*]}"
	exit 0
fi

###########################################################################
# Initramfs
###########################################################################

# shell-quote a string for a POSIX shell
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

build_initramfs() {
	local root="$WORK/root" name a
	name=$(basename "$TESTBIN")
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,root,test}
	cp "$BUSYBOX" "$root/bin/busybox"
	chmod 0755 "$root/bin/busybox"
	for a in $("$root/bin/busybox" --list-full); do
		[ "$a" = bin/busybox ] && continue
		[ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
	done
	local k rel
	for k in "${!VMLINUZ[@]}"; do
		rel=${VMLINUZ[$k]##*/vmlinuz-}
		if [ -d "$CACHE/kernels/$k/modules-$rel" ]; then
			mkdir -p "$root/lib/modules/$rel"
			cp "$CACHE/kernels/$k/modules-$rel"/{*.ko,order} "$root/lib/modules/$rel/"
		fi
	done
	# The host tools the privileged tests run: nft (nftables) for the
	# firewall and NAT tests, socat as a real userland proxy. Each with the
	# shared libraries and the dynamic loader it needs (ldd), at the
	# host's paths.
	local tool path lib
	for tool in nft socat; do
		if ! path=$(command -v "$tool"); then
			warn "$tool not found (make test-deps installs it): its tests will fail in the VMs"
			continue
		fi
		mkdir -p "$root/usr/sbin" "$root/usr/bin"
		cp -L "$path" "$root/usr/bin/$tool"
		for lib in $(ldd "$path" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
			mkdir -p "$root/${lib%/*}"
			cp -L "$lib" "$root/$lib"
		done
		"$root/usr/bin/$tool" -V >/dev/null 2>&1 || "$root/usr/bin/$tool" --version >/dev/null 2>&1 ||
			warn "$tool copied into the VM does not run on the host: check ldd $path"
	done
	cp "$TESTBIN" "$root/test/$name"
	chmod 0755 "$root/test/$name"
	mkdir -p "$root/test/work"
	if [ -n "${VMTEST_WORKDIR:-}" ]; then
		[ -d "$VMTEST_WORKDIR" ] || die "VMTEST_WORKDIR '$VMTEST_WORKDIR' is not a directory"
		cp -a "$VMTEST_WORKDIR"/. "$root/test/work/"
	fi
	{
		printf 'TESTBIN=%s\n' "$(shq "/test/$name")"
		printf 'set --'
		for a in "$@"; do printf ' %s' "$(shq "$a")"; done
		printf '\n'
		for a in ${VMTEST_PASSENV:-}; do
			[[ $a =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad name '$a' in VMTEST_PASSENV"
			if [ -n "${!a+x}" ]; then printf 'export %s=%s\n' "$a" "$(shq "${!a}")"; fi
		done
	} >"$root/etc/rsttrace-test.sh"
	cat >"$root/init" <<'EOF'
#!/bin/sh
# init for the rsttrace test VM (generated by vmtest/run.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing || echo "rsttrace-vm: cannot mount tracefs"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mount -t bpf bpf /sys/fs/bpf || echo "rsttrace-vm: cannot mount bpffs"
# A pure cgroup v2 host, as systemd sets one up: the naming tests build
# their unit/container/pod hierarchies in it.
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "rsttrace-vm: cannot mount cgroup2"
ip link set lo up
# Modules the tests need (sock_diag, veth, nf_tables): a host loads them on
# demand from its module tree; this VM has none, so they come along with the
# order to load them in (dependencies first).
mods=/lib/modules/$(uname -r)
if [ -f "$mods/order" ]; then
	while read -r m; do
		insmod "$mods/$m.ko" || echo "rsttrace-vm: insmod $m failed"
	done <"$mods/order"
fi
hostname rsttrace-vm
# keep kernel messages off the console; they are dumped on failure instead
dmesg -n 1
ulimit -l unlimited 2>/dev/null
ulimit -n 65536 2>/dev/null
. /etc/rsttrace-test.sh
cp -a /test/work /tmp/work
cd /tmp/work
echo "RSTTRACE-VM-KERNEL=$(uname -r) CPUS=$(grep -c ^processor /proc/cpuinfo)"
RSTTRACE_IN_VM=1 HOME=/tmp TMPDIR=/tmp "$TESTBIN" "$@"
rc=$?
echo
if [ "$rc" != 0 ]; then
	echo "rsttrace-vm: ---- kernel messages since /init started ----"
	dmesg | sed '1,/Run \/init as init process/d' |
		grep -v -E '^\[[ 0-9.]+\]   (with arguments:|with environment:|  )' | tail -n 40
	echo "rsttrace-vm: ----"
fi
echo "RSTTRACE-VM-EXIT=$rc"
sync
poweroff -f
sleep 10
EOF
	chmod 0755 "$root/init"
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
		gzip -1 >"$WORK/initrd.gz"
}

build_initramfs "$@"

###########################################################################
# Boot and test
###########################################################################

passed=0
failed=0
for k in $KERNELS; do
	if [ -z "${VMLINUZ[$k]:-}" ]; then
		echo "kernel $k: FAIL (kernel could not be fetched)"
		failed=$((failed + 1))
		continue
	fi
	vmlinuz=${VMLINUZ[$k]}
	release=${vmlinuz##*/vmlinuz-}
	log="$LOGDIR/$k.log"
	info "booting $release (log: $log)"
	start=$(now)
	set +e
	qemu=(qemu-system-x86_64 -accel "$ACCEL" -cpu max -m "$MEM" -smp "$SMP"
		-kernel "$vmlinuz" -initrd "$WORK/initrd.gz"
		-append "console=ttyS0 quiet panic=-1 ${VMTEST_APPEND:-}"
		-nodefaults -display none -serial stdio -nic none -no-reboot)
	if [ "${VMTEST_VERBOSE:-0}" = 1 ]; then
		timeout -k 10 "$TIMEOUT" "${qemu[@]}" </dev/null 2>&1 | tee "$log"
		qrc=${PIPESTATUS[0]}
	else
		timeout -k 10 "$TIMEOUT" "${qemu[@]}" </dev/null >"$log" 2>&1
		qrc=$?
	fi
	set -e
	secs=$(elapsed "$start" "$(now)")
	clean=$(tr -d '\r' <"$log")
	vmrc=$(printf '%s\n' "$clean" | sed -n 's/^RSTTRACE-VM-EXIT=\([0-9][0-9]*\)$/\1/p' | tail -n1)
	npass=$(printf '%s\n' "$clean" | grep -c '^--- PASS' || true)
	nfail=$(printf '%s\n' "$clean" | grep -c '^--- FAIL' || true)
	nskip=$(printf '%s\n' "$clean" | grep -c '^--- SKIP' || true)
	counts="$npass passed, $nfail failed, $nskip skipped, ${secs}s"
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		status="FAIL (timeout after ${TIMEOUT}s; $counts)"
	elif [ -z "$vmrc" ]; then
		status="FAIL (no exit marker, qemu exit $qrc; $counts)"
	elif [ "$vmrc" != 0 ]; then
		status="FAIL (test exit $vmrc; $counts)"
	else
		status="PASS ($counts)"
	fi
	case "$status" in
	PASS*) passed=$((passed + 1)) ;;
	*)
		failed=$((failed + 1))
		echo "----- last 60 lines of $log -----"
		printf '%s\n' "$clean" | tail -n 60
		echo "-----"
		;;
	esac
	echo "kernel $release: $status"
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
