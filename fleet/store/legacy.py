"""The records of the fleet's former file protocol, read once to import them into etcd (`fleet.store.migrate`),
then removed. Read-only: nothing writes this format any more.

Each record node kept JSON files under `<base>/records/` (`<service>/rev-<n>.json`, `<service>/state.json`, the
node marks as `fleet.nodes/state.json`), each with the time of its last write; copies on several nodes were
merged by that time (the newest wins), which is how they are read here, one last time.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.store.etcd_records import revision_of
from fleet.store.history import Revision
from fleet.store.nodes import failure, node_dir
from fleet.transport import Pool, fanout

FORMAT = 1
NODES_RECORD = "fleet.nodes"
REV_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,127})/rev-([1-9][0-9]{0,9})\.json$")
STATE_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,127})/state\.json$")

# $1 base dir. Every record of the node, one line each (`file <path> <base64>`), between a header and `end`
# (a missing `end` means the listing was cut). Under the old protocol's shared flock: no write is half seen.
READ_SCRIPT = r"""
set -u
dir=$1/records
echo "fleet-records 1"
if [ -d "$dir" ]; then
  exec 9>>"$dir/.lock" || exit 1
  flock -s -w 5 9 || { echo "fleet-records: $dir/.lock still locked after 5s" >&2; exit 3; }
  for f in "$dir"/*/rev-*.json "$dir"/*/state.json; do
    [ -f "$f" ] || continue
    data=$(base64 < "$f" | tr -d '\n') || continue
    printf 'file %s %s\n' "${f#"$dir"/}" "$data"
  done
fi
echo end
"""

# $1 base dir. The old files go (records, lease, their locks); prints `removed` once they are gone.
REMOVE_SCRIPT = r"""
set -u
rm -rf "$1/records" "$1/lease" "$1/lease.lock" "$1/.lease."* || exit 1
echo removed
"""


def read_script(base_dir: str) -> Script:
    return Script(READ_SCRIPT, args=(base_dir,), name="fleet-records-read")


def remove_script(base_dir: str) -> Script:
    return Script(REMOVE_SCRIPT, args=(base_dir,), name="fleet-records-remove")


def parse_dump(stdout: str) -> dict[str, bytes]:
    """READ_SCRIPT's output as {path under records/: file content}; ValueError if it is not that output."""
    lines = stdout.splitlines()
    if not lines or not lines[0].startswith("fleet-records "):
        raise ValueError(f"unexpected reply from the records script: {stdout[:200]!r}")
    if lines[-1] != "end":
        raise ValueError("the records listing was cut short")
    files: dict[str, bytes] = {}
    for line in lines[1:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "file":
            raise ValueError(f"unexpected line in the records listing: {line[:200]!r}")
        try:
            files[parts[1]] = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{parts[1]}: garbled in the listing: {exc}") from exc
    return files


@dataclass(frozen=True)
class OldRecord:
    """One old file, validated: a revision, or a decision (`state`; None once deleted), with its write time."""

    updated_at: float
    revision: Revision | None = None
    service: str = ""
    state: Mapping[str, Any] | None = None


def decode_record(path: str, raw: bytes) -> OldRecord:
    """Validate one old record file (path relative to records/); ValueError says what is wrong with it."""
    rev_match, state_match = REV_RE.match(path), STATE_RE.match(path)
    if rev_match is None and state_match is None:
        raise ValueError("not a record file name")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    fmt, service, updated = data.get("format"), data.get("service"), data.get("updated_at")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > FORMAT:
        raise ValueError(f"format: expected {FORMAT}, got {fmt!r:.60}")
    if not isinstance(updated, int | float) or isinstance(updated, bool):
        raise ValueError(f"field 'updated_at': expected a number, got {updated!r:.60}")
    if state_match is not None:
        state = data.get("state")
        if service != state_match.group(1) or data.get("kind") != "state" or not isinstance(state, dict | None):
            raise ValueError(f"not the state of {state_match.group(1)!r}")
        return OldRecord(float(updated), service=service, state=state)
    assert rev_match is not None
    number = int(rev_match.group(2))
    if service != rev_match.group(1) or data.get("revision") != number or data.get("kind") != "revision":
        raise ValueError(f"does not hold {rev_match.group(1)!r} revision {number}, as its name says")
    return OldRecord(float(updated), revision=revision_of(service, number, data), service=service)


@dataclass
class OldRecords:
    """The old records of every record node that answered, merged (the newest copy of each file wins)."""

    revisions: dict[tuple[str, int], Revision] = field(default_factory=dict)
    states: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    found_on: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.revisions and not self.states


def merge(dumps: Mapping[str, Mapping[str, bytes]]) -> OldRecords:
    """Merge the files each node listed (node -> path -> content); a file that fails validation is skipped with
    a warning naming the node and file."""
    out = OldRecords(found_on=[n for n, files in dumps.items() if files])
    newest: dict[str, float] = {}
    for node, files in dumps.items():
        for path, raw in sorted(files.items()):
            try:
                record = decode_record(path, raw)
            except ValueError as exc:
                out.warnings.append(f"{node}: records/{path}: {exc} (skipped)")
                continue
            if record.updated_at < newest.get(path, float("-inf")):
                continue
            newest[path] = record.updated_at
            if record.revision is not None:
                out.revisions[(record.service, record.revision.revision)] = record.revision
            else:
                out.states[record.service] = record.state
    return out


async def read_old(pool: Pool, nodes: Sequence[Node], base_dir: str, timeout: float = 20.0) -> OldRecords:
    """The old records on `nodes`, merged; nodes that could not be read are named in `errors`."""
    results: Sequence[CommandResult] = await fanout(pool, nodes, lambda n: read_script(node_dir(base_dir, n)),
                                                    timeout=timeout)
    dumps: dict[str, dict[str, bytes]] = {}
    errors: dict[str, str] = {}
    for node, r in zip(nodes, results, strict=True):
        why = failure(r)
        if why is None:
            try:
                dumps[node.name] = parse_dump(r.stdout)
                continue
            except ValueError as exc:
                why = str(exc)
        errors[node.name] = why
    merged = merge(dumps)
    merged.errors = errors
    return merged
