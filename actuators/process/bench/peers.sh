#!/usr/bin/env bash
# peers.sh - resil's process supervisor vs supervisord vs runit (runsv), same
# workloads, each at its fastest settings. Prints a table.
#
#   crash:  one service that appends $EPOCHREALTIME to a file and exits 1;
#           crash -> restarted latency = gap between consecutive stamps
#           (p50/p99 over CRASHES crashes).
#   rss:    N services running `sleep`, agent VmRSS once all are up
#           (runit: runsvdir + every runsv, since runit uses one supervisor per service).
#   idle:   the same N sleepers, agent utime+stime over IDLE seconds (/proc/PID/stat).
#   cold:   the same N sleepers from a cold start: supervisor launched (a
#           $EPOCHREALTIME stamp just before) until the last service has run
#           (each sleeper appends $EPOCHREALTIME to a file, then execs sleep).
#
# Usage: actuators/process/bench/peers.sh      (env: CRASHES=100 N=100 IDLE=60)
# Needs: go, bash, python3, supervisor and runit from Debian
# (apt-get install -y supervisor runit; their system services are not used:
# every daemon here runs in a temp dir and only PIDs started here are killed).
set -euo pipefail

CRASHES=${CRASHES:-100}
N=${N:-100}
IDLE=${IDLE:-60}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=$(mktemp -d /tmp/resil-peers.XXXXXX)
started=()

cleanup() {
	for p in "${started[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	sleep 1
	for p in "${started[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

command -v supervisord >/dev/null || { echo "supervisord missing: apt-get install -y supervisor" >&2; exit 1; }
command -v runsv >/dev/null || { echo "runsv missing: apt-get install -y runit" >&2; exit 1; }
(cd "$repo" && go build -o "$work/driver" ./actuators/process/bench/driver)
clk=$(getconf CLK_TCK)

# wait_lines FILE COUNT TIMEOUT
wait_lines() {
	local end=$((SECONDS + $3))
	while [ "$( { [ -f "$1" ] && wc -l < "$1"; } || echo 0)" -lt "$2" ]; do
		[ $SECONDS -lt $end ] || { echo "timeout waiting for $2 lines in $1" >&2; return 1; }
		sleep 0.2
	done
}

# gaps FILE -> "p50 p99 n" in ms
gaps() {
	python3 - "$1" "$CRASHES" <<'PY'
import sys
t = [float(l) for l in open(sys.argv[1]) if l.strip()][: int(sys.argv[2]) + 1]
g = sorted((b - a) * 1000 for a, b in zip(t, t[1:]))
q = lambda p: g[min(len(g) - 1, int(round(p * (len(g) - 1))))]
print(f"{q(0.5):.2f} {q(0.99):.2f} {len(g)}")
PY
}

# cputicks PID... -> utime+stime summed
cputicks() {
	local sum=0 p
	for p in "$@"; do
		if [ -r "/proc/$p/stat" ]; then
			sum=$((sum + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
		fi
	done
	echo $sum
}

# rsskb PID... -> VmRSS summed (kB)
rsskb() {
	local sum=0 p v
	for p in "$@"; do
		v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
		sum=$((sum + ${v:-0}))
	done
	echo $sum
}

# psskb PID... -> Pss summed (kB): shared pages split between sharers
psskb() {
	local sum=0 p v
	for p in "$@"; do
		v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
		sum=$((sum + ${v:-0}))
	done
	echo $sum
}

stop_pid() { # stop_pid PID: TERM, wait up to 20 s, KILL
	local p=$1 i
	kill -TERM "$p" 2>/dev/null || return 0
	for i in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
	kill -KILL "$p" 2>/dev/null || true
}

crash_cmd='echo $EPOCHREALTIME >> '

# coldstart FILE T0 -> ms from T0 to the last stamp in FILE
coldstart() {
	python3 - "$1" "$2" <<'PY'
import sys
t = [float(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{(max(t) - float(sys.argv[2])) * 1000:.0f}")
PY
}

# --- resil ---------------------------------------------------------------
crash_resil() {
	local d=$work/resil-crash
	mkdir -p "$d"
	"$work/driver" -state "$d/state" -n 1 -cmd "${crash_cmd}$d/stamps; exit 1" 2>/dev/null &
	local p=$!; started+=("$p")
	wait_lines "$d/stamps" $((CRASHES + 1)) 300
	stop_pid "$p"
	gaps "$d/stamps"
}

sleepers_resil() {
	local d=$work/resil-sleep
	mkdir -p "$d"
	T0=$EPOCHREALTIME
	"$work/driver" -state "$d/state" -n "$N" -cmd "${crash_cmd}$d/up; exec -a resil-bench-sleeper sleep 1000000" 2>/dev/null &
	local p=$!; started+=("$p")
	measure_sleepers resil-bench-sleeper "$p" "$p" "$d/up"
	stop_pid "$p"
}

# --- supervisord ---------------------------------------------------------
sup_conf() { # sup_conf DIR PROGRAM-SECTION
	cat > "$1/supervisord.conf" <<CONF
[supervisord]
nodaemon=true
logfile=$1/supervisord.log
pidfile=$1/supervisord.pid
childlogdir=$1
loglevel=warn
minfds=1024
$2
CONF
}

crash_supervisord() {
	local d=$work/sup-crash
	mkdir -p "$d"
	sup_conf "$d" "[program:crash]
command=/bin/bash -c '${crash_cmd}$d/stamps; exit 1'
autorestart=true
startsecs=0
startretries=1000000
stdout_logfile=NONE
stderr_logfile=NONE"
	supervisord -c "$d/supervisord.conf" >/dev/null 2>&1 &
	local p=$!; started+=("$p")
	wait_lines "$d/stamps" $((CRASHES + 1)) 600
	stop_pid "$p"
	gaps "$d/stamps"
}

sleepers_supervisord() {
	local d=$work/sup-sleep
	mkdir -p "$d"
	sup_conf "$d" "[program:s]
command=/bin/bash -c '${crash_cmd}$d/up; exec -a sup-bench-sleeper sleep 1000000'
process_name=%(program_name)s_%(process_num)03d
numprocs=$N
autorestart=true
startsecs=0
stdout_logfile=NONE
stderr_logfile=NONE"
	T0=$EPOCHREALTIME
	supervisord -c "$d/supervisord.conf" >/dev/null 2>&1 &
	local p=$!; started+=("$p")
	measure_sleepers sup-bench-sleeper "$p" "$p" "$d/up"
	stop_pid "$p"
}

# --- runit ---------------------------------------------------------------
crash_runsv() {
	local d=$work/runit-crash
	mkdir -p "$d/svc"
	printf '#!/bin/bash\n%s%s; exit 1\n' "$crash_cmd" "$d/stamps" > "$d/svc/run"
	chmod +x "$d/svc/run"
	runsv "$d/svc" >/dev/null 2>&1 &
	local p=$!; started+=("$p")
	wait_lines "$d/stamps" $((CRASHES + 1)) $((CRASHES * 2 + 60))
	sv -w 10 force-shutdown "$d/svc" >/dev/null 2>&1 || true
	stop_pid "$p"
	gaps "$d/stamps"
}

sleepers_runsv() {
	local d=$work/runit-sleep i
	mkdir -p "$d/sv"
	for i in $(seq -w 1 "$N"); do
		mkdir -p "$d/sv/s$i"
		printf '#!/bin/bash\n%s%s\nexec -a runit-bench-sleeper sleep 1000000\n' "$crash_cmd" "$d/up" > "$d/sv/s$i/run"
		chmod +x "$d/sv/s$i/run"
	done
	T0=$EPOCHREALTIME
	runsvdir "$d/sv" >/dev/null 2>&1 &
	local p=$!; started+=("$p")
	measure_sleepers runit-bench-sleeper "$p" runsvdir-and-children "$d/up"
	sv -w 10 force-shutdown "$d"/sv/* >/dev/null 2>&1 || true
	stop_pid "$p"
}

# measure_sleepers TAG AGENTPID PIDS STAMPS -> sets RSS_KB CPU_MS UP COLD_MS
# (T0: the $EPOCHREALTIME taken just before the supervisor was launched)
measure_sleepers() {
	local tag=$1 agent=$2 end=$((SECONDS + 120)) pids
	until [ "$(pgrep -c -f "^$tag" || true)" -ge "$N" ]; do
		[ $SECONDS -lt $end ] || { echo "timeout: $tag not all up" >&2; break; }
		sleep 0.2
	done
	UP=$(pgrep -c -f "^$tag" || true)
	COLD_MS=$(coldstart "$4" "$T0")
	sleep 2
	if [ "$3" = runsvdir-and-children ]; then
		pids="$agent $(pgrep -P "$agent" | tr '\n' ' ')"
	else
		pids=$agent
	fi
	RSS_KB=$(rsskb $pids)
	PSS_KB=$(psskb $pids)
	local t0 t1
	t0=$(cputicks $pids)
	sleep "$IDLE"
	t1=$(cputicks $pids)
	CPU_MS=$(( (t1 - t0) * 1000 / clk ))
}

echo "crash loop: $CRASHES crashes each ..." >&2
read -r r50 r99 rn < <(crash_resil)
read -r s50 s99 sn < <(crash_supervisord)
read -r u50 u99 un < <(crash_runsv)
echo "sleepers: $N services each, ${IDLE}s idle ..." >&2
sleepers_resil; rr=$RSS_KB rp=$PSS_KB rc=$CPU_MS ru=$UP rk=$COLD_MS
sleepers_supervisord; sr=$RSS_KB sp=$PSS_KB sc=$CPU_MS su=$UP sk=$COLD_MS
sleepers_runsv; ur=$RSS_KB up=$PSS_KB uc=$CPU_MS uu=$UP uk=$COLD_MS
mb() { awk "BEGIN{printf \"%.1f\", $1/1024}"; }

printf '\n%-40s %14s %14s %14s\n' "metric" "resil" "supervisord" "runsv"
printf '%-40s %14s %14s %14s\n' "crash->restart p50 (ms, n=$rn/$sn/$un)" "$r50" "$s50" "$u50"
printf '%-40s %14s %14s %14s\n' "crash->restart p99 (ms)" "$r99" "$s99" "$u99"
printf '%-40s %14s %14s %14s\n' "services up (of $N)" "$ru" "$su" "$uu"
printf '%-40s %14s %14s %14s\n' "cold start, all $N running (ms)" "$rk" "$sk" "$uk"
printf '%-40s %14s %14s %14s\n' "agent RSS with $N sleepers (MB)" "$(mb $rr)" "$(mb $sr)" "$(mb $ur)"
printf '%-40s %14s %14s %14s\n' "agent PSS with $N sleepers (MB)" "$(mb $rp)" "$(mb $sp)" "$(mb $up)"
printf '%-40s %14s %14s %14s\n' "agent CPU over ${IDLE}s idle (ms)" "$rc" "$sc" "$uc"
echo "(CPU resolution is one clock tick: $((1000 / clk)) ms)"
echo "(runsv: runsvdir + one runsv per service, summed; runsv waits 1 s before restarting a service that ran < 1 s)"
