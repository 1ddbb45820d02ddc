"""`fleet node prepare --download DIR`: fill DIR on this controller with the .deb files each chosen node lacks
(see fleet.node.offline): every node's dpkg status read at once over SSH (read-only), then this machine's apt
asked, one node after the other, what that node needs and to download it into DIR (files already there are kept).
A manifest in DIR records each node's files for `fleet node prepare --offline DIR`. One result per node."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.core.errors import ScriptOutputError
from fleet.core.model import Inventory
from fleet.node.offline import (
    MANIFEST,
    apt_argv,
    manifest_text,
    node_state_argv,
    parse_node_state,
    parse_print_uris,
    read_manifest,
    release,
)
from fleet.node.preflight import NodeCheck
from fleet.node.provision import plan_for
from fleet.transport import Pool

APT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Download:
    """What `--download` put in DIR for one node: the packages fleet asks for there, every file apt chose (those
    and the dependencies the node lacks), how many of them were fetched now; or why not (`error`)."""

    node: str
    packages: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    fetched: int = 0
    size: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def _apt(argv: list[str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
                                                env={**os.environ, "LC_ALL": "C"})
    async with asyncio.timeout(APT_TIMEOUT):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _controller_release() -> str:
    try:
        with open("/etc/os-release") as fh:
            return release(fh.read())
    except OSError:
        return "unknown (no /etc/os-release)"


async def _one(check: NodeCheck, stdout: str, dest: str, here: str) -> Download:
    plan = plan_for(check)
    if not plan.packages:
        return Download(check.node)
    if shutil.which("apt-get") is None:
        return Download(check.node, plan.packages, error="this controller has no apt-get: run --download on a "
                                                          f"machine of the node's release ({check.os}) and carry "
                                                          "the directory over")
    if check.os != here:
        return Download(check.node, plan.packages, error=f"the node runs {check.os}, this controller {here}: "
                                                          "download on a machine of the node's release")
    try:
        state = parse_node_state(stdout)
    except ScriptOutputError as exc:
        return Download(check.node, plan.packages, error=str(exc))
    with tempfile.TemporaryDirectory(prefix="fleet-debs-") as tmp:
        status = os.path.join(tmp, "status")
        with open(status, "w") as fh:
            fh.write(state.status)
        empty = os.path.join(tmp, "archives") + "/"
        os.makedirs(f"{empty}partial")
        rc, out, err = await _apt(apt_argv(plan.packages, status, state.arch, empty, download=False))
        if rc != 0:
            return Download(check.node, plan.packages, error=f"apt-get --print-uris: {err.strip()[-300:]}")
        files = tuple(parse_print_uris(out))
        before = {f for f in files if os.path.isfile(os.path.join(dest, f))}
        os.makedirs(os.path.join(dest, "partial"), exist_ok=True)
        rc, out, err = await _apt(apt_argv(plan.packages, status, state.arch, dest.rstrip("/") + "/", download=True))
        if rc != 0:
            return Download(check.node, plan.packages, error=f"apt-get --download-only: {err.strip()[-300:]}")
    absent = [f for f in files if not os.path.isfile(os.path.join(dest, f))]
    if absent:
        return Download(check.node, plan.packages, error=f"apt did not download {', '.join(absent)}")
    size = sum(os.path.getsize(os.path.join(dest, f)) for f in files)
    return Download(check.node, plan.packages, files, len(files) - len(before), size)


async def download_debs(pool: Pool, inventory: Inventory, checks: Sequence[NodeCheck], dest: str) -> list[Download]:
    """Fill `dest` with what each checked node lacks (nodes that lack nothing, or could not be checked, get
    nothing), and record each node's files in its manifest. One result per check, in order."""
    os.makedirs(dest, exist_ok=True)
    wanted = [c for c in checks if c.error is None and plan_for(c).packages]
    async with asyncio.TaskGroup() as tg:
        reads = {c.node: tg.create_task(pool.run(inventory.node(c.node), node_state_argv(), timeout=60))
                 for c in wanted}
    here = _controller_release()
    results = []
    for check in checks:
        if check.error is not None:
            results.append(Download(check.node, error=f"cannot check it: {check.error}"))
            continue
        read = reads[check.node].result() if check.node in reads else None
        if read is not None and not read.ok:
            results.append(Download(check.node, error=f"reading its dpkg status failed: "
                                                      f"{read.error or read.stderr.strip() or read.exit_status}"))
            continue
        results.append(await _one(check, read.stdout if read is not None else "", dest, here))
    path = os.path.join(dest, MANIFEST)
    try:
        with open(path) as fh:
            manifest = read_manifest(fh.read())
    except (OSError, ScriptOutputError):
        manifest = {}
    for r in results:
        if r.ok and r.files:
            manifest[r.node] = {"packages": list(r.packages), "files": list(r.files)}
    with open(f"{path}.tmp", "w") as fh:
        fh.write(manifest_text(manifest))
    os.replace(f"{path}.tmp", path)
    return results
