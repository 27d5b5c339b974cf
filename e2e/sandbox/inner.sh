#!/bin/sh
# inner.sh boots systemd inside the sandbox. It is embedded in package
# sandbox and started by Start as
#
#   unshare --mount --propagation private --pid --fork --uts --ipc --net \
#       --kill-child -- /bin/sh inner.sh stage1
#
# Never run it by hand: stage2 mounts over paths it is given, and only the
# final safety check stands between a mistake and systemd wiping /tmp.
#
# Input, all from the environment (set by Start, validated there):
#   SBX_ID       sandbox id, e.g. sbx-0123abcd; names mounts and the container
#   SBX_STATE    host state dir: boot_id, binds.sh, seed/, layers/, root/
#   SBX_CGROUP   host path of the cgroup2 leaf to move into
#   SBX_CONSOLE  pty slave to bind on /dev/console
#   SBX_DROPCAPS bounding-set argument for setpriv, e.g. -sys_module,-sys_time
#
# Every mount and umount gets -n: without it libmount records options in
# /run/mount/utab, and before pivot_root that is the host's /run.
set -eu

die() {
	echo "sandbox $SBX_ID: $*" >&2
	exit 1
}

# stage1 runs as PID 1 of the new PID namespace, still in the host's cgroup
# namespace: move into the leaf first, so that the new cgroup namespace is
# rooted there and systemd finds an empty tree to manage.
stage1() {
	[ "$$" = 1 ] || die "stage1: PID $$, want 1 (not in a new PID namespace)"
	echo 0 >"$SBX_CGROUP/cgroup.procs"
	exec unshare --cgroup -- /bin/sh "$0" stage2
}

# bind HOST TARGET KIND MODE mounts HOST on TARGET inside the new root.
# TARGET is resolved inside the new root (chroot), so that symlinks such as
# /var/run -> /run point into the sandbox and never at the host.
bind() {
	if [ "$3" = dir ]; then
		chroot "$R" mkdir -p -- "$2"
	else
		chroot "$R" mkdir -p -- "$(dirname -- "$2")"
		chroot "$R" sh -c '[ -e "$1" ] || : >"$1"' sh "$2"
	fi
	dst=$R$(chroot "$R" realpath -e -- "$2")
	mount -n --bind -- "$1" "$dst"
	if [ "$4" = ro ]; then
		mount -n -o remount,bind,ro -- "$dst"
	fi
}

stage2() {
	# Mounting anything in the host's namespaces would be a disaster.
	[ "$$" = 1 ] || die "stage2: PID $$, want 1 (not in a new PID namespace)"
	R=$SBX_STATE/root

	# The root: a writable overlay over the host's root file system. Mounts
	# below / (the host's /proc, /tmp if it were a tmpfs, ...) are not part
	# of the lower layer; writes land in a tmpfs and vanish with it.
	mount -n -t tmpfs -o mode=0755 "$SBX_ID-layers" "$SBX_STATE/layers"
	mkdir "$SBX_STATE/layers/upper" "$SBX_STATE/layers/work"
	mount -n -t overlay -o "lowerdir=/,upperdir=$SBX_STATE/layers/upper,workdir=$SBX_STATE/layers/work" \
		"$SBX_ID-root" "$R"

	# /proc of the new PID namespace; the kernel-wide knobs read-only, and a
	# private boot id so that journals do not mix with the host's.
	mount -n -t proc -o nosuid,nodev,noexec "$SBX_ID-proc" "$R/proc"
	for p in sys sysrq-trigger irq bus; do
		[ -e "$R/proc/$p" ] || continue
		mount -n --bind "$R/proc/$p" "$R/proc/$p"
		mount -n -o remount,bind,ro "$R/proc/$p"
	done
	mount -n --bind "$SBX_STATE/boot_id" "$R/proc/sys/kernel/random/boot_id"
	mount -n -o remount,bind,ro "$R/proc/sys/kernel/random/boot_id"

	# sysfs read-only (udev and friends skip themselves), cgroup2 rooted at
	# the leaf by the cgroup namespace of stage1.
	mount -n -t sysfs -o ro,nosuid,nodev,noexec "$SBX_ID-sysfs" "$R/sys"
	mount -n -t cgroup2 -o nosuid,nodev,noexec "$SBX_ID-cgroup" "$R/sys/fs/cgroup"

	# A minimal /dev.
	mount -n -t tmpfs -o mode=0755,nosuid,size=4m "$SBX_ID-dev" "$R/dev"
	for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
		# shellcheck disable=SC2086 # split on purpose
		set -- $n
		mknod -m 0666 "$R/dev/$1" c "$2" "$3"
	done
	mkdir "$R/dev/pts" "$R/dev/shm"
	mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec "$SBX_ID-devpts" "$R/dev/pts"
	ln -s pts/ptmx "$R/dev/ptmx"
	mount -n -t tmpfs -o mode=1777,nosuid,nodev "$SBX_ID-shm" "$R/dev/shm"
	ln -s /proc/self/fd "$R/dev/fd"
	ln -s /proc/self/fd/0 "$R/dev/stdin"
	ln -s /proc/self/fd/1 "$R/dev/stdout"
	ln -s /proc/self/fd/2 "$R/dev/stderr"
	: >"$R/dev/console"
	mount -n --bind "$SBX_CONSOLE" "$R/dev/console"

	# Fresh state where systemd writes or deletes: /run, /tmp (tmpfiles
	# --remove), the journal, and the unit directory seeded below.
	mount -n -t tmpfs -o mode=0755,nosuid,nodev "$SBX_ID-run" "$R/run"
	mount -n -t tmpfs -o mode=1777,nosuid,nodev "$SBX_ID-tmp" "$R/tmp"
	mkdir -p "$R/var/log/journal"
	mount -n -t tmpfs -o mode=2755,nosuid,nodev "$SBX_ID-journal" "$R/var/log/journal"
	mount -n -t tmpfs -o mode=0755,nosuid,nodev "$SBX_ID-units" "$R/etc/systemd/system"

	# Device numbers of the file systems mounted above, for the safety check
	# after pivot_root: each mount has its own, never the host's.
	root_dev=$(stat -c %d "$R")
	run_dev=$(stat -c %d "$R/run")
	tmp_dev=$(stat -c %d "$R/tmp")
	[ "$root_dev" != "$(stat -c %d /)" ] || die "overlay has the host root's device number"

	# Seed: sandbox.target, masks, journald and generator settings,
	# hostname, machine-id. Written by Start into the state dir.
	cp -a "$SBX_STATE/seed/." "$R/"

	# Caller's binds; binds.sh calls bind() once per Bind.
	# shellcheck disable=SC1091
	. "$SBX_STATE/binds.sh"

	mkdir "$R/.sbx-oldroot"
	cd "$R"
	pivot_root . .sbx-oldroot
	cd /
	umount -n -l /.sbx-oldroot
	rmdir /.sbx-oldroot

	# Safety check: systemd's tmpfiles setup removes what it finds in /tmp
	# and /run. Only exec it as PID 1 of its own PID namespace, when / is
	# the overlay and /run and /tmp are the tmpfs mounted above, and the old
	# root is gone.
	[ "$$" = 1 ] || die "refusing to start systemd: PID $$, want 1"
	check() { # PATH FSTYPE DEV
		t=$(stat -f -c %T "$1")
		d=$(stat -c %d "$1")
		[ "$t" = "$2" ] && [ "$d" = "$3" ] ||
			die "refusing to start systemd: $1 is $t (device $d), want the $2 mounted by this script (device $3)"
	}
	check / overlayfs "$root_dev"
	check /run tmpfs "$run_dev"
	check /tmp tmpfs "$tmp_dev"
	! grep -q sbx-oldroot /proc/self/mountinfo || die "refusing to start systemd: old root still mounted"

	exec setpriv --bounding-set "$SBX_DROPCAPS" -- \
		env -i container="$SBX_ID" SYSTEMD_COLORS=0 \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		/lib/systemd/systemd --system --unit=sandbox.target --log-color=no
}

case "${1-}" in
stage1) stage1 ;;
stage2) stage2 ;;
*) die "usage: inner.sh stage1|stage2" ;;
esac
