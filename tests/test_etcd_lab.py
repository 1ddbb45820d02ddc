"""etcd on three lab nodes, configured and started over real SSH the way fleet will run it on record nodes: peers
on the nodes' addresses with mutual TLS (certificates fleet issued), clients on each node's loopback only. The
fenced lease works through any member; the client port is not reachable from outside a node; a peer without a
certificate of the fleet's CA is refused; a member stopped and started again rejoins with its data, and writes go
on with the two others meanwhile. Every etcd is stopped (by the PID its start recorded) and its data removed."""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import LabHandle

from fleet.core.model import Node
from fleet.node import etcd as E
from fleet.node.paths import write_file
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_pki import PeerCa, issue_peer, new_ca, peer_files
from fleet.store.secrets import Secret
from fleet.transport import Pool

pytestmark = pytest.mark.lab

FILES = E.EtcdFiles()
TOKEN = "fleet-lab-test"


def _configs(nodes: list[Node]) -> list[E.MemberConfig]:
    members = tuple(E.Member(n.name, n.address) for n in nodes)
    return [E.MemberConfig(m, members, cluster_token=TOKEN, files=FILES) for m in members]


async def _start(pool: Pool, node: Node, cfg: E.MemberConfig) -> E.MemberState:
    text = E.render_config(cfg)
    result = await pool.check(node, E.start_script(cfg, len(text.encode()), wait_s=20), stdin=text, timeout=40)
    return E.parse_start(result.stdout)


@pytest.fixture
async def cluster(lab: LabHandle) -> AsyncIterator[tuple[Pool, list[Node], PeerCa]]:
    nodes = [n for n in lab.inventory.nodes if n.has_role("worker")][:3]
    cfgs = _configs(nodes)
    ca = new_ca(TOKEN)
    async with Pool(connect_attempts=1) as pool:
        try:
            for node, cfg in zip(nodes, cfgs, strict=True):
                for path, mode, content in peer_files(ca, issue_peer(ca, cfg.member), FILES):
                    data = content.reveal() if isinstance(content, Secret) else content
                    await pool.check(node, write_file(path, mode, size=len(data.encode())), stdin=data)
            # A new cluster is healthy only once a quorum is up: the members start together.
            states = await asyncio.gather(*[_start(pool, n, c) for n, c in zip(nodes, cfgs, strict=True)])
            assert all(s.result == "started" for s in states), states
            yield pool, nodes, ca
        finally:
            for node, cfg in zip(nodes, cfgs, strict=True):
                await pool.run(node, E.stop_script(cfg), timeout=20)
                await pool.run(node, ["rm", "-rf", FILES.dir], timeout=20)


async def test_three_members_with_mutual_tls_serve_the_fenced_lease(
        cluster: tuple[Pool, list[Node], PeerCa]) -> None:
    pool, nodes, ca = cluster
    store = EtcdStore(pool, nodes)
    members = await store.call(E.member_list_argv(), E.parse_member_list)
    assert sorted(m.name for m in members) == sorted(n.name for n in nodes)
    assert all(m.peer_urls == (f"https://{n.address}:2380",) for m in members for n in nodes if n.name == m.name)

    async with EtcdLease(store, command="fleet apply", ttl=10, holder="alice@ctl") as lease:
        number = await SharedState(store, lease).next_revision("web", {"image": "web:1"})
        # Written through the first node's member, read through the last one's: one replicated state.
        other = EtcdStore(pool, nodes[-1:])
        assert await other.read("/fleet/services/web/revisions/0000000001") == {"image": "web:1"}
        assert number == 1

    # The client port listens on each node's loopback only: from outside, nothing answers.
    for node in nodes:
        with pytest.raises(OSError), socket.create_connection((node.address, E.CLIENT_PORT), timeout=2):
            pass
    # The peer port wants a certificate of the fleet's CA: a TLS client without one is turned away, the same
    # client holding one the CA issued gets an HTTP answer (so the refusal is the missing certificate's).
    with tempfile.TemporaryDirectory() as tmp:
        # etcd also checks that a peer connects from an address its certificate names: this host's, here.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect((nodes[0].address, E.PEER_PORT))
            here = udp.getsockname()[0]
        probe = issue_peer(ca, E.Member("probe", here))
        (Path(tmp) / "ca.pem").write_text(ca.cert_pem)
        (Path(tmp) / "probe.pem").write_text(probe.cert_pem + probe.key.reveal())
        bare = ssl.create_default_context(cafile=str(Path(tmp) / "ca.pem"))
        holder = ssl.create_default_context(cafile=str(Path(tmp) / "ca.pem"))
        holder.load_cert_chain(str(Path(tmp) / "probe.pem"))
    with pytest.raises(ssl.SSLError, match="CERTIFICATE"):
        _peer_get(bare, nodes[0].address)
    assert _peer_get(holder, nodes[0].address).startswith(b"HTTP/1.1 ")


def _peer_get(ctx: ssl.SSLContext, address: str) -> bytes:
    """One HTTP request to a member's peer port over TLS; the first bytes of the answer."""
    ctx.check_hostname = False  # the member's certificate names its IP; verified against the CA all the same
    with socket.create_connection((address, E.PEER_PORT), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        # TLS 1.3 reports a refused client certificate after the handshake, on the first read.
        tls.sendall(b"GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n")
        return tls.recv(1024)


async def test_member_stopped_and_started_rejoins(cluster: tuple[Pool, list[Node], PeerCa]) -> None:
    pool, nodes, _ = cluster
    cfgs = _configs(nodes)
    down, up = nodes[2], nodes[:2]
    stopped = E.parse_start((await pool.check(down, E.stop_script(cfgs[2]))).stdout)
    assert stopped.result == "stopped"
    status = E.parse_start((await pool.check(down, E.status_script(cfgs[2]))).stdout)
    assert status.result == "stopped"

    # Two of three: the lease and writes go on.
    store = EtcdStore(pool, up)
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        assert await SharedState(store, lease).next_revision("web", {"image": "web:2"}) == 1

    # The next run finds it dead and starts it again: it rejoins from its data dir and catches up.
    again = await _start(pool, down, cfgs[2])
    assert again.result == "started"
    assert E.parse_start((await pool.check(down, E.status_script(cfgs[2]))).stdout).result == "running"
    assert await EtcdStore(pool, [down]).read("/fleet/services/web/revisions/0000000001") == {"image": "web:2"}
    # A run that finds it running leaves it alone.
    assert (await _start(pool, down, cfgs[2])).result == "unchanged"
