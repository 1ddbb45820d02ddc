"""etcd on three lab nodes, configured and started over real SSH the way fleet will run it on record nodes: peers
on the nodes' addresses with mutual TLS (certificates fleet issued), clients on each node's loopback only. The
fenced lease works through any member; the client port is not reachable from outside a node; a peer without a
certificate of the fleet's CA is refused; a member stopped and started again rejoins with its data, and writes go
on with the two others meanwhile. Every etcd is stopped (by the PID its start recorded) and its data removed."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import LabHandle
from etcd_local import start_members

from fleet.core.model import Node
from fleet.engine.etcd import EtcdMembers
from fleet.node import etcd as E
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_pki import PeerCa, issue_peer, new_ca
from fleet.transport import Pool

pytestmark = pytest.mark.lab

FILES = E.EtcdFiles()
TOKEN = "fleet-lab-test"


@pytest.fixture
async def cluster(lab: LabHandle) -> AsyncIterator[tuple[EtcdMembers, list[Node], PeerCa]]:
    # Not the lab's record node: its own member (the fleet's shared state) uses etcd's ports and directory there.
    nodes = [n for n in lab.inventory.nodes if not n.has_role("record")][:3]
    ca = new_ca(TOKEN)
    async with Pool(connect_attempts=1) as pool:
        members = EtcdMembers(pool, nodes, cluster_token=TOKEN, files=FILES)
        try:
            await start_members(members, ca)
            yield members, nodes, ca
        finally:
            await members.stop()
            for node in nodes:
                await pool.run(node, ["rm", "-rf", FILES.dir], timeout=20)


async def test_three_members_with_mutual_tls_serve_the_fenced_lease(
        cluster: tuple[EtcdMembers, list[Node], PeerCa]) -> None:
    members, nodes, ca = cluster
    pool = members.pool
    store = EtcdStore(pool, nodes)
    listed = await store.call(E.member_list_argv(), E.parse_member_list)
    assert sorted(m.name for m in listed) == sorted(n.name for n in nodes)
    assert all(m.peer_urls == (f"https://{n.address}:2380",) for m in listed for n in nodes if n.name == m.name)

    async with EtcdLease(store, command="fleet apply", ttl=10, holder="alice@ctl") as lease:
        number = await SharedState(store, lease).next_revision("web", {"image": "web:1"})
        # Written through the first node's member, read through the last one's: one replicated state.
        other = EtcdStore(pool, nodes[-1:])
        assert await other.read("/fleet/services/web/revisions/0000000001") == {"image": "web:1"}
        assert number == 1
    # All of it through the members' JSON gateway, over the lab sshd's direct-tcpip channels (OpenSSH 9.2):
    # no node fell back to etcdctl. curl on a node gets the same gateway's answer.
    assert store.by_etcdctl == {} and other.by_etcdctl == {}
    status = await pool.run(nodes[0], ["curl", "-s", "-X", "POST", f"http://127.0.0.1:{E.CLIENT_PORT}/v3/maintenance/"
                                       "status", "-d", "{}"], timeout=10)
    assert status.exit_status == 0 and '"version":"3.4.23"' in status.stdout, status

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


async def test_member_stopped_and_started_rejoins(cluster: tuple[EtcdMembers, list[Node], PeerCa]) -> None:
    members, nodes, _ = cluster
    pool = members.pool
    down, up = nodes[2], nodes[:2]
    [stopped] = await members.stop([down])
    assert stopped.state is not None and stopped.state.result == "stopped"
    status = {r.node: r.state.result if r.state else r.error for r in await members.status()}
    assert status == {nodes[0].name: "running", nodes[1].name: "running", down.name: "stopped"}

    # Two of three: the lease and writes go on.
    store = EtcdStore(pool, up)
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        assert await SharedState(store, lease).next_revision("web", {"image": "web:2"}) == 1

    # The next run finds it dead and starts it again (the others are left alone): it rejoins from its data dir.
    again = {r.node: r.state.result if r.state else r.error for r in await members.ensure()}
    assert again == {nodes[0].name: "unchanged", nodes[1].name: "unchanged", down.name: "started"}
    assert all(r.ok for r in await members.status())
    assert await EtcdStore(pool, [down]).read("/fleet/services/web/revisions/0000000001") == {"image": "web:2"}
