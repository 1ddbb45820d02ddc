"""HAProxy's jail on an lb node: the sh script (run as root) that builds a mount namespace whose root is a small
tmpfs and execs HAProxy in it as its own user, holding only `CAPS`."""

from __future__ import annotations

# What HAProxy's processes hold (master and workers alike; HAProxy 2.6 cannot drop a capability in its workers):
# ports below 1024, and chroot(2) for the workers' `chroot` (fleet.node.haproxy.render.RunAs). Nothing else, ever:
# the same set bounds them, and no_new_privs stops any exec from gaining more.
CAPS = ("net_bind_service", "sys_chroot")
# The same as /proc/PID/status prints them (CapEff): bits 10 and 18.
CAP_MASK = (1 << 10) | (1 << 18)

# HAProxy's jail, run as root by `unshare --mount` (a mount namespace of its own, private propagation) with
# $1 HAProxy's directory, $2 the empty directory to mount the jail on, $3/$4 the uid/gid to run as, then the
# command. The jail's root is a small tmpfs holding read-only binds of /usr (and /bin, /lib... as the node has
# them: symlinks into usr/ on a usrmerged system), /dev/null and the random devices, OpenSSL's system config, and
# HAProxy's directory at its own path (read-only; only its run/ is writable, for the sockets), so every path in
# the config stays the same. pivot_root, not chroot: once the old root is unmounted there is nothing above the jail
# to climb back to, even for a process that holds CAP_SYS_CHROOT. Every remount of a bind says `bind`, so it
# changes that mount alone (a remount without it would make the node's own filesystem read-only).
# What HAProxy 2.6.12 opens outside its own directory (strace, start and reload): its libraries, /dev/urandom,
# /dev/null (the workers), /usr/lib/ssl/openssl.cnf (-> /etc/ssl/openssl.cnf); it also tries /etc/ld.so.cache
# (ld.so then searches its default directories, which hold Debian's libraries), /etc/localtime (only for `log`
# lines, which fleet renders none of), /etc/resolv.conf (no resolvers: servers are addresses), /proc/stat and
# /sys/devices/system/cpu (the thread count: it takes the CPUs it may run on all the same, 2 here as outside).
# A reload re-executes argv[0] (execve("/usr/sbin/haproxy", [..., "-x", "sockpair@3", ...])): the start script
# passes the absolute path, which must be under /usr, /bin or /sbin to be in the jail. Files written later into
# HAProxy's directory (a config, a certificate bundle: renamed into place) are seen in the jail, which binds the
# directory; a mount made later under it would not be (propagation is private).
JAIL = r"""
set -eu
umask 022
D=$1 J=$2 U=$3 G=$4
shift 4
mount -t tmpfs -o mode=0755,size=256k,nr_inodes=512,nosuid,nodev fleet-haproxy-jail "$J"
mkdir -p "$J/usr" "$J$D" "$J/.old"
# umount(8) reads /proc/self/mountinfo: the old root's, until the old root is gone.
ln -s .old/proc "$J/proc"
mount --bind /usr "$J/usr"
mount -o remount,bind,ro,nosuid,nodev "$J/usr"
for l in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$l" ]; then
    ln -s "$(readlink "/$l")" "$J/$l"
  elif [ -d "/$l" ]; then
    mkdir "$J/$l"; mount --bind "/$l" "$J/$l"; mount -o remount,bind,ro,nosuid,nodev "$J/$l"
  fi
done
for f in dev/null dev/urandom dev/random etc/ssl/openssl.cnf; do
  [ -e "/$f" ] || continue
  mkdir -p "$J/${f%/*}"; : >"$J/$f"; mount --bind "/$f" "$J/$f"
  case "$f" in etc/*) mount -o remount,bind,ro,nosuid,nodev,noexec "$J/$f" ;; esac
done
mount --bind "$D" "$J$D"
mount -o remount,bind,ro,nosuid,nodev,noexec "$J$D"
mount --bind "$D/run" "$J$D/run"
mount -o remount,bind,nosuid,nodev,noexec "$J$D/run"
cd "$J"
pivot_root . .old
cd /
umount -l /.old
rm /proc
rmdir /.old
# The jail's own tmpfs (a superblock of its own): read-only from now on.
mount -o remount,ro /
umask 077
exec setpriv --reuid="$U" --regid="$G" --clear-groups --no-new-privs --inh-caps=-all,$CAPS \
  --ambient-caps=-all,$CAPS --bounding-set=-all,$CAPS -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
""".replace("$CAPS", ",".join(f"+{c}" for c in CAPS))
