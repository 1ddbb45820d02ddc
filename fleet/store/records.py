"""The fleet's record, kept on the fleet: revision history and per-service decision state on every record node.

Each record is a small JSON file under `<base>/records/` on every record node (`<service>/rev-<n>.json`,
`<service>/state.json`), written atomically (temp file + `mv` in the same directory, under `flock`). All of
a node's records are read in one round trip; copies are merged (the newest `updated_at` wins) and a copy
that is missing, older or unreadable on a node that answered is rewritten there with the next write. A
write needs a strict majority of the record nodes; revision numbers continue from the highest any copy
has seen, which is safe because the writer holds the fleet's lease. The controller's SQLite history is an
optional local cache: written through, and read only when no record node answers.

This module reads and writes them over SSH (`FleetHistory`); the files' format is in recordfiles.py, the merge
of copies in snapshot.py (their names other modules use are re-exported here).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fleet.core.errors import HistoryError, RecordsError
from fleet.core.model import CommandResult, Node
from fleet.store.history import FINAL_OUTCOMES, FinalOutcome, History, Revision
from fleet.store.nodes import DEFAULT_BASE_DIR, failure, majority, node_dir
from fleet.store.recordfiles import (
    READ_SCRIPT,
    WRITE_SCRIPT,
    Record,
    RevisionRecord,
    StateRecord,
    compact_json,
    decode_record,
    encode_record,
    encode_revision,
    encode_state,
    listings,
    parse_dump,
    path_of,
    read_script,
    rev_path,
    state_path,
    write_script,
)
from fleet.store.snapshot import Snapshot, from_cache, merge, next_revision, repairs, with_written
from fleet.transport import Pool, fanout

__all__ = [
    "READ_SCRIPT",
    "WRITE_SCRIPT",
    "FleetHistory",
    "RevisionRecord",
    "Snapshot",
    "StateRecord",
    "decode_record",
    "encode_revision",
    "encode_state",
    "listings",
    "merge",
    "parse_dump",
    "rev_path",
    "state_path",
]

SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


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
            return from_cache(self.cache, errors)
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
                              {s: (None if r.state is None else compact_json(r.state), r.updated_at)
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
        return None if record is None or record.state is None else json.loads(compact_json(record.state))

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
            number, rev = next_revision(snap, service, spec_json, spec_hash, image, user, now)
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
                state = json.loads(compact_json(state))
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
        writes = {path_of(r): r for r in records}
        batches: dict[str, str] = {}
        for node in self.nodes:
            lines = [f"put {path}\n{encode_record(r)}\n" for path, r in writes.items()]
            lines += [f"put {path}\n{encode_record(r)}\n" for path, r in repairs(snap, node.name, writes)]
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
        self._snapshot = with_written(snap, records, [n.name for n in self.nodes if n.name not in failed])
        if self.cache is not None:
            for r in records:
                if isinstance(r, RevisionRecord):
                    self.cache.store(r.revision)
                else:
                    self.cache.store_state(r.service, None if r.state is None else compact_json(r.state), r.updated_at)


def _check_service(service: str) -> None:
    if not SERVICE_RE.match(service):
        raise ValueError(f"service name {service!r}: lowercase letters, digits, . _ - (not first), up to 128")


def _write_failure(result: CommandResult, writes: Mapping[str, Record]) -> str | None:
    why = failure(result)
    if why is not None:
        return why
    lines = set(result.stdout.splitlines())
    if "done" not in lines or any(f"ok {path}" not in lines for path in writes):
        return f"incomplete write: {result.stdout[-200:]!r}"
    return None
