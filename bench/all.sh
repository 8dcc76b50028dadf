#!/bin/sh
# make bench: every refusal-storm measurement in one command, one table.
#
#   1. user space alone: decode + correlate + encode JSON on one core
#      (BenchmarkPipeline, realistic records), events/s;
#   2. interleaved A/B rounds (bench/run.sh) for several loads; storm,
#      floor and floor-hooks take turns, one pair each, ROUNDS times, so
#      the target (storm against its floors) is measured over the same
#      stretch of this machine's drifting speed:
#      storm      socket/connect/close on 2 threads, as fast as they go
#      storm-60k  the same paced at 60,000 refusals/s
#      scan       every port 1-65535, 20 sweeps
#      bpf-cost   one storm round with kernel.bpf_stats_enabled: ns per program run
#      summary    the storm with rsttrace --summary (counts, no events)
#      floor      the storm under bench/bin/mintracer: one counting BPF
#                 program on tcp:tcp_send_reset and tcp:tcp_receive_reset
#      floor-hooks the counting program on every tracepoint a refusal passes
#                 that rsttrace attaches to (mintracer -hooks=rsttrace): what
#                 the hooks cost before any of rsttrace's work
#   3. the table (abrun -table) the README carries;
#   4. chopped runs (bench/chop): the storm without a break, each arm's
#      programs attached and detached in turn every WINDOW, CYCLES times:
#      rsttrace, floor, floor-hooks, floor-hooks+syscalls (the syscall
#      tracepoints rsttrace falls back to where fentry is refused).
#
# Environment: ROUNDS (storm and floors, default 5), ROUNDS_OTHER (default 2),
# DURATION (default 5s), CYCLES (chop, default 100), WINDOW (chop, default
# 200ms), OUT (default a new directory under /tmp).
# Needs root, and ./rsttrace built (make bench builds it).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-$(mktemp -d /tmp/rsttrace-bench.XXXXXX)}
ROUNDS=${ROUNDS:-5}
ROUNDS_OTHER=${ROUNDS_OTHER:-2}
export DURATION=${DURATION:-5s}
mkdir -p "$OUT"
echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ), results in $OUT"

echo "== user space: BenchmarkPipeline (one core)"
go test -run '^$' -bench 'BenchmarkPipeline' -benchmem -cpu 1 -count 3 ./tracer | tee "$OUT/pipeline.txt" | grep -E 'Benchmark|ok'

scenario() { # name rounds tracer-cmd loadgen-args bpf-stats
	echo "== $1"
	OUT_DIR="$OUT/$1" ROUNDS=$2 TRACER_CMD=$3 LOADGEN_ARGS=$4 BPF_STATS=$5 bench/run.sh >"$OUT/$1.txt" 2>&1 ||
		{ cat "$OUT/$1.txt"; exit 1; }
	grep -E 'median' "$OUT/$1.txt"
}
# kernel.bpf_stats_enabled adds two clock reads to every program run: the
# ratios are measured without it, the per-program cost in a round of its own.
# The storm and its two floors in turn, one pair each per turn.
storms="" floors="" hooks=""
for r in $(seq "$ROUNDS"); do
	scenario "storm-$r" 1 "./rsttrace -o json" "" 0
	scenario "floor-$r" 1 "bench/bin/mintracer" "" 0
	scenario "floor-hooks-$r" 1 "bench/bin/mintracer -hooks=rsttrace" "" 0
	storms="$storms${storms:+,}$OUT/storm-$r/summary.json"
	floors="$floors${floors:+,}$OUT/floor-$r/summary.json"
	hooks="$hooks${hooks:+,}$OUT/floor-hooks-$r/summary.json"
done
scenario bpf-cost 1 "./rsttrace -o json" "" 1
scenario storm-60k "$ROUNDS_OTHER" "./rsttrace -o json" "-rate 60000" 0
scenario scan "$ROUNDS_OTHER" "./rsttrace -o json" "-scan -passes 20" 0
scenario summary "$ROUNDS_OTHER" "./rsttrace -o json --summary" "" 0

echo
echo "Pipeline (user space, one core): $(awk '/BenchmarkPipeline\/json/ {for (i=1;i<=NF;i++) if ($(i+1)=="events/s") print $i}' "$OUT/pipeline.txt" | sort -n | sed -n 2p) events/s (median of 3)"
echo
args="storm=$storms"
for s in bpf-cost storm-60k scan summary; do
	[ -f "$OUT/$s/summary.json" ] && args="$args $s=$OUT/$s/summary.json"
done
args="$args floor=$floors floor-hooks=$hooks"
# shellcheck disable=SC2086
bench/bin/abrun -table $args | tee "$OUT/table.md"

echo
echo "== chopped: the storm without a break, programs attached and detached every ${WINDOW:-200ms}"
go build -o bench/bin/chop ./bench/chop
bench/bin/chop -cycles "${CYCLES:-100}" -window "${WINDOW:-200ms}" \
	-arms rsttrace,floor,floor-hooks,floor-hooks+syscalls | tee "$OUT/chop.txt"
