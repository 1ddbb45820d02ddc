"""One client of the fleet's etcd through the record nodes: each call goes to the member on a record node's
loopback, by its JSON gateway over an SSH tunnel (fleet/store/etcd_http.py: no process on the node), or by
`etcdctl` run on the node where its sshd forwards no TCP (`AllowTcpForwarding no`), and for the commands the
gateway is not used for (membership, watch).

A node that cannot be reached (or whose member has no quorum) gives way to the next record node. What etcd
refuses becomes `RecordsError` naming the call and the node; a lease that is gone is a value, not an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fleet.core.errors import AuthError, ConnectError, HostKeyError, RecordsError, StoreUnreachable
from fleet.core.model import Node
from fleet.node import etcd as E
from fleet.node import etcd_gateway as G
from fleet.node import etcd_json as J
from fleet.store.etcd_http import Gateway, NoAnswer
from fleet.store.nodes import clean, failure
from fleet.transport import Pool

T = TypeVar("T")


@dataclass(frozen=True)
class Ask(Generic[T]):
    """One call, both ways: the gateway request and its parser, the etcdctl command and its parser. `gone` is
    the value when etcd says the lease is not found (None: that is an error)."""

    request: G.Request
    read: Callable[[str], T]
    argv: list[str]
    parse: Callable[[str], T]
    stdin: str | None = None
    gone: T | None = None


@dataclass(frozen=True)
class _Miss:
    """No answer from this node: why, and whether the request may have reached etcd."""

    why: str
    sent: bool


class EtcdStore:
    """The fleet's etcd through `nodes` (record nodes) over `pool`. Each call goes to the node that answered
    last; a node that cannot be reached (or whose member has no quorum) gives way to the next. `gateway=False`
    uses etcdctl everywhere (as before the gateway; kept for measuring)."""

    def __init__(self, pool: Pool, nodes: Sequence[Node], *, port: int = E.CLIENT_PORT, timeout: float = 10.0,
                 command_timeout_s: int = E.COMMAND_TIMEOUT_S, gateway: bool = True) -> None:
        if not nodes:
            raise ValueError("the fleet's shared state needs at least one record node")
        self.pool = pool
        self.nodes = tuple(nodes)
        self.timeout = timeout
        self.at = E.Endpoint(port, command_timeout_s)
        # A request is bounded like etcdctl's: the member's own deadline (it answers 504 then), plus a second
        # for one that listens but never answers.
        self.gateway = (Gateway(pool, port, timeout=min(timeout, command_timeout_s + 1), timeout_s=command_timeout_s)
                        if gateway else None)
        # Nodes reached by etcdctl from now on, and why: their sshd forwards no TCP, or their member serves no
        # gateway (started before fleet turned it on: it keeps running as it was until restarted).
        self.by_etcdctl: dict[str, str] = {}
        self._current = 0
        # Nodes whose member was seen listening (etcdctl's path): probed once, since a member that is not there
        # costs etcdctl its whole --command-timeout (it retries the dial until then) while a probe answers at once.
        self._listening: set[str] = set()

    @property
    def node(self) -> Node:
        """The record node calls go to now."""
        return self.nodes[self._current]

    # ---- one call on one node ------------------------------------------------------------------------------

    async def _etcdctl(self, node: Node, argv: list[str], stdin: str | None) -> tuple[str, str, int] | _Miss:
        """(stdout, stderr, exit status) of etcdctl on `node`, or why its member did not answer. A command that
        certainly did not reach etcd (no SSH connection, the member refused the connection) is not `sent`; one
        whose outcome is unknown (the SSH command or etcd's request timed out: a write may still land) is."""
        if not await self._listens(node):
            return _Miss(f"no etcd member listens on 127.0.0.1:{self.at.port}", False)
        result = await self.pool.run(node, argv, stdin=stdin, timeout=self.timeout)
        if result.error is None and (result.exit_status == 0 or not (
                result.exit_status == E.TIMED_OUT or _unavailable(result.stderr))):
            return result.stdout, result.stderr, result.exit_status or 0
        why = ("etcdctl timed out" if result.error is None and result.exit_status == E.TIMED_OUT
               else failure(result) or "no answer")
        sent = not isinstance(result.failure, ConnectError | HostKeyError | AuthError) and not (
            result.error is None and _refused(result.stderr))
        return _Miss(why, sent)

    async def _listens(self, node: Node) -> bool:
        """False only when the node answered that nothing listens on the client port (the request then certainly
        never reaches etcd); a node that cannot say (no /proc, no answer) is tried with etcdctl as before."""
        if node.name in self._listening:
            return True
        result = await self.pool.run(node, E.listening_argv(self.at.port), timeout=self.timeout)
        answer = result.stdout.strip() if result.error is None and result.exit_status == 0 else ""
        if answer == "closed":
            return False
        if answer == "listening":
            self._listening.add(node.name)
        return True

    async def _by_gateway(self, node: Node, ask: Ask[T]) -> T | _Miss | None:
        """The answer through the gateway; None when this node's sshd forwards no TCP or its member serves no
        gateway (use etcdctl)."""
        assert self.gateway is not None
        reply = await self.gateway.send(node, ask.request)
        if isinstance(reply, NoAnswer):
            if reply.prohibited:
                self.by_etcdctl[node.name] = reply.why
                return None
            return _Miss(reply.why, reply.sent)
        if G.no_gateway(reply.status, reply.body):
            self.by_etcdctl[node.name] = f"its etcd member serves no JSON gateway ({clean(reply.body, 80)})"
            return None
        what = f"etcd {ask.request.what} on {node.name}"
        try:
            if reply.status == 200:
                return ask.read(reply.body)
            refusal = J.gateway_error(reply.body)
        except ValueError as exc:
            raise RecordsError(f"{what}: {exc}") from exc
        if refusal.unavailable:
            return _Miss(f"etcd: {clean(refusal.message, 200)}", True)
        if ask.gone is not None and E.LEASE_GONE in refusal.message:
            return ask.gone
        raise RecordsError(f"{what}: {clean(refusal.message, 200)}")

    async def _by_etcdctl(self, node: Node, argv: list[str], parse: Callable[[str], T], stdin: str | None,
                          gone: T | None = None) -> T | _Miss:
        done = await self._etcdctl(node, argv, stdin)
        if isinstance(done, _Miss):
            return done
        stdout, stderr, status = done
        what = f"etcdctl {_what(argv)} on {node.name}"
        if status != 0 and gone is not None and E.LEASE_GONE in stderr:
            return gone
        if status != 0:
            raise RecordsError(f"{what}: {clean(E.error_line(stderr), 200)}")
        try:
            return parse(stdout)
        except ValueError as exc:
            raise RecordsError(f"{what}: {exc}") from exc

    async def _first(self, attempt: Callable[[Node], Awaitable[T | _Miss]], what: str, retry: bool) -> T:
        """The answer from the first record node whose member answered. A request that may have reached etcd
        without an answer moves on only when `retry` (reads, renewals); a transaction raises instead, so a
        write is never sent twice."""
        problems: list[str] = []
        for step in range(len(self.nodes)):
            index = (self._current + step) % len(self.nodes)
            node = self.nodes[index]
            got = await attempt(node)
            if not isinstance(got, _Miss):
                self._current = index
                return got
            problems.append(f"{node.name}: {got.why}")
            if got.sent and not retry:
                raise RecordsError(f"{what} on {node.name}: no answer ({got.why}); it may still take effect")
        raise StoreUnreachable(f"the fleet's shared state could not be reached: {'; '.join(problems)}")

    async def ask(self, ask: Ask[T], *, retry: bool = True) -> T:
        """`ask` through the gateway, or etcdctl on a node where the gateway cannot be used (see `_first`)."""
        async def attempt(node: Node) -> T | _Miss:
            if self.gateway is not None and node.name not in self.by_etcdctl:
                got = await self._by_gateway(node, ask)
                if got is not None:
                    return got
            return await self._by_etcdctl(node, ask.argv, ask.parse, ask.stdin, ask.gone)

        return await self._first(attempt, f"etcd {ask.request.what}", retry)

    async def call(self, argv: list[str], parse: Callable[[str], T], stdin: str | None = None, *,
                   retry: bool = True) -> T:
        """An etcdctl command (membership changes, status) on the first record node whose member answered."""
        return await self._first(lambda node: self._by_etcdctl(node, argv, parse, stdin), f"etcdctl {_what(argv)}",
                                 retry)

    # ---- the calls -----------------------------------------------------------------------------------------

    async def txn(self, compares: Sequence[E.Compare], success: Sequence[E.Op],
                  failure: Sequence[E.Op] = ()) -> E.TxnResult:
        return await self.ask(Ask(G.txn_request(compares, success, failure), J.gateway_txn, E.txn_argv(at=self.at),
                                  E.parse_txn, E.txn_input(compares, success, failure)), retry=False)

    async def read_range(self, key: str, *, prefix: bool = False, by_create: bool = False) -> E.Range:
        """The key (or every key under a prefix, oldest first when `by_create`) with the store's revision."""
        return await self.ask(Ask(G.range_request(key, prefix=prefix, by_create=by_create), J.gateway_range,
                                  E.get_argv(key, prefix=prefix, by_create=by_create, at=self.at), E.parse_get))

    async def get(self, key: str) -> E.KeyValue | None:
        found = await self.read_range(key)
        return found.kvs[0] if found.kvs else None

    async def read(self, key: str) -> Any:
        """The JSON value of `key`, or None when it does not exist."""
        kv = await self.get(key)
        return None if kv is None else decode(kv)

    async def count(self, prefix: str) -> int:
        """How many keys are under `prefix` (no values read)."""
        argv = E.etcdctl("get", "--prefix", "--keys-only", "--limit=1", "--", prefix, at=self.at)
        # A range answer counts every key it matched, whatever its limit.
        return await self.ask(Ask(G.range_request(prefix, prefix=True, count_only=True), J.gateway_count, argv,
                                  _count))

    async def oldest_keys(self, prefix: str, limit: int) -> tuple[E.KeyValue, ...]:
        """The `limit` oldest keys under `prefix` (by create revision), without their values."""
        argv = E.etcdctl("get", "--prefix", "--keys-only", "--sort-by=CREATE", "--order=ASCEND", f"--limit={limit}",
                         "--", prefix, at=self.at)
        request = G.range_request(prefix, prefix=True, by_create=True, keys_only=True, limit=limit)
        return (await self.ask(Ask(request, J.gateway_range, argv, E.parse_get))).kvs

    async def range(self, prefix: str) -> tuple[E.KeyValue, ...]:
        """Every key under `prefix`, oldest first (by create revision)."""
        return (await self.read_range(prefix, prefix=True, by_create=True)).kvs

    async def follow(self, prefix: str, from_revision: int) -> AsyncIterator[E.WatchBatch]:
        """Every change under `prefix` from `from_revision` on, as etcd orders them: what happened since that
        revision first, then each change as it lands (`etcdctl watch` on the current node). It ends when the
        node's connection does (follow again from the last batch's revision + 1, through another record node if
        need be), and raises `RecordsError` when etcd no longer keeps `from_revision` (compacted): read afresh,
        then follow from that read's revision. Use it with `contextlib.aclosing` so leaving the loop closes the
        SSH channel at once."""
        argv = E.watch_argv(prefix, from_revision, at=self.at)
        async with self.pool.stream(self.node, argv, merge_stderr=False) as stream:
            async for line in stream:
                if not line.strip():
                    continue
                try:
                    batch = E.parse_watch_line(line)
                except ValueError as exc:
                    raise RecordsError(f"etcdctl watch on {self.node.name}: {exc}") from exc
                if batch.canceled:
                    raise RecordsError(f"watch of {prefix} from revision {from_revision}: etcd keeps history only "
                                       f"from revision {batch.compacted + 1} on (compacted); read afresh")
                yield batch

    async def grant(self, ttl_s: int) -> E.LeaseGrant:
        return await self.ask(Ask(G.grant_request(ttl_s), J.gateway_grant, E.lease_grant_argv(ttl_s, at=self.at),
                                  E.parse_lease_grant))

    async def keepalive(self, lease_id: int) -> int | None:
        """The lease's renewed ttl, or None when it is gone (expired or revoked)."""
        ttl = await self.ask(Ask(G.keepalive_request(lease_id), J.gateway_keepalive,
                                 E.lease_keepalive_argv(lease_id, at=self.at), E.parse_keepalive, gone=0))
        return ttl if ttl > 0 else None

    async def timetolive(self, lease_id: int) -> E.LeaseTtl:
        return await self.ask(Ask(G.timetolive_request(lease_id), J.gateway_timetolive,
                                  E.lease_timetolive_argv(lease_id, at=self.at), E.parse_timetolive))

    async def revoke(self, lease_id: int) -> bool:
        """Revoke a lease (its keys go with it); False when it was already gone."""
        return await self.ask(Ask(G.revoke_request(lease_id), J.gateway_revoke,
                                  E.lease_revoke_argv(lease_id, at=self.at), _revoked, gone=False))


def decode(kv: E.KeyValue) -> Any:
    """A value's JSON, or `RecordsError` naming the key: a value that fails to decode is never acted on."""
    try:
        return json.loads(kv.value)
    except json.JSONDecodeError as exc:
        raise RecordsError(f"etcd key {kv.key}: not a JSON value ({exc.msg} at {exc.pos}); refusing it") from exc


def _revoked(_stdout: str) -> bool:
    return True


def _what(argv: list[str]) -> str:
    """The etcdctl command of an argv, for messages: `txn`, `lease grant`, `get`…"""
    words = argv[argv.index("json") + 1:] if "json" in argv else argv
    return " ".join(w for w in words[:2] if not w.startswith("-"))


def _unavailable(stderr: str) -> bool:
    """etcdctl got no answer from this node's member (down, or cut off from the quorum): another record node's
    member may answer."""
    text = stderr.lower()
    return _refused(stderr) or any(s in text for s in ("context deadline exceeded", "request timed out", "no leader"))


def _refused(stderr: str) -> bool:
    """The request certainly never reached etcd: no member listening, or no etcdctl on the node."""
    text = stderr.lower()
    return any(s in text for s in ("connection refused", "etcdctl: not found", "command not found"))


def _count(text: str) -> int:
    """The total count of a `get -w json` answer (etcd leaves a zero out)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from exc
    count = doc.get("count", 0) if isinstance(doc, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"no count in {text[:120]!r}")
    return count
