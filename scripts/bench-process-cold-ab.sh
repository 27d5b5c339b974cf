#!/usr/bin/env bash
# bench-process-cold-ab.sh - the process backend's cold start of N services
# (as in bench-process-agent.sh) for two agent builds, alternating, with
# the floor (the same N scripts started at once by a bare Go loop,
# actuators/process/bench/coldfloor) in every round: a noisy shared host
# still gives ratios.
#
# Usage: scripts/bench-process-cold-ab.sh OLD_BIN NEW_BIN [ROUNDS]   (env: N=100)
# Build the binaries first, e.g. `git worktree add /tmp/old <rev> && (cd /tmp/old
# && go build -o /tmp/rec-old ./cmd/reconciler)`. Only processes started here
# are signalled; each agent runs --stop-on-exit and stops its services.
set -euo pipefail
old=$1 new=$2 rounds=${3:-4}
N=${N:-100}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/resil-coldab.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$repo" && go build -o "$work/coldfloor" ./actuators/process/bench/coldfloor)
cp "$old" "$work/rec-old"
cp "$new" "$work/rec-new"
mkdir -p "$work/m"
printf '#!/bin/bash\necho $EPOCHREALTIME >> %s/up\nexec -a resil-agent-sleeper sleep 1000000\n' "$work" > "$work/sleeper.sh"
chmod 0755 "$work/sleeper.sh"
for i in $(seq -w 1 "$N"); do
	printf 'apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: p%s}\nspec:\n  command: ["%s/sleeper.sh"]\n  restart: {policy: always, delay: 100ms}\n' "$i" "$work" > "$work/m/p$i.yaml"
done
chmod 0644 "$work"/m/*.yaml
echo "cold start of $N services, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
	rm -f "$work/up"
	echo "round $r floor: $("$work/coldfloor" "$work/sleeper.sh" "$N" "$work/up")"
	for b in old new; do
		rm -rf "$work/state" "$work/up"
		mkdir "$work/state"
		T0=$EPOCHREALTIME
		"$work/rec-$b" run --backend process --manifests "$work/m" --state-dir "$work/state" --owner-check off \
			--log-format console --stop-on-exit --metrics-addr "" >"$work/agent-$b.log" 2>&1 &
		pid=$!
		end=$((SECONDS + 120))
		while [ "$( { [ -f "$work/up" ] && wc -l < "$work/up"; } || echo 0)" -lt "$N" ]; do
			[ $SECONDS -lt $end ] || { echo "timeout: $b" >&2; tail -20 "$work/agent-$b.log" >&2; exit 1; }
			sleep 0.01
		done
		python3 -c "
t=[float(l) for l in open('$work/up')]
print('round $r $b: %.0f ms (first after %.0f ms)' % ((max(t)-$T0)*1000, (min(t)-$T0)*1000))"
		kill -TERM "$pid"
		wait "$pid" || true
		pid=
	done
done
