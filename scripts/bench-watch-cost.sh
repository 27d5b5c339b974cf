#!/usr/bin/env bash
# bench-watch-cost.sh - what a watch's connection costs one edit's
# daemon-reload and restart (e2e/bench/watchcost: private-watch, the agent
# under `run`; bus-command, a command's and systemd's own path; bus-watch),
# alternating modes in one sandbox with a bus subscriber throughout. The
# sandbox comes from TestBenchHold (e2e/bench_hold_test.go):
#
#   RESIL_E2E_REQUIRE=1 RESIL_BENCH_HOLD=/tmp/hold RESIL_BENCH_HOLD_N=100 \
#       go test -count=1 -run TestBenchHold -timeout 3h ./e2e/ &
#   scripts/bench-watch-cost.sh /tmp/hold 15
#   touch /tmp/hold/stop
#
# The tool runs inside the sandbox: systemd resets peers of its private
# socket from outside its PID namespace.
set -euo pipefail
hold=$1 rounds=${2:-15} modes=${MODES:-private-watch,bus-command,bus-watch}
pid=$(cat "$hold/pid")
host=$(cat "$hold/host")
cd "$(dirname "$0")/.."
go build -o "$host/watchcost" ./e2e/bench/watchcost
nsenter -t "$pid" -m -p -u -i -n -C -r -w -- /srv/resil/watchcost "$modes" "$rounds" 1
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
