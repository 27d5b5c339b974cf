#!/usr/bin/env bash
# The main job on a machine without systemd as PID 1 (this one, containers,
# CI): run the agent on its built-in process backend, supervising the example
# manifests plus two fast demos (a crashing service and a 10-second timer).
# State (process table, timer stamps, logs) goes to the folder given as $2.
# Stop with Ctrl-C: the agent stops every service it started, in reverse order.
set -euo pipefail
bin=${1:-bin/reconciler}
state=${2:-.state}
cd "$(dirname "$0")/.."
mkdir -p "$state/manifests"
# The examples' helper scripts live at an absolute path, as manifests require.
if [ "$(id -u)" = 0 ]; then
  install -D -m 0755 manifests/bin/watchdog-worker.sh /opt/resil/examples/bin/watchdog-worker.sh
fi
rm -f "$state"/manifests/*.yaml
cp manifests/*.yaml manifests/demo/*.yaml "$state/manifests/"
chmod 0644 "$state"/manifests/*.yaml
echo "resil: supervising $(ls "$state/manifests" | wc -l) manifests from $state/manifests (Ctrl-C to stop)" >&2
exec "$bin" run --backend process --manifests "$state/manifests" --state-dir "$state" \
  --owner-check off --log-format console --stop-on-exit
