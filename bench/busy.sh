#!/bin/bash
# Busy-host benchmark: a real web server (nginx) under HTTP load (wrk) at
# the machine's capacity, with a share of its connections reset, UDP
# dropped by a firewall rule and a slow port scan, measured interleaved
# without (A) and with (B) the tracer. bench/abrun -busy runs the rounds and
# prints the table; this script builds the two network namespaces it runs
# in and removes them, and every process started in them, however it ends.
#
# Topology: a server namespace and a client namespace joined by a veth
# pair (10.203.0.1 server, 10.203.0.2 client; the addresses exist only
# inside them). Two namespaces rather than loopback in one, because that is
# what the tracer meets on a host: the server's RSTs and the client's
# ECONNREFUSED are seen in different namespaces and must be joined, the
# packets cross a device (veth: softirq, GRO) as they would from a NIC, and
# the firewall rule sits on an input hook for a real interface.
#
# Environment (all optional):
#   ROUNDS       A/B pairs                              (default 5)
#   DURATION     each wrk phase (keep-alive, close)     (default 5s)
#   CONNS        wrk connections                        (default 64)
#   THREADS      wrk threads                            (default 2)
#   RESET_EVERY  one request in this many is reset      (default 100)
#   SCAN_RATE    connects/s to closed ports             (default 50)
#   UDP_RATE     UDP datagrams/s to the dropped port    (default 1000)
#   IDLE         tracer CPU measured once without load  (default 5s)
#   TRACER_CMD   the tracer, run directly, not by a shell (default ./rsttrace -o json)
#   FLOOR_CMD    a third arm F each round: the hooks alone, a counting program
#                on each (default bench/bin/mintracer -hooks=rsttrace -syscalls;
#                empty: no F arm)
#   OUT_DIR      per-round files                        (default a new dir under /tmp)
#   RESULTS      where the table goes                   (default bench/results)
#   BUSY_CMD     the command printed above the table    (default bench/busy.sh)
# Needs root, nginx, wrk, nft, ip (make bench-deps) and ./rsttrace (make build).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in nginx wrk nft ip; do
	command -v "$tool" >/dev/null || { echo "busy.sh: $tool not found (make bench-deps)" >&2; exit 1; }
done

mkdir -p bench/bin
go build -o bench/bin/abrun ./bench/abrun
go build -o bench/bin/busyload ./bench/busyload
go build -o bench/bin/mintracer ./bench/mintracer
export FLOOR_CMD=${FLOOR_CMD-bench/bin/mintracer -hooks=rsttrace -syscalls}

NS_SRV=rsttrace-busy-srv-$$
NS_CLI=rsttrace-busy-cli-$$
SRV_IP=10.203.0.1
CLI_IP=10.203.0.2
HTTP_PORT=80
UDP_PORT=9999
work=$(mktemp -d /tmp/rsttrace-busy.XXXXXX)

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# Everything started in the namespaces (nginx master and workers,
	# a wrk or sender left by an interrupted run), by pid.
	for ns in "$NS_SRV" "$NS_CLI"; do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] && kill $pids 2>/dev/null || true
	done
	for _ in $(seq 50); do
		[ -z "$(ip netns pids "$NS_SRV" 2>/dev/null)$(ip netns pids "$NS_CLI" 2>/dev/null)" ] && break
		sleep 0.1
	done
	for ns in "$NS_SRV" "$NS_CLI"; do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
		# Deleting the namespace takes its veth end and its nft table along.
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add veth-srv netns "$NS_SRV" type veth peer name veth-cli netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev veth-srv
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev veth-cli
for ns in "$NS_SRV" "$NS_CLI"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_SRV" link set veth-srv up
ip -n "$NS_CLI" link set veth-cli up
# Short connections at full speed cycle through the client's ports.
ip netns exec "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
ip netns exec "$NS_CLI" sysctl -qw net.ipv4.tcp_tw_reuse=1

# UDP to UDP_PORT is dropped (no ICMP answer): the tracer must not report
# it; the counter says how many datagrams the rule took.
ip netns exec "$NS_SRV" nft -f - <<EOF
table inet rsttrace_busy {
	chain input {
		type filter hook input priority 0; policy accept;
		udp dport $UDP_PORT counter drop
	}
}
EOF

# nginx: a static page at /, and /reset, which closes the connection with
# SO_LINGER {1, 0} (return 444 with reset_timedout_connection: nginx 1.15.2
# and later), so the kernel sends a RST; each one is logged to count them.
mkdir -p "$work/www" "$work/tmp"
head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
cat >"$work/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	reset_timedout_connection on;
	client_body_temp_path $work/tmp/body;
	proxy_temp_path $work/tmp/proxy;
	fastcgi_temp_path $work/tmp/fastcgi;
	uwsgi_temp_path $work/tmp/uwsgi;
	scgi_temp_path $work/tmp/scgi;
	server {
		listen $SRV_IP:$HTTP_PORT backlog=4096;
		root $work/www;
		location = /reset {
			access_log $work/reset.log;
			return 444;
		}
		location = /status {
			stub_status;
		}
	}
}
EOF
ip netns exec "$NS_SRV" nginx -c "$work/nginx.conf"
for _ in $(seq 50); do
	[ -s "$work/nginx.pid" ] && break
	sleep 0.1
done
ip netns exec "$NS_CLI" bench/bin/busyload -check "http://$SRV_IP:$HTTP_PORT/"

cat >"$work/mix.lua" <<EOF
-- One request in RESET_EVERY goes to /reset, the rest to the page.
local n = 0
local every = ${RESET_EVERY:-100}
request = function()
	n = n + 1
	if n % every == 0 then
		return wrk.format(nil, "/reset")
	end
	return wrk.format(nil, "/")
end
EOF

results=${RESULTS:-bench/results}
mkdir -p "$results"
table="$results/busy-$(date -u +%Y%m%dT%H%M%SZ).md"
# The command that made the table: the settings given, then the command.
cmdline=""
for v in ROUNDS DURATION CONNS THREADS RESET_EVERY SCAN_RATE UDP_RATE IDLE TRACER_CMD; do
	val=${!v:-}
	case $val in
	"") ;;
	*" "*) cmdline="$cmdline$v='$val' " ;;
	*) cmdline="$cmdline$v=$val " ;;
	esac
done
cmdline="$cmdline${BUSY_CMD:-bench/busy.sh}"
bench/bin/abrun -busy \
	-busy-cmd "$cmdline" \
	-netns-server "$NS_SRV" -netns-client "$NS_CLI" \
	-server-ip "$SRV_IP" -client-ip "$CLI_IP" -http-port "$HTTP_PORT" -udp-port "$UDP_PORT" \
	-wrk-script "$work/mix.lua" -reset-log "$work/reset.log" \
	-busyload bench/bin/busyload \
	-table-out "$table"
echo "table: $table"
