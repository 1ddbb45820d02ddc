"""The first run on a fleet that kept its records in files (the former protocol) imports them into etcd once:
history (with its revision numbers), decisions and node marks, under the lease, one fenced transaction per
service (or per batch of a long history); it reads them back from etcd and compares, and only then marks the
import done (`/fleet/migrated`) and removes the old files from the record nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.core.errors import RecordsError
from fleet.core.model import Inventory, Node
from fleet.results.records import majority
from fleet.store.etcd import SERVICES, TXN_DELETES, SharedState, revision_counter_key, revision_key
from fleet.store.etcd_records import (
    check_service,
    mark_key,
    marks_from,
    parse_view,
    revision_doc,
    state_key,
)
from fleet.store.legacy import NODES_RECORD, OldRecords, read_old, remove_script
from fleet.store.nodes import RECORDS_LABEL, failure, node_dir
from fleet.transport import Pool, fanout

MIGRATED_KEY = "/fleet/migrated"


def old_record_nodes(inventory: Inventory) -> list[Node]:
    """Where the former protocol kept its records: the lb nodes (with a tie-breaker when they were even in
    number: the first labelled node, else the first other one), else those labelled `fleet.records=true`, else
    the first node; plus the nodes named record nodes now (their files are read too, in case)."""
    nodes = inventory.nodes
    labelled = [n for n in nodes if n.labels.get(RECORDS_LABEL, "").strip().lower() == "true"]
    lbs = [n for n in nodes if n.has_role("lb")]
    if lbs:
        old = lbs
        if len(lbs) % 2 == 0:
            other = [n for n in labelled if n not in lbs] or [n for n in nodes if n not in lbs]
            old = [n for n in nodes if n in lbs or (other and n is other[0])]
    else:
        old = labelled or list(nodes[:1])
    return [n for n in nodes if n in old or n.has_role("record")]


@dataclass(frozen=True)
class Migration:
    """What the import did: services and revisions imported, node marks, and what could not be cleaned up."""

    services: int
    revisions: int
    marks: int
    warnings: tuple[str, ...] = ()


async def migrate(pool: Pool, inventory: Inventory, shared: SharedState, base_dir: str) -> Migration | None:
    """Import the old records once (None: done before, by this or another controller). RecordsError when the old
    files cannot be read from a majority of the nodes that kept them: nothing is imported, and the run stops
    rather than number revisions from 1 again."""
    if await shared.store.get(MIGRATED_KEY) is not None:
        return None
    nodes = old_record_nodes(inventory)
    old = await read_old(pool, nodes, base_dir)
    answered = len(nodes) - len(old.errors)
    if answered < majority(len(nodes)):
        raise RecordsError("cannot import the fleet's old records into etcd: " + "; ".join(
            f"{n}: {why}" for n, why in old.errors.items()) + f" ({answered} of {len(nodes)} nodes answered)")
    if old.empty:
        await shared.write({MIGRATED_KEY: {"services": 0}}, event={"what": "import", "services": 0})
        return Migration(0, 0, 0, tuple(old.warnings))
    for service in sorted({s for s, _ in old.revisions} | {s for s in old.states if s != NODES_RECORD}):
        check_service(service)
        await _import_service(shared, old, service)
    marks = _marks(old)
    if marks:
        await shared.write({mark_key(name): doc for name, doc in marks.items()},
                           event={"what": "import", "nodes": sorted(marks)})
    await _confirm(shared, old, marks)
    services = len({s for s, _ in old.revisions} | {s for s in old.states if s != NODES_RECORD})
    await shared.write({MIGRATED_KEY: {"services": services, "revisions": len(old.revisions)}},
                       event={"what": "import", "services": services, "revisions": len(old.revisions)})
    warnings = [*old.warnings, *await _remove(pool, [n for n in nodes if n.name in old.found_on], base_dir)]
    return Migration(services, len(old.revisions), len(marks), tuple(warnings))


async def _import_service(shared: SharedState, old: OldRecords, service: str) -> None:
    """One service's records in one fenced transaction (a long history in batches, the counter and decision with
    the last), each with its event."""
    puts: list[tuple[str, Any]] = [(revision_key(service, n), revision_doc(rev))
                                   for (s, n), rev in sorted(old.revisions.items()) if s == service]
    top = max((n for s, n in old.revisions if s == service), default=0)
    counter = await shared.store.get(revision_counter_key(service))
    last: list[tuple[str, Any]] = [(revision_counter_key(service), max(top, int(counter.value) if counter else 0))]
    state = old.states.get(service)
    if state is not None:
        last.append((state_key(service), dict(state)))
    batches = [puts[i:i + TXN_DELETES] for i in range(0, len(puts), TXN_DELETES)] or [[]]
    for i, batch in enumerate(batches):
        ops = dict(batch + (last if i == len(batches) - 1 else []))
        await shared.write(ops, event={"what": "import", "service": service, "revisions": [
            int(k.rsplit("/", 1)[1]) for k, _ in batch]})


def _marks(old: OldRecords) -> dict[str, dict[str, Any]]:
    doc = old.states.get(NODES_RECORD)
    nodes = doc.get("nodes") if doc is not None else None
    return {str(k): v for k, v in nodes.items()} if isinstance(nodes, dict) else {}


async def _confirm(shared: SharedState, old: OldRecords, marks: dict[str, dict[str, Any]]) -> None:
    """Read everything back from etcd; RecordsError when anything differs (the old files then stay)."""
    view = parse_view(await shared.read(SERVICES, prefix=True))
    wrong = [f"{s} revision {n}" for (s, n), rev in old.revisions.items() if view.revisions.get((s, n)) != rev]
    wrong += [f"{s} decision" for s, st in old.states.items()
              if s != NODES_RECORD and st is not None and view.states.get(s) != dict(st)]
    got = marks_from(await shared.read(*(mark_key(n) for n in marks))) if marks else {}
    wrong += [f"node {n} mark" for n in marks if n not in got]
    if wrong:
        raise RecordsError("the import of the old records into etcd did not read back the same: "
                           + ", ".join(wrong[:10]) + "; the old files are kept")


async def _remove(pool: Pool, nodes: Sequence[Node], base_dir: str) -> list[str]:
    """Remove the old files; what could not be removed, one line per node (they are never read again)."""
    if not nodes:
        return []
    results = await fanout(pool, nodes, lambda n: remove_script(node_dir(base_dir, n)), timeout=20.0)
    return [f"{n.name}: the old record files could not be removed: {why}" for n, r in zip(nodes, results, strict=True)
            if (why := failure(r)) is not None]
