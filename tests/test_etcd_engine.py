"""EtcdMembers (fleet.engine.etcd) over real in-process SSH servers: one report per record node, and a node that
cannot be reached is reported without stopping the others. Starting real members is the lab test's
(tests/test_etcd_lab.py)."""

from __future__ import annotations

from pathlib import Path

from sshserver import SSHFarm

from fleet.engine.etcd import EtcdMembers
from fleet.node.etcd import EtcdFiles
from fleet.transport import Pool


async def test_unreachable_node_reported_others_answer(farm: SSHFarm, tmp_path: Path) -> None:
    nodes = farm.nodes
    await farm.stop(nodes[1].name)
    async with Pool(connect_attempts=1, connect_timeout=5) as pool:
        members = EtcdMembers(pool, nodes, cluster_token="t", files=EtcdFiles(str(tmp_path / "etcd")))
        reports = await members.status()
    assert [r.node for r in reports] == [n.name for n in nodes]
    by_node = {r.node: r for r in reports}
    assert by_node[nodes[1].name].error is not None and not by_node[nodes[1].name].ok
    for name in (nodes[0].name, nodes[2].name):
        assert by_node[name].error is None
        assert by_node[name].state is not None and by_node[name].state.result == "stopped"
