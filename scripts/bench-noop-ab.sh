#!/usr/bin/env bash
# bench-noop-ab.sh - `apply` with nothing to do and `diff` on a converged
# host, two agent builds side by side in one sandbox (alternating A, B, B,
# A, ...), for issue 12's before/after figures. The sandbox comes from
# TestBenchHold (e2e/bench_hold_test.go), which boots systemd, converges N
# services and waits:
#
#   RESIL_E2E_REQUIRE=1 RESIL_BENCH_HOLD=/tmp/hold RESIL_BENCH_HOLD_N=1000 \
#       go test -count=1 -run TestBenchHold -timeout 3h ./e2e/ &
#   scripts/bench-noop-ab.sh /tmp/hold /path/to/reconciler-before /path/to/reconciler-after 5
#   touch /tmp/hold/stop
#
# Prints the wall time of each run (nsenter included) and the medians with
# the ratio B/A. Only the processes it starts are waited for. With INSIDE=1
# each run is timed inside the sandbox (bash's EPOCHREALTIME around the
# command, in one shell entered once), so the figure is the command's own
# wall time, as an operator on a systemd host sees it, without nsenter's
# ~4 ms of entering seven namespaces.
set -euo pipefail
hold=$1 a=$2 b=$3 rounds=${4:-5}
inside=${INSIDE:-0}
pid=$(cat "$hold/pid")
host=$(cat "$hold/host")
cp "$a" "$host/ab-a"
cp "$b" "$host/ab-b"
# Each build gets its own copy of the state dir: the manifest cache file
# there is only used by the build that wrote it (its binary stamp), so
# alternating builds on one state dir would make every run a cache miss.
for x in ab-a ab-b; do
	nsenter -t "$pid" -m -p -u -i -n -C -r -w -- sh -c "rm -rf /var/lib/resil-$x && cp -a /var/lib/resil /var/lib/resil-$x"
done
run() { # BIN CMD -> wall ms
	local t0 t1
	if [ "$inside" = 1 ]; then
		nsenter -t "$pid" -m -p -u -i -n -C -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c '
			t0=$EPOCHREALTIME
			"/srv/resil/$1" "$2" --backend systemd --state-dir "/var/lib/resil-$1" --manifests /srv/resil/m >/dev/null
			t1=$EPOCHREALTIME
			echo $(( (${t1/./} - ${t0/./}) / 1000 ))' _ "$1" "$2"
		return
	fi
	t0=$EPOCHREALTIME
	nsenter -t "$pid" -m -p -u -i -n -C -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		"/srv/resil/$1" "$2" --backend systemd --state-dir "/var/lib/resil-$1" --manifests /srv/resil/m >/dev/null
	t1=$EPOCHREALTIME
	python3 -c "print(round(($t1 - $t0) * 1000))"
}
run ab-a apply >/dev/null # warm: each build's cache file
run ab-b apply >/dev/null
for cmd in apply diff; do
	ra=() rb=()
	for i in $(seq "$rounds"); do
		if [ $((i % 2)) -eq 1 ]; then ra+=("$(run ab-a $cmd)"); rb+=("$(run ab-b $cmd)")
		else rb+=("$(run ab-b $cmd)"); ra+=("$(run ab-a $cmd)"); fi
	done
	python3 - "$cmd" "${ra[*]}" "${rb[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
cmd, a, b, load = sys.argv[1], [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()], sys.argv[4]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{cmd:5s} A median {ma:.0f} ms {a}  B median {mb:.0f} ms {b}  B/A {mb/ma:.2f}  (load {load})")
PY
done
