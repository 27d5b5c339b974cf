#!/bin/bash
# bench-after-steps.sh HOLD_DIR ROUNDS BIN:ARGS... — the time `apply` spends
# after its restart step, in a sandbox kept by TestBenchHold:
#
#   RESIL_E2E_REQUIRE=1 RESIL_BENCH_HOLD=/tmp/h RESIL_BENCH_HOLD_N=1000 \
#       go test -count=1 -run TestBenchHold -timeout 3h ./e2e/ &
#   go build -o $(cat /tmp/h/host)/new ./cmd/reconciler   # and an older build as "base"
#   scripts/bench-after-steps.sh /tmp/h 6 base: "new:--stay-up 0" new:
#   touch /tmp/h/stop
#
# Each round, for each BIN:ARGS in turn: change one manifest's environment
# (a restart), run `apply ARGS --log-level debug` in the sandbox and print
# the milliseconds between the log lines "step applied … restart" and
# "systemd connection closed". Alternating builds in one sandbox makes the
# figures comparable on a noisy host.
set -euo pipefail
hold=$1 rounds=$2
shift 2
host=$(cat "$hold/host") pid=$(cat "$hold/pid")
stamp() { # HH:MM:SS.mmm → ms
	awk -F: '{ printf "%.1f", ($1*3600 + $2*60 + $3) * 1000 }' <<<"$1"
}
n=$(find "$host/m" -maxdepth 1 -name 'b*.yaml' | wc -l)
i=0
for r in $(seq 1 "$rounds"); do
	for v in "$@"; do
		bin=${v%%:*} args=${v#*:}
		i=$((i % n + 1)) # b0001 … bNNNN in turn
		f=$(printf '%s/m/b%04d.yaml' "$host" "$i")
		sed -i "s/GEN: \"[^\"]*\"/GEN: \"after-$$-$r-$i\"/" "$f"
		# shellcheck disable=SC2086 # args are words
		out=$(nsenter -t "$pid" -m -p -u -i -n -C -r -w -- "/srv/resil/$bin" apply --backend systemd \
			--state-dir /var/lib/resil --manifests /srv/resil/m $args --log-level debug --log-format console 2>&1)
		t1=$(grep 'step applied.*step="restart' <<<"$out" | head -1 | cut -c1-12)
		t2=$(grep 'systemd connection closed' <<<"$out" | tail -1 | cut -c1-12)
		if [ -z "$t1" ] || [ -z "$t2" ]; then
			echo "$bin $args: no restart step or no end in the log" >&2
			continue
		fi
		echo "$bin${args:+ $args} $(awk -v a="$(stamp "$t1")" -v b="$(stamp "$t2")" 'BEGIN { printf "%.1f", b - a }') ms"
	done
done
