#!/bin/sh
# Installs the Debian packages the tests need, when some are missing: the
# first step of `make test` (the README's test command) and of .ci/run. On a
# machine that has them all it does nothing (no apt-get call). Not root, or
# not Debian: it says what is missing and leaves it; the tests that need it
# then skip, or fail with RESIL_E2E_REQUIRE=1 (see e2e/sandbox.Missing).
#
#   systemd dbus util-linux bsdutils mount procps coreutils: the e2e sandbox
#     (e2e/sandbox.Packages), systemd-analyze, systemd-notify, flock, setpriv
#   netcat-openbsd: nc, in e2e TestPreStartCheckSecondTry
#   curl: e2e scrapes /metrics inside the sandbox
#   tzdata: calendar tests in other time zones
#   make git ca-certificates: the build itself and Go module downloads; git
#     and openssh-client (ssh-keygen -Y): the git source's tests (signed commits)
#   dash: sh -n of the example scripts
#   postgresql: e2e/postgres_test.go (Debian's PostgreSQL 15); installed by
#     scripts/postgres-deps.sh, which starts no service and creates no cluster
#   prometheus: promtool for deploy/prometheus's rule tests, and the server of
#     the fleet-view e2e test; installed by scripts/postgres-deps.sh too (no
#     service started)
set -eu

pkgs="make git openssh-client ca-certificates dash systemd dbus util-linux bsdutils mount procps coreutils curl netcat-openbsd tzdata postgresql prometheus"

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "test-deps: not a Debian system; install the equivalents of: $pkgs" >&2
	exit 0
fi
missing=""
pg=""
for p in $pkgs; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
		if [ "$p" = postgresql ] || [ "$p" = prometheus ]; then
			pg="$pg $p"
		else
			missing="$missing $p"
		fi
	fi
done
[ -n "$missing$pg" ] || exit 0
if [ "$(id -u)" != 0 ]; then
	echo "test-deps: missing:$missing${pg:+ $pg}. As root: apt-get install$missing${pg:+; scripts/postgres-deps.sh}" >&2
	echo "test-deps: the tests that need them skip (RESIL_E2E_REQUIRE=1: fail)" >&2
	exit 0
fi
if [ -n "$missing" ]; then
	echo "test-deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086 # one word per package
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ -n "$pg" ]; then
	"$(dirname "$0")/postgres-deps.sh"
fi
