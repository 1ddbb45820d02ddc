"""fleet.node.paths' scripts on real lab nodes over SSH: /run/fleet is a tmpfs, secret files land there and only
there, the sweep removes what a killed controller left, and an in-place update reaches a bind-mounted copy."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

from fleet.core import labels as L
from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.lab.render import node_dir
from fleet.node.paths import (
    DEFAULT,
    NOT_TMPFS_EXIT,
    parse_swept,
    parse_update,
    sweep_secrets,
    update_in_place,
    write_file,
    write_secret_file,
)
from fleet.transport import Pool

pytestmark = pytest.mark.lab


async def ssh(pool: Pool, lab: Any, node: str, command: Script | list[str], stdin: str | None = None
              ) -> CommandResult:
    result = await pool.run(lab.inventory.node(node), command, stdin=stdin, timeout=30)
    assert result.error is None, result.error
    return result


async def test_run_fleet_is_a_tmpfs_on_every_node_as_fleet_sees_it(lab):
    async with Pool() as pool:
        for node in lab.inventory.nodes:
            out = await ssh(pool, lab, node.name, ["stat", "-f", "-c", "%T", DEFAULT.run])
            assert (out.exit_status, out.stdout.strip()) == (0, "tmpfs"), node.name


async def test_secret_file_lands_on_the_tmpfs_with_mode_0600_and_never_on_disk(lab):
    value = f"tok-{L.random_suffix(12)}"
    name = f"t-0-{L.random_suffix()}.env"
    path = DEFAULT.secret_file(name)
    body = f"API_TOKEN={value}\n"
    async with Pool() as pool:
        try:
            out = await ssh(pool, lab, "n1", write_secret_file(path, size=len(body)), stdin=body)
            assert out.exit_status == 0, out.stderr
            seen = lab.lab.exec_in("n1", ["stat", "-c", "%a %s %F", path, DEFAULT.secrets_dir]).stdout.split("\n")
            assert seen[0] == f"600 {len(body)} regular file"
            assert seen[1].startswith("700 ")
            assert lab.lab.exec_in("n1", ["cat", path]).stdout == body
            # Nothing of it in the node's files on this machine's disk (its /run, its /var/lib/fleet).
            node_files = pathlib.Path(node_dir(lab.lab.cfg, lab.lab.node("n1")))
            for sub in ("run", "state"):
                for f in (node_files / sub).rglob("*"):
                    if f.is_file() and not f.is_socket():
                        try:
                            assert value.encode() not in f.read_bytes(), f
                        except OSError:
                            continue
        finally:
            await ssh(pool, lab, "n1", ["rm", "-f", path])


async def test_secret_file_refused_on_the_nodes_disk_unless_allowed(lab):
    where = f"{DEFAULT.base}/test-secrets-{L.random_suffix()}"
    async with Pool() as pool:
        try:
            refused = await ssh(pool, lab, "n2", write_secret_file(f"{where}/s.env", size=4), stdin="K=v\n")
            assert refused.exit_status == NOT_TMPFS_EXIT
            assert f"refusing to write a secret file in {where}: it is on " in refused.stderr
            assert "not tmpfs" in refused.stderr
            gone = await ssh(pool, lab, "n2", ["test", "-e", where])
            assert gone.exit_status == 1, "a refusal creates nothing"
            allowed = await ssh(pool, lab, "n2", write_secret_file(f"{where}/s.env", allow_disk=True, size=4),
                                stdin="K=v\n")
            assert allowed.exit_status == 0, allowed.stderr
            assert lab.lab.exec_in("n2", ["stat", "-c", "%a", f"{where}/s.env"]).stdout.strip() == "600"
        finally:
            await ssh(pool, lab, "n2", ["rm", "-rf", where])


async def test_sweep_removes_secret_files_a_killed_controller_left_and_keeps_fresh_ones(lab):
    old, fresh = f"t-1-{L.random_suffix()}.env", f"t-2-{L.random_suffix()}.env"
    async with Pool() as pool:
        try:
            for name in (old, fresh):
                out = await ssh(pool, lab, "n3", write_secret_file(DEFAULT.secret_file(name)), stdin="K=v\n")
                assert out.exit_status == 0, out.stderr
            # As if written by a controller SIGKILLed ten minutes ago (by the node's clock).
            lab.lab.exec_in("n3", ["touch", "-d", f"@{int(time.time()) - 600}", DEFAULT.secret_file(old)])
            swept = await ssh(pool, lab, "n3", sweep_secrets(60))
            assert swept.exit_status == 0, swept.stderr
            assert old in parse_swept(swept.stdout) and fresh not in parse_swept(swept.stdout)
            left = lab.lab.exec_in("n3", ["ls", "-A", DEFAULT.secrets_dir]).stdout.split()
            assert fresh in left and old not in left
        finally:
            await ssh(pool, lab, "n3", ["rm", "-f", DEFAULT.secret_file(old), DEFAULT.secret_file(fresh)])


async def test_update_in_place_reaches_a_bind_mounted_copy_where_a_rename_does_not(lab):
    """What a container's /etc/hosts is: a bind mount of fleet's hosts file, holding its inode."""
    base = f"{DEFAULT.base}/test-nodefiles-{L.random_suffix()}"
    hosts, view = f"{base}/hosts", f"{base}/container-etc-hosts"
    a, b = "127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n10.0.0.9\tweb.fleet web\n"
    async with Pool() as pool:
        try:
            created = await ssh(pool, lab, "n1", update_in_place(hosts, size=len(a)), stdin=a)
            assert (created.exit_status, parse_update(created.stdout)) == (0, "created"), created.stderr
            lab.lab.exec_in("n1", ["sh", "-c", ': >"$2" && mount --bind "$1" "$2"', "sh", hosts, view])
            updated = await ssh(pool, lab, "n1", update_in_place(hosts, size=len(b)), stdin=b)
            assert (updated.exit_status, parse_update(updated.stdout)) == (0, "updated"), updated.stderr
            assert (await ssh(pool, lab, "n1", ["cat", view])).stdout == b
            shrunk = await ssh(pool, lab, "n1", update_in_place(hosts, size=len(a)), stdin=a)
            assert parse_update(shrunk.stdout) == "updated"
            assert (await ssh(pool, lab, "n1", ["cat", view])).stdout.rstrip("\n") == a.rstrip("\n")
            # The same change by rename: the path has it, the bind-mounted view keeps the old inode.
            renamed = await ssh(pool, lab, "n1", write_file(hosts, size=len(b)), stdin=b)
            assert renamed.exit_status == 0, renamed.stderr
            assert (await ssh(pool, lab, "n1", ["cat", hosts])).stdout == b
            assert (await ssh(pool, lab, "n1", ["cat", view])).stdout.rstrip("\n") == a.rstrip("\n")
        finally:
            lab.lab.exec_in("n1", ["umount", view], check=False)
            await ssh(pool, lab, "n1", ["rm", "-rf", base])
