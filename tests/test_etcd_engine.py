"""EtcdMembers and EtcdMembership (fleet.engine.etcd) over real in-process SSH servers: one report per record node,
a node that cannot be reached is reported without stopping the others, a real member is probed as its node's, and
nothing raises when no member answers. Starting and changing real members is the lab tests'
(tests/test_etcd_lab.py, tests/test_etcd_members_lab.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcd_local import LocalEtcd
from helpers import free_port
from sshserver import SSHFarm

from fleet.core.errors import RecordsError
from fleet.engine.etcd import EtcdMembers, EtcdMembership
from fleet.node.etcd import EtcdFiles
from fleet.plan.members import MembershipPlan
from fleet.store.etcd_pki import new_ca
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


async def test_membership_view_of_a_real_member_over_ssh(tmp_path: Path) -> None:
    """One real etcd member (tests/etcd_local.py), probed over SSH as its record node: running, the leader, at
    its revision; the plan wants nothing, and removing the only member is refused."""
    with LocalEtcd(prefix="n") as etcd:
        async with SSHFarm(tmp_path / "farm") as farm:
            node = await farm.add("n0")
            files = etcd.config(0).files
            Path(files.pid_file).write_text(f"{etcd.procs[0].pid}\n")  # as the start script records it
            async with Pool(connect_attempts=1, connect_timeout=5) as pool:
                membership = EtcdMembership(pool, [node], [node], cluster_token="t", files=files, port=etcd.port)
                view = await membership.view()
                assert view.error is None
                [row] = view.members
                assert (row.name, row.node, row.state, row.leader, row.learner) == ("n0", "n0", "running", True,
                                                                                     False)
                assert row.revision is not None and row.revision >= 1
                assert view.plan == MembershipPlan() and (view.voters, view.healthy, view.quorum) == (1, 1, 1)
                _, only = await membership.plan_one("remove", "n0")
                assert only.refused is not None and "only member" in only.refused


async def test_membership_with_no_member_answering_degrades(farm: SSHFarm, tmp_path: Path) -> None:
    """No etcd on any node: the view says so instead of raising, a change is refused with the reason, and the CA
    that is missing is named by its path."""
    nodes = farm.nodes
    await farm.stop(nodes[2].name)
    files = EtcdFiles(str(tmp_path / "etcd"))
    async with Pool(connect_attempts=1, connect_timeout=5) as pool:
        membership = EtcdMembership(pool, nodes, nodes[:2], cluster_token="t", files=files, port=free_port(),
                                    command_timeout_s=1)
        view = await membership.view()
        assert view.members == () and view.error is not None and "could not be reached" in view.error
        assert view.plan.refused is not None and "could not be read" in view.plan.refused
        for plan, reports in (await membership.change("add", nodes[2].name), await membership.converge()):
            assert reports == [] and plan.refused is not None and "could not be read" in plan.refused
        with pytest.raises(RecordsError, match=r"CA key \(.*/pki/ca\.key\) was found on no node"):
            await membership.load_ca()
        # Once the key is there (the first record node keeps it), it is read back whole.
        ca = new_ca("t")
        Path(files.pki_dir).mkdir(parents=True)
        Path(files.ca_cert).write_text(ca.cert_pem)
        Path(files.ca_key).write_text(ca.key.reveal())
        read = await membership.load_ca()
        assert read.cert_pem == ca.cert_pem and read.key.reveal() == ca.key.reveal()


async def test_a_learner_that_cannot_start_is_taken_out_again(tmp_path: Path) -> None:
    """An add whose new member fails to start (here its client port is the running member's, which answers in its
    place) leaves the cluster as it was: the learner it added is removed again, and the step says why it stopped."""
    with LocalEtcd(prefix="n") as etcd:
        async with SSHFarm(tmp_path / "farm") as farm:
            first, new = await farm.add("n0"), await farm.add("n1")
            async with Pool(connect_attempts=1, connect_timeout=5) as pool:
                membership = EtcdMembership(pool, [first, new], [first, new], cluster_token="t",
                                            files=EtcdFiles(str(tmp_path / "new")), port=etcd.port)
                report = await membership.add("n1", new_ca("t"))
                assert report.error is not None and "did not start" in report.error, report
                assert report.done[0].startswith("added n1 as a learner")
                assert any(line.startswith("removed the learner") for line in report.done), report.done
                assert [m.name for m in await membership.members()] == ["n0"]
