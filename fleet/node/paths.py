"""Every path fleet uses on a node, as one value, and the sh builders that write files there safely (no I/O here).

`NodePaths` names the node's files: everything that should outlive a command under `base` (/var/lib/fleet) on
the node's disk; everything that must not (secret env files) under `run` (/run/fleet), a tmpfs.

How files are written (each builder returns a `fleet.core.shell.Script`; the content always travels on stdin):

- `write_file`: a new file is created beside the target with `mktemp` (mode 0600 at birth), given its final
  mode with `chmod` before any byte is written, filled from stdin, optionally synced, then renamed over the
  target with `mv -f`. A reader sees the old file or the new one, never a part. If stdin cannot be read, holds
  other than `size` bytes (the controller died mid-send: sshd then closes stdin, which looks like a normal end),
  or the script is stopped by HUP/INT/TERM, the temp file is removed and the target is untouched.
- `update_in_place`: for files that running containers bind-mount (the hosts file, the resolv.conf copy). A
  bind mount holds the inode, so a rename would leave every running container with the old file forever, and
  truncating and rewriting (`cat >file`) shows readers an empty or partial file in between. Instead the file's
  size never goes down and its content is replaced by one `write()` at offset 0: the new content is padded with
  trailing newlines to the old size (blank lines mean nothing in hosts or resolv.conf), and when the new content
  is longer the live file is first grown by appending newlines (a reader then sees the old content and blank
  lines). The write is `dd if=TEMP of=FILE bs=SIZE count=1 conv=notrunc`: dd reads one block of SIZE bytes from
  a regular file (a full read, unlike a pipe) and writes it with one `write()`, opening the target without
  O_TRUNC (coreutils 9.1 traced: one `read`, one `write`, no `ftruncate`; busybox dd does the same from a
  regular file). So a reader never sees an empty or a truncated file. What one `write()` cannot give: Linux does
  not lock buffered reads against writes on ext4 or tmpfs, so a read that races the kernel's copy of the write
  may see a byte mix of the old and new content (same length). Measured here with a reader doing ~700k reads/s
  while 1000 writes alternated two hosts files: 12 such reads on ext4, 1 on tmpfs, none empty or short; a plain
  `pwrite()` from Python tears the same way. A file over one page (4 KiB, ~100 services) is also copied page
  by page. A missing file is created with `write_file`'s rename, since nothing can have it mounted yet.
- `write_secret_file`: `write_file` with umask 077 and mode 0600 that refuses (exit `NOT_TMPFS_EXIT`) when its
  directory is not on tmpfs (`stat -f -c %T`), unless `allow_disk`. `ctr run --env-file` reads it once;
  the engine removes it after, and `sweep_secrets` removes any a killed controller left, at the start of the
  next write command.

`FILE_FUNCTIONS` holds the sh functions behind these builders (`fleet_write`, `fleet_update`, `fleet_stage`), for
scripts that write several files in one round trip; it installs HUP/INT/TERM/EXIT traps that remove a staged file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.core.dirs import NODE_BASE, NODE_RUN
from fleet.core.shell import Script

# sh exit status of write_secret_file when the directory is on a disk and disk was not allowed.
NOT_TMPFS_EXIT = 3

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_MODE = re.compile(r"^0?[0-7]{3}$")


def _check_dir(value: object, what: str) -> str:
    """An absolute, normalized path of safe characters (it ends up in HAProxy's config and ctr's mount args)."""
    if (not isinstance(value, str) or not _SAFE_PATH.match(value) or value == "/" or value.endswith("/")
            or "//" in value or any(part in (".", "..") for part in value.split("/"))):
        raise ValueError(f"{what}: expected an absolute, normalized path of A-Z a-z 0-9 . _ / -, got {value!r}")
    return value


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{what}: expected a file name of A-Z a-z 0-9 . _ - (not starting with . or -), "
                         f"got {value!r}")
    return value


def _index(index: object) -> str:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"file index: expected an integer >= 0, got {index!r}")
    return str(index)


def _check_target(path: object) -> str:
    """A file a script writes: absolute, below the root, no empty or dot components, no NUL or newline."""
    if (not isinstance(path, str) or not path.startswith("/") or path.endswith("/") or "//" in path
            or "\0" in path or "\n" in path or any(p in (".", "..") for p in path.split("/")[1:])):
        raise ValueError(f"expected an absolute, normalized file path, got {path!r}")
    return path


def _check_mode(mode: object) -> str:
    if not isinstance(mode, str) or not _MODE.match(mode):
        raise ValueError(f"file mode: expected octal like 0644, got {mode!r}")
    return mode


def _check_size(size: object) -> str:
    if size is None:
        return ""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size: expected a byte count >= 0, got {size!r}")
    return str(size)


@dataclass(frozen=True)
class HaproxyFiles:
    """HAProxy's files on an lb node, all in one private directory (`fleet.node.haproxy.scripts.LbPaths` uses it)."""

    dir: str

    def __post_init__(self) -> None:
        _check_dir(self.dir, "haproxy dir")

    @property
    def config(self) -> str:
        return f"{self.dir}/haproxy.cfg"

    @property
    def run_dir(self) -> str:
        """The one directory HAProxy (its own user, in its jail) may write: its sockets."""
        return f"{self.dir}/run"

    @property
    def master_socket(self) -> str:
        return f"{self.run_dir}/master.sock"

    @property
    def admin_socket(self) -> str:
        return f"{self.run_dir}/admin.sock"

    @property
    def state_file(self) -> str:
        return f"{self.dir}/server-state"

    @property
    def pid_file(self) -> str:
        return f"{self.dir}/haproxy.pid"

    @property
    def log_file(self) -> str:
        return f"{self.dir}/haproxy.log"

    @property
    def chroot(self) -> str:
        """The empty root-owned directory HAProxy's workers chroot to."""
        return f"{self.dir}/empty"

    @property
    def jail(self) -> str:
        """The empty root-owned directory the jail's tmpfs is mounted on, in HAProxy's own mount namespace only."""
        return f"{self.dir}/jail"


@dataclass(frozen=True)
class NodePaths:
    """Where fleet's files live on a node: `base` on its disk, `run` on a tmpfs (secret env files only)."""

    base: str = NODE_BASE
    run: str = NODE_RUN

    def __post_init__(self) -> None:
        _check_dir(self.base, "node base dir")
        _check_dir(self.run, "node run dir")

    @property
    def roots(self) -> tuple[str, str]:
        """The two directories fleet owns on a node (no container may bind-mount them, or anything inside)."""
        return (self.base, self.run)

    # --- containers -----------------------------------------------------------------------------------------
    @property
    def logs_dir(self) -> str:
        """Container logs, `<logs_dir>/<containerd namespace>/<container id>.log`."""
        return f"{self.base}/logs"

    @property
    def hosts_file(self) -> str:
        """The /etc/hosts every container bind-mounts (service discovery): change it with `update_in_place`."""
        return f"{self.base}/hosts"

    @property
    def resolv_conf(self) -> str:
        """The copy of the node's resolv.conf every container bind-mounts: change it with `update_in_place`."""
        return f"{self.base}/resolv.conf"

    @property
    def host_netns(self) -> str:
        """The node's own network namespace, pinned by a bind mount, that containers join."""
        return f"{self.base}/netns/host"

    @property
    def volumes_dir(self) -> str:
        return f"{self.base}/volumes"

    def volume(self, service: str, name: str) -> str:
        """The directory of a service's named volume on this node."""
        return f"{self.volumes_dir}/{_check_name(service, 'service')}/{_check_name(name, 'volume name')}"

    # --- secrets (tmpfs) ------------------------------------------------------------------------------------
    @property
    def secrets_dir(self) -> str:
        """Secret env files, on tmpfs: written by `write_secret_file`, swept by `sweep_secrets`."""
        return f"{self.run}/secrets"

    def secret_file(self, name: str) -> str:
        return f"{self.secrets_dir}/{_check_name(name, 'secret file name')}"

    @property
    def secret_mounts_dir(self) -> str:
        """Secret files that containers bind-mount (`secrets: [{secret: NAME, file: PATH}]`), on tmpfs, one
        directory (0700) per container, removed with it."""
        return f"{self.run}/secret-files"

    def secret_mount(self, container: str, index: int) -> str:
        """The file on the node behind a container's `index`th secret file."""
        return f"{self.secret_mounts_dir}/{_check_name(container, 'container')}/{_index(index)}"

    # --- configs (disk) ----------------------------------------------------------------------------------------
    @property
    def configs_dir(self) -> str:
        """Config files that containers bind-mount read-only, `<configs_dir>/<service>/<spec hash>/<index>`
        (directories 0700): one set per revision, kept while a container of it is on the node."""
        return f"{self.base}/configs"

    def config_file(self, service: str, spec_hash: str, index: int) -> str:
        return (f"{self.configs_dir}/{_check_name(service, 'service')}/{_check_name(spec_hash, 'spec hash')}/"
                f"{_index(index)}")

    # --- HAProxy --------------------------------------------------------------------------------------------
    @property
    def haproxy(self) -> HaproxyFiles:
        return HaproxyFiles(f"{self.base}/haproxy")

    @property
    def haproxy_dir(self) -> str:
        return self.haproxy.dir

    @property
    def haproxy_config(self) -> str:
        return self.haproxy.config

    @property
    def haproxy_admin_socket(self) -> str:
        return self.haproxy.admin_socket

    @property
    def haproxy_master_socket(self) -> str:
        return self.haproxy.master_socket

    @property
    def haproxy_state_file(self) -> str:
        return self.haproxy.state_file

    # --- the fleet's shared state on record nodes (fleet.store) --------------------------------------------
    @property
    def records_dir(self) -> str:
        return f"{self.base}/records"

    @property
    def lease_file(self) -> str:
        return f"{self.base}/lease"

    @property
    def lease_lock(self) -> str:
        return f"{self.base}/lease.lock"

    # --- facts caches (fleet.node.facts) -------------------------------------------------------------------------
    def runtime_version_cache(self, runtime: str) -> str:
        """`<runtime> --version` as last read, refreshed when the binary is newer."""
        return f"{self.base}/facts.{_check_name(runtime, 'runtime')}.version"

    @property
    def containerd_pid_cache(self) -> str:
        return f"{self.base}/facts.containerd.pid"

    @property
    def probe_cache(self) -> str:
        """Uptime second of the last `ctr version` that answered."""
        return f"{self.base}/facts.probe"


DEFAULT = NodePaths()

# sh functions shared by the builders below (and by any script that writes several files in one round trip).
# Variables they set start with fleet_: fleet_staged is the temp file being filled, fleet_result says what
# fleet_update did (created, updated, unchanged).
FILE_FUNCTIONS = r"""
fleet_staged=
fleet_result=
fleet_sdir=
fleet_sname=
# Removes the staged file by a name that is known before mktemp creates it (it holds this shell's PID), so a
# signal that lands between mktemp and the assignment of its output still finds it.
fleet_unstage() {
  if [ -n "$fleet_sname" ]; then
    for fleet_f in "$fleet_sdir/.$fleet_sname.$$".*; do rm -f "$fleet_f"; done
  fi
  fleet_staged=; fleet_sname=
}
trap 'fleet_unstage' EXIT
trap 'fleet_unstage; exit 129' HUP
trap 'fleet_unstage; exit 130' INT
trap 'fleet_unstage; exit 143' TERM
fleet_dir() { fleet_d=${1%/*}; printf '%s\n' "${fleet_d:-/}"; }
# fleet_stage TARGET MODE [SIZE]: stdin into a new file beside TARGET whose mode is set before any byte is
# written; its path in $fleet_staged. Fails, removing it, if stdin fails or does not hold exactly SIZE bytes.
fleet_stage() {
  fleet_sdir=${1%/*}; fleet_sdir=${fleet_sdir:-/}; fleet_sname=${1##*/}
  fleet_staged=$(mktemp "$fleet_sdir/.$fleet_sname.$$.XXXXXX") || { fleet_unstage; return 1; }
  if chmod "$2" "$fleet_staged" && cat >"$fleet_staged" &&
      { [ -z "${3:-}" ] || [ "$(($(wc -c <"$fleet_staged")))" -eq "$3" ]; }; then
    return 0
  fi
  echo "fleet: $1: could not stage the new content (stdin failed or was cut short); the file is unchanged" >&2
  fleet_unstage; return 1
}
# fleet_write TARGET MODE [SIZE] [SYNC]: stdin replaces TARGET by a rename (a new inode).
fleet_write() {
  mkdir -p "$(fleet_dir "$1")" && fleet_stage "$1" "$2" "${3:-}" || return 1
  if [ -n "${4:-}" ]; then sync "$fleet_staged" 2>/dev/null || :; fi
  if mv -f "$fleet_staged" "$1"; then fleet_staged=; fleet_sname=; return 0; fi
  fleet_unstage; return 1
}
fleet_pad() { head -c "$1" /dev/zero | tr '\0' '\n'; }
# fleet_update TARGET [SIZE] [MODE]: stdin becomes TARGET's content in place (same inode, never truncated, one
# write at offset 0, padded with newlines); a missing TARGET is created by fleet_write with MODE (0644).
fleet_update() {
  if [ ! -e "$1" ]; then
    fleet_write "$1" "${3:-0644}" "${2:-}" || return 1
    fleet_result=created; return 0
  fi
  if [ ! -f "$1" ]; then echo "fleet: $1 is not a regular file" >&2; return 1; fi
  if command -v flock >/dev/null 2>&1; then
    exec 8>>"$(fleet_dir "$1")/.${1##*/}.lock" && flock -w 30 8 || { echo "fleet: $1: locked" >&2; return 1; }
  fi
  fleet_update_locked "$@"; set -- $?
  if command -v flock >/dev/null 2>&1; then exec 8>&-; fi
  return "$1"
}
fleet_update_locked() {
  fleet_stage "$1" 0600 "${2:-}" || return 1
  fleet_n=$(($(wc -c <"$fleet_staged"))) && fleet_o=$(($(wc -c <"$1"))) || { fleet_unstage; return 1; }
  if [ "$fleet_n" -gt "$fleet_o" ]; then
    # Grow the live file first, with blank lines only: a reader sees the old content followed by them.
    fleet_pad $((fleet_n - fleet_o)) >>"$1" || { fleet_unstage; return 1; }
    fleet_o=$fleet_n
  elif [ "$fleet_n" -lt "$fleet_o" ]; then
    fleet_pad $((fleet_o - fleet_n)) >>"$fleet_staged" || { fleet_unstage; return 1; }
  fi
  if [ "$fleet_o" -eq 0 ] || cmp -s "$fleet_staged" "$1"; then
    fleet_unstage; fleet_result=unchanged; return 0
  fi
  # One read of a full block from a regular file, one write() of it at offset 0, no O_TRUNC.
  if ! fleet_out=$(dd if="$fleet_staged" of="$1" bs="$fleet_o" count=1 conv=notrunc 2>&1); then
    printf '%s\n' "$fleet_out" >&2; fleet_unstage; return 1
  fi
  fleet_unstage; fleet_result=updated
}
"""

_WRITE = FILE_FUNCTIONS + r"""
set -u
umask 077
fleet_write "$F" "$MODE" "${SIZE:-}" "${SYNC:-}" || exit 1
"""

_UPDATE = FILE_FUNCTIONS + r"""
set -u
umask 077
fleet_update "$F" "${SIZE:-}" "$MODE" || exit 1
echo "$fleet_result"
"""

_SECRET = FILE_FUNCTIONS + r"""
set -u
umask 077
d=$(fleet_dir "$F")
# The filesystem the file will land on: that of its directory, or of the nearest one that exists (checked
# before anything is created, so a refusal leaves nothing behind).
a=$d
while [ ! -d "$a" ]; do a=$(fleet_dir "$a"); done
fs=$(stat -f -c %T "$a") || exit 1
case $fs in
  tmpfs|ramfs) ;;
  *)
    if [ "${ALLOW_DISK:-}" != 1 ]; then
      echo "fleet: refusing to write a secret file in $d: it is on $fs, not tmpfs, and secrets never go to a" \
        "node's disk (mount a tmpfs on $d, or allow secrets on disk for this node)" >&2
      exit 3
    fi ;;
esac
fleet_write "$F" "${MODE:-0600}" "${SIZE:-}" || exit 1
"""

_SWEEP = r"""
set -u
[ -d "$D" ] || exit 0
now=$(date +%s)
for f in "$D"/* "$D"/.[!.]* "$D"/..?*; do
  if [ ! -e "$f" ] && [ ! -L "$f" ]; then continue; fi
  if [ -d "$f" ] && [ ! -L "$f" ]; then continue; fi
  m=$(stat -c %Y "$f" 2>/dev/null) || continue
  if [ $((now - m)) -gt "$AGE" ] && rm -f "$f"; then printf 'removed %s\n' "${f##*/}"; fi
done
"""


# The sweep as a fragment (variables D, AGE) for scripts that do it in the same round trip as other work.
SWEEP_SECRETS_SH = _SWEEP


def write_file(path: str, mode: str = "0644", *, size: int | None = None, fsync: bool = False) -> Script:
    """stdin replaces `path` atomically (temp file beside it, mode set first, `mv -f`); parents are created.
    Pass `size` (bytes of stdin) so a send cut short is refused rather than installed."""
    env = {"F": _check_target(path), "MODE": _check_mode(mode), "SIZE": _check_size(size)}
    if fsync:
        env["SYNC"] = "1"
    return Script(_WRITE, env, name="fleet-write-file")


def update_in_place(path: str, mode: str = "0644", *, size: int | None = None) -> Script:
    """stdin becomes `path`'s content without a rename or a truncation (see the module docstring); `mode` is for
    a file that does not exist yet. Prints `created`, `updated` or `unchanged`."""
    env = {"F": _check_target(path), "MODE": _check_mode(mode), "SIZE": _check_size(size)}
    return Script(_UPDATE, env, name="fleet-update-in-place")


def write_secret_file(path: str, *, allow_disk: bool = False, size: int | None = None,
                      mode: str = "0600") -> Script:
    """stdin into `path`, mode `mode` (0600) under umask 077 (new directories 0700), written like `write_file`;
    exits `NOT_TMPFS_EXIT` with a message naming the directory and its filesystem when it is not on tmpfs,
    unless `allow_disk`."""
    env = {"F": _check_target(path), "SIZE": _check_size(size)}
    if mode != "0600":
        env["MODE"] = _check_mode(mode)
    if allow_disk:
        env["ALLOW_DISK"] = "1"
    return Script(_SECRET, env, name="fleet-write-secret")


def sweep_secrets(max_age_s: int, directory: str = DEFAULT.secrets_dir) -> Script:
    """Remove files (not directories) in `directory` modified more than `max_age_s` seconds ago by the node's
    clock; prints `removed NAME` for each (see `parse_swept`). Run it under the fleet's lease."""
    if isinstance(max_age_s, bool) or not isinstance(max_age_s, int) or max_age_s < 0:
        raise ValueError(f"max_age_s: expected whole seconds >= 0, got {max_age_s!r}")
    return Script(_SWEEP, {"D": _check_target(directory), "AGE": str(max_age_s)}, name="fleet-sweep-secrets")


def parse_swept(stdout: str) -> list[str]:
    """The file names `sweep_secrets` removed."""
    return [line[len("removed "):] for line in stdout.splitlines() if line.startswith("removed ")]


def parse_update(stdout: str) -> str:
    """`update_in_place`'s outcome: created, updated or unchanged."""
    word = stdout.strip().rsplit("\n", 1)[-1].strip()
    if word not in ("created", "updated", "unchanged"):
        raise ValueError(f"not an update_in_place result: {stdout[-200:]!r}")
    return word
