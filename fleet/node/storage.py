"""Volumes on a node, as values: where they live, the scripts that list, mount (sshfs), release, archive and
restore them, and the pure parsers of what those scripts print.

Node-local volumes are directories `/var/lib/fleet/volumes/SERVICE/NAME` on the node that ran the replica.
A network volume (`sshfs`) is a directory `EXPORT/SERVICE/NAME` on a storage node (EXPORT: /var/lib/fleet/storage
unless the storage node's label `fleet.storage.dir` says otherwise), mounted over SSH on the worker at
`/run/fleet/mnt/CONTAINER/NAME` when the container starts and unmounted when it stops. The mountpoint is on
the node's tmpfs: after a reboot it is gone, so containerd cannot restart the container on an empty local
directory in place of the network volume (the start fails, and the next fleet run replaces the replica).

A worker reaches the storage node as fleet's storage user, confined by sshd to SFTP inside the export, with a
key of its own made on its tmpfs (`/run/fleet/storage/NODE.key`): see fleet.node.storage_access. The storage
node's host key is pinned from the controller's known_hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from fleet.core.dirs import NODE_BASE, NODE_RUN
from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script

VOLUMES_DIR = f"{NODE_BASE}/volumes"
MOUNTS_DIR = f"{NODE_RUN}/mnt"
STORAGE_DIR = f"{NODE_BASE}/storage"
# Where an older fleet kept the one storage key it authorized for root (removed when the storage user is set up).
STORAGE_KEY_DIR = f"{NODE_BASE}/storage-key"
ACCESS_DIR = f"{NODE_RUN}/storage"
STORAGE_DIR_LABEL = "fleet.storage.dir"
# root's authorized_keys, where an older fleet authorized that key (default `$HOME/.ssh/authorized_keys`).
AUTHORIZED_KEYS_LABEL = "fleet.storage.authorized_keys"
# sshfs gives up connecting after this, and the whole mount after MOUNT_DEADLINE (a storage node that accepts the
# TCP connection and then says nothing must not hang a rollout).
CONNECT_TIMEOUT = 5
MOUNT_DEADLINE = 15
# How a volume (local or sshfs) is mounted into a container: what a container wrote there, or what a backup
# brought, is data, never a way to gain rights (no setuid/setgid, no device nodes).
CONTAINER_MOUNT_OPTIONS = ("nosuid", "nodev")
MISSING_EXIT = 4  # sshfs or /dev/fuse missing on the worker
MOUNT_FAILED_EXIT = 5

_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _part(value: str, what: str) -> str:
    if not _PART.match(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def local_dir(service: str, name: str) -> str:
    return f"{VOLUMES_DIR}/{_part(service, 'service')}/{_part(name, 'volume name')}"


def export_dir(export: str, service: str, name: str) -> str:
    return f"{export}/{_part(service, 'service')}/{_part(name, 'volume name')}"


def mountpoint(container_id: str, name: str) -> str:
    """Where a container's sshfs volume is mounted on the worker (one mount per container: released with it)."""
    if not _ID.match(container_id):
        raise ValueError(f"invalid container id {container_id!r}")
    return f"{MOUNTS_DIR}/{container_id}/{_part(name, 'volume name')}"


def access_key(storage_node: str) -> str:
    return f"{ACCESS_DIR}/{storage_node}.key"


def access_known_hosts(storage_node: str) -> str:
    return f"{ACCESS_DIR}/{storage_node}.known_hosts"


# ---- listing ----------------------------------------------------------------------------------------------------

# One line per volume directory: `KIND<TAB>SERVICE<TAB>NAME<TAB>KiB` (KiB `-` without sizes); KIND is `local`
# (a worker's volumes dir) or `sshfs` (a storage node's export). Paths with other characters are skipped.
LIST_SH = r"""
list() {
  [ -d "$2" ] || return 0
  for d in "$2"/*/*; do
    [ -d "$d" ] || continue
    name=${d##*/}; rest=${d%/*}; service=${rest##*/}
    if [ "$SIZES" = 1 ]; then kib=$(du -sk "$d" 2>/dev/null | cut -f1); else kib=-; fi
    printf '%s\t%s\t%s\t%s\n' "$1" "$service" "$name" "${kib:--}"
  done
}
list local "$LOCAL"
[ -z "$EXPORT" ] || list sshfs "$EXPORT"
"""


def list_script(*, sizes: bool, export: str | None = None) -> Script:
    """List the node's volume directories (and, on a storage node, its exported ones); `sizes` adds `du -sk`."""
    return Script(LIST_SH, {"LOCAL": VOLUMES_DIR, "EXPORT": export or "", "SIZES": "1" if sizes else "0"},
                  name="fleet-volumes")


@dataclass(frozen=True)
class VolumeDir:
    """One volume directory as a node listed it."""

    kind: str  # local | sshfs
    service: str
    name: str
    size: int | None  # bytes; None when not measured


def parse_list(stdout: str) -> list[VolumeDir]:
    out = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4 or parts[0] not in ("local", "sshfs"):
            raise ScriptOutputError(f"unexpected volume listing line {line[:80]!r}")
        kind, service, name, kib = parts
        if not (_PART.match(service) and _PART.match(name)):
            continue  # not a directory fleet made
        size = int(kib) * 1024 if kib.isdigit() else None
        out.append(VolumeDir(kind, service, name, size))
    return out


def check_volume_dir(volume_dir: str) -> str:
    """`SERVICE/NAME`, checked (a directory under a storage node's export)."""
    service, _, name = volume_dir.partition("/")
    _part(service, "service")
    _part(name, "volume name")
    return volume_dir


# ---- the worker: mount at start, release at stop -----------------------------------------------------------------

MOUNT_SH = r"""
if mountpoint -q "$MP" 2>/dev/null; then exit 0; fi
command -v sshfs >/dev/null 2>&1 || { echo "sshfs is not installed on this node (apt-get install sshfs)" >&2; exit 4; }
[ -c /dev/fuse ] || { echo "/dev/fuse is missing: FUSE is not available on this node" >&2; exit 4; }
mkdir -p "$MP" || exit 5
err=$(mktemp) || exit 5
# sshfs's ssh child keeps the stderr it was given: a file, so this session ends when the mount is made. sshfs
# does not pass on what ssh says (host key, refused, no route): ssh logs it to the same file (-E).
o="IdentityFile=$KEY,IdentitiesOnly=yes,UserKnownHostsFile=$KH,GlobalKnownHostsFile=/dev/null"
o="$o,StrictHostKeyChecking=yes,BatchMode=yes,ConnectTimeout=$CT,ServerAliveInterval=5,ServerAliveCountMax=3"
# uid=0,gid=0: every file shows as root's here; on the storage node all belong to the confined storage user
# (whose number means nothing on this node), which decides every access (fleet.node.storage_access).
timeout -k 2 "$T" sshfs -p "$PORT" -o "$o,reconnect,allow_other,uid=0,gid=0,ssh_command=ssh -E $err" "$DEST" "$MP" \
  </dev/null >/dev/null 2>>"$err"
rc=$?
if [ $rc -ne 0 ]; then
  rmdir "$MP" "${MP%/*}" 2>/dev/null
  [ $rc -eq 124 ] && echo "no answer within ${T}s" >&2
  grep -v -e '^@' -e '^ *$' "$err" | tail -n 3 >&2; rm -f "$err"; exit 5
fi
rm -f "$err"
"""


def mount_script(mp: str, *, user: str, address: str, port: int, remote: str, key: str, known_hosts: str,
                 deadline: int = MOUNT_DEADLINE) -> Script:
    """Mount `user@address:remote` at `mp` with sshfs (allow_other: the container's processes reach it);
    exits MISSING_EXIT when sshfs or /dev/fuse is missing, MOUNT_FAILED_EXIT when the mount fails."""
    host = f"[{address}]" if ":" in address else address
    return Script(MOUNT_SH, {"MP": mp, "DEST": f"{user}@{host}:{remote}", "PORT": str(port), "KEY": key,
                             "KH": known_hosts, "T": str(deadline), "CT": str(CONNECT_TIMEOUT)}, name="fleet-sshfs")


RELEASE_SH = r"""
[ -d "$D" ] || exit 0
rc=0
for m in "$D"/*; do
  [ -d "$m" ] || continue
  if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m" || rc=1; fi
  rmdir "$m" 2>/dev/null || rc=1
done
rmdir "$D" 2>/dev/null || true
exit $rc
"""


def release_script(container_id: str) -> Script:
    """Unmount and remove every sshfs mount of a container (nothing to do when it had none)."""
    return Script(RELEASE_SH, {"D": mountpoint(container_id, "x").rsplit("/", 1)[0]}, name="fleet-sshfs-release")


# ---- backup, restore, remove -------------------------------------------------------------------------------------

def archive_script(directory: str) -> Script:
    """A tar of the directory's content on stdout (paths relative to it)."""
    return Script('[ -d "$D" ] || { echo "no such volume directory $D" >&2; exit 3; }\nexec tar -C "$D" -cf - .',
                  {"D": directory}, name="fleet-volume-backup")


EMPTY_SH = r"""
if [ -e "$D" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then echo "volume directory $D is not empty" >&2; exit 3; fi
"""


def empty_script(directory: str) -> Script:
    """Exit 3 (saying so) when the volume directory holds data: asked before a restore streams anything, since a
    command that refuses while its stdin is still being sent cuts the session short."""
    return Script(EMPTY_SH, {"D": directory}, name="fleet-volume-empty")


RESTORE_SH = EMPTY_SH + r"""
mkdir -p "$D" || exit 1
# Owners by number: the node's /etc/passwd need not know the image's users (a database's uid 999), and a name
# lookup could map them to someone else. Modes as archived (-p), so a 0700 data directory stays private.
tar -C "$D" --same-owner --numeric-owner -xpf - || exit $?
# Then no setuid/setgid bit survives: a container that planted a setuid-root file in its volume must not get
# root wherever the volume is restored. find does not follow symlinks (-P) and `! -type l` keeps chmod, which
# would follow one, off them; a link out of the volume must not lose the bits of the file it points at.
find -P "$D" -perm /6000 ! -type l -exec chmod ug-s -- {} +
"""


def restore_script(directory: str) -> Script:
    """Unpack a tar from stdin into a new (absent or empty) volume directory, keeping numeric owners and modes
    but dropping every setuid and setgid bit; exit 3 when the directory holds data."""
    return Script(RESTORE_SH, {"D": directory}, name="fleet-volume-restore")


def remove_script(directory: str) -> Script:
    return Script('[ -d "$D" ] || { echo "no such volume directory $D" >&2; exit 3; }\nrm -rf -- "$D"',
                  {"D": directory}, name="fleet-volume-rm")


# ---- the storage node's host key, from the controller's known_hosts ---------------------------------------------

def _host_matches(pattern: str, address: str, port: int) -> bool:
    want = address if port == 22 else f"[{address}]:{port}"
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|")
            mac = hmac.new(base64.b64decode(salt), want.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except (ValueError, TypeError):
            return False
    return want in pattern.split(",")


def known_host_lines(text: str, address: str, port: int) -> list[str]:
    """The host keys `text` (a known_hosts file) pins for `address:port`, as lines an OpenSSH client on the
    worker reads for that address (plain, hashed and `[host]:port` entries; markers skipped)."""
    want = address if port == 22 else f"[{address}]:{port}"
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        if _host_matches(fields[0], address, port):
            out.append(f"{want} {fields[1]} {fields[2]}")
    return out
