"""`fleet node cordon|uncordon|drain|label NODE`: take a node out of service and back, and label it; `fleet node
check|prepare [NODE...]`: what a node has and lacks for its roles, and installing what it lacks.

What cordon, uncordon, drain and label record is kept on the fleet (its records, under the lease), so every
controller respects it; `fleet nodes` shows it. Exit codes as the other writing commands: 0 done, 1 failed, 2 bad
input, 75 the fleet's lease is held (see --wait). check and prepare exit 1 when a node lacks something or failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli import common, completion
from fleet.cli.common import esc

if TYPE_CHECKING:
    from rich.console import Console

    from fleet.api import Fleet, NodeCheck, Plan, PrepareReport
    from fleet.core.model import Inventory

app = typer.Typer(help="Node operations: cordon, uncordon, drain, label (kept on the fleet); check and prepare "
                       "(what a node needs for its roles).", no_args_is_help=True)

NodeArg = completion.NodeArg
NodesArg = Annotated[list[str] | None, typer.Argument(help="Nodes by name (default: every node of the inventory).",
                                                     show_default=False, autocompletion=completion.node_names)]
LabelsArg = Annotated[list[str], typer.Argument(help="key=value to set a label, key- to remove one.",
                                                show_default=False)]


def label_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The label changes of the command line, or exit 2 naming the bad argument."""
    from fleet.core.nodeops import parse_label_args

    try:
        return parse_label_args(args)
    except ValueError as exc:
        common.fail(f"fleet node label: {exc}")


def _change(op: Callable[[Fleet], Awaitable[Any]], inventory: str | None, wait: str | None) -> Any:
    """Run one node operation through the façade (it takes the fleet's lease)."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    seconds = common.wait_seconds(wait)

    async def go() -> Any:
        async with Fleet.connect(inv, wait=seconds) as f:
            return await op(f)

    return common.run(go)


def _done(node: str, json: bool, text: str, **fields: Any) -> None:
    if json:
        common.print_json({"node": node, **fields})
    else:
        common.console().print(esc(text), highlight=False)


def cordon(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
           wait: common.WaitOpt = None) -> None:
    """No new replicas go to NODE; those running there stay (until `fleet node drain` or `uncordon`).

    Example:

      fleet node cordon n2"""
    _change(lambda f: f.cordon(node), inventory, wait)
    _done(node, json, f"{node} cordoned: no new replicas go there", cordoned=True, draining=False)


def uncordon(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
             wait: common.WaitOpt = None) -> None:
    """Replicas may be placed on NODE again (the next apply, scale or reconcile).

    Example:

      fleet node uncordon n2"""
    _change(lambda f: f.uncordon(node), inventory, wait)
    _done(node, json, f"{node} uncordoned: replicas may be placed there again", cordoned=False, draining=False)


def drain(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Move every replica off NODE, then leave it cordoned.

    Rolling: a new replica elsewhere is ready before the old one is drained from the load balancers and
    stopped. When they cannot all go elsewhere, nothing is moved and NODE is left cordoned with its replicas
    running (exit 1).

    Example:

      fleet node drain n2 --wait 5m"""
    from fleet.cli.apply import _exit, _run

    result = _run(lambda f: f.drain(node), inventory, json, wait)
    if not json:
        moved = sum(o.stopped for o in result.outcomes)
        verdict = "drained" if result.ok else "not fully drained"
        common.console().print(f"{esc(node)} {verdict} ({moved} replica(s) moved off) and cordoned", highlight=False)
    raise _exit(result)


def label(node: NodeArg, changes: LabelsArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Set (key=value) or remove (key-) labels of NODE.

    They win over the inventory's labels; removing one the inventory sets records its removal.
    `placement.require` uses them from the next apply or reconcile.

    Example:

      fleet node label n2 zone=eu-1 disk=ssd gpu-"""
    sets, removes = label_args(changes)
    labels = _change(lambda f: f.label(node, sets, removes), inventory, wait)
    shown = ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"
    _done(node, json, f"{node} labels: {shown}", labels=labels)


def check_json(check: NodeCheck) -> dict[str, Any]:
    return {"node": check.node, "roles": list(check.roles), "ok": check.ok, "os": check.os, "error": check.error,
            "missing": [i.name for i in check.missing],
            "items": [{"name": i.name, "ok": i.ok, "detail": i.detail, "package": i.package, "fix": i.fix,
                       "optional": i.optional} for i in check.items]}


def print_check(out: Console, check: NodeCheck) -> None:
    """One node's check: a verdict line, then one line per item (present, missing, optional and absent)."""
    roles = ", ".join(check.roles)
    if check.error is not None:
        out.print(f"[bold]{esc(check.node)}[/] ({esc(roles)}): [red]not checked[/]: {esc(check.error)}", soft_wrap=True)
        return
    missing = check.missing
    verdict = "[green]ok[/]" if not missing else f"[red]missing {esc(', '.join(i.name for i in missing))}[/]"
    out.print(f"[bold]{esc(check.node)}[/] ({esc(roles)}; {esc(check.os)}): {verdict}")
    for item in check.items:
        mark = "[green]✓[/]" if item.ok else ("[yellow]-[/]" if item.optional else "[red]✗[/]")
        fix = f"  → apt-get install {item.package}" if item.package and not item.ok else ""
        out.print(f"  {mark} {esc(item.name):<19} {esc(item.detail)}{esc(fix)}")


def check(nodes: NodesArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """What each node has and lacks for its roles (read-only).

    The runtime (containerd, runc, ctr, CNI plugins) on workers, HAProxy and socat on lb nodes (keepalived with
    a virtual IP), etcd on the record nodes; on every node the cgroup version, a tmpfs /run, free disk, the clock
    against this machine, and root or passwordless sudo.

    Read-only: one SSH round trip per node, no lease. Exit 1 when a node lacks something (named) or cannot be
    reached.

    Example:

      fleet node check
      fleet node check n1 lb1 --json"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> list[NodeCheck]:
        async with Fleet.connect(inv) as f:
            return await f.check(nodes or [])

    checks = common.run(go)
    if json:
        common.print_json([check_json(c) for c in checks])
    else:
        out = common.console()
        for c in checks:
            print_check(out, c)
    bad = [c.node for c in checks if not c.ok]
    if bad:
        if not json:
            common.console(stderr=True).print(f"not ready: {esc(', '.join(bad))}", highlight=False)
        raise typer.Exit(common.EXIT_PARTIAL)


def prepared_line(report: PrepareReport) -> str:
    """What prepare did on one node, in one line."""
    if report.plan.error is not None:
        return f"{report.node}: not prepared: cannot check it: {report.plan.error}"
    if report.plan.blocked is not None:
        return f"{report.node}: not prepared: {report.plan.blocked}"
    if report.plan.nothing:
        left = f"; cannot fix: {'; '.join(report.plan.left)}" if report.plan.left else ""
        return f"{report.node}: nothing to do{left or ' (ready)'}"
    if report.error is not None:
        return f"{report.node}: failed: {report.error}"
    done = list(report.prepared.changed) if report.prepared is not None else []
    if report.prepared is not None and report.prepared.error is not None:
        return f"{report.node}: failed: {report.prepared.error}" + (f" (after: {'; '.join(done)})" if done else "")
    after = report.after
    tail = "ready" if after is not None and after.ok else (
        f"still missing: {', '.join(i.name for i in after.missing)}" if after is not None and after.error is None
        else f"not checked after: {after.error if after is not None else '?'}")
    return f"{report.node}: {'; '.join(done) or 'no change'}; {tail}"


def prepare(nodes: NodesArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing the nodes.")] = False,
            offline: Annotated[str | None, typer.Option(
                "--offline", metavar="DIR", help="Install from the .deb files in DIR (as `apt-get download` names "
                "them: the packages and their dependencies), sent over SSH: the nodes reach no mirror.")] = None,
            download: Annotated[str | None, typer.Option(
                "--download", metavar="DIR", help="Change no node: fill DIR with the .deb files each node lacks "
                "(its packages and their dependencies it does not have), worked out by this machine's apt against "
                "the node's installed packages, for a later --offline DIR.")] = None,
            ) -> None:
    """Install what each node lacks for its roles, after showing the plan.

    First the plan (what each node lacks, as packages), then, once confirmed, apt-get install on each node at
    once (Debian 12, Ubuntu 24.04; no service started by the packages themselves), fleet's directories, and
    net.ipv4.ip_forward. Idempotent: a node that lacks nothing is left alone ("nothing to do"). One line per
    node; exit 1 naming a node that failed or still lacks something. It takes no lease: the lease is kept by
    what it installs on the record nodes.

    With --offline DIR, nodes with no route to a mirror get the packages from DIR: this controller sends each
    node the .deb files it needs (those the manifest of --download names for it; without one, its packages'
    and every file in DIR that is none of fleet's packages: their dependencies) and installs them with
    apt-get --no-download (dpkg -i without apt-get); a package with no file in DIR is named and that node left
    alone.

    With --download DIR (on a controller with apt and the package lists of the nodes' release, e.g. Debian 12
    for Debian 12 nodes), nothing changes on the nodes: this machine's apt works out, against each node's
    installed packages (its dpkg status, read over SSH), the .deb files it lacks (fleet's packages and every
    dependency not installed there) and downloads them into DIR, with a manifest naming each node's files; a
    later --offline DIR sends each node exactly its files.

    Example:

      fleet node prepare --yes
      fleet node prepare n4 n5
      fleet node prepare --download ./debs
      fleet node prepare --offline ./debs --yes"""
    import os

    from fleet.api import OFFLINE_MANIFEST, Fleet, offline_plan, plan_for, read_manifest
    from fleet.core.errors import ScriptOutputError

    inv = common.inventory(inventory)
    out = common.console(stderr=json)
    if download is not None:
        if offline is not None:
            common.fail("fleet node prepare: --download and --offline go in two runs (download, then install)")
        _download(inv, nodes or [], download, json)
        return
    files: list[str] = []
    manifest: dict[str, dict[str, list[str]]] = {}
    if offline is not None:
        try:
            files = [f for f in os.listdir(offline) if f.endswith(".deb") and os.path.isfile(os.path.join(offline, f))]
            if os.path.exists(os.path.join(offline, OFFLINE_MANIFEST)):
                with open(os.path.join(offline, OFFLINE_MANIFEST)) as fh:
                    manifest = read_manifest(fh.read())
        except OSError as exc:
            common.fail(f"fleet node prepare --offline {offline}: {exc.strerror or exc}")
        except ScriptOutputError as exc:
            common.fail(f"fleet node prepare --offline {offline}: {exc}")

    async def go() -> tuple[list[Plan], list[PrepareReport]]:
        async with Fleet.connect(inv) as f:
            plans = [plan_for(c) for c in await f.check(nodes or [])]
            if offline is not None:
                plans = [offline_plan(p, files, offline, manifest) for p in plans]
            out.print("plan:")
            for plan in plans:
                out.print(f"  {esc(plan.node)}: {esc(plan.describe())}", highlight=False, soft_wrap=True)
            if all(p.nothing or p.error is not None for p in plans) or _declined(yes, out):
                return plans, []
            return plans, await f.prepare(plans, offline)

    plans, reports = common.run(go)
    if not reports and not all(p.nothing or p.error is not None for p in plans):
        common.fail("nothing changed", common.EXIT_PARTIAL)
    if not reports:
        from fleet.api import PrepareReport

        reports = [PrepareReport(p.node, p) for p in plans]
    if json:
        common.print_json([{"node": r.node, "ok": r.ok, "packages": list(r.plan.packages), "fixes": list(r.plan.fixes),
                            "left": list(r.plan.left), "changed": list(r.prepared.changed) if r.prepared else [],
                            "debs": list(r.plan.debs),
                            "error": r.error or r.plan.error or r.plan.blocked
                            or (r.prepared.error if r.prepared else None)}
                           for r in reports])
    else:
        for r in reports:
            common.console().print(esc(prepared_line(r)), highlight=False, soft_wrap=True)
    bad = [r.node for r in reports if not r.ok]
    if bad:
        common.console(stderr=True).print(f"not prepared: {esc(', '.join(bad))}", highlight=False)
        raise typer.Exit(common.EXIT_PARTIAL)


def _download(inv: Inventory, nodes: list[str], dest: str, json: bool) -> None:
    """`--download DIR`: one line per node (its files in DIR, or why not); exit 1 when one failed."""
    from fleet.api import Download, Fleet

    async def go() -> list[Download]:
        async with Fleet.connect(inv) as f:
            return await f.download(await f.check(nodes), dest)

    results = common.run(go)
    if json:
        common.print_json([{"node": r.node, "ok": r.ok, "packages": list(r.packages), "files": list(r.files),
                            "fetched": r.fetched, "size": r.size, "error": r.error} for r in results])
    for r in results if not json else ():
        if r.error is not None:
            line = f"{r.node}: not downloaded: {r.error}"
        elif not r.files:
            line = f"{r.node}: nothing to download (it lacks no package)"
        else:
            deps = len(r.files) - len(r.packages)
            line = (f"{r.node}: {len(r.files)} .deb file(s) in {dest} ({' '.join(r.packages)} and {deps} "
                    f"dependencies it lacks), {r.size / 1e6:.1f} MB, {r.fetched} fetched now")
        common.console().print(esc(line), highlight=False, soft_wrap=True)
    bad = [r.node for r in results if not r.ok]
    if bad:
        common.console(stderr=True).print(f"not downloaded: {esc(', '.join(bad))}", highlight=False)
        raise typer.Exit(common.EXIT_PARTIAL)


def _declined(yes: bool, out: Console) -> bool:
    """True when the user did not confirm the plan (no --yes and no terminal to ask on is a usage error)."""
    import sys

    if yes:
        return False
    if not sys.stdin.isatty():
        common.fail("fleet node prepare changes the nodes: pass --yes (no terminal to confirm on)")
    return not typer.confirm("Install and change this on the nodes?", default=False)


app.command("cordon")(cordon)
app.command("uncordon")(uncordon)
app.command("drain")(drain)
app.command("label")(label)
app.command("check")(check)
app.command("prepare")(prepare)
