#!/usr/bin/env bash
# bench-edit-ab.sh - edit → unit file written and edit → new process running
# under `run`, two agent builds side by side in one converged sandbox
# (blocks alternating A, B, B, A, ...), for issue 12's edit figures. The
# sandbox comes from TestBenchHold (e2e/bench_hold_test.go):
#
#   RESIL_E2E_REQUIRE=1 RESIL_BENCH_HOLD=/tmp/hold RESIL_BENCH_HOLD_N=100 \
#       go test -count=1 -run TestBenchHold -timeout 3h ./e2e/ &
#   scripts/bench-edit-ab.sh /tmp/hold /path/to/reconciler-A /path/to/reconciler-B 4 8
#   touch /tmp/hold/stop
#
# Each block starts one build's agent inside the sandbox (`run`, settle
# 100 ms, default log level), waits for it to settle, then makes EDITS
# edits one at a time, as an editor saves: the manifest is written beside
# the manifests folder and renamed into it. A probe inside the sandbox
# (python, polling every 0.2 ms) times from the rename to the unit file's
# new content and to a new main process of the service in its cgroup, then
# waits 1.5 s. The agent is stopped by its PID. Prints both builds'
# medians and B/A.
set -euo pipefail
hold=$1 a=$2 b=$3 rounds=${4:-4} edits=${5:-8}
pid=$(cat "$hold/pid")
host=$(cat "$hold/host")
cp "$a" "$host/ab-a"
cp "$b" "$host/ab-b"
ns() { nsenter -t "$pid" -m -p -u -i -n -C -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
for x in ab-a ab-b; do
	ns sh -c "rm -rf /var/lib/resil-$x && cp -a /var/lib/resil /var/lib/resil-$x"
done
cat >"$host/edit-probe.py" <<'PY'
import os, sys, time
m, n, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = sorted(f[:-5] for f in os.listdir(m) if f.endswith(".yaml"))
def procs(u):
    try:
        with open(f"/sys/fs/cgroup/system.slice/{u}.service/cgroup.procs") as f:
            return set(f.read().split())
    except OSError:
        return set()
for i in range(n):
    name = names[(seq * n + i) % len(names)]
    unit = f"/etc/systemd/system/{name}.service"
    val = f"e-{seq}-{i}-{time.time_ns()}"
    before = procs(name)
    tmp = f"/srv/resil/.edit-{name}.yaml"
    with open(tmp, "w") as f:
        f.write(f"""apiVersion: resil.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  command: ["/bin/sleep", "infinity"]
  restart: {{policy: always, delay: 100ms}}
  environment: {{GEN: "{val}"}}
""")
    t0 = time.monotonic()
    os.rename(tmp, f"{m}/{name}.yaml")
    written = running = None
    while time.monotonic() - t0 < 30 and (written is None or running is None):
        now = time.monotonic()
        if written is None:
            try:
                with open(unit) as f:
                    if val in f.read():
                        written = now
            except OSError:
                pass
        if written is not None and running is None:
            p = procs(name) - before
            if p:
                running = now
        time.sleep(0.0002)
    if written is None or running is None:
        print("timeout", file=sys.stderr)
        sys.exit(1)
    print(f"{(written - t0) * 1000:.2f} {(running - t0) * 1000:.2f}", flush=True)
    time.sleep(1.5)
PY
block() { # BUILD SEQ -> lines "written running"
	local x=$1 seq=$2
	ns sh -c "echo \$\$ >/run/ab-agent.pid; exec /srv/resil/$x run --backend systemd --state-dir /var/lib/resil-$x \
		--manifests /srv/resil/m --metrics-addr '' --max-parallel-restarts 0 --settle 100ms >/run/ab-agent.log 2>&1" &
	local nspid=$!
	sleep 4
	ns python3 /srv/resil/edit-probe.py /srv/resil/m "$edits" "$seq"
	ns sh -c 'kill -TERM "$(cat /run/ab-agent.pid)"'
	wait "$nspid" || true
}
ra=() rb=() k=0
for i in $(seq "$rounds"); do
	if [ $((i % 2)) -eq 1 ]; then order="ab-a ab-b"; else order="ab-b ab-a"; fi
	for x in $order; do
		k=$((k + 1))
		out=$(block "$x" "$k")
		if [ "$x" = ab-a ]; then ra+=("$out"); else rb+=("$out"); fi
	done
done
python3 - "$(printf '%s\n' "${ra[@]}")" "$(printf '%s\n' "${rb[@]}")" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
def parse(s):
    rows = [tuple(map(float, l.split())) for l in s.splitlines() if l.strip()]
    return [r[0] for r in rows], [r[1] for r in rows]
(aw, ar), (bw, br), load = parse(sys.argv[1]), parse(sys.argv[2]), sys.argv[3]
for what, x, y in (("edit → unit written", aw, bw), ("edit → new process", ar, br)):
    mx, my = statistics.median(x), statistics.median(y)
    print(f"{what}: A p50 {mx:.1f} ms (n={len(x)})  B p50 {my:.1f} ms (n={len(y)})  B-A {my-mx:+.1f} ms  (load {load})")
PY
