"""`fleet watch`: keep the fleet at its accepted state, in the foreground, one JSON object per line on stdout."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from fleet.cli import common
from fleet.cli.apply import EnvFileOpt, FileOpt, PlaybooksArg, playbook_paths, playbook_variables, playbooks_from


def log_line(event: str, **fields: Any) -> str:
    """One log line: timestamp (UTC, ms), level, event, then the fields (None ones left out)."""
    level = fields.pop("level", "info")
    doc = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level,
           "event": event, **{k: v for k, v in fields.items() if v is not None}}
    return json.dumps(doc, default=str, separators=(",", ":"))


def _log(event: str, **fields: Any) -> None:
    sys.stdout.write(log_line(event, **fields) + "\n")
    sys.stdout.flush()


def watch(playbooks: PlaybooksArg = None, file: FileOpt = None, inventory: common.InventoryOpt = None,
          once: Annotated[bool, typer.Option("--once", help="One round (reconcile what drifted), then exit: for "
                                                            "cron. Exit 0 ok, 1 partial, 75 lease held.")] = False,
          interval: Annotated[float, typer.Option(
              metavar="DURATION", parser=common.duration(0.1),
              help=f"Time between rounds when no event comes {common.DURATION_HELP}.")] = 1.0,
          node_grace: Annotated[str, typer.Option(
              "--node-grace", envvar="FLEET_NODE_GRACE", metavar="DURATION",
              help="How long a node that stops answering keeps its replicas before they start elsewhere "
                   f"{common.DURATION_HELP}.")] = "30s",
          events: Annotated[bool, typer.Option(help="Follow containerd's events (`ctr events`) to act at once.")]
          = True,
          serve: Annotated[bool, typer.Option("--socket/--no-socket",
                                              help="Lend the warm connections to `fleet nodes`, `status`, `ps` "
                                                   "and `fleet ui` on this controller.")] = True,
          env_file: EnvFileOpt = None) -> None:
    """Watch containers and nodes and reconcile (as `fleet reconcile`) as soon as something drifts.

    Runs in the foreground (systemd: Type=notify, READY=1 once running); SIGTERM stops it and releases its lease.
    One watcher per fleet is active, others wait as standbys and take over within the lease's ttl
    (FLEET_LEASE_TTL, 30 s). Writers (`fleet apply`…) keep working: the watcher takes the fleet's lease only
    for a round that acts. An --env-file is read once, at start (the playbooks are read again when they change):
    restart the watcher to take a changed one.

    Example:

      fleet watch -f playbooks/ --node-grace 1m
      fleet watch -f playbooks/ --env-file prod.env"""
    from fleet.core.units import parse_duration_flag
    from fleet.watch.controller import WatchOptions
    from fleet.watch.controller import watch as run_watch

    inv = common.inventory(inventory)
    paths = tuple(playbook_paths(playbooks, file))
    try:
        grace = parse_duration_flag(node_grace)
    except (ValueError, TypeError) as exc:
        common.fail(f"--node-grace: {exc}")
    playbooks_from(list(paths), None, env_file)  # exit 2 naming every problem before anything runs
    options = WatchOptions(playbooks=paths, interval=interval, node_grace=grace, events=events,
                           variables=playbook_variables(env_file))

    async def go() -> int:
        return await run_watch(inv, options, _log, once=once, serve=serve)

    raise typer.Exit(common.run(go))
