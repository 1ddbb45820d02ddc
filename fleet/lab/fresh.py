"""The files that make a lab node fresh: its overlay's directories, and what it gets of its own on top of the
cached root filesystem (host name, hosts file, sshd host key and drop-in, the sudo user's authorized key),
written into its upper directory before it starts. Files a fresh node writes land in that upper directory too;
files on its tmpfs /run are read through /proc/HOLDER/root."""

from __future__ import annotations

import os
import shutil

from fleet.lab.render import LabConfig, LabNode, fresh_sshd_config, node_dir
from fleet.lab.rootfs import SUDO_USER, user_ids


def upper(cfg: LabConfig, node: LabNode) -> str:
    return f"{node_dir(cfg, node)}/upper"


def in_node(holder: int | None, path: str) -> str:
    """`path` inside a running fresh node, as this machine reaches it (its root is the holder's)."""
    return f"/proc/{holder or 0}/root{path}"


def _write(rootfs: str, top: str, rel: str, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Write `rel` into the upper directory `top`; each directory on the way gets the owner and mode it has in the
    root filesystem (an upper directory's attributes hide the lower one's: /home/deploy must stay deploy's)."""
    parts = rel.strip("/").split("/")
    for i in range(1, len(parts)):
        sub = "/".join(parts[:i])
        if not os.path.isdir(f"{top}/{sub}"):
            st = os.stat(f"{rootfs}/{sub}")
            os.mkdir(f"{top}/{sub}")
            os.chown(f"{top}/{sub}", st.st_uid, st.st_gid)
            os.chmod(f"{top}/{sub}", st.st_mode & 0o7777)
    path = f"{top}/{rel.strip('/')}"
    with open(path, "wb") as fh:
        fh.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def seed(cfg: LabConfig, node: LabNode, rootfs: str) -> None:
    """A fresh node's directories, emptied (a rebuilt node starts from the cached root again), and its own files."""
    d = node_dir(cfg, node)
    for sub in ("upper", "work", "merged", "containerd"):
        shutil.rmtree(f"{d}/{sub}", ignore_errors=True)
        os.makedirs(f"{d}/{sub}")
    top = upper(cfg, node)
    with open(f"{d}/ssh/ssh_host_ed25519_key", "rb") as fh:
        key = fh.read()
    with open(f"{d}/ssh/ssh_host_ed25519_key.pub", "rb") as fh:
        pub = fh.read()
    with open(f"{cfg.dir}/authorized_keys", "rb") as fh:
        authorized = fh.read()
    uid, gid = user_ids(rootfs)
    name = node.name.encode()
    _write(rootfs, top, "etc/hostname", name + b"\n", 0o644)
    # The host name resolves, as on a real server: sudo looks it up (without it every sudo waits for DNS).
    _write(rootfs, top, "etc/hosts", b"127.0.0.1 localhost\n127.0.1.1 " + name + b"\n", 0o644)
    _write(rootfs, top, "etc/ssh/ssh_host_ed25519_key", key, 0o600)
    _write(rootfs, top, "etc/ssh/ssh_host_ed25519_key.pub", pub, 0o644)
    _write(rootfs, top, "etc/ssh/sshd_config.d/fleet-lab.conf", fresh_sshd_config(node).encode(), 0o644)
    _write(rootfs, top, f"home/{SUDO_USER}/.ssh/authorized_keys", authorized, 0o600, uid, gid)
