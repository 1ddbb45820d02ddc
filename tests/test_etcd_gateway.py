"""etcd's JSON gateway as values (fleet.node.etcd_gateway, the `gateway_*` parsers of fleet.node.etcd_json) on
answers recorded from a real etcd 3.4.23 (tests/etcd_gateway_record.py), and the store through it: over an SSH
tunnel to a real member with no process started on the node, and by etcdctl where the node's sshd forwards no TCP
(a real asyncssh server answering as OpenSSH 9.2 does with `AllowTcpForwarding no`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_local import ETCD, LocalEtcd, _plain
from sshserver import SSHFarm

from fleet.core.errors import RecordsError
from fleet.node import etcd as E
from fleet.node import etcd_gateway as G
from fleet.node import etcd_json as J
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.transport import Pool
from fleet.transport.tunnel import KEPT

DATA = Path(__file__).parent / "data" / "etcd_gateway"
RECORDED = sorted(p.stem for p in DATA.glob("*.json"))
needs_etcd = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_answers_parse_to_what_was_checked(name: str) -> None:
    doc = recorded(name)
    assert doc["source"].startswith("recorded by `python tests/etcd_gateway_record.py`")
    if doc["parser"] == "no_gateway":
        assert G.no_gateway(doc["status"], doc["body"]) is doc["expect"] is True
        return
    assert _plain(getattr(J, doc["parser"])(doc["body"])) == doc["expect"]


def test_what_the_recorded_answers_say() -> None:
    take, held = J.gateway_txn(recorded("txn_take")["body"]), J.gateway_txn(recorded("txn_held")["body"])
    assert take.succeeded and take.responses == (None,)
    # etcd leaves a false `succeeded` out; the failure branch's get is the holder's key, its lease attached.
    assert not held.succeeded and isinstance(held.responses[0], E.Range)
    kv = held.responses[0].kvs[0]
    assert kv.key == "/fleet/lock" and json.loads(kv.value)["command"] == "fleet apply\nweb é ✓"
    assert kv.lease == J.gateway_grant(recorded("lease_grant")["body"]).id and kv.create_revision == take.revision
    assert [k.key for k in J.gateway_range(recorded("range_oldest_keys")["body"]).kvs] == [
        "/fleet/events/0001", "/fleet/events/0002"]
    assert all(k.value == "" for k in J.gateway_range(recorded("range_oldest_keys")["body"]).kvs)
    assert J.gateway_range(recorded("range_missing")["body"]).kvs == ()
    assert J.gateway_txn(recorded("txn_delete")["body"]).responses == (1,)
    assert J.gateway_keepalive(recorded("keepalive")["body"]) == 60
    assert J.gateway_keepalive(recorded("keepalive_gone")["body"]) == 0  # a gone lease: no TTL at all
    assert not J.gateway_timetolive(recorded("timetolive_gone")["body"]).alive
    assert J.gateway_timetolive(recorded("timetolive")["body"]).keys == ("/fleet/lock",)
    # Which refusals another member may serve (no quorum) and which it would refuse the same.
    gone, many, no_quorum = (J.gateway_error(recorded(n)["body"]) for n in ("revoke_gone", "txn_too_many",
                                                                              "txn_no_quorum"))
    assert E.LEASE_GONE in gone.message and not gone.unavailable
    assert many.code == 3 and not many.unavailable
    assert recorded("txn_no_quorum")["status"] == 504 and no_quorum.unavailable


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"header": {}}', '{"header": {"revision": "x1"}}',
                                  '{"header": {"revision": "1"}, "kvs": 3}',
                                  '{"header": {"revision": "1"}, "kvs": [{"key": "!!"}]}',
                                  '{"header": {"revision": "1"}, "responses": [{"response_what": {}}]}'])
def test_foreign_answers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        J.gateway_range(text) if "responses" not in text else J.gateway_txn(text)


def test_txn_request_is_the_gateway_json_of_the_compares_and_ops() -> None:
    req = G.txn_request([E.Compare("create", "/fleet/lock", 7), E.Compare("value", "/k", "v é", "!=")],
                        [E.Put("/fleet/lock", '{"a": 1}', 0x10), E.Get("/fleet/events/", True)], [E.Delete("/x")])
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    assert req.path == "/v3/kv/txn" and req.what == "txn"
    assert req.body == {
        "compare": [{"target": "CREATE", "result": "EQUAL", "key": b64("/fleet/lock"), "create_revision": "7"},
                    {"target": "VALUE", "result": "NOT_EQUAL", "key": b64("/k"), "value": b64("v é")}],
        "success": [{"request_put": {"key": b64("/fleet/lock"), "value": b64('{"a": 1}'), "lease": "16"}},
                    {"request_range": {"key": b64("/fleet/events/"), "range_end": b64("/fleet/events0")}}],
        "failure": [{"request_delete_range": {"key": b64("/x")}}]}
    with pytest.raises(ValueError, match="etcd key"):
        G.txn_request([], [E.Get('bad"key')])
    with pytest.raises(ValueError, match="lease id"):
        G.keepalive_request(0)


def test_prefix_end_is_etcdctls() -> None:
    assert base64.b64decode(G.prefix_end("/a/")) == b"/a0"
    # On bytes: é's UTF-8 is c3 a9, ÿ's c3 bf; the last byte goes up by one.
    assert base64.b64decode(G.prefix_end("é")) == b"\xc3\xaa"
    assert base64.b64decode(G.prefix_end("aÿ")) == b"a\xc3\xc0"


def test_request_bytes_and_answer_heads() -> None:
    raw = G.render(G.grant_request(15), port=2379, timeout_s=5)
    assert raw == (b"POST /v3/lease/grant HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\n"
                   b'Grpc-Timeout: 5S\r\nContent-Length: 12\r\n\r\n{"TTL":"15"}')
    # Heads as etcd 3.4.23 sent them (a raw socket, keep-alive): a sized answer and a chunked one with a trailer.
    sized = G.parse_head(b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n"
                         b"Grpc-Metadata-Content-Type: application/grpc\r\nDate: Sat, 05 Dec 2026 00:52:45 GMT\r\n"
                         b"Content-Length: 152\r\n\r\n")
    assert (sized.status, sized.length, sized.chunked, sized.close) == (200, 152, False, False)
    chunked = G.parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nTrailer: "
                           b"Grpc-Trailer-Content-Type\r\nDate: Sat, 05 Dec 2026 00:52:46 GMT\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
    assert (chunked.status, chunked.length, chunked.chunked) == (404, None, True)
    assert G.chunk_size(b"6c\r\n") == 0x6C and G.chunk_size(b"0\r\n") == 0
    for bad in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"):
        with pytest.raises(ValueError):
            G.parse_head(bad)
    with pytest.raises(ValueError, match="not hex"):
        G.chunk_size(b"zz\r\n")


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    with LocalEtcd(prefix="hxg") as server:
        yield server


async def _a_run(store: EtcdStore) -> None:
    """What a run does: take the lease, renew and check it, write a record and an event, read, release."""
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        await lease.renew()
        await lease.check()
        state = SharedState(store, lease)
        number = await state.next_revision("web", {"image": "web:1"}, event={"what": "apply"})
        assert [n for n, _ in await state.revisions("web")][-1] == number
        assert await store.count("/fleet/events/") >= 1
        assert (await store.timetolive(lease.lease_id or 0)).alive
    assert await store.get("/fleet/lock") is None
    assert await store.revoke(lease.lease_id or 1) is False  # already gone with the release


@needs_etcd
async def test_calls_go_through_a_tunnel_and_start_nothing_on_the_node(etcd: LocalEtcd, tmp_path: Path) -> None:
    async with SSHFarm(tmp_path / "farm") as farm, Pool(connect_attempts=1) as pool:
        node = (await farm.start(1))[0]
        store = EtcdStore(pool, [node], port=etcd.port)
        await _a_run(store)
        await _a_run(store)
        server = farm.servers[node.name]
        assert server.commands == [] and store.by_etcdctl == {}
        # The channels are kept by the pool and reused: a handful for two whole runs, never one per call, and
        # another client of the same pool (a watcher's next round) uses them too.
        assert 1 <= server.tunnels <= KEPT
        opened = server.tunnels
        await _a_run(EtcdStore(pool, [node], port=etcd.port))
        assert server.tunnels == opened


@needs_etcd
async def test_a_node_whose_sshd_forwards_nothing_is_reached_by_etcdctl(etcd: LocalEtcd, tmp_path: Path) -> None:
    async with SSHFarm(tmp_path / "farm") as farm, Pool(connect_attempts=1) as pool:
        node = (await farm.start(1))[0]
        server = farm.servers[node.name]
        server.forwarding = False
        store = EtcdStore(pool, [node], port=etcd.port)
        await _a_run(store)
        assert "sshd forwards no TCP (open failed)" in store.by_etcdctl[node.name]
        # etcdctl for every call, after one probe that its member listens.
        probes = [c for c in server.commands if "fleet-etcd-listening" in c]
        assert len(probes) == 1 and all(" etcdctl " in f" {c}" for c in server.commands if c not in probes)
        # etcd's refusals read the same either way: named by call and node.
        with pytest.raises(RecordsError, match=rf"txn on {node.name}: .*too many operations"):
            await store.txn([], [E.Delete(f"/fleet/x/{i}") for i in range(200)])
        server.forwarding = True
        gateway = EtcdStore(pool, [node], port=etcd.port)
        with pytest.raises(RecordsError, match=rf"etcd txn on {node.name}: etcdserver: too many operations"):
            await gateway.txn([], [E.Delete(f"/fleet/x/{i}") for i in range(200)])


@pytest.mark.parametrize("when", ["while idle", "on the next request"])
async def test_a_kept_channel_the_other_end_closed_is_replaced(tmp_path: Path, when: str) -> None:
    """The other end of a kept channel goes away between requests (a member restarted): the next request opens
    another and gets its answer, whether the close was seen before the request was sent or only when its answer
    did not come. Here the far end is a plain TCP server on loopback (not etcd) that answers each connection's
    first request with a recorded etcd answer, then closes it (after reading the next request, or at once)."""
    answer = recorded("range_lock")["body"].encode()
    answered: list[bytes] = []

    async def request(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(ln for ln in head.split(b"\r\n") if ln.startswith(b"Content-Length:")).split(b":")[1])
        return await reader.readexactly(length)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.append(await request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()
        if when == "on the next request":
            with contextlib.suppress(asyncio.IncompleteReadError):
                await request(reader)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with SSHFarm(tmp_path / "farm") as farm, Pool(connect_attempts=1) as pool:
            node = (await farm.start(1))[0]
            store = EtcdStore(pool, [node], port=port)
            for _ in range(3):
                kv = await store.get("/fleet/lock")
                assert kv is not None and kv.key == "/fleet/lock"
                if when == "while idle":
                    await asyncio.sleep(0.05)
            assert len(answered) == 3 and farm.servers[node.name].tunnels == 3 and store.by_etcdctl == {}
    finally:
        server.close()
        await server.wait_closed()
