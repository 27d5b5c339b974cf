#!/bin/bash
# usage: scripts/rollout-figure.sh N MAX  -> seconds for a rollout of N services (ready 1 s after start) at MAX (0: all at once)
# Rollout time on the process backend (this host, no systemd): N services that are ready 1 s after
# they start (nc on 127.0.0.1:19001.., readiness tcp), all restarted by one manifest change, with
# --max-parallel-restarts MAX (0: all at once). Prints the time until every new process answers.
# RECONCILER defaults to bin/reconciler (make build).
N=$1; MAX=$2; D=${TMPDIR:-/tmp}/resil-rollout-$N-$MAX
rm -rf $D; mkdir -p $D/m
gen() {
  for i in $(seq 1 $N); do
    p=$((19000+i))
    cat > $D/m/s$i.yaml <<EOT
apiVersion: resil.dev/v1
kind: Service
metadata: {name: s$i}
spec:
  command: ["/bin/sh", "-c", "sleep 1; exec /usr/bin/nc -lk 127.0.0.1 $p"]
  environment: {VERSION: "$1"}
  health:
    readiness: {tcp: "127.0.0.1:$p", interval: 200ms, failures: 1}
EOT
  done
}
ready() { ${RECONCILER:-bin/reconciler} status --state-dir $D/state 2>/dev/null | grep -c " yes "; }
gen 1
${RECONCILER:-bin/reconciler} run --backend process --manifests $D/m --state-dir $D/state --owner-check off --resync 5m --metrics-addr "" --log-format json --stop-on-exit --max-parallel-restarts $MAX > $D/log 2>&1 &
A=$!
until [ "$(ready)" = "$N" ]; do sleep 0.2; done
sleep 1
t0=$(date +%s.%N)
gen 2
# done when every service's process carries VERSION=2 and all are ready
allup() { for i in $(seq 1 $N); do /usr/bin/nc -z 127.0.0.1 $((19000+i)) || return 1; done; }
until [ "$(grep -c '"reason":"Applied".*"step":"restart s' $D/log)" -ge "$N" ] && allup; do sleep 0.1; done
t1=$(date +%s.%N)
echo "N=$N max=$MAX rollout $(echo "$t1 - $t0" | bc) s"
kill -TERM $A; wait $A 2>/dev/null
