#!/bin/bash
# baseline.sh UNITDIR - the shell baseline of issue 12, run inside the e2e
# sandbox by TestBenchSystemd (section 0) beside `reconciler apply`:
# copy every unit file of UNITDIR that differs from /etc/systemd/system
# (cmp), one daemon-reload if any changed, one `systemctl enable --now` of
# every unit, then restart the units that changed and were already there.
# It prints "changed N restarted M" on stdout.
set -euo pipefail
src=$1
dst=/etc/systemd/system
all=() changed=() restart=()
for f in "$src"/*.service; do
	u=${f##*/}
	all+=("$u")
	if ! cmp -s "$f" "$dst/$u"; then
		[ -e "$dst/$u" ] && restart+=("$u")
		cp "$f" "$dst/.$u.tmp"
		mv "$dst/.$u.tmp" "$dst/$u"
		changed+=("$u")
	fi
done
if [ ${#changed[@]} -gt 0 ]; then
	systemctl daemon-reload
fi
systemctl enable --now --quiet "${all[@]}"
if [ ${#restart[@]} -gt 0 ]; then
	systemctl restart "${restart[@]}"
fi
echo "changed ${#changed[@]} restarted ${#restart[@]}"
