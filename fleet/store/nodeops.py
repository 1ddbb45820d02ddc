"""The fleet's node marks (cordoned, draining, CLI labels), kept in the fleet's records on the record nodes.

One JSON document (fleet.core.nodeops), stored as the record named `fleet.nodes` by the same machinery as the
services' decision records (fleet.store.records): on every record node, merged over the copies, written with a
strict majority. A service cannot be called that (service names have no dot). Changes are read-modify-write
and must be made under the fleet's lease, like every other write to the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fleet.core.errors import RecordsError
from fleet.core.nodeops import NodeMark, decode_marks, encode_marks
from fleet.store.records import FleetHistory

NODES_RECORD = "fleet.nodes"


async def read_marks(records: FleetHistory) -> dict[str, NodeMark]:
    """Every node's mark as the records hold it (from the snapshot `records` has; `refresh()` it first for a
    new read). Raises RecordsError when the document cannot be read or is not what fleet writes."""
    try:
        return decode_marks(await records.state(NODES_RECORD))
    except ValueError as exc:
        raise RecordsError(f"the fleet's record of its nodes ({NODES_RECORD}) is unreadable: {exc}") from exc


async def update_mark(records: FleetHistory, node: str, change: Callable[[NodeMark], NodeMark], *,
                      by: str = "", clock: Callable[[], float] = time.time) -> dict[str, NodeMark]:
    """Apply `change` to `node`'s mark on a fresh read from a majority of record nodes and write the document
    back (a majority must take it); returns every node's mark after. Call it under the fleet's lease."""
    await records._fresh()  # a write must start from what a majority holds, never from the cache
    marks = await read_marks(records)
    before = marks.get(node, NodeMark())
    after = change(before)
    if after == before:
        return marks
    marks[node] = NodeMark(after.cordoned, after.draining, after.labels, after.removed, by or after.by, clock())
    await records.set_state(NODES_RECORD, encode_marks(marks))
    return {name: m for name, m in marks.items() if not m.empty}
