#!/bin/sh
# Interleaved A/B overhead benchmark for rsttrace: builds the load generator
# and the runner into bench/bin, then runs bench/abrun from the repository
# root (so the default TRACER_CMD "./rsttrace -o json" resolves there).
#
# Environment (all optional; flags given to this script are passed on to
# abrun and win over the environment):
#   TRACER_CMD    tracer command, run by sh -c   (default: ./rsttrace -o json)
#                 stand-ins: bench/faketracer.sh (no BPF), bench/bin/mintracer
#                 (one counting BPF program on tcp_{send,receive}_reset)
#   ROUNDS        A/B pairs                      (default: 5)
#   DURATION      load per round                 (default: 5s)
#   THREADS       loadgen workers                (default: 2)
#   FAMILY        4 or 6                         (default: 4)
#   LOADGEN_ARGS  extra loadgen flags, e.g. "-scan -passes 20"
#   BPF_STATS     0 to leave kernel.bpf_stats_enabled alone (default: 1)
#   OUT_DIR       where tracer outputs and summary.json go (default: mktemp)
#   SETTLE        pause between rounds           (default: 1s)
#
# Needs root (network namespaces, bpf stats, and the tracer itself).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p bench/bin
go build -o bench/bin/loadgen ./bench/loadgen
go build -o bench/bin/abrun ./bench/abrun
go build -o bench/bin/mintracer ./bench/mintracer
exec bench/bin/abrun -loadgen bench/bin/loadgen "$@"
