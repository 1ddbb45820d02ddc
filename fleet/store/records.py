"""The fleet's record, kept on the fleet: revision history and per-service decision state on every record node.

Each record is a small JSON file under `<base>/records/` on every record node (`<service>/rev-<n>.json`,
`<service>/state.json`), written atomically (temp file + `mv` in the same directory, under `flock`). All of
a node's records are read in one round trip; copies are merged (the newest `updated_at` wins) and a copy
that is missing, older or unreadable on a node that answered is rewritten there with the next write. A
write needs a strict majority of the record nodes; revision numbers continue from the highest any copy
has seen, which is safe because the writer holds the fleet's lease. The controller's SQLite history is an
optional local cache: written through, and read only when no record node answers.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from fleet.core.errors import HistoryError, RecordsError
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.store.history import (
    FINAL_OUTCOMES,
    OUTCOMES,
    FinalOutcome,
    History,
    Revision,
    RevisionOutcome,
    same_revision,
)
from fleet.store.nodes import DEFAULT_BASE_DIR, failure, majority, node_dir
from fleet.transport import Pool, fanout

__all__ = [
    "FleetHistory",
    "Snapshot",
    "decode_record",
    "encode_revision",
    "encode_state",
    "merge",
    "parse_dump",
]

FORMAT = 1
SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_REV_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,127})/rev-([1-9][0-9]{0,9})\.json$")
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


# ---- values and pure codecs ----------------------------------------------------------------------------------


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


def _dumps(data: Mapping[str, Any]) -> str:
    # One ASCII line: the write script reads each file's content as a single line.
    return json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def encode_revision(rev: Revision, updated_at: float) -> str:
    """A revision's file content."""
    return _dumps({"format": FORMAT, "kind": "revision", "service": rev.service, "revision": rev.revision,
                   "spec_hash": rev.spec_hash, "image": rev.image, "user": rev.user, "created_at": rev.created_at,
                   "finished_at": rev.finished_at, "outcome": rev.outcome, "reason": rev.reason,
                   "spec_json": rev.spec_json, "updated_at": updated_at})


def encode_state(record: StateRecord) -> str:
    """A decision state's file content."""
    state = None if record.state is None else dict(record.state)
    return _dumps({"format": FORMAT, "kind": "state", "service": record.service, "state": state,
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
    rev_match, state_match = _REV_RE.match(path), _STATE_RE.match(path)
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


@dataclass(frozen=True)
class Snapshot:
    """The fleet's record as read once: every service's revisions and state, merged over the copies read.

    `top` is the highest revision number any copy names per service (unreadable ones too), `copies` what
    each answering node holds (path -> updated_at of its valid copy), for repairs. `from_cache` is set when
    no record node answered and the local cache stood in; `warnings` says so, and names unreadable files.
    """

    revisions: Mapping[tuple[str, int], RevisionRecord]
    states: Mapping[str, StateRecord]
    top: Mapping[str, int]
    copies: Mapping[str, Mapping[str, float]]
    answered: tuple[str, ...]
    errors: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    from_cache: bool = False


def _newer(a: Record, b: Record) -> bool:
    """Whether copy `a` should win over `b`: newer write; on a tie, a finished revision over an unfinished one."""
    if a.updated_at != b.updated_at:
        return a.updated_at > b.updated_at
    if isinstance(a, RevisionRecord) and isinstance(b, RevisionRecord):
        return a.revision.outcome != "in-progress" and b.revision.outcome == "in-progress"
    return False


def merge(dumps: Mapping[str, Mapping[str, bytes]], errors: Mapping[str, str], base_dir: str) -> Snapshot:
    """Merge the records listed by each answering node (node -> path -> content) into one Snapshot.

    A file that fails validation is skipped with a warning naming the node and file; its revision number
    still counts in `top`, so a new revision never reuses it.
    """
    revisions: dict[tuple[str, int], RevisionRecord] = {}
    states: dict[str, StateRecord] = {}
    top: dict[str, int] = {}
    copies: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    for node, files in dumps.items():
        mine = copies.setdefault(node, {})
        for path, raw in sorted(files.items()):
            rev_match = _REV_RE.match(path)
            if rev_match is not None:
                service, number = rev_match.group(1), int(rev_match.group(2))
                top[service] = max(top.get(service, 0), number)
            try:
                record = decode_record(path, raw)
            except ValueError as exc:
                where = base_dir.replace("{node}", node)
                warnings.append(f"{node}: {where}/records/{path}: {exc} (skipped)")
                continue
            mine[path] = record.updated_at
            if isinstance(record, RevisionRecord):
                key = (record.revision.service, record.revision.revision)
                old_rev = revisions.get(key)
                if old_rev is None or _newer(record, old_rev):
                    revisions[key] = record
            else:
                old_state = states.get(record.service)
                if old_state is None or _newer(record, old_state):
                    states[record.service] = record
    return Snapshot(revisions, states, top, copies, tuple(dumps), dict(errors), tuple(warnings))


def _from_cache(cache: History, errors: Mapping[str, str]) -> Snapshot:
    revisions = {(r.service, r.revision): RevisionRecord(r, r.finished_at or r.created_at)
                 for service in cache.services() for r in cache.list(service)}
    states = {service: StateRecord(service, None if js is None else json.loads(js), at)
              for service, (js, at) in cache.states().items()}
    top: dict[str, int] = {}
    for service, number in revisions:
        top[service] = max(top.get(service, 0), number)
    why = "; ".join(f"{n}: {e}" for n, e in errors.items())
    warning = f"no record node answered ({why}); showing this controller's cache {cache.path}, which may be stale"
    return Snapshot(revisions, states, top, {}, (), dict(errors), (warning,), from_cache=True)


# ---- the fleet's history -------------------------------------------------------------------------------------


class FleetHistory:
    """Revision history and decision state of every service, on the fleet's record nodes.

    The same interface as `fleet.store.history.History`, async, shared by every controller of the fleet. Reads
    come from one snapshot per instance (one round trip per record node), taken on first use and again after
    `refresh()`; `record` and `finish` re-read first, so they number and finish on the latest record. Writes
    need a strict majority of record nodes (`RecordsError` names the nodes otherwise). `warnings` and
    `from_cache` describe the last read. `base_dir` is where the nodes keep records/ (`{node}`: node name).
    """

    def __init__(self, pool: Pool, nodes: Sequence[Node], *, cache: History | None = None,
                 clock: Callable[[], float] = time.time, timeout: float = 10.0,
                 base_dir: str = DEFAULT_BASE_DIR) -> None:
        if not nodes:
            raise ValueError("the fleet's records need at least one record node")
        self.pool = pool
        self.nodes = tuple(nodes)
        self.cache = cache
        self.timeout = timeout
        self.base_dir = base_dir
        self._clock = clock
        self._snapshot: Snapshot | None = None

    @property
    def needed(self) -> int:
        return majority(len(self.nodes))

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the last read had to say: unreadable files, missing nodes, the cache standing in."""
        return self._snapshot.warnings if self._snapshot is not None else ()

    @property
    def from_cache(self) -> bool:
        """True when the last read came from the local cache because no record node answered."""
        return self._snapshot is not None and self._snapshot.from_cache

    # ---- reading ---------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every record node again (one round trip each, concurrently) and merge the copies."""
        self._snapshot = await self._read()

    async def _read(self) -> Snapshot:
        results = await fanout(self.pool, self.nodes, lambda n: read_script(node_dir(self.base_dir, n)),
                               timeout=self.timeout)
        dumps, errors = listings(self.nodes, results)
        if not dumps:
            if self.cache is None:
                raise RecordsError("cannot read the fleet's records: no record node answered ("
                                   + "; ".join(f"{n}: {e}" for n, e in errors.items()) + ")")
            return _from_cache(self.cache, errors)
        snap = merge(dumps, errors, self.base_dir)
        if errors:
            missing = "; ".join(f"{n}: {e}" for n, e in errors.items())
            note = (f"read {len(dumps)} of {len(self.nodes)} record nodes" +
                    (" (no majority: recent changes may be missing)" if len(dumps) < self.needed else "") +
                    f"; {missing}")
            snap = Snapshot(snap.revisions, snap.states, snap.top, snap.copies, snap.answered, snap.errors,
                            (*snap.warnings, note))
        if self.cache is not None and len(dumps) >= self.needed:
            self.cache.mirror([r.revision for r in snap.revisions.values()],
                              {s: (None if r.state is None else _dumps(r.state), r.updated_at)
                               for s, r in snap.states.items()})
        return snap

    async def _view(self) -> Snapshot:
        if self._snapshot is None:
            await self.refresh()
        assert self._snapshot is not None
        return self._snapshot

    async def _fresh(self) -> Snapshot:
        """A new read that a write can rely on: from a majority of record nodes, never from the cache."""
        await self.refresh()
        snap = await self._view()
        if snap.from_cache or len(snap.answered) < self.needed:
            raise RecordsError(f"cannot write the fleet's records: {len(snap.answered)} of {len(self.nodes)} "
                               f"record nodes answered, {self.needed} needed ("
                               + "; ".join(f"{n}: {e}" for n, e in snap.errors.items()) + ")")
        return snap

    async def list(self, service: str) -> builtins.list[Revision]:
        """Every revision of `service`, oldest first."""
        snap = await self._view()
        return [r.revision for (s, _), r in sorted(snap.revisions.items()) if s == service]

    async def get(self, service: str, revision: int) -> Revision | None:
        record = (await self._view()).revisions.get((service, revision))
        return None if record is None else record.revision

    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        """The newest succeeded revision (older than `before` when given): what a rollback returns to."""
        found = [r for r in await self.list(service)
                 if r.outcome == "succeeded" and (before is None or r.revision < before)]
        return found[-1] if found else None

    async def services(self) -> builtins.list[str]:
        """Every service with at least one revision, sorted."""
        return sorted({s for s, _ in (await self._view()).revisions})

    async def state(self, service: str) -> dict[str, Any] | None:
        """The service's decision record (the engine's JSON object), or None when there is none."""
        record = (await self._view()).states.get(service)
        return None if record is None or record.state is None else json.loads(_dumps(record.state))

    # ---- writing ---------------------------------------------------------------------------------------------

    def _stamp(self, previous: float | None) -> float:
        # Strictly newer than the copy this write replaces, even if this controller's clock is behind.
        now = self._clock()
        return now if previous is None or now > previous else previous + 0.001

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int:
        """Record an applied spec as a new in-progress revision and return its number.

        Like `History.record`: re-applying the latest succeeded revision's spec returns that revision, and
        re-applying the spec of a latest revision still in progress (its controller died) returns it too; the
        spec is compared whole but for its replica count (`same_revision`), not by its hash alone.
        """
        return (await self.record_many([(service, spec_json, spec_hash, image, user)]))[0]

    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> builtins.list[int]:
        """`record` for several services, (service, spec_json, spec_hash, image, user) each, in one read and one
        write of the record nodes (services converging at once); a service may appear once."""
        services = [item[0] for item in items]
        if len(set(services)) != len(services):
            raise ValueError(f"record_many: a service may appear once, got {services}")
        for service, spec_json, *_ in items:
            _check_service(service)
            try:
                json.loads(spec_json)
            except ValueError as exc:
                raise ValueError(f"spec_json is not JSON: {exc}") from exc
        snap = await self._fresh()
        now = self._clock()
        numbers: builtins.list[int] = []
        new: builtins.list[Record] = []
        for service, spec_json, spec_hash, image, user in items:
            number, rev = _next_revision(snap, service, spec_json, spec_hash, image, user, now)
            numbers.append(number)
            if rev is not None:
                new.append(RevisionRecord(rev, now))
        if new:
            await self._put(snap, new)
        return numbers

    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        """Set how a revision's rollout ended; True if it was in progress and is now finished.

        A finished revision keeps its first outcome and False is returned; an unknown one is a HistoryError.
        """
        if outcome not in FINAL_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(FINAL_OUTCOMES)}, got {outcome!r}")
        snap = await self._fresh()
        current = snap.revisions.get((service, revision))
        if current is None:
            raise HistoryError(f"service {service!r} has no revision {revision}")
        if current.revision.outcome != "in-progress":
            return False
        done = dataclasses.replace(current.revision, outcome=outcome, reason=reason, finished_at=self._clock())
        await self._put(snap, [RevisionRecord(done, self._stamp(current.updated_at))])
        return True

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        """Replace the service's decision record; None deletes it."""
        _check_service(service)
        if state is not None:
            if not isinstance(state, dict):
                raise TypeError(f"state must be a JSON object (dict) or None, got {type(state).__name__}")
            try:
                state = json.loads(_dumps(state))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state of {service!r} is not JSON-serializable: {exc}") from exc
        snap = await self._view()
        if snap.from_cache:
            snap = await self._fresh()
        previous = snap.states.get(service)
        await self._put(snap, [StateRecord(service, state, self._stamp(previous.updated_at if previous else None))])

    async def _put(self, snap: Snapshot, records: builtins.list[Record]) -> None:
        """Write records on every record node (repairing what each answering node lacks), majority required;
        then update the snapshot and the cache with them."""
        writes = {_path_of(r): r for r in records}
        batches: dict[str, str] = {}
        for node in self.nodes:
            lines = [f"put {path}\n{_encode(r)}\n" for path, r in writes.items()]
            lines += [f"put {path}\n{_encode(r)}\n" for path, r in _repairs(snap, node.name, writes)]
            batches[node.name] = "".join(lines)

        def one(node: Node) -> Any:
            return self.pool.run(node, write_script(node_dir(self.base_dir, node)), stdin=batches[node.name],
                                 timeout=self.timeout)

        results = await fanout(self.pool, self.nodes, one, timeout=self.timeout)
        failed = {node.name: why for node, r in zip(self.nodes, results, strict=True)
                  if (why := _write_failure(r, writes)) is not None}
        done = len(self.nodes) - len(failed)
        if done < self.needed:
            self._snapshot = None  # some copies may have changed: read again before trusting anything
            raise RecordsError(f"the fleet's record of {', '.join(sorted(writes))} reached {done} of "
                               f"{len(self.nodes)} record nodes, {self.needed} needed ("
                               + "; ".join(f"{n}: {e}" for n, e in failed.items()) + ")")
        self._snapshot = _with(snap, records, [n.name for n in self.nodes if n.name not in failed])
        if self.cache is not None:
            for r in records:
                if isinstance(r, RevisionRecord):
                    self.cache.store(r.revision)
                else:
                    self.cache.store_state(r.service, None if r.state is None else _dumps(r.state), r.updated_at)


def _next_revision(snap: Snapshot, service: str, spec_json: str, spec_hash: str, image: str, user: str,
                   now: float) -> tuple[int, Revision | None]:
    """The revision `record` returns for this spec, and the new revision to write (None: an existing one)."""
    revs = [r.revision for (s, _), r in sorted(snap.revisions.items()) if s == service]
    ok = [r for r in revs if r.outcome == "succeeded"]
    if ok and ok[-1].spec_hash == spec_hash and same_revision(ok[-1].spec_json, spec_json):
        return ok[-1].revision, None
    top = snap.top.get(service, 0)
    last = snap.revisions.get((service, top))
    if last is not None and last.revision.spec_hash == spec_hash and last.revision.outcome == "in-progress" \
            and same_revision(last.revision.spec_json, spec_json):
        return top, None
    return top + 1, Revision(service, top + 1, spec_hash, image, user, now, None, "in-progress", "", spec_json)


def _check_service(service: str) -> None:
    if not SERVICE_RE.match(service):
        raise ValueError(f"service name {service!r}: lowercase letters, digits, . _ - (not first), up to 128")


def _path_of(record: Record) -> str:
    if isinstance(record, RevisionRecord):
        return rev_path(record.revision.service, record.revision.revision)
    return state_path(record.service)


def _encode(record: Record) -> str:
    if isinstance(record, RevisionRecord):
        return encode_revision(record.revision, record.updated_at)
    return encode_state(record)


def _repairs(snap: Snapshot, node: str, skip: Mapping[str, Record]) -> builtins.list[tuple[str, Record]]:
    """The merged records that `node` answered without (or with an older or unreadable copy of)."""
    if node not in snap.copies:
        return []  # it did not answer the read: what it holds is unknown
    held = snap.copies[node]
    out: builtins.list[tuple[str, Record]] = []
    winners: builtins.list[Record] = [*snap.revisions.values(), *snap.states.values()]
    for record in winners:
        path = _path_of(record)
        if path not in skip and held.get(path, -1.0) < record.updated_at:
            out.append((path, record))
    return out


def _write_failure(result: CommandResult, writes: Mapping[str, Record]) -> str | None:
    why = failure(result)
    if why is not None:
        return why
    lines = set(result.stdout.splitlines())
    if "done" not in lines or any(f"ok {path}" not in lines for path in writes):
        return f"incomplete write: {result.stdout[-200:]!r}"
    return None


def _with(snap: Snapshot, records: Sequence[Record], written_on: Sequence[str]) -> Snapshot:
    """The snapshot after `records` were written (and repaired) on `written_on`."""
    revisions = dict(snap.revisions)
    states = dict(snap.states)
    top = dict(snap.top)
    for r in records:
        if isinstance(r, RevisionRecord):
            revisions[(r.revision.service, r.revision.revision)] = r
            top[r.revision.service] = max(top.get(r.revision.service, 0), r.revision.revision)
        else:
            states[r.service] = r
    copies = {n: dict(held) for n, held in snap.copies.items()}
    everything: list[Record] = [*revisions.values(), *states.values()]
    for n in written_on:
        if n in copies:  # it answered the read, so its repairs were in the batch: it now has every winner
            copies[n].update({_path_of(r): r.updated_at for r in everything})
    return Snapshot(revisions, states, top, copies, snap.answered, snap.errors, snap.warnings, snap.from_cache)
