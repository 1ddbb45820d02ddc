"""Storage on the lab: a named node volume outlives its container and is mounted nosuid,nodev, tmpfs is sized, a
bind mount can be read-only; a restored volume keeps its owners and modes but no setuid bit."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest
from helpers import run_fleet

from fleet.core import labels as L
from fleet.image.demo import build_demo

pytestmark = pytest.mark.lab


def fleet(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env={**os.environ, "FLEET_INVENTORY": lab.inventory_path}, columns=200, timeout=120)


def test_named_volume_survives_replacement_tmpfs_sized_bind_readonly(lab, tmp_path):
    archive = build_demo(f"vol{L.random_suffix(6)}", str(tmp_path / "demo.tar"))
    assert fleet(lab, "image", "push", archive.path).returncode == 0
    pb = tmp_path / "pb.yaml"

    def write(greeting: str) -> str:
        pb.write_text(f"""services:
  vol-app:
    image: {archive.name}
    replicas: 1
    resources: {{cpu: 0.05, memory: 32MiB}}
    env: {{GREETING: {greeting}}}
    health: {{http: /healthz, interval: 500ms}}
    placement: {{require: {{zone: a}}}}
    update: {{min_ready: 0s}}
    volumes:
      - {{type: volume, source: data, target: /data}}
      - {{type: tmpfs, target: /scratch, size: 8MiB}}
      - {{type: bind, source: /etc/os-release, target: /etc/fleet-hosts, readonly: true}}
""")
        return str(pb)

    def sh(script: str) -> subprocess.CompletedProcess[str]:
        return fleet(lab, "exec", "vol-app", "--", "sh", "-c", script)

    try:
        assert fleet(lab, "apply", write("one")).returncode == 0
        assert sh("echo kept > /data/note").returncode == 0
        # The volume is data to the container, never a way to gain rights: mounted nosuid,nodev.
        [line] = [x for x in sh("cat /proc/self/mountinfo").stdout.splitlines() if x.split()[4] == "/data"]
        assert {"nosuid", "nodev"} <= set(line.split()[5].split(",")), line
        scratch = sh("df -k /scratch | tail -1")
        assert scratch.stdout.split()[0] == "tmpfs" and scratch.stdout.split()[1] == "8192", scratch.stdout
        ro = sh("echo x > /etc/fleet-hosts")
        assert ro.returncode != 0 and "Read-only" in ro.stdout, ro.stdout
        # A new spec replaces the container; the named volume on the node keeps its data.
        out = fleet(lab, "apply", write("two"))
        assert out.returncode == 0 and "replaced" in out.stdout, out.stdout
        got = sh('echo "$GREETING"; cat /data/note')
        assert got.stdout.split() == ["two", "kept"], (got.returncode, got.stdout, got.stderr)
        on_node = lab.lab.exec_in("n1", ["cat", "/var/lib/fleet/volumes/vol-app/data/note"]).stdout
        assert on_node == "kept\n"
    finally:
        fleet(lab, "destroy", "vol-app", "--grace", "1")
        lab.lab.exec_in("n1", ["rm", "-rf", "/var/lib/fleet/volumes/vol-app"], check=False)


def test_restore_keeps_owners_and_symlinks_and_drops_setuid_on_the_node(lab, tmp_path):
    backup = tmp_path / "backup.tar"
    with tarfile.open(backup, "w") as tar:
        for name, kind, uid, mode, link in (("./pg", tarfile.DIRTYPE, 999, 0o700, ""),
                                            ("./tool", tarfile.REGTYPE, 1000, 0o4755, ""),
                                            ("./link", tarfile.SYMTYPE, 0, 0o777, "tool")):
            info = tarfile.TarInfo(name)
            info.type, info.uid, info.gid, info.mode, info.linkname = kind, uid, uid, mode, link
            data = b"#!/bin/sh\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    where = "/var/lib/fleet/volumes/secvol/data"
    try:
        out = fleet(lab, "volume", "restore", "secvol/data", str(backup), "--node", "n1")
        assert out.returncode == 0, out.stdout + out.stderr
        seen = lab.lab.exec_in("n1", ["sh", "-c", f"cd {where} && stat -c '%n %u %g %a %F' pg tool link && "
                                                  "readlink link"]).stdout.splitlines()
        assert seen == ["pg 999 999 700 directory", "tool 1000 1000 755 regular file", "link 0 0 777 symbolic link",
                        "tool"]
    finally:
        lab.lab.exec_in("n1", ["rm", "-rf", "/var/lib/fleet/volumes/secvol"], check=False)
