"""`fleet history SERVICE` and `fleet rollback SERVICE [--to REV]`: revisions recorded by the controller."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import time

import typer
from rich.table import Table

from ..history import Revision
from . import common
from .apply import _apply, _exit, open_history

OUTCOME_STYLE = {"succeeded": "green", "failed": "red", "rolled-back": "yellow", "aborted": "yellow",
                 "in-progress": "cyan"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def history(service: str, json: common.JsonOpt = False) -> None:
    """Every revision of SERVICE applied from this controller: spec, image, who, when, outcome and why."""
    revs = open_history().list(service)
    if json:
        common.print_json([dataclasses.asdict(r) | {"spec": jsonlib.loads(r.spec_json)} for r in revs])
        raise typer.Exit(common.EXIT_OK)
    if not revs:
        common.fail(f"no history for service {service!r} on this controller")
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    for col in ("REV", "IMAGE", "SPEC", "USER", "STARTED", "FINISHED", "OUTCOME", "REASON"):
        t.add_column(col, no_wrap=col != "REASON")
    for r in revs:
        t.add_row(str(r.revision), r.image, r.spec_hash[:12], r.user, _when(r.created_at), _when(r.finished_at),
                  f"[{OUTCOME_STYLE.get(r.outcome, 'white')}]{r.outcome}[/]", r.reason)
    common.console().print(t)


def _target(service: str, to: int | None) -> Revision:
    h = open_history()
    revs = h.list(service)
    if not revs:
        common.fail(f"no history for service {service!r} on this controller")
    if to is not None:
        rev = h.get(service, to)
        if rev is None:
            common.fail(f"{service} has no revision {to} (see `fleet history {service}`)")
        return rev
    current = revs[-1].revision
    prev = h.latest_succeeded(service, before=current)
    if prev is None:
        common.fail(f"{service}: no succeeded revision before {current} to roll back to")
    return prev


def rollback(service: str, to: int | None = typer.Option(None, "--to", help="Revision (default: the last good "
                                                                          "one before the latest)."),
             inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Bring back an earlier revision of SERVICE with the same health-checked rolling procedure."""
    from ..spec import from_playbook_dict

    rev = _target(service, to)
    spec = from_playbook_dict(service, jsonlib.loads(rev.spec_json), f"<history {service}@{rev.revision}>")
    if not json:
        common.console().print(f"rolling {service} back to revision {rev.revision} ({rev.image})")
    raise _exit(*_apply([spec], inventory, json))


def _in_progress(service: str) -> Revision:
    revs = open_history().list(service)
    if not revs or revs[-1].outcome != "in-progress":
        common.fail(f"{service}: no canary is waiting (see `fleet history {service}`)")
    return revs[-1]


def promote(service: str, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Promote a waiting canary: roll the rest of SERVICE to the canary's revision, batch by batch."""
    from ..spec import from_playbook_dict

    rev = _in_progress(service)
    spec = from_playbook_dict(service, jsonlib.loads(rev.spec_json), f"<history {service}@{rev.revision}>")
    spec = dataclasses.replace(spec, update=dataclasses.replace(spec.update, strategy="rolling"))
    if not json:
        common.console().print(f"promoting {service} revision {rev.revision} ({rev.image})")
    raise _exit(*_apply([spec], inventory, json))


def abort(service: str, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Abort a waiting canary: back to the last good revision (the canary replicas are removed)."""
    rev = _in_progress(service)
    h = open_history()
    prev = h.latest_succeeded(service, before=rev.revision)
    if prev is None:
        common.fail(f"{service}: no succeeded revision before {rev.revision} to go back to")
    h.finish(service, rev.revision, "aborted", "aborted by `fleet abort`")
    from ..spec import from_playbook_dict

    spec = from_playbook_dict(service, jsonlib.loads(prev.spec_json), f"<history {service}@{prev.revision}>")
    if not json:
        common.console().print(f"aborting {service} revision {rev.revision}; back to revision {prev.revision}")
    raise _exit(*_apply([spec], inventory, json))
