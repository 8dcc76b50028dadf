#!/bin/sh
# Stand-in for `rsttrace -o json`, used to test the A/B runner's plumbing
# without the real tracer: it follows the same stdout protocol (a start line,
# then events, then a stop line with the lost count on SIGINT) but traces
# nothing. FAKE_REFUSED fake "refused" lines and FAKE_LOST are emitted at stop
# so that the runner's counting can be checked; FAKE_START_DELAY simulates
# slow BPF loading.
#
#   TRACER_CMD='bench/faketracer.sh' ROUNDS=2 bench/run.sh

stop() {
	kill "$sleeper" 2>/dev/null
	i=0
	while [ "$i" -lt "${FAKE_REFUSED:-0}" ]; do
		printf '{"type":"refused","netns":0,"sport":1234,"dport":1}\n'
		i=$((i + 1))
	done
	printf '{"type":"stop","lost":%d}\n' "${FAKE_LOST:-0}"
	exit 0
}
trap stop INT TERM

sleep "${FAKE_START_DELAY:-0}"
printf '{"type":"start","version":1}\n'

# A plain `sleep` in the foreground would delay the trap until it returns;
# `wait` is interrupted by the signal immediately.
while :; do
	sleep 1 &
	sleeper=$!
	wait "$sleeper"
done
