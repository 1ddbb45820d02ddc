"""The fleet's records as files on a record node: the scripts that read and write them under `<base>/records/`,
their paths, their values, and the JSON encoding and validation of each file.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.store.history import OUTCOMES, Revision, RevisionOutcome
from fleet.store.nodes import failure

FORMAT = 1
REV_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,127})/rev-([1-9][0-9]{0,9})\.json$")
_STATE_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,127})/state\.json$")

# $1 base dir. Every record of the node, one line each (`file <path> <base64>`), between a header and `end`
# (a missing `end` means the listing was cut). Under a shared flock: no write is half seen.
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

# $1 base dir; stdin: `put PATH` followed by one line of JSON, repeated. Each file is written
# to a temp file in its own directory, synced, then renamed over the old one; prints `ok PATH` for each.
WRITE_SCRIPT = r"""
set -u
mkdir -p "$1" || exit 1
umask 077
dir=$1/records
mkdir -p "$dir" || exit 1
exec 9>>"$dir/.lock" || exit 1
flock -w 5 9 || { echo "fleet-records: $dir/.lock still locked after 5s" >&2; exit 3; }
while IFS= read -r line; do
  op=${line%% *} rel=${line#* }
  case $rel in
    ''|/*|.*|*/.*|*..*|*[!A-Za-z0-9._/-]*) echo "fleet-records: refusing path '$rel'" >&2; exit 2 ;;
  esac
  case $op in
    put)
      IFS= read -r body || { echo "fleet-records: $rel: no content" >&2; exit 2; }
      sub=${rel%/*}
      mkdir -p "$dir/$sub" || exit 1
      tmp=$dir/$sub/.tmp.$$
      if printf '%s\n' "$body" > "$tmp" && { sync "$tmp" 2>/dev/null || :; } && mv -f "$tmp" "$dir/$rel"; then
        echo "ok $rel"
      else
        rm -f "$tmp"
        echo "fleet-records: cannot write $dir/$rel" >&2
        exit 1
      fi ;;
    *) echo "fleet-records: unknown operation '$op'" >&2; exit 2 ;;
  esac
done
echo done
"""


def read_script(base_dir: str) -> Script:
    return Script(READ_SCRIPT, args=(base_dir,), name="fleet-records-read")


def write_script(base_dir: str) -> Script:
    return Script(WRITE_SCRIPT, args=(base_dir,), name="fleet-records-write")


def rev_path(service: str, revision: int) -> str:
    return f"{service}/rev-{revision}.json"


def state_path(service: str) -> str:
    return f"{service}/state.json"


@dataclass(frozen=True)
class StateRecord:
    """A service's decision state as stored: the engine's JSON object, or None once deleted (a tombstone, so
    a stale copy on a node that missed the delete cannot bring it back)."""

    service: str
    state: Mapping[str, Any] | None
    updated_at: float


@dataclass(frozen=True)
class RevisionRecord:
    """A revision as stored, with the time of its last write (which copy wins a merge)."""

    revision: Revision
    updated_at: float


Record = RevisionRecord | StateRecord


def compact_json(data: Mapping[str, Any]) -> str:
    # One ASCII line: the write script reads each file's content as a single line.
    return json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def encode_revision(rev: Revision, updated_at: float) -> str:
    """A revision's file content."""
    return compact_json({"format": FORMAT, "kind": "revision", "service": rev.service, "revision": rev.revision,
                   "spec_hash": rev.spec_hash, "image": rev.image, "user": rev.user, "created_at": rev.created_at,
                   "finished_at": rev.finished_at, "outcome": rev.outcome, "reason": rev.reason,
                   "spec_json": rev.spec_json, "updated_at": updated_at})


def encode_state(record: StateRecord) -> str:
    """A decision state's file content."""
    state = None if record.state is None else dict(record.state)
    return compact_json({"format": FORMAT, "kind": "state", "service": record.service, "state": state,
                   "updated_at": record.updated_at})


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


def listings(nodes: Sequence[Node], results: Sequence[CommandResult]) -> tuple[dict[str, dict[str, bytes]],
                                                                               dict[str, str]]:
    """The records each node listed (node -> path -> content), and why each other node could not be read."""
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
    return dumps, errors


def _field(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], nullable: bool = False) -> Any:
    if name not in data:
        raise ValueError(f"field {name!r} is missing")
    value = data[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = kinds.__name__ if isinstance(kinds, type) else " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"field {name!r}: expected {names}, got {value!r:.60}")
    return value


def decode_record(path: str, raw: bytes) -> Record:
    """Validate one record file (path relative to records/); ValueError says what is wrong with it."""
    rev_match, state_match = REV_RE.match(path), _STATE_RE.match(path)
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
    fmt = _field(data, "format", int)
    if fmt > FORMAT:
        raise ValueError(f"written by a newer fleet (format {fmt}, this fleet reads {FORMAT})")
    service = _field(data, "service", str)
    updated_at = float(_field(data, "updated_at", (int, float)))
    if state_match is not None:
        if service != state_match.group(1) or data.get("kind") != "state":
            raise ValueError(f"holds the state of {service!r}, not of {state_match.group(1)!r}")
        state = _field(data, "state", dict, nullable=True)
        return StateRecord(service, state, updated_at)
    assert rev_match is not None
    revision = _field(data, "revision", int)
    if service != rev_match.group(1) or revision != int(rev_match.group(2)) or data.get("kind") != "revision":
        raise ValueError(f"holds {service!r} revision {revision}, not what its name says")
    outcome = _field(data, "outcome", str)
    if outcome not in OUTCOMES:
        raise ValueError(f"field 'outcome': expected one of {', '.join(OUTCOMES)}, got {outcome!r:.60}")
    spec_json = _field(data, "spec_json", str)
    try:
        json.loads(spec_json)
    except ValueError as exc:
        raise ValueError(f"field 'spec_json' is not JSON: {exc}") from exc
    finished = _field(data, "finished_at", (int, float), nullable=True)
    rev = Revision(service=service, revision=revision, spec_hash=_field(data, "spec_hash", str),
                   image=_field(data, "image", str), user=_field(data, "user", str),
                   created_at=float(_field(data, "created_at", (int, float))),
                   finished_at=None if finished is None else float(finished),
                   outcome=cast(RevisionOutcome, outcome),
                   reason=_field(data, "reason", str), spec_json=spec_json)
    return RevisionRecord(rev, updated_at)

def path_of(record: Record) -> str:
    """Where a record lives under records/."""
    if isinstance(record, RevisionRecord):
        return rev_path(record.revision.service, record.revision.revision)
    return state_path(record.service)


def encode_record(record: Record) -> str:
    """A record's file content."""
    if isinstance(record, RevisionRecord):
        return encode_revision(record.revision, record.updated_at)
    return encode_state(record)
