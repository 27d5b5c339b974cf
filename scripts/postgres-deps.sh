#!/bin/sh
# Installs Debian's PostgreSQL 15 (package postgresql) for the e2e scenario
# suite (e2e/postgres_test.go), run by scripts/test-deps.sh (`make test`,
# .ci/run) when it is missing, without ever starting or creating a host
# cluster:
#   - a policy-rc.d that exits 101 is in place during the install, so no
#     service is started (an existing policy that already does so is kept;
#     any other is put back afterwards);
#   - postgresql-common is installed first and create_main_cluster is set to
#     false, so postgresql-15's postinst creates no "main" cluster; the
#     file is put back as it was afterwards (saved as .resil-saved meanwhile).
# A run killed with -9 leaves its policy-rc.d (recognised by its marker
# line) and the saved createcluster.conf behind: the next run as root puts
# both back first, whether or not it has anything to install.
# The tests run their own postgres (initdb into a temp dir, under resil).
# RESIL_POLICY_RC_D and RESIL_CREATECLUSTER_CONF override the two paths (for
# the script's own test).
set -eu

policy=${RESIL_POLICY_RC_D:-/usr/sbin/policy-rc.d}
conf=${RESIL_CREATECLUSTER_CONF:-/etc/postgresql-common/createcluster.conf}

marker='# resil postgres-deps: temporary, start no service while installing'

# recover puts back what a killed run left: its own policy-rc.d (the one
# saved before it, or none) and createcluster.conf as it was.
recover() {
	saved=false
	if [ -e "$policy.resil-saved" ] || [ -L "$policy.resil-saved" ]; then
		saved=true
	fi
	if grep -qxF "$marker" "$policy" 2>/dev/null; then
		if $saved; then
			mv -f "$policy.resil-saved" "$policy"
		else
			rm -f "$policy"
		fi
	elif $saved && ! [ -e "$policy" ] && ! [ -L "$policy" ]; then
		mv "$policy.resil-saved" "$policy" # killed between the two moves
	fi
	if [ -e "$conf.resil-saved" ]; then
		mv -f "$conf.resil-saved" "$conf"
	fi
}
if [ "$(id -u)" = 0 ]; then
	recover
fi

# prometheus (promtool, and the server the fleet-view e2e test runs) is a
# daemon package too: installed under the same policy, it starts nothing.
need=""
for p in postgresql prometheus; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
		need="$need $p"
	fi
done
if [ -z "$need" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "postgres-deps: missing:$need. As root: scripts/postgres-deps.sh" >&2
	exit 0
fi

restore=""
if [ -e "$policy" ] || [ -L "$policy" ]; then
	if ! grep -qx 'exit 101' "$policy" 2>/dev/null; then
		mv "$policy" "$policy.resil-saved"
		restore=move
	fi
else
	restore=remove
fi
cleanup() {
	case "$restore" in
	move) mv -f "$policy.resil-saved" "$policy" ;;
	remove) rm -f "$policy" ;;
	esac
	if [ -e "$conf.resil-saved" ]; then
		mv -f "$conf.resil-saved" "$conf"
	fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
if [ -n "$restore" ]; then
	printf '#!/bin/sh\n%s\nexit 101\n' "$marker" >"$policy"
	chmod 0755 "$policy"
fi

echo "postgres-deps: installing$need (no service started, no cluster created)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
case "$need" in
*prometheus*) apt-get install -y -qq --no-install-recommends prometheus >/dev/null ;;
esac
case "$need" in
*postgresql*) ;;
*) exit 0 ;;
esac
apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
cp -p "$conf" "$conf.resil-saved"
if grep -Eq '^[#[:space:]]*create_main_cluster' "$conf"; then
	sed -i -E 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$conf"
else
	echo 'create_main_cluster = false' >>"$conf"
fi
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
