#!/bin/sh
# watchdog-worker.sh: the example worker of manifests/watchdog-worker.yaml.
#
# It reports READY=1 once, then pings the service manager's watchdog
# (sd_notify "WATCHDOG=1") at a third of the interval the manager asks for
# (WATCHDOG_USEC, set by systemd and by resil's process supervisor for a
# service with watchdog.timeout). POSIX sh: runs under dash.
#
# To simulate a hang it stops pinging, but keeps running, while
#   - the environment variable WORKER_HANG is 1 at start, or
#   - the file named by WORKER_HANG_FILE exists (default /run/watchdog-worker.hang).
# The manager then misses the deadline, kills the worker (SIGABRT) and
# restarts it according to the service's restart policy.
set -u

hang_file=${WORKER_HANG_FILE:-/run/watchdog-worker.hang}

# Ping interval: a third of WATCHDOG_USEC, at least 1 s; 3 s without one.
interval=3
if [ -n "${WATCHDOG_USEC:-}" ]; then
	interval=$((WATCHDOG_USEC / 3000000))
	[ "$interval" -ge 1 ] || interval=1
fi

# notify MESSAGE: tell the manager, if there is one. systemd-notify fails
# without NOTIFY_SOCKET; that is fine when run by hand.
notify() {
	if [ -n "${NOTIFY_SOCKET:-}" ]; then
		systemd-notify "$@" || echo "watchdog-worker: systemd-notify $* failed" >&2
	fi
}

trap 'echo "watchdog-worker: stopping"; exit 0' TERM INT

echo "watchdog-worker: started, pinging every ${interval}s"
notify --ready --status="working"

n=0
while :; do
	if [ "${WORKER_HANG:-0}" = 1 ] || [ -e "$hang_file" ]; then
		echo "watchdog-worker: hanging (not pinging the watchdog)" >&2
		# Sleep in short steps so the TERM trap runs promptly.
		while [ "${WORKER_HANG:-0}" = 1 ] || [ -e "$hang_file" ]; do
			sleep 1
		done
		echo "watchdog-worker: recovered" >&2
	fi
	n=$((n + 1))
	notify --status="working, ping $n" WATCHDOG=1
	sleep "$interval"
done
