"""`fleet lab up|status|down`: the local lab of real nodes on this machine."""

from __future__ import annotations

import os
import time

import typer
from rich.table import Table

from fleet.cli import common
from fleet.core.errors import LabError
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig

app = typer.Typer(help="A local lab of real nodes: netns + mount namespace each, with sshd and containerd.",
                  no_args_is_help=True)

PrefixOpt = typer.Option("fl", "--prefix", envvar="FLEET_LAB", help="Name prefix of the lab's namespaces, links.")
SubnetOpt = typer.Option("10.231.0.0/24", "--subnet", envvar="FLEET_LAB_SUBNET", help="IPv4 subnet of the lab.")


def _lab(prefix: str, subnet: str, nodes: int = 3, lb: int = 1, fresh: bool = False) -> Lab:
    try:
        return Lab(LabConfig(prefix=prefix, subnet=subnet, nodes=nodes, lb=lb, root=common.lab_root(), fresh=fresh))
    except LabError as exc:
        common.fail(str(exc))


def _status_table(lab: Lab) -> Table:
    t = Table(pad_edge=False)
    for col in ("NODE", "ADDRESS", "ROLES", "NETNS", "HOLDER PID", "SSHD", "CONTAINERD", "READY"):
        t.add_column(col, no_wrap=True)
    for s in lab.status():
        t.add_row(s.name, s.address, ",".join(s.roles), _yes(s.netns), str(s.holder_pid or "-"), _yes(s.sshd),
                  _yes(s.containerd), _yes(s.ready))
    return t


def _yes(v: bool) -> str:
    return "[green]yes[/]" if v else "[red]no[/]"


@app.command()
def up(nodes: int = typer.Option(3, "--nodes", "-n", help="Worker nodes."),
       lb: int = typer.Option(1, "--lb", help="Load-balancer nodes (role lb)."),
       fresh: bool = typer.Option(False, "--fresh", help="Nodes as a new server is: a minimal Debian 12 (debootstrap, "
                                  "cached) with only sshd and the sudo user `deploy`; root may not log in."),
       prefix: str = PrefixOpt, subnet: str = SubnetOpt) -> None:
    """Bring the lab up, or repair it (nodes already whole are left alone).

    With --fresh, each node is its own copy of a minimal Debian 12 root filesystem (built once with debootstrap
    and cached under /var/cache/fleet-lab) with nothing of fleet's installed: `fleet node check` names what it
    lacks and `fleet node prepare` installs it. fleet logs in as `deploy` with sudo (the inventory says so).

    Example:

      fleet lab up --nodes 3 --lb 1
      fleet lab up --fresh --nodes 1 --lb 1 --prefix fr"""
    lab = _lab(prefix, subnet, nodes, lb, fresh)
    started = time.perf_counter()
    try:
        statuses = lab.up()
    except LabError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    out = common.console()
    out.print(_status_table(lab))
    ready = sum(s.ready for s in statuses)
    if lab.rootfs_seconds:
        out.print(f"built the fresh nodes' root filesystem in {lab.rootfs_seconds:.1f}s (cached for the next up)")
    out.print(f"{ready}/{len(statuses)} nodes ready in {time.perf_counter() - started:.1f}s; "
              f"inventory: {lab.inventory_path}")
    if lab.cfg.prefix != "fl" and not os.environ.get("FLEET_INVENTORY"):
        out.print(f"use it with: export FLEET_LAB={lab.cfg.prefix}")
    raise typer.Exit(common.EXIT_OK if ready == len(statuses) else common.EXIT_PARTIAL)


@app.command()
def status(prefix: str = PrefixOpt, subnet: str = SubnetOpt) -> None:
    """Show each lab node's namespace, processes and readiness.

    Example:

      fleet lab status"""
    lab = _lab(prefix, subnet)
    if not os.path.exists(lab.record_path):
        common.fail(f"no lab {prefix!r} under {common.lab_root()} (start one with `fleet lab up`)", common.EXIT_PARTIAL)
    common.console().print(_status_table(lab))


@app.command()
def down(prefix: str = PrefixOpt, subnet: str = SubnetOpt) -> None:
    """Remove every process, namespace, link and file of the lab, also after a crash.

    Example:

      fleet lab down --prefix fl"""
    lab = _lab(prefix, subnet)
    removed = lab.down()
    common.console().print(f"removed: {', '.join(removed) if removed else 'nothing (no such lab)'}")
