"""Who may reach a storage node's export, as values: the scripts that confine fleet's storage user to the export
(on the storage node), make a worker's own key (on the worker's tmpfs), authorize and revoke it, and their parsers.

Workers mount sshfs volumes as `fleet-sftp` (the node label `fleet.storage.user` names another), a system user
with no shell and no password, that sshd confines to SFTP inside the export (`ChrootDirectory EXPORT`,
`ForceCommand internal-sftp`, in a `Match User` block fleet writes beside the config of the sshd that serves
fleet's own connection: `DIR/sshd_config.d/USER.conf` for `DIR/sshd_config`). Its keys are in
`DIR/USER.authorized_keys`, one `restrict` line per worker, each worker's own key: made on the worker's tmpfs
(`/run/fleet/storage/STORAGE.key`), never on its disk and never seen by the controller, which carries only the
public half. The script checks with `sshd -T` that sshd applies the confinement before it authorizes any key,
and reloads sshd (SIGHUP, then waits for its listener) only when the block changed.

The export is the chroot: root's, mode 0755, as sshd requires; the service directories under it are root's too,
and each volume directory and everything in it belongs to the storage user (a volume made by an older fleet, or
restored as root with other owners, is given to it the first time it is mounted). Through the mount (sshfs
`uid=0,gid=0`) a container sees every file as owned by root (uid and gid 0) whatever its mode; every access is
decided on the storage node as the storage user (the worker's kernel checks nothing: no `default_permissions`), so
any user in the container may read and write them, and `chown` fails (EPERM).
"""

from __future__ import annotations

import re

from fleet.core.errors import ScriptOutputError
from fleet.core.names import NAME_RE
from fleet.core.shell import Script
from fleet.node.storage import STORAGE_KEY_DIR, check_volume_dir

SFTP_USER = "fleet-sftp"
USER_LABEL = "fleet.storage.user"
# A system user name (useradd's default NAME_REGEX, shorter than its 32-byte limit).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
# The export is a literal path in sshd's config (ChrootDirectory expands %-tokens): nothing that needs quoting.
_EXPORT_RE = re.compile(r"^/[A-Za-z0-9_./-]{1,255}$")
_PUBKEY_RE = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/]{68}$")
NOT_OPENSSH_EXIT = 6  # no OpenSSH sshd serves this session
NOT_CONFINED_EXIT = 7  # sshd does not apply the Match block (not included, or overridden)


def check_user(user: str) -> str:
    if not _USER_RE.match(user):
        raise ValueError(f"storage user: expected a system user name (a-z 0-9 _ -), got {user!r}")
    return user


def check_export(export: str) -> str:
    if not _EXPORT_RE.match(export) or "/../" in f"{export}/" or "/./" in f"{export}/" or export == "/":
        raise ValueError(f"storage export: expected an absolute path of A-Z a-z 0-9 . _ / -, got {export!r}")
    return export.rstrip("/")


def _check_worker(worker: str) -> str:
    if not NAME_RE.match(worker):
        raise ValueError(f"invalid worker name {worker!r}")
    return worker


def key_comment(user: str, worker: str) -> str:
    """The comment that names a worker's line in the storage user's authorized keys (and revokes it)."""
    return f"{check_user(user)}@{_check_worker(worker)}"


# ---- on the worker: its own key, on tmpfs -------------------------------------------------------------------------

WORKER_KEY_SH = r"""
set -u
umask 077
d=${K%/*}
mkdir -p "$d" || exit 1
fs=$(stat -f -c %T "$d") || exit 1
case $fs in
  tmpfs|ramfs) ;;
  *) echo "fleet: refusing to keep the storage key in $d: it is on $fs, not tmpfs" >&2; exit 3 ;;
esac
if [ ! -s "$K" ] || [ ! -s "$K.pub" ]; then
  rm -f "$K" "$K.pub"
  ssh-keygen -q -t ed25519 -N '' -C fleet-sftp -f "$K" </dev/null >/dev/null || exit 1
fi
cut -d' ' -f1,2 "$K.pub"
"""


def worker_key_script(key: str) -> Script:
    """On a worker: make its key for one storage node at `key` (tmpfs only, exit 3 otherwise) unless it is
    there; prints the public key."""
    return Script(WORKER_KEY_SH, {"K": key}, name="fleet-storage-key")


def parse_public_key(stdout: str) -> str:
    text = stdout.strip()
    if not _PUBKEY_RE.match(text):
        raise ScriptOutputError(f"the worker did not return an ed25519 public key: {text[:80]!r}")
    return text


# ---- on the storage node: the user, the chroot, sshd, the keys -----------------------------------------------------

# sshd's listener is the oldest sshd above this shell (session → privileged monitor → listener); its `-f` names
# the config it runs with. `socks`/`listening`: the listener's socket inodes, and whether one is in LISTEN state
# (a SIGHUP closes the listening sockets and re-executes sshd in place: same PID, new sockets).
_SSHD_SH = r"""
sshd_listener() {
  p=$$ l=
  while [ "$p" -gt 1 ]; do
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || break
    [ -n "$p" ] || break
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sshd ] && l=$p
  done
  echo "$l"
}
# sshd rewrites its process title (`sshd: /usr/sbin/sshd -f FILE [listener] …`, one string): read it as words.
sshd_args() { tr '\0' ' ' <"/proc/$1/cmdline" | tr -s ' ' '\n'; }
sshd_config_of() {
  c=$(sshd_args "$1" | sed -n '/^-f$/ { n; p; q; }; s/^-f\(..*\)$/\1/p' | head -n 1)
  echo "${c:-/etc/ssh/sshd_config}"
}
socks() { ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p' | sort | tr '\n' ' '; }
listening() {
  for i in $(socks "$1"); do
    awk -v i="$i" '$4 == "0A" && $10 == i { f = 1 } END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null \
      && return 0
  done
  return 1
}
"""

# sshd's AllowUsers (`sshd -T` prints its patterns on one line) lets the storage user in, or names what to add:
# a server that lists its login users refuses the workers' keys with only "Permission denied" otherwise.
_ALLOWED_SH = r"""
allowed() {
  au=$(printf '%s\n' "$1" | sed -n 's/^allowusers //p')
  [ -n "$au" ] || return 0
  set -f
  for p in $au; do case "$U" in ${p%%@*}) set +f; return 0 ;; esac; done
  set +f
  echo "fleet: sshd ($2) lets only AllowUsers $au log in: add $U to it (the workers mount as $U)" >&2
  return 1
}
"""

PREPARE_SH = _SSHD_SH + _ALLOWED_SH + r"""
set -eu
umask 022
l=$(sshd_listener)
[ -n "$l" ] || { echo "fleet: no OpenSSH sshd serves this session: cannot confine the storage user" >&2; exit 6; }
conf=$(sshd_config_of "$l")
dir=${conf%/*}
dropin="$dir/sshd_config.d/$U.conf"
keys="$dir/$U.authorized_keys"
# No password (`*` matches none) rather than a locked one (`!`), which sshd without PAM refuses even for keys.
if ! id -u "$U" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --password '*' --comment "fleet storage (SFTP only)" "$U" >/dev/null
fi
uid=$(id -u "$U"); gid=$(id -g "$U")
# The chroot and the service directories: root's and not writable by others (sshd refuses a chroot otherwise).
mkdir -p "$EXPORT"
chown root:root "$EXPORT" && chmod 0755 "$EXPORT"
for d in "$@"; do
  mkdir -p "$EXPORT/${d%/*}" "$EXPORT/$d"
  chown root:root "$EXPORT/${d%/*}" && chmod 0755 "$EXPORT/${d%/*}"
  # Given to the storage user once: the top directory last, so an interrupted pass is done again.
  if [ "$(stat -c %u "$EXPORT/$d")" != "$uid" ]; then
    find -P "$EXPORT/$d" -mindepth 1 -exec chown -h "$uid:$gid" -- {} +
    chown "$uid:$gid" "$EXPORT/$d" && chmod 0700 "$EXPORT/$d"
  fi
done
touch "$keys" && chown root:root "$keys" && chmod 0644 "$keys"
mkdir -p "${dropin%/*}"
new="$dir/.$U.conf.new"
cat >"$new" <<EOF
# Written by fleet: the storage user may only use SFTP, inside the export. fleet overwrites changes made here.
Match User $U
    ChrootDirectory $EXPORT
    ForceCommand internal-sftp
    AuthorizedKeysFile $keys
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    AllowAgentForwarding no
    AllowTcpForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTTY no
    PermitTunnel no
EOF
if cmp -s "$new" "$dropin"; then
  rm -f "$new"
else
  [ -e "$dropin" ] && cp -p "$dropin" "$new.old"
  mv -f "$new" "$dropin"
  if ! out=$(/usr/sbin/sshd -t -f "$conf" 2>&1); then
    if [ -e "$new.old" ]; then mv -f "$new.old" "$dropin"; else rm -f "$dropin"; fi
    echo "fleet: sshd refused the storage user's block: $out" >&2; exit 7
  fi
  rm -f "$new.old"
  if ! sshd_args "$l" | grep -qx -- '-i'; then
    before=$(socks "$l")
    kill -HUP "$l"
    i=0
    until [ "$(socks "$l")" != "$before" ] && listening "$l"; do
      i=$((i + 1)); [ "$i" -ge 200 ] && { echo "fleet: sshd did not listen again after its reload" >&2; exit 1; }
      sleep 0.05
    done
  fi
fi
# What sshd applies to the storage user, checked before any key is authorized.
eff=$(/usr/sbin/sshd -T -f "$conf" -C "user=$U,host=fleet-worker,addr=127.0.0.1" 2>&1) || {
  echo "fleet: sshd -T failed: $eff" >&2; exit 7; }
for want in "chrootdirectory $EXPORT" "forcecommand internal-sftp" "authorizedkeysfile $keys"; do
  printf '%s\n' "$eff" | grep -qxF "$want" || {
    echo "fleet: sshd ($conf) does not apply ${dropin}: add \`Include ${dir}/sshd_config.d/*.conf\` at its top" >&2
    exit 7; }
done
allowed "$eff" "$conf" || exit 7
# A worker's line: its key alone, replaced when the worker made a new one (its tmpfs was lost).
if [ -n "$WORKER" ]; then
  line="restrict $PUB $U@$WORKER"
  if ! grep -qxF "$line" "$keys"; then
    awk -v c="$U@$WORKER" '$NF != c' "$keys" >"$keys.new"
    printf '%s\n' "$line" >>"$keys.new"
    chmod 0644 "$keys.new" && mv -f "$keys.new" "$keys"
  fi
fi
# An older fleet authorized one key for root (comment fleet-storage) and kept it here: both go.
auth=${AUTH:-$HOME/.ssh/authorized_keys}
if [ -f "$auth" ] && grep -q ' fleet-storage$' "$auth"; then
  grep -v ' fleet-storage$' "$auth" >"$auth.fleet-new" || :
  chmod --reference="$auth" "$auth.fleet-new" && mv -f "$auth.fleet-new" "$auth"
fi
rm -rf "$OLDKEYS"
echo "@@fleet user $U $uid $gid"
"""


def prepare_script(export: str, dirs: list[str], *, worker: str | None = None, public_key: str | None = None,
                   user: str = SFTP_USER, old_authorized_keys: str | None = None) -> Script:
    """On the storage node, as root: the storage user (made once), the export as its chroot with the volume
    directories `dirs` (SERVICE/NAME) given to it, sshd's Match block (checked with `sshd -T`), and `worker`'s
    `public_key` authorized for it alone; removes the root key an older fleet authorized. Prints
    `@@fleet user NAME UID GID`; exits NOT_OPENSSH_EXIT or NOT_CONFINED_EXIT saying why it cannot confine."""
    for d in dirs:
        check_volume_dir(d)
    if (worker is None) != (public_key is None):
        raise ValueError("a worker and its public key go together")
    if public_key is not None and not _PUBKEY_RE.match(public_key):
        raise ValueError("public key: expected `ssh-ed25519 BASE64`")
    env = {"EXPORT": check_export(export), "U": check_user(user), "WORKER": _check_worker(worker) if worker else "",
           "PUB": public_key or "", "AUTH": old_authorized_keys or "", "OLDKEYS": STORAGE_KEY_DIR}
    return Script(PREPARE_SH, env, tuple(dirs), name="fleet-storage-prepare")


def parse_prepared(stdout: str) -> tuple[str, int, int]:
    """(user, uid, gid) from the prepare script's last line."""
    m = re.search(r"^@@fleet user (\S+) (\d+) (\d+)$", stdout, re.M)
    if m is None:
        raise ScriptOutputError(f"the storage node did not confirm its storage user: {stdout[-120:]!r}")
    return m[1], int(m[2]), int(m[3])


# The storage user's keys file beside the config of the sshd serving this session (`$keys`).
_KEYS_SH = _SSHD_SH + r"""
set -eu
l=$(sshd_listener)
[ -n "$l" ] || { echo "fleet: no OpenSSH sshd serves this session" >&2; exit 6; }
conf=$(sshd_config_of "$l")
keys="${conf%/*}/$U.authorized_keys"
"""

REVOKE_SH = _KEYS_SH + r"""
if [ -f "$keys" ] && awk -v c="$U@$WORKER" '$NF == c { f = 1 } END { exit !f }' "$keys"; then
  awk -v c="$U@$WORKER" '$NF != c' "$keys" >"$keys.new"
  chmod 0644 "$keys.new" && mv -f "$keys.new" "$keys"
  echo "@@fleet revoked"
else
  echo "@@fleet absent"
fi
"""


def revoke_script(worker: str, user: str = SFTP_USER) -> Script:
    """On a storage node: remove `worker`'s key from the storage user's keys; prints `@@fleet revoked` or
    `@@fleet absent`. Its mounts already made stay until they end (sshd does not cut open sessions)."""
    return Script(REVOKE_SH, {"U": check_user(user), "WORKER": _check_worker(worker)}, name="fleet-storage-revoke")


def parse_revoked(stdout: str) -> bool:
    if "@@fleet revoked" in stdout:
        return True
    if "@@fleet absent" in stdout:
        return False
    raise ScriptOutputError(f"unexpected revoke output: {stdout[-120:]!r}")


PRUNE_SH = _KEYS_SH + r"""
# Each line's worker is its comment after `$U@`; a worker not among the arguments (the inventory's nodes) goes.
if [ -f "$keys" ]; then
  gone=$(awk -v u="$U@" -v keep=" $* " 'index($NF, u) == 1 && index(keep, " " substr($NF, length(u) + 1) " ") == 0 \
    { print substr($NF, length(u) + 1) }' "$keys")
  if [ -n "$gone" ]; then
    awk -v u="$U@" -v keep=" $* " 'index($NF, u) != 1 || index(keep, " " substr($NF, length(u) + 1) " ") != 0' \
      "$keys" >"$keys.new"
    chmod 0644 "$keys.new" && mv -f "$keys.new" "$keys"
    for w in $gone; do echo "@@fleet revoked $w"; done
  fi
fi
echo "@@fleet kept"
"""


def prune_script(keep: list[str], user: str = SFTP_USER) -> Script:
    """On a storage node: remove the key of every worker not in `keep` (the inventory's nodes) from the storage
    user's keys; prints `@@fleet revoked WORKER` for each and `@@fleet kept` last."""
    return Script(PRUNE_SH, {"U": check_user(user)}, tuple(_check_worker(w) for w in sorted(keep)),
                  name="fleet-storage-prune")


def parse_pruned(stdout: str) -> list[str]:
    """The workers whose keys the prune script removed."""
    if "@@fleet kept" not in stdout:
        raise ScriptOutputError(f"unexpected prune output: {stdout[-120:]!r}")
    return re.findall(r"^@@fleet revoked (\S+)$", stdout, re.M)
