"""The fleet's record as read once: the copies listed by the record nodes merged into a Snapshot (or the local
cache standing in), and the pure steps of a write on it (the next revision, the repairs a node needs, the result).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.store.history import History, Revision, same_revision
from fleet.store.recordfiles import REV_RE, Record, RevisionRecord, StateRecord, decode_record, path_of


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
            rev_match = REV_RE.match(path)
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


def from_cache(cache: History, errors: Mapping[str, str]) -> Snapshot:
    """The controller's local cache standing in when no record node answered, with a warning saying so."""
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


def next_revision(snap: Snapshot, service: str, spec_json: str, spec_hash: str, image: str, user: str,
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


def repairs(snap: Snapshot, node: str, skip: Mapping[str, Record]) -> list[tuple[str, Record]]:
    """The merged records that `node` answered without (or with an older or unreadable copy of)."""
    if node not in snap.copies:
        return []  # it did not answer the read: what it holds is unknown
    held = snap.copies[node]
    out: list[tuple[str, Record]] = []
    winners: list[Record] = [*snap.revisions.values(), *snap.states.values()]
    for record in winners:
        path = path_of(record)
        if path not in skip and held.get(path, -1.0) < record.updated_at:
            out.append((path, record))
    return out


def with_written(snap: Snapshot, records: Sequence[Record], written_on: Sequence[str]) -> Snapshot:
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
            copies[n].update({path_of(r): r.updated_at for r in everything})
    return Snapshot(revisions, states, top, copies, snap.answered, snap.errors, snap.warnings, snap.from_cache)
