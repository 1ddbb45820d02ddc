"""etcd 3.4's JSON gateway, as values: the requests fleet's shared state makes (`POST /v3/kv/range`, `/v3/kv/txn`,
`/v3/lease/…`), the HTTP/1.1 bytes that carry one, and the head of its answer. No I/O here: fleet.store.etcd_http
sends them through an SSH tunnel to the member's loopback client port, `fleet.node.etcd_json`'s `gateway_*`
parsers read the answers.

The gateway is on by default in etcd 3.4 (`--enable-grpc-gateway`, verified on 3.4.23: `curl -X POST
http://127.0.0.1:2379/v3/kv/range -d '{"key": "Zm9v"}'` answers on a member started with no flag for it). Its
JSON: keys and values base64; 64-bit integers as strings (numbers are accepted too); enums by name; a compare's
value in the field its target names (`create_revision`, `mod_revision`, `version`, `value`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet.node.etcd import Compare, Delete, Get, Op, Put, lease_hex
from fleet.node.etcd import _key as valid_key

_TARGETS = {"create": ("CREATE", "create_revision"), "mod": ("MOD", "mod_revision"),
            "version": ("VERSION", "version"), "value": ("VALUE", "value")}
_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


@dataclass(frozen=True)
class Request:
    """One gateway call: its path, its JSON body, and what it is for messages (`txn`, `lease grant`…)."""

    path: str
    body: dict[str, object] = field(hash=False)
    what: str


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    """The `range_end` that makes a range every key starting with `prefix` (etcdctl's `--prefix`): the prefix
    with its last byte below 0xff incremented and what follows dropped, base64."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64("\0")  # every key
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _range_body(key: str, prefix: bool) -> dict[str, object]:
    body: dict[str, object] = {"key": _b64(valid_key(key))}
    if prefix:
        body["range_end"] = prefix_end(key)
    return body


def range_request(key: str, *, prefix: bool = False, by_create: bool = False, keys_only: bool = False,
                  limit: int = 0, count_only: bool = False) -> Request:
    """`get KEY` (or every key under a prefix), oldest first by create revision when `by_create`."""
    body = _range_body(key, prefix)
    if by_create:
        body |= {"sort_target": "CREATE", "sort_order": "ASCEND"}
    if keys_only:
        body["keys_only"] = True
    if count_only:
        body["count_only"] = True
    if limit:
        body["limit"] = str(limit)
    return Request("/v3/kv/range", body, "get")


def compare(c: Compare) -> dict[str, object]:
    target, name = _TARGETS[c.target]
    value = _b64(str(c.value)) if c.target == "value" else str(int(c.value))
    return {"target": target, "result": _RESULTS[c.op], "key": _b64(valid_key(c.key)), name: value}


def operation(op: Op) -> dict[str, object]:
    if isinstance(op, Put):
        put: dict[str, object] = {"key": _b64(valid_key(op.key)), "value": _b64(op.value)}
        if op.lease is not None:
            lease_hex(op.lease)  # refuses a lease ID that is not one, as etcdctl's path does
            put["lease"] = str(op.lease)
        return {"request_put": put}
    if isinstance(op, Get):
        return {"request_range": _range_body(op.key, op.prefix)}
    if isinstance(op, Delete):
        return {"request_delete_range": {"key": _b64(valid_key(op.key))}}
    raise TypeError(f"not a transaction operation: {op!r}")


def txn_request(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Request:
    return Request("/v3/kv/txn", {"compare": [compare(c) for c in compares],
                                  "success": [operation(o) for o in success],
                                  "failure": [operation(o) for o in failure]}, "txn")


def grant_request(ttl_s: int) -> Request:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
        raise ValueError(f"lease ttl: expected whole seconds >= 1, got {ttl_s!r}")
    return Request("/v3/lease/grant", {"TTL": str(ttl_s)}, "lease grant")


def _lease(lease_id: int) -> str:
    lease_hex(lease_id)  # the same check as the etcdctl commands'
    return str(lease_id)


def keepalive_request(lease_id: int) -> Request:
    return Request("/v3/lease/keepalive", {"ID": _lease(lease_id)}, "lease keep-alive")


def timetolive_request(lease_id: int) -> Request:
    return Request("/v3/lease/timetolive", {"ID": _lease(lease_id), "keys": True}, "lease timetolive")


def revoke_request(lease_id: int) -> Request:
    return Request("/v3/lease/revoke", {"ID": _lease(lease_id)}, "lease revoke")


def render(request: Request, *, port: int, timeout_s: int) -> bytes:
    """The request as HTTP/1.1 bytes, kept alive. `Grpc-Timeout` makes the member give up after `timeout_s`
    (answering 504, gRPC code 4) rather than wait for a quorum that does not come."""
    body = json.dumps(request.body, separators=(",", ":")).encode()
    head = (f"POST {request.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Grpc-Timeout: {timeout_s}S\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def no_gateway(status: int, body: str) -> bool:
    """The member serves no gateway: Go's own `404 page not found`, not a gateway error (whose body is JSON).
    A member started from a config file without `enable-grpc-gateway` answers so (etcd 3.4.23, verified)."""
    return status == 404 and not body.lstrip().startswith("{")


@dataclass(frozen=True)
class Head:
    """An answer's status line and the headers that say how its body is framed."""

    status: int
    reason: str
    length: int | None
    chunked: bool
    close: bool


_STATUS = re.compile(r"^HTTP/1\.[01] ([0-9]{3}) ?(.*)$")
HEAD_LIMIT = 16 * 1024
BODY_LIMIT = 64 * 1024 * 1024


def parse_head(raw: bytes) -> Head:
    """The head of an answer, up to and with its blank line; ValueError when it is not HTTP/1.1."""
    lines = raw.decode("latin-1").split("\r\n")
    found = _STATUS.match(lines[0])
    if found is None:
        raise ValueError(f"not an HTTP answer: {lines[0][:120]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"HTTP header without ':': {line[:120]!r}")
        headers[name.strip().lower()] = value.strip()
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length")
    if length is not None and not length.isdigit():
        raise ValueError(f"HTTP Content-Length: not a number: {length[:40]!r}")
    size = None if length is None or chunked else int(length)
    if size is not None and size > BODY_LIMIT:
        raise ValueError(f"HTTP answer of {size} bytes: more than {BODY_LIMIT} expected at most")
    if size is None and not chunked:
        raise ValueError("HTTP answer with neither Content-Length nor chunked encoding")
    return Head(int(found.group(1)), found.group(2), size, chunked,
                headers.get("connection", "").lower() == "close")


def chunk_size(line: bytes) -> int:
    """The size on a chunk's first line (hex, extensions after ';' ignored)."""
    text = line.decode("latin-1").split(";", 1)[0].strip()
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", text):
        raise ValueError(f"HTTP chunk size: not hex: {text[:40]!r}")
    size = int(text, 16)
    if size > BODY_LIMIT:
        raise ValueError(f"HTTP chunk of {size} bytes: more than {BODY_LIMIT} expected at most")
    return size
