#!/usr/bin/env bash
# bench-process-agent.sh - the whole agent on the process backend
# (`reconciler run --backend process --stop-on-exit`) with N supervised
# sleepers, for issue 12's memory and start figures (e2e/bench/README.md):
#   cold:   agent launched (an $EPOCHREALTIME stamp just before) until the
#           last service has run (each appends $EPOCHREALTIME to a file,
#           then execs sleep); includes the agent's own start, load and plan.
#           Beside it, just before, its floor: the same N scripts started at
#           once by a bare Go loop (actuators/process/bench/coldfloor), and
#           the ratio.
#   memory: after SETTLE seconds: VmRSS (anon/file), the Go runtime's gauges
#           from /metrics, and the top of a heap profile (RESIL_DEBUG_PPROF=1).
#
# Usage: scripts/bench-process-agent.sh     (env: N=100 SETTLE=5 PORT=19470 OUT=dir for the heap profile)
# Runs on the host (no systemd needed); only the agent started here is
# signalled (SIGTERM, then SIGKILL); it stops its services on exit.
set -euo pipefail
N=${N:-100}
SETTLE=${SETTLE:-5}
PORT=${PORT:-19470}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/resil-procagent.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && go build -o "$work/reconciler" ./cmd/reconciler)
mkdir -p "$work/m" "$work/state"
printf '#!/bin/bash\necho $EPOCHREALTIME >> %s/up\nexec -a resil-agent-sleeper sleep 1000000\n' "$work" > "$work/sleeper.sh"
chmod 0755 "$work/sleeper.sh"
for i in $(seq -w 1 "$N"); do
	cat > "$work/m/p$i.yaml" <<YAML
apiVersion: resil.dev/v1
kind: Service
metadata: {name: p$i}
spec:
  command: ["$work/sleeper.sh"]
  restart: {policy: always, delay: 100ms}
YAML
done
chmod 0644 "$work"/m/*.yaml

# The floor: the same script started N times at once by a bare Go loop.
(cd "$repo" && go build -o "$work/coldfloor" ./actuators/process/bench/coldfloor)
printf '#!/bin/bash\necho $EPOCHREALTIME >> %s/floor-up\nexec -a resil-agent-sleeper sleep 1000000\n' "$work" > "$work/floor.sh"
chmod 0755 "$work/floor.sh"
floor=$("$work/coldfloor" "$work/floor.sh" "$N" "$work/floor-up")

T0=$EPOCHREALTIME
RESIL_DEBUG_PPROF=1 "$work/reconciler" run --backend process --manifests "$work/m" --state-dir "$work/state" \
	--owner-check off --log-format console --stop-on-exit --metrics-addr "127.0.0.1:$PORT" >"$work/agent.log" 2>&1 &
pid=$!
end=$((SECONDS + 120))
while [ "$( { [ -f "$work/up" ] && wc -l < "$work/up"; } || echo 0)" -lt "$N" ]; do
	[ $SECONDS -lt $end ] || { echo "timeout: not all $N up" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
	sleep 0.02
done
cold=$(python3 - "$work/up" "$T0" <<'PY'
import sys
t = [float(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{(max(t) - float(sys.argv[2])) * 1000:.0f} ms (first service ran after {(min(t) - float(sys.argv[2])) * 1000:.0f} ms)")
PY
)
sleep "$SETTLE"
echo "resil agent, process backend, $N services (/bin/bash script exec'ing sleep), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cold start until all $N ran: $cold"
echo "floor (the same $N scripts started at once by a bare Go loop, just before): $floor"
python3 -c "import sys; a=float(sys.argv[1].split()[0]); f=float(sys.argv[2].split()[0]); print(f'agent / floor: {a/f:.2f}x')" "$cold" "$floor"
echo "memory after ${SETTLE}s steady state:"
grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads):' "/proc/$pid/status" | tr -s ' \t' ' ' | sed 's/^/  /'
curl -sS --max-time 10 "http://127.0.0.1:$PORT/metrics" > "$work/metrics"
awk '!/^#/ && /^(go_memstats_(sys|heap_inuse|heap_alloc|heap_idle|heap_released|stack_inuse|mspan_inuse|gc_sys|other_sys)_bytes|go_goroutines) / {printf "  %s %.1f%s\n", $1, ($1 ~ /bytes/ ? $2/1048576 : $2), ($1 ~ /bytes/ ? " MiB" : "")}' "$work/metrics"
echo "  /metrics samples: $(grep -vc '^#' "$work/metrics")"
curl -sS --max-time 20 -o "$work/heap.pb.gz" "http://127.0.0.1:$PORT/debug/pprof/heap?gc=1"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$work/heap.pb.gz" "$OUT/heap-process-$N.pb.gz"; fi
echo "heap profile (inuse_space, after a GC):"
go tool pprof -top -sample_index=inuse_space -nodecount=25 "$work/reconciler" "$work/heap.pb.gz" 2>/dev/null | grep -v '^\(File\|Build ID\|Type\|Time\):' | sed 's/^/  /'
