"""etcd on the record nodes, kept running over SSH like HAProxy and keepalived: each member's peer certificates
written, the members started together (a cluster being formed is healthy only once a quorum is up), a member
found dead started again by the next run. One report per record node; one node's failure never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fleet.core.errors import FleetError
from fleet.core.model import Node
from fleet.core.shell import Script
from fleet.node import etcd as E
from fleet.node.paths import write_file
from fleet.store.etcd_pki import PeerCa, PeerCert, peer_files
from fleet.store.secrets import Secret
from fleet.transport import Pool

START_TIMEOUT = 40.0
STATUS_TIMEOUT = 10.0
# How long a starting member waits for its cluster to become healthy before it is reported as started anyway.
START_WAIT_S = 20
DEFAULT_FILES = E.EtcdFiles()
OnNode = Callable[[Node], Awaitable[E.MemberState]]


@dataclass(frozen=True)
class MemberReport:
    """What one record node's member did or is: its script's outcome, or why it could not be had."""

    node: str
    state: E.MemberState | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.state is not None and self.state.running


class EtcdMembers:
    """The members of the fleet's etcd cluster, one per record node, configured from the same list on every
    controller (`nodes` in the same order gives the same initial cluster)."""

    def __init__(self, pool: Pool, nodes: Sequence[Node], *, cluster_token: str,
                 state: Literal["new", "existing"] = "new", files: E.EtcdFiles = DEFAULT_FILES) -> None:
        if not nodes:
            raise ValueError("etcd needs at least one record node")
        self.pool = pool
        self.nodes = tuple(nodes)
        members = tuple(E.Member(n.name, n.address) for n in self.nodes)
        self.configs = {m.name: E.MemberConfig(m, members, cluster_token=cluster_token, state=state, files=files)
                        for m in members}

    async def _install(self, node: Node, ca: PeerCa, cert: PeerCert) -> None:
        for path, mode, content in peer_files(ca, cert, self.configs[node.name].files):
            data = content.reveal() if isinstance(content, Secret) else content
            await self.pool.check(node, write_file(path, mode, size=len(data.encode()), fsync=True), stdin=data,
                                  timeout=STATUS_TIMEOUT)

    async def _ensure(self, node: Node, pki: tuple[PeerCa, Mapping[str, PeerCert]] | None) -> E.MemberState:
        if pki is not None:
            await self._install(node, pki[0], pki[1][node.name])
        cfg = self.configs[node.name]
        text = E.render_config(cfg)
        result = await self.pool.check(node, E.start_script(cfg, len(text.encode()), START_WAIT_S), stdin=text,
                                       timeout=START_TIMEOUT)
        return E.parse_start(result.stdout)

    async def ensure(self, pki: tuple[PeerCa, Mapping[str, PeerCert]] | None = None) -> list[MemberReport]:
        """Start every member that is not running (writing its certificates first when `pki` gives the CA and
        each node's certificate); members already running are left alone. All nodes at once, since a new
        cluster needs a quorum of them up before any is healthy."""
        return await self._each(lambda node: self._ensure(node, pki))

    async def status(self) -> list[MemberReport]:
        """`running`, `unhealthy` (alive, not serving: no quorum) or `stopped`, per record node."""
        return await self._each(lambda node: self._script(node, E.status_script(self.configs[node.name])))

    async def stop(self, nodes: Sequence[Node] | None = None) -> list[MemberReport]:
        """Stop the members on `nodes` (all by default); their data stays, so a start brings them back."""
        return await self._each(lambda node: self._script(node, E.stop_script(self.configs[node.name])), nodes)

    async def _script(self, node: Node, script: Script) -> E.MemberState:
        return E.parse_start((await self.pool.check(node, script, timeout=STATUS_TIMEOUT)).stdout)

    async def _each(self, one: OnNode, nodes: Sequence[Node] | None = None) -> list[MemberReport]:
        chosen = self.nodes if nodes is None else tuple(nodes)

        async def report(node: Node) -> MemberReport:
            try:
                return MemberReport(node.name, await one(node))
            except (FleetError, ValueError) as exc:
                return MemberReport(node.name, error=str(exc))

        return list(await asyncio.gather(*(report(n) for n in chosen)))
