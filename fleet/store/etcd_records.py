"""The fleet's records in etcd (the `Records` the engine uses): every service's revisions and decision, and every
node's mark (cordon, drain, labels), as keys of the shared state.

    /fleet/services/<service>/revisions/<n>    one revision (its number is in the key, handed out by
                                               `SharedState.next_revision`: never twice)
    /fleet/services/<service>/state            the service's decision (the engine's JSON object)
    /fleet/nodes/<node>                        one node's mark (fleet.core.nodeops)

`EtcdRecords` reads them all in one range read, when first asked and on `refresh()`, and answers from that view;
its writes go through the run's `SharedState` (fenced by the lease, each with its event in the log: who, the
command, what) and update the view. Without a SharedState (a read outside the lease: status, history, plan) it
only reads. A value that fails to decode is refused by name (`RecordsError` naming the key): nothing acts on it.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from fleet.core.errors import HistoryError, RecordsError
from fleet.core.nodeops import NodeMark, decode_marks, encode_marks
from fleet.store.etcd import SERVICES, EtcdStore, SharedState, decode, revision_key
from fleet.store.history import FINAL_OUTCOMES, OUTCOMES, FinalOutcome, Revision, RevisionOutcome, same_revision
from fleet.store.lease import default_holder

NODES = "/fleet/nodes/"
SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_REVISION_KEY = re.compile(r"^([^/]+)/revisions/(\d{10})$")
_STATE_KEY = re.compile(r"^([^/]+)/state$")
_COUNTER_KEY = re.compile(r"^([^/]+)/revision$")
Items = Sequence[tuple[str, str, str, str, str]]


def state_key(service: str) -> str:
    return f"{SERVICES}{service}/state"


def mark_key(node: str) -> str:
    return f"{NODES}{node}"


def revision_doc(rev: Revision) -> dict[str, Any]:
    """A revision's value in etcd (its service and number are in its key)."""
    return {"spec_hash": rev.spec_hash, "image": rev.image, "user": rev.user, "created_at": rev.created_at,
            "finished_at": rev.finished_at, "outcome": rev.outcome, "reason": rev.reason, "spec_json": rev.spec_json}


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


def revision_of(service: str, number: int, data: Any) -> Revision:
    """A revision from its stored fields (etcd's value, or an old record file's); ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    outcome = _field(data, "outcome", str)
    if outcome not in OUTCOMES:
        raise ValueError(f"field 'outcome': expected one of {', '.join(OUTCOMES)}, got {outcome!r:.60}")
    spec_json = _field(data, "spec_json", str)
    try:
        json.loads(spec_json)
    except ValueError as exc:
        raise ValueError(f"field 'spec_json' is not JSON: {exc}") from exc
    finished = _field(data, "finished_at", (int, float), nullable=True)
    return Revision(service=service, revision=number, spec_hash=_field(data, "spec_hash", str),
                    image=_field(data, "image", str), user=_field(data, "user", str),
                    created_at=float(_field(data, "created_at", (int, float))),
                    finished_at=None if finished is None else float(finished),
                    outcome=cast(RevisionOutcome, outcome), reason=_field(data, "reason", str), spec_json=spec_json)


@dataclasses.dataclass
class View:
    """The records as read once: revisions by (service, number), decisions by service, the highest number each
    service's counter handed out."""

    revisions: dict[tuple[str, int], Revision]
    states: dict[str, dict[str, Any]]
    top: dict[str, int]


def parse_view(values: Mapping[str, Any]) -> View:
    """The view from the decoded values under /fleet/services/ (key -> JSON); RecordsError names a bad key."""
    view = View({}, {}, {})
    for key, value in values.items():
        rest = key[len(SERVICES):]
        try:
            if (m := _REVISION_KEY.match(rest)) is not None:
                number = int(m.group(2))
                view.revisions[(m.group(1), number)] = revision_of(m.group(1), number, value)
                view.top[m.group(1)] = max(view.top.get(m.group(1), 0), number)
            elif (m := _STATE_KEY.match(rest)) is not None:
                if not isinstance(value, dict):
                    raise ValueError(f"expected a JSON object, got {type(value).__name__}")
                view.states[m.group(1)] = value
            elif (m := _COUNTER_KEY.match(rest)) is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"expected a revision number, got {value!r:.60}")
                view.top[m.group(1)] = max(view.top.get(m.group(1), 0), value)
        except ValueError as exc:
            raise RecordsError(f"etcd key {key}: {exc}; refusing it") from exc
    return view


class EtcdRecords:
    """The fleet's revision history and decisions in etcd (see the module docstring); `shared` writes them."""

    def __init__(self, store: EtcdStore, shared: SharedState | None = None, *, command: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.shared = shared
        self.command = command
        self._clock = clock
        self._view: View | None = None

    async def refresh(self) -> None:
        """Read every service's records again (one range read; under the lease, one that also confirms it)."""
        if self.shared is not None:
            values = await self.shared.read(SERVICES, prefix=True)
        else:
            values = {kv.key: decode(kv) for kv in await self.store.range(SERVICES)}
        self._view = parse_view(values)

    async def reread(self, *services: str) -> None:
        """Read these services' records again (one read; under the lease, one that also confirms it): decisions
        about them are about to act, and act on them as they are now, not as this run first read them. The other
        services' stay as they were read."""
        for service in services:
            check_service(service)
        if self._view is None:
            await self.refresh()
            return
        prefixes = [f"{SERVICES}{service}/" for service in services]
        if self.shared is not None:
            values = await self.shared.read(*prefixes, prefix=True)
        else:
            values = {kv.key: decode(kv) for prefix in prefixes for kv in await self.store.range(prefix)}
        fresh, v, names = parse_view(values), self._view, set(services)
        v.revisions = {k: r for k, r in v.revisions.items() if k[0] not in names} | fresh.revisions
        for service in names:
            v.states.pop(service, None)
            v.top.pop(service, None)
        v.states.update(fresh.states)
        v.top.update(fresh.top)

    async def view(self) -> View:
        if self._view is None:
            await self.refresh()
        assert self._view is not None
        return self._view

    # ---- reading ---------------------------------------------------------------------------------------------
    async def list(self, service: str) -> builtins.list[Revision]:
        """Every revision of `service`, oldest first."""
        v = await self.view()
        return [r for (s, _), r in sorted(v.revisions.items()) if s == service]

    async def get(self, service: str, revision: int) -> Revision | None:
        return (await self.view()).revisions.get((service, revision))

    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        """The newest succeeded revision (older than `before` when given): what a rollback returns to."""
        found = [r for r in await self.list(service)
                 if r.outcome == "succeeded" and (before is None or r.revision < before)]
        return found[-1] if found else None

    async def services(self) -> builtins.list[str]:
        """Every service with at least one revision, sorted."""
        return sorted({s for s, _ in (await self.view()).revisions})

    async def state(self, service: str) -> dict[str, Any] | None:
        """The service's decision record (the engine's JSON object), or None when there is none."""
        state = (await self.view()).states.get(service)
        return None if state is None else json.loads(json.dumps(state))

    # ---- writing (under the lease) ---------------------------------------------------------------------------
    def _writer(self) -> SharedState:
        if self.shared is None:
            raise RecordsError("the fleet's records are written only under the fleet's lease")
        return self.shared

    def event(self, what: str, **fields: Any) -> dict[str, Any]:
        """An event of the log: who (this controller), the command, what changed."""
        return {"who": default_holder(), "command": self.command, "what": what, "at": self._clock(), **fields}

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int:
        """Record an applied spec as a new in-progress revision and return its number.

        Re-applying the latest succeeded revision's spec returns that revision, and re-applying the spec of a
        latest revision still in progress (its controller died) returns it too; the spec is compared whole but
        for its replica count (`same_revision`), not by its hash alone."""
        return (await self.record_many([(service, spec_json, spec_hash, image, user)]))[0]

    async def record_many(self, items: Items) -> builtins.list[int]:
        """`record` for several services, (service, spec_json, spec_hash, image, user) each; a service may
        appear once. Each new revision is one fenced transaction that takes the service's next number."""
        services = [item[0] for item in items]
        if len(set(services)) != len(services):
            raise ValueError(f"record_many: a service may appear once, got {services}")
        for service, spec_json, *_ in items:
            check_service(service)
            try:
                json.loads(spec_json)
            except ValueError as exc:
                raise ValueError(f"spec_json is not JSON: {exc}") from exc
        writer, v = self._writer(), await self.view()
        numbers: builtins.list[int] = []
        for service, spec_json, spec_hash, image, user in items:
            found = _existing(v, service, spec_json, spec_hash)
            if found is not None:
                numbers.append(found)
                continue
            rev = Revision(service, 0, spec_hash, image, user, self._clock(), None, "in-progress", "", spec_json)
            number = await writer.next_revision(service, revision_doc(rev), event=self.event(
                "revision", service=service, image=image))
            v.revisions[(service, number)] = dataclasses.replace(rev, revision=number)
            v.top[service] = max(v.top.get(service, 0), number)
            numbers.append(number)
        return numbers

    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        """Set how a revision's rollout ended; True if it was in progress and is now finished.

        A finished revision keeps its first outcome and False is returned; an unknown one is a HistoryError."""
        if outcome not in FINAL_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(FINAL_OUTCOMES)}, got {outcome!r}")
        writer, v = self._writer(), await self.view()
        current = v.revisions.get((service, revision))
        if current is None:
            raise HistoryError(f"service {service!r} has no revision {revision}")
        if current.outcome != "in-progress":
            return False
        done = dataclasses.replace(current, outcome=outcome, reason=reason, finished_at=self._clock())
        await writer.write({revision_key(service, revision): revision_doc(done)}, event=self.event(
            "finish", service=service, revision=revision, outcome=outcome, reason=reason))
        v.revisions[(service, revision)] = done
        return True

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        """Replace the service's decision record; None deletes it."""
        check_service(service)
        if state is not None:
            if not isinstance(state, dict):
                raise TypeError(f"state must be a JSON object (dict) or None, got {type(state).__name__}")
            try:
                state = json.loads(json.dumps(state, allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state of {service!r} is not JSON-serializable: {exc}") from exc
        writer, v = self._writer(), await self.view()
        event = self.event("decision", service=service,
                           decision=None if state is None else state.get("decision"))
        if state is None:
            await writer.write({}, [state_key(service)], event=event)
            v.states.pop(service, None)
        else:
            await writer.write({state_key(service): state}, event=event)
            v.states[service] = state


def _existing(v: View, service: str, spec_json: str, spec_hash: str) -> int | None:
    """The revision `record` returns for this spec without writing, if any (see EtcdRecords.record)."""
    revs = [r for (s, _), r in sorted(v.revisions.items()) if s == service]
    ok = [r for r in revs if r.outcome == "succeeded"]
    if ok and ok[-1].spec_hash == spec_hash and same_revision(ok[-1].spec_json, spec_json):
        return ok[-1].revision
    last = revs[-1] if revs else None
    if last is not None and last.revision == v.top.get(service) and last.spec_hash == spec_hash \
            and last.outcome == "in-progress" and same_revision(last.spec_json, spec_json):
        return last.revision
    return None


def check_service(service: str) -> None:
    if not SERVICE_RE.match(service):
        raise ValueError(f"service name {service!r}: lowercase letters, digits, . _ - (not first), up to 128")


# ---- node marks ----------------------------------------------------------------------------------------------

def marks_from(values: Mapping[str, Any]) -> dict[str, NodeMark]:
    """Every node's mark from the decoded values under /fleet/nodes/; RecordsError names a bad key."""
    out: dict[str, NodeMark] = {}
    for key, value in values.items():
        name = key[len(NODES):]
        try:
            out.update(decode_marks({"format": 1, "nodes": {name: value}}))
        except ValueError as exc:
            raise RecordsError(f"etcd key {key}: not a node mark: {exc}; refusing it") from exc
    return out


async def read_marks(store: EtcdStore) -> dict[str, NodeMark]:
    """Every node's mark as etcd holds it now (one range read); RecordsError when one cannot be read."""
    return marks_from({kv.key: decode(kv) for kv in await store.range(NODES)})


async def update_mark(records: EtcdRecords, node: str, change: Callable[[NodeMark], NodeMark], *,
                      by: str = "") -> dict[str, NodeMark]:
    """Apply `change` to `node`'s mark as read now under the lease, and write it back (one fenced transaction with
    its event); every node's mark after."""
    writer = records._writer()
    marks = marks_from(await writer.read(NODES, prefix=True))
    before = marks.get(node, NodeMark())
    after = change(before)
    if after == before:
        return marks
    mark = NodeMark(after.cordoned, after.draining, after.labels, after.removed, by or after.by, records._clock())
    doc = encode_marks({node: mark})["nodes"].get(node)
    event = records.event("node", node=node, mark=doc)
    if doc is None:
        await writer.write({}, [mark_key(node)], event=event)
        marks.pop(node, None)
    else:
        await writer.write({mark_key(node): doc}, event=event)
        marks[node] = mark
    return {name: m for name, m in marks.items() if not m.empty}
