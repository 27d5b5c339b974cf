#!/usr/bin/env bash
# Installs Debian's PostgreSQL 15 (package postgresql) for the e2e scenario
# suite (e2e/postgres_test.go) when it is missing, without ever starting or
# creating a host cluster:
#   - a policy-rc.d that exits 101 is in place during the install, so no
#     service is started (an existing one is left as it is);
#   - postgresql-common is installed first and create_main_cluster is set
#     to false, so postgresql-15's postinst creates no "main" cluster.
# The tests run their own postgres (initdb into a temp dir, under resil).
# Needs root; does nothing when /usr/lib/postgresql/15/bin/postgres exists.
set -euo pipefail
[ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/bin/pg_dumpall ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "postgres-deps: not root, cannot install postgresql" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
restore=
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
}
trap cleanup EXIT
if [ -n "$restore" ]; then
  printf '#!/bin/sh\n# resil test deps: start no service while installing\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
fi
echo "postgres-deps: installing postgresql (no service started, no cluster created)" >&2
apt_install() { apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
apt_install postgresql-common || { apt-get update -qq; apt_install postgresql-common; }
conf=/etc/postgresql-common/createcluster.conf
if grep -Eq '^[#[:space:]]*create_main_cluster' "$conf"; then
  sed -ri 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$conf"
else
  echo 'create_main_cluster = false' >> "$conf"
fi
apt_install postgresql
