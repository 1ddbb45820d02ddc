"""The fleet's node marks (cordoned, draining, CLI labels), kept in the fleet's records on the record nodes.

One JSON document (fleet.core.nodeops), stored as the record named `fleet.nodes` by the same machinery as the
services' decision records (fleet.store.records): on every record node, merged over the copies, written with a
strict majority. A service cannot be called that (service names have no dot). Changes are read-modify-write
and must be made under the fleet's lease, like every other write to the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fleet.core.errors import RecordsError
from fleet.core.model import Node
from fleet.core.nodeops import NodeMark, decode_marks, encode_marks
from fleet.core.shell import Script
from fleet.store.nodes import DEFAULT_BASE_DIR, node_dir
from fleet.store.records import FleetHistory, listings, merge, state_path
from fleet.transport import Pool, fanout

NODES_RECORD = "fleet.nodes"

# $1 base dir. The node marks' record alone, in the records' listing format (see fleet.store.records.READ_SCRIPT),
# under the same shared lock: what every look at the nodes reads, without the services' whole history.
READ_MARKS_SCRIPT = r"""
set -u
dir=$1/records
f=$dir/fleet.nodes/state.json
echo "fleet-records 1"
if [ -f "$f" ]; then
  exec 9>>"$dir/.lock" || exit 1
  flock -s -w 5 9 || { echo "fleet-records: $dir/.lock still locked after 5s" >&2; exit 3; }
  data=$(base64 < "$f" | tr -d '\n') && printf 'file %s %s\n' "fleet.nodes/state.json" "$data"
fi
echo end
"""


def read_marks_script(base_dir: str) -> Script:
    return Script(READ_MARKS_SCRIPT, args=(base_dir,), name="fleet-marks-read")


async def fetch_marks(pool: Pool, nodes: Sequence[Node], *, base_dir: str = DEFAULT_BASE_DIR,
                      timeout: float = 10.0) -> tuple[dict[str, NodeMark], str | None]:
    """Every node's mark as the record nodes hold it: one small read from each at once, the newest copy wins
    (as for every record). What `fleet nodes`, the terminal UI and each round of `fleet watch` see and place by.

    Never raises for a node: the second value says why the marks are unknown (no record node answered, or
    the document is unreadable), and the first is then empty."""
    if not nodes:
        return {}, None
    results = await fanout(pool, nodes, lambda n: read_marks_script(node_dir(base_dir, n)), timeout=timeout)
    dumps, errors = listings(nodes, results)
    if not dumps:
        return {}, ("cannot read the fleet's record of its nodes: no record node answered ("
                    + "; ".join(f"{n}: {e}" for n, e in errors.items()) + ")")
    snap = merge(dumps, errors, base_dir)
    record = snap.states.get(NODES_RECORD)
    if record is None and snap.warnings:
        return {}, "the fleet's record of its nodes is unreadable: " + "; ".join(snap.warnings)
    try:
        return decode_marks(None if record is None else record.state), None
    except ValueError as exc:
        where = state_path(NODES_RECORD)
        return {}, f"the fleet's record of its nodes (records/{where}) is unreadable: {exc}"


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
