"""The root filesystem of the lab's fresh nodes: a minimal Debian 12 (`debootstrap --variant=minbase`) with only
sshd and sudo added, and a sudo user (`deploy`: key login, passwordless sudo). Built once per recipe and cached
under CACHE_ROOT; each fresh node mounts it read-only as the lower layer of its own overlay (fleet.lab.lab).

A build runs in a directory named for its process and becomes the cached one by one rename, after its last step:
a build that was killed half-way leaves only a `.tmp-PID` directory, which is never used and is removed by the
next build once its process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass

from fleet.core.errors import LabError

CACHE_ROOT = "/var/cache/fleet-lab"
SUDO_USER = "deploy"


@dataclass(frozen=True)
class Recipe:
    """What a fresh node's root filesystem is made of; its `key` names the cache entry."""

    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ("openssh-server", "sudo")
    mirror: str = "http://deb.debian.org/debian"
    user: str = SUDO_USER
    # Bumped when the steps after debootstrap (setup_script) change.
    steps: int = 1

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.suite}-{self.variant}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def debootstrap_argv(self, target: str) -> list[str]:
        return ["debootstrap", f"--variant={self.variant}", f"--include={','.join(self.include)}", self.suite,
                target, self.mirror]


def setup_script(recipe: Recipe) -> str:
    """Run inside the new root (chroot) after debootstrap: the sudo user, no host keys of the build (each node gets
    its own), no package lists or downloaded packages (a fresh node has reached no mirror), no policy-rc.d."""
    user = recipe.user
    return f"""set -eu
useradd --create-home --shell /bin/bash --password '*' {user}
install -d -m 700 -o {user} -g {user} /home/{user}/.ssh
umask 337
printf '%s\\n' '{user} ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/{user}
visudo -c -q -f /etc/sudoers.d/{user}
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
: >/etc/resolv.conf
"""


def cached_path(recipe: Recipe, root: str = CACHE_ROOT) -> str:
    return f"{root}/rootfs-{recipe.key}"


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _remove_stale(root: str, recipe: Recipe) -> None:
    """Half-built roots of builds whose process is gone (a killed run's)."""
    prefix = f"rootfs-{recipe.key}.tmp-"
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            if name.startswith(prefix) and name[len(prefix):].isdigit() and not _alive(int(name[len(prefix):])):
                shutil.rmtree(f"{root}/{name}", ignore_errors=True)


def ensure_rootfs(recipe: Recipe = Recipe(), root: str = CACHE_ROOT, timeout: float = 900.0) -> tuple[str, float]:
    """The cached root filesystem for `recipe`, built first when there is none; returns its path and the seconds
    spent building it (0 when it was cached)."""
    path = cached_path(recipe, root)
    if os.path.isfile(f"{path}/etc/os-release"):
        return path, 0.0
    if shutil.which("debootstrap") is None:
        raise LabError("fresh lab nodes need debootstrap on this machine (apt-get install debootstrap)")
    os.makedirs(root, exist_ok=True)
    _remove_stale(root, recipe)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    log = f"{root}/rootfs-{recipe.key}.log"
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(recipe.debootstrap_argv(tmp), stdout=fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        if proc.returncode != 0:
            with open(log) as fh:
                tail = fh.read()[-600:].strip()
            raise LabError(f"debootstrap failed ({proc.returncode}), see {log}: {tail}")
        setup = subprocess.run(["chroot", tmp, "/bin/sh", "-c", setup_script(recipe)], capture_output=True,
                               text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        if setup.returncode != 0:
            raise LabError(f"setting up the fresh root filesystem failed: {setup.stderr.strip()[-600:]}")
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isfile(f"{path}/etc/os-release"):
                raise
            # Another build of the same recipe finished first: its root is as good as this one.
    except subprocess.TimeoutExpired:
        raise LabError(f"debootstrap took more than {timeout:.0f}s, see {log}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path, time.monotonic() - started


def user_ids(rootfs: str, user: str = SUDO_USER) -> tuple[int, int]:
    """The uid and gid of `user` in the root filesystem's /etc/passwd."""
    with open(f"{rootfs}/etc/passwd") as fh:
        for line in fh:
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
    raise LabError(f"no user {user!r} in {rootfs}/etc/passwd")
