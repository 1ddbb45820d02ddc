"""Image distribution without a registry: stream a local archive over SSH into each node's containerd.

The archive is validated locally first (a corrupt tar never leaves the controller); nodes that already hold
every image of it with the same digest are skipped; the others receive it on stdin, concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from fleet.core.errors import FleetError, ImageUnavailable, PushError, RuntimeCommandError
from fleet.core.model import RegistryLogin
from fleet.engine.calls import (
    IMPORT_TIMEOUT,
    LIST_TIMEOUT,
    PULL_TIMEOUT,
    driver_for,
    on_ready_nodes,
    perform,
    transport_error,
    why,
)
from fleet.engine.nodes import NodeReport
from fleet.image.oci import ArchiveInfo, read_archive
from fleet.results.images import PushResult as PushResult
from fleet.results.images import PushStatus as PushStatus
from fleet.transport import Pool

Progress = Callable[[str, int], None]


def wanted(archive: ArchiveInfo) -> dict[str, str] | None:
    """{image name: manifest digest} the archive brings; None when it cannot be compared (unnamed, Docker)."""
    out: dict[str, str] = {}
    for image in archive.images:
        if image.name is None or image.digest is None:
            return None
        out[image.name] = image.digest
    return out or None


def is_present(archive: ArchiveInfo, images: dict[str, str]) -> bool:
    """True when the node's {ref: digest} already holds every image of the archive, same digest."""
    want = wanted(archive)
    return want is not None and all(images.get(name) == digest for name, digest in want.items())


def select(reports: list[NodeReport], nodes: list[str] | None) -> list[NodeReport]:
    """The named nodes (all must exist), or every worker node."""
    if nodes is None:
        return [r for r in reports if r.node.has_role("worker")]
    by_name = {r.node.name: r for r in reports}
    unknown = [n for n in nodes if n not in by_name]
    if unknown:
        raise PushError(f"no such node(s) in the inventory: {', '.join(unknown)}")
    return [by_name[n] for n in dict.fromkeys(nodes)]


async def push(
    pool: Pool,
    reports: list[NodeReport],
    archive_path: str,
    nodes: list[str] | None = None,
    limit: int = 8,
    *,
    on_progress: Progress | None = None,
    on_status: Callable[[str, str], None] | None = None,
    timeout: float = IMPORT_TIMEOUT,
) -> list[PushResult]:
    """Push the archive to `nodes` (default: every worker); one PushResult per node, in order, never raising
    for one node. Raises ImageArchiveError (before contacting any node) when the archive is unusable.

    `on_progress(node, bytes_sent)` follows each upload; `on_status(node, state)` says checking, sending, done.
    Each node's image list has LIST_TIMEOUT seconds, its import `timeout` (the whole archive at network speed).
    """
    archive = read_archive(archive_path)
    chosen = select(reports, nodes)
    gate = asyncio.Semaphore(limit)

    def status(node: str, state: str) -> None:
        if on_status is not None:
            on_status(node, state)

    async def one(report: NodeReport) -> PushResult:
        name = report.node.name
        start = time.monotonic()
        if not report.ok:
            status(name, "failed")
            return PushResult(name, "failed", 0, 0.0, f"{report.status}: {report.reason}")
        driver = driver_for(report.node, report.facts)
        sent = 0
        async with gate:
            start = time.monotonic()  # time on this node, not the wait for a slot
            try:
                status(name, "checking")
                images = await perform(pool, report.node, driver.image_list(), timeout=LIST_TIMEOUT)
                if is_present(archive, images):
                    status(name, "present")
                    return PushResult(name, "present", 0, time.monotonic() - start)
                status(name, "sending")
                call = driver.image_import(archive_path)

                def progress(n: int) -> None:
                    nonlocal sent
                    sent = n
                    if on_progress is not None:
                        on_progress(name, n)

                res = await pool.run(report.node, call.command, stdin_path=call.stdin_path, timeout=timeout,
                                     on_progress=progress)
                if res.error_kind == "timeout":
                    raise FleetError(f"{name}: import did not finish within {timeout:g}s "
                                     f"({sent} bytes sent)")
                imported = call.parse(res)
            except FleetError as exc:
                status(name, "failed")
                return PushResult(name, "failed", sent, time.monotonic() - start, why(name, exc))
        want = wanted(archive) or {}
        got = {i.name: i.digest for i in imported}
        missing = [n for n, d in want.items() if got.get(n) != d]
        if missing:
            status(name, "failed")
            return PushResult(name, "failed", sent, time.monotonic() - start,
                              f"import did not report {', '.join(missing)}: {res.stdout.strip()[-200:]}")
        status(name, "sent")
        return PushResult(name, "sent", sent, time.monotonic() - start)

    return list(await asyncio.gather(*(one(r) for r in chosen)))


LOCAL_PREFIX = "fleet.local/"


def registry_of(image: str) -> str:
    """The registry host[:port] of an image reference (`docker.io` when the reference names none)."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


Secrets = Callable[[str], str | None]


async def ensure_image(pool: Pool, report: NodeReport, ref: str, *, timeout: float = PULL_TIMEOUT,
                       secrets: Secrets | None = None) -> Literal["present", "pulled"]:
    """Make sure the node has `ref`: nothing to do when listed, else pull it from its registry (over plain
    HTTP only if the node's inventory lists that registry as insecure; with the inventory's credentials for it,
    the password read from the fleet's secrets by `secrets`, if it has some). Images built here (`fleet.local/…`)
    have no registry: they must have been pushed.

    The image list has LIST_TIMEOUT seconds, the pull `timeout`. Any failure raises ImageUnavailable for this
    node alone (a node that does not answer, a registry that refuses, an image never pushed)."""
    if not report.ok:
        raise ImageUnavailable(report.node.name, ref, f"{report.status}: {report.reason}")
    name = report.node.name
    driver = driver_for(report.node, report.facts)
    try:
        images = await perform(pool, report.node, driver.image_list(), timeout=LIST_TIMEOUT)
    except FleetError as exc:
        raise ImageUnavailable(name, ref, why(name, exc)) from exc
    if ref in images:
        return "present"
    if ref.startswith(LOCAL_PREFIX):
        raise ImageUnavailable(name, ref, "it is not on the node; ship it with `fleet image push`")
    registry = registry_of(ref)
    plain = registry in report.node.insecure_registries
    login = report.node.login_for(registry)
    try:
        if login is None:
            await perform(pool, report.node, driver.image_pull(ref, plain), timeout=timeout)
        else:
            await pull_with_login(pool, report, ref, login, plain, secrets, timeout)
    except FleetError as exc:
        raise ImageUnavailable(name, ref, why(name, exc)) from exc
    return "pulled"


async def pull_with_login(pool: Pool, report: NodeReport, ref: str, login: RegistryLogin, plain: bool,
                          secrets: Secrets | None, timeout: float) -> None:
    """Pull `ref` as `login.username`, the password (the secret `login.secret`) sent on the command's stdin,
    never in argv, a file on disk or a message. A refused password is an error naming the registry and user."""
    password = secrets(login.secret) if secrets is not None else None
    if password is None:
        raise FleetError(f"registry {login.registry}: secret {login.secret!r} (the password of {login.username}) is "
                         f"not in the fleet's secrets (set it with `fleet secret set {login.secret}`)")
    if "\n" in password or "\r" in password:
        raise FleetError(f"registry {login.registry}: secret {login.secret!r} holds a line break; a password cannot")
    call = driver_for(report.node, report.facts).image_pull_login(ref, login.username, plain)
    result = await pool.run(report.node, call.command, stdin=password + "\n", timeout=timeout)
    if result.error is not None:
        raise transport_error(report.node, call.what, result, timeout)
    try:
        call.parse(result)
    except RuntimeCommandError as exc:
        if "401" in exc.stderr or "403" in exc.stderr:
            raise FleetError(f"registry {login.registry} refused user {login.username} (password from secret "
                             f"{login.secret!r}): {exc.stderr.strip()}") from exc
        raise


async def list_images(pool: Pool, reports: list[NodeReport]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """{node: {ref: digest}} for every ready node, and {node: reason} for those that could not be read."""
    return await on_ready_nodes(pool, reports, lambda d: d.image_list(), timeout=LIST_TIMEOUT)
