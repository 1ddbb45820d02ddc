"""etcdctl's `-w json` output (3.4) read into values: keys, ranges, transactions, leases, watch batches, members
and their changes, endpoint status.

Pure parsers, each raising ValueError naming what it expected; `fleet.node.etcd` builds the commands they read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it; `value` is the raw text (JSON decoding is the store's, which names the key)."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class Range:
    """A `get`: the store's revision when read and the keys found."""

    revision: int
    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class TxnResult:
    """A transaction: which branch ran, the revision after it, and the branch's answers in order (a `Range` for
    a get, the deleted count for a del, None for a put)."""

    succeeded: bool
    revision: int
    responses: tuple[Range | int | None, ...]


@dataclass(frozen=True)
class LeaseGrant:
    id: int
    ttl: int


@dataclass(frozen=True)
class LeaseTtl:
    """A lease's remaining seconds by the server's clock; `ttl` -1 means expired or revoked."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[str, ...] = ()

    @property
    def alive(self) -> bool:
        return self.ttl > 0


@dataclass(frozen=True)
class WatchEvent:
    """One change a watch saw: a put (the key as it is now) or a delete (only key and mod_revision are set)."""

    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    """One line of `etcdctl watch -w json`: the events of one or more revisions, up to `revision`.
    `compacted` is set (and the watch ends) when the revision asked for is older than etcd still keeps: the
    reader must read everything afresh and watch from there."""

    revision: int
    events: tuple[WatchEvent, ...]
    compacted: int = 0
    canceled: bool = False


@dataclass(frozen=True)
class EtcdMember:
    """One member as `member list` shows it. A member added but not started yet has no name and no client
    URLs (only its peer URL says which node it is); a learner replicates but does not vote (no quorum part)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class MemberAdded:
    """`member add`: the new member (no name until it starts) and the members after the change."""

    member: EtcdMember
    members: tuple[EtcdMember, ...]


@dataclass(frozen=True)
class EndpointStatus:
    """`endpoint status` of one member: who it is, whom it takes for leader (0: none), its store revision and
    raft index, and whether it is a learner."""

    member_id: int
    leader: int
    revision: int
    raft_index: int
    raft_term: int
    is_learner: bool
    version: str
    db_size: int


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: not JSON ({exc.msg} at {exc.pos}): {text[:200]!r}") from exc


def _obj(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _int(doc: Mapping[str, object], name: str, what: str, default: int | None = None) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: {name}: expected an integer, got {value!r}")
    return value


def _b64(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected base64 text, got {value!r}")
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: not base64 of UTF-8 text: {value[:80]!r}") from exc


def _revision(doc: Mapping[str, object], what: str) -> int:
    return _int(_obj(doc.get("header"), f"{what}: header"), "revision", what)


def _kv(raw: object) -> KeyValue:
    doc = _obj(raw, "etcd key")
    key = _b64(doc.get("key"), "etcd key")
    what = f"etcd key {key}"
    return KeyValue(key, _b64(doc.get("value", ""), what), _int(doc, "create_revision", what),
                    _int(doc, "mod_revision", what), _int(doc, "version", what), _int(doc, "lease", what, 0))


def _range(doc: Mapping[str, object], what: str) -> Range:
    kvs = doc.get("kvs", [])
    if not isinstance(kvs, list):
        raise ValueError(f"{what}: kvs: expected a list, got {kvs!r}")
    return Range(_revision(doc, what), tuple(_kv(kv) for kv in kvs))


def parse_get(text: str) -> Range:
    return _range(_obj(_json(text, "etcdctl get"), "etcdctl get"), "etcdctl get")


def parse_watch_line(line: str) -> WatchBatch:
    what = "etcdctl watch"
    doc = _obj(_json(line, what), what)
    header = _obj(doc.get("Header"), f"{what}: Header")
    raw = doc.get("Events") or []
    if not isinstance(raw, list):
        raise ValueError(f"{what}: Events: expected a list, got {raw!r}")
    events = []
    for item in raw:
        ev = _obj(item, f"{what} event")
        kind = ev.get("type", 0)
        if kind not in (0, 1):
            raise ValueError(f"{what}: unknown event type {kind!r}")
        kv = _obj(ev.get("kv"), f"{what} event")
        key = _b64(kv.get("key"), f"{what} key")
        where = f"{what} key {key}"
        events.append(WatchEvent("put" if kind == 0 else "delete", KeyValue(
            key, _b64(kv.get("value", ""), where), _int(kv, "create_revision", where, 0),
            _int(kv, "mod_revision", where), _int(kv, "version", where, 0), _int(kv, "lease", where, 0))))
    canceled = doc.get("Canceled", False)
    if not isinstance(canceled, bool):
        raise ValueError(f"{what}: Canceled: expected a boolean, got {canceled!r}")
    # A canceled watch's header carries no revision.
    return WatchBatch(_int(header, "revision", what, 0), tuple(events), _int(doc, "CompactRevision", what, 0),
                      canceled)


def parse_txn(text: str) -> TxnResult:
    doc = _obj(_json(text, "etcdctl txn"), "etcdctl txn")
    raw = doc.get("responses", [])
    if not isinstance(raw, list):
        raise ValueError(f"etcdctl txn: responses: expected a list, got {raw!r}")
    answers: list[Range | int | None] = []
    for item in raw:
        one = _obj(_obj(item, "etcdctl txn response").get("Response"), "etcdctl txn response")
        if "ResponseRange" in one:
            answers.append(_range(_obj(one["ResponseRange"], "txn get"), "txn get"))
        elif "ResponseDeleteRange" in one:
            answers.append(_int(_obj(one["ResponseDeleteRange"], "txn del"), "deleted", "txn del", 0))
        elif "ResponsePut" in one:
            answers.append(None)
        else:
            raise ValueError(f"etcdctl txn: unknown response {sorted(one)}")
    succeeded = doc.get("succeeded", False)
    if not isinstance(succeeded, bool):
        raise ValueError(f"etcdctl txn: succeeded: expected a boolean, got {succeeded!r}")
    return TxnResult(succeeded, _revision(doc, "etcdctl txn"), tuple(answers))


def parse_lease_grant(text: str) -> LeaseGrant:
    doc = _obj(_json(text, "etcdctl lease grant"), "etcdctl lease grant")
    if doc.get("Error"):
        raise ValueError(f"etcdctl lease grant: {doc['Error']}")
    return LeaseGrant(_int(doc, "ID", "etcdctl lease grant"), _int(doc, "TTL", "etcdctl lease grant"))


def parse_keepalive(text: str) -> int:
    """The renewed lease's ttl in seconds (etcdctl exits non-zero, with no JSON, for a lease that is gone)."""
    return _int(_obj(_json(text, "etcdctl lease keep-alive"), "etcdctl lease keep-alive"), "TTL",
                "etcdctl lease keep-alive")


def parse_timetolive(text: str) -> LeaseTtl:
    what = "etcdctl lease timetolive"
    doc = _obj(_json(text, what), what)
    keys = doc.get("keys") or []
    if not isinstance(keys, list):
        raise ValueError(f"{what}: keys: expected a list, got {keys!r}")
    return LeaseTtl(_int(doc, "id", what), _int(doc, "ttl", what), _int(doc, "granted-ttl", what),
                    tuple(_b64(k, what) for k in keys))


def _member(raw: object, what: str) -> EtcdMember:
    m = _obj(raw, what)
    peers, clients = m.get("peerURLs") or [], m.get("clientURLs") or []
    if not isinstance(peers, list) or not isinstance(clients, list):
        raise ValueError(f"{what}: URLs: expected lists, got {peers!r}, {clients!r}")
    name = m.get("name", "")
    learner = m.get("isLearner", False)
    if not isinstance(learner, bool):
        raise ValueError(f"{what}: isLearner: expected a boolean, got {learner!r}")
    return EtcdMember(_int(m, "ID", what), name if isinstance(name, str) else "", tuple(map(str, peers)),
                      tuple(map(str, clients)), learner)


def _members(doc: Mapping[str, object], what: str) -> tuple[EtcdMember, ...]:
    members = doc.get("members", [])
    if not isinstance(members, list):
        raise ValueError(f"{what}: members: expected a list, got {members!r}")
    return tuple(_member(raw, what) for raw in members)


def parse_member_list(text: str) -> tuple[EtcdMember, ...]:
    """`member list`, and `member remove` (which prints the members left)."""
    what = "etcdctl member list"
    return _members(_obj(_json(text, what), what), what)


def parse_member_add(text: str) -> MemberAdded:
    what = "etcdctl member add"
    doc = _obj(_json(text, what), what)
    return MemberAdded(_member(doc.get("member"), what), _members(doc, what))


# etcdctl prints both IDs with `%16x`: an ID of fewer than 16 hex digits comes padded with spaces.
_PROMOTED = re.compile(r"^Member +([0-9a-f]{1,16}) promoted in cluster +([0-9a-f]{1,16})$")


def parse_member_promote(text: str) -> int:
    """The promoted member's ID from `member promote`'s one line (`-w simple`: etcdctl 3.4's JSON printer has
    no promote and panics after the promotion is done)."""
    line = text.strip()
    found = _PROMOTED.match(line)
    if found is None:
        raise ValueError(f"etcdctl member promote: expected 'Member ID promoted in cluster ID', got {line[:200]!r}")
    return int(found.group(1), 16)


def parse_endpoint_status(text: str) -> tuple[EndpointStatus, ...]:
    what = "etcdctl endpoint status"
    doc = _json(text, what)
    if not isinstance(doc, list):
        raise ValueError(f"{what}: expected a JSON list, got {type(doc).__name__}")
    out = []
    for item in doc:
        status = _obj(_obj(item, what).get("Status"), f"{what}: Status")
        header = _obj(status.get("header"), f"{what}: header")
        learner, version = status.get("isLearner", False), status.get("version", "")
        if not isinstance(learner, bool) or not isinstance(version, str):
            raise ValueError(f"{what}: isLearner/version: unexpected {learner!r}, {version!r}")
        out.append(EndpointStatus(_int(header, "member_id", what), _int(status, "leader", what, 0),
                                  _int(header, "revision", what), _int(status, "raftIndex", what, 0),
                                  _int(status, "raftTerm", what, 0), learner, version,
                                  _int(status, "dbSize", what, 0)))
    return tuple(out)


LEASE_GONE = "requested lease not found"


def error_line(stderr: str) -> str:
    """etcdctl's reason for a failure, in one line: its last `Error:` line (the gRPC retry warnings before it
    are noise), else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["no output"])[-1]


# etcd's JSON gateway (grpc-gateway on the member's client port, 3.4): the same values from its answers. Its
# JSON differs from etcdctl's: 64-bit integers are strings, a txn's answers are `response_range`/`response_put`/
# `response_delete_range`, a lease's fields are `ID`/`TTL`/`grantedTTL`, a field at its zero value is left out
# (a txn's false `succeeded`, a gone lease's TTL), and a refusal is an HTTP error status with
# `{"error", "message", "code"}` (the gRPC status code).

@dataclass(frozen=True)
class GatewayError:
    """The gateway's refusal: the gRPC status `code` (5 not found, 4 deadline exceeded, 14 unavailable…) and
    etcd's message (`etcdserver: requested lease not found`)."""

    code: int
    message: str

    @property
    def unavailable(self) -> bool:
        """The member could not serve it (no leader, no quorum in time): another member may."""
        text = self.message.lower()
        return self.code in (4, 14) or any(s in text for s in ("no leader", "request timed out",
                                                               "context deadline exceeded"))


def _int64(doc: Mapping[str, object], name: str, what: str, default: int | None = 0) -> int:
    value = doc.get(name, default)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: {name}: expected an integer, got {value!r}")
    return value


def _gw_header_revision(doc: Mapping[str, object], what: str) -> int:
    return _int64(_obj(doc.get("header"), f"{what}: header"), "revision", what, None)


def _gw_kv(raw: object) -> KeyValue:
    doc = _obj(raw, "etcd key")
    key = _b64(doc.get("key"), "etcd key")
    what = f"etcd key {key}"
    return KeyValue(key, _b64(doc.get("value", ""), what), _int64(doc, "create_revision", what),
                    _int64(doc, "mod_revision", what), _int64(doc, "version", what), _int64(doc, "lease", what))


def _gw_range(doc: Mapping[str, object], what: str) -> Range:
    kvs = doc.get("kvs", [])
    if not isinstance(kvs, list):
        raise ValueError(f"{what}: kvs: expected a list, got {kvs!r}")
    return Range(_gw_header_revision(doc, what), tuple(_gw_kv(kv) for kv in kvs))


def gateway_range(text: str) -> Range:
    """`POST /v3/kv/range`."""
    return _gw_range(_obj(_json(text, "etcd range"), "etcd range"), "etcd range")


def gateway_count(text: str) -> int:
    """The number of keys a `/v3/kv/range` matched (whatever its limit; `count_only` answers only that)."""
    doc = _obj(_json(text, "etcd range"), "etcd range")
    count = _int64(doc, "count", "etcd range")
    if count < 0:
        raise ValueError(f"etcd range: count: expected >= 0, got {count}")
    return count


def gateway_txn(text: str) -> TxnResult:
    """`POST /v3/kv/txn`."""
    what = "etcd txn"
    doc = _obj(_json(text, what), what)
    raw = doc.get("responses", [])
    if not isinstance(raw, list):
        raise ValueError(f"{what}: responses: expected a list, got {raw!r}")
    answers: list[Range | int | None] = []
    for item in raw:
        one = _obj(item, f"{what} response")
        if "response_range" in one:
            answers.append(_gw_range(_obj(one["response_range"], "txn get"), "txn get"))
        elif "response_delete_range" in one:
            answers.append(_int64(_obj(one["response_delete_range"], "txn del"), "deleted", "txn del"))
        elif "response_put" in one:
            answers.append(None)
        else:
            raise ValueError(f"{what}: unknown response {sorted(one)}")
    succeeded = doc.get("succeeded", False)
    if not isinstance(succeeded, bool):
        raise ValueError(f"{what}: succeeded: expected a boolean, got {succeeded!r}")
    return TxnResult(succeeded, _gw_header_revision(doc, what), tuple(answers))


def gateway_grant(text: str) -> LeaseGrant:
    """`POST /v3/lease/grant`."""
    doc = _obj(_json(text, "etcd lease grant"), "etcd lease grant")
    if doc.get("error"):
        raise ValueError(f"etcd lease grant: {doc['error']}")
    return LeaseGrant(_int64(doc, "ID", "etcd lease grant", None), _int64(doc, "TTL", "etcd lease grant", None))


def gateway_keepalive(text: str) -> int:
    """The renewed ttl from `POST /v3/lease/keepalive` (a stream: one `{"result": …}` line per request sent);
    0 for a lease that is gone (etcd answers it with no TTL)."""
    what = "etcd lease keep-alive"
    line = text.strip().split("\n", 1)[0]
    doc = _obj(_json(line, what), what)
    if "error" in doc:
        err = _obj(doc["error"], what)
        raise ValueError(f"{what}: {err.get('message', err)}")
    return _int64(_obj(doc.get("result"), f"{what}: result"), "TTL", what)


def gateway_timetolive(text: str) -> LeaseTtl:
    """`POST /v3/lease/timetolive` (ttl -1: expired or revoked)."""
    what = "etcd lease timetolive"
    doc = _obj(_json(text, what), what)
    keys = doc.get("keys") or []
    if not isinstance(keys, list):
        raise ValueError(f"{what}: keys: expected a list, got {keys!r}")
    return LeaseTtl(_int64(doc, "ID", what, None), _int64(doc, "TTL", what), _int64(doc, "grantedTTL", what),
                    tuple(_b64(k, what) for k in keys))


def gateway_revoke(text: str) -> bool:
    """`POST /v3/lease/revoke` done (its answer is the header alone)."""
    _gw_header_revision(_obj(_json(text, "etcd lease revoke"), "etcd lease revoke"), "etcd lease revoke")
    return True


def gateway_error(text: str) -> GatewayError:
    """The body of an answer with an error status."""
    what = "etcd error"
    doc = _obj(_json(text, what), what)
    message = doc.get("message") or doc.get("error") or ""
    if not isinstance(message, str):
        raise ValueError(f"{what}: message: expected text, got {message!r}")
    return GatewayError(_int64(doc, "code", what), message)
