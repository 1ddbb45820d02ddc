"""etcd membership changed on lab nodes over real SSH, with mutual TLS between peers: three members hold records,
a fourth record node is added and an original removed, one at a time as the planner says; the history and the
revision counter come through intact (read by a second controller before and after), and a new revision number
continues from the old. A record node powered off (its link down, its sshd and etcd SIGKILLed by PID) while writes
go on with the majority rejoins once it is back and its etcd started again. `fleet records status` shows the
result, `fleet records remove` takes out a member the inventory does not name, and `fleet plan` then `fleet apply`
(the façade's) add a record node the inventory names. Every etcd is stopped (by the PID its start recorded) and its
files removed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import LabHandle
from etcd_local import start_members
from helpers import run_fleet

from fleet.api import Fleet
from fleet.config.inventory import load_inventory
from fleet.core.model import Node
from fleet.engine.etcd import EtcdMembers, EtcdMembership
from fleet.node import etcd as E
from fleet.node.paths import write_file
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_pki import PeerCa, new_ca
from fleet.store.nodes import record_nodes
from fleet.transport import Pool

pytestmark = pytest.mark.lab

FILES = E.EtcdFiles()
TOKEN = "fleet-lab-members"


@dataclass
class Cluster:
    pool: Pool
    first: list[Node]  # the three original members (workers)
    spare: Node  # the node added later (the lab's lb node)
    ca: PeerCa


@pytest.fixture
async def cluster(lab: LabHandle) -> AsyncIterator[Cluster]:
    workers = [n for n in lab.inventory.nodes if n.has_role("worker")][:3]
    spare = next(n for n in lab.inventory.nodes if n not in workers)
    ca = new_ca(TOKEN)
    # The lab's record node runs the fleet's own member (the shared state of the other lab tests) with these ports
    # and this directory: it is stopped and its directory set aside for this test, and put back after (the next
    # run that writes starts it again, its data intact).
    keepers = record_nodes(lab.inventory)
    async with Pool(connect_attempts=1) as pool:
        await EtcdMembers(pool, keepers, cluster_token="fleet", files=FILES).stop()
        for node in keepers:
            await pool.check(node, ["sh", "-c", 'rm -rf "$0.saved"; [ ! -e "$0" ] || mv "$0" "$0.saved"',
                                    FILES.dir], timeout=20)
        members = EtcdMembers(pool, workers, cluster_token=TOKEN, files=FILES)
        try:
            await start_members(members, ca)
            yield Cluster(pool, workers, spare, ca)
        finally:
            everyone = [*workers, spare]
            await EtcdMembers(pool, everyone, cluster_token=TOKEN, files=FILES).stop()
            for node in everyone:
                await pool.run(node, ["rm", "-rf", FILES.dir], timeout=20)
            for node in keepers:
                await pool.run(node, ["sh", "-c", '[ ! -e "$0.saved" ] || mv "$0.saved" "$0"', FILES.dir], timeout=20)


async def _revisions(nodes: list[Node]) -> list[tuple[int, object]]:
    """The service's revisions as another controller (its own pool and connections) reads them."""
    async with Pool(connect_attempts=1) as other:
        store = EtcdStore(other, nodes)
        async with EtcdLease(store, command="fleet history", ttl=10, holder="bob@ctl2") as lease:
            return await SharedState(store, lease).revisions("web")


async def test_add_one_remove_one_history_intact_and_a_killed_member_rejoins(
        lab: LabHandle, cluster: Cluster, tmp_path: Path) -> None:
    pool, first, spare = cluster.pool, cluster.first, cluster.spare
    store = EtcdStore(pool, first)
    async with EtcdLease(store, command="fleet apply", ttl=10, holder="alice@ctl") as lease:
        state = SharedState(store, lease)
        numbers = [await state.next_revision("web", {"image": f"web:{i}"}) for i in (1, 2, 3)]
        await state.write({"/fleet/test/a": {"x": 1}, "/fleet/test/b": "two"}, event={"by": "alice"})
    assert numbers == [1, 2, 3]
    before = await _revisions(first)

    # The inventory now names the lb node instead of the first worker: add one, then remove one.
    wanted = [*first[1:], spare]
    steps: list[str] = []
    membership = EtcdMembership(pool, lab.inventory.nodes, wanted, cluster_token=TOKEN, files=FILES,
                                on_step=steps.append)
    plan = await membership.plan()
    assert plan.ok and plan.lines() == [f"records: add member {spare.name}", f"records: remove member {first[0].name}"]
    reports = await membership.run(plan, cluster.ca)
    assert [(r.step.action, r.error) for r in reports] == [("add", None), ("remove", None)], reports
    assert steps == plan.lines()
    assert any("promoted" in line for line in reports[0].done)
    assert any("data moved to" in line for line in reports[1].done), reports[1].done

    view = await membership.view()
    assert sorted((m.node, m.state, m.learner) for m in view.members) == sorted(
        (n.name, "running", False) for n in wanted)
    assert view.leader is not None and view.healthy == 3 and view.plan.steps == ()
    # The removed node's etcd is stopped and its data set aside, not deleted.
    left = await pool.run(first[0], ["sh", "-c", f"ls -d {FILES.data_dir}* ; cat {FILES.pid_file}"], timeout=10)
    assert f"{FILES.data_dir}.removed-" in left.stdout and f"{FILES.data_dir}\n" not in left.stdout
    assert (await membership._probe(first[0]))[0] == "stopped"

    # History intact, read by another controller through the new member only; numbering goes on from 3.
    assert await _revisions([spare]) == before
    store = EtcdStore(pool, [spare, *first[1:]])
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        assert await state.read("/fleet/test/", prefix=True) == {"/fleet/test/a": {"x": 1}, "/fleet/test/b": "two"}
        assert await state.next_revision("web", {"image": "web:4"}) == 4

    # A record node powered off: its link down and its sshd and etcd SIGKILLed by PID at once (Lab.power_off). The
    # two others go on writing; powered on (sshd only, as after a reboot), its etcd is started again by the next
    # run and rejoins with what it missed. A follower (a leader's loss adds an election, seconds of this test, and
    # is etcd's to handle).
    victim = next(n for n in wanted if n.name != view.leader.name)
    running = {r.node: r.state for r in await EtcdMembers(pool, wanted, cluster_token=TOKEN, files=FILES).status()}
    pid = running[victim.name].pid if running[victim.name] else None
    assert pid is not None
    killed = lab.lab.power_off(victim.name, comms=("sshd", "etcd"))
    assert pid in killed and len(killed) >= 2, killed  # etcd and at least the listening sshd
    try:
        majority = EtcdStore(pool, [n for n in wanted if n is not victim])
        async with EtcdLease(majority, command="fleet apply", ttl=10) as lease:
            assert await SharedState(majority, lease).next_revision("web", {"image": "web:5"}) == 5
    finally:
        lab.lab.power_on(victim.name)
    # The next run is a new process with connections of its own (this pool's to the victim died unseen with it: the
    # link was down when its sshd was killed; its first use fails, the next one connects again).
    async with Pool(connect_attempts=1) as next_run:
        again = {r.node: r.state.result if r.state else r.error
                 for r in await EtcdMembers(next_run, wanted, cluster_token=TOKEN, files=FILES).ensure()}
    assert again[victim.name] == "started" and {again[n.name] for n in wanted if n is not victim} == {"unchanged"}
    await membership._healthy(victim)
    assert await EtcdStore(pool, [victim]).read("/fleet/services/web/revisions/0000000005") == {"image": "web:5"}
    assert [n for n, _ in await _revisions([victim])] == [1, 2, 3, 4, 5]

    # The CLI on the same cluster: status names every member and its role; a member that the inventory does not
    # name as a record node is removed with `fleet records remove`, under the fleet's lease.
    # An inventory that names two of the cluster's members as its record nodes (the lab's names another).
    doc = yaml.safe_load(Path(lab.inventory_path).read_text())
    for name, entry in doc["nodes"].items():
        roles = [r for r in entry["roles"] if r != "record"]
        entry["roles"] = [*roles, "record"] if name in {n.name for n in wanted[:2]} else roles
    inventory = tmp_path / "records.yaml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    shown = run_fleet("records", "status", "--json", inventory=str(inventory), timeout=60)
    doc = json.loads(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    assert sorted(m["node"] for m in doc["members"]) == sorted(n.name for n in wanted)
    assert sorted(m["role"] for m in doc["members"]) == ["follower", "follower", "leader"]
    out = wanted[2]
    removed = run_fleet("records", "remove", out.name, "--yes", inventory=str(inventory), timeout=60)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"records: remove member {out.name}: done" in removed.stdout
    left = await membership.members()
    assert sorted(m.name for m in left) == sorted(n.name for n in wanted if n is not out)

    # `fleet apply` with an inventory that names a third record node again (the lab's lb node, removed above: its
    # data was moved aside): `fleet plan` shows the step, the apply adds it as a learner, promotes it and reports
    # each step. No lb node in this inventory, so the apply (no service) touches no HAProxy.
    doc = yaml.safe_load(Path(lab.inventory_path).read_text())
    back = [*(n.name for n in wanted[:2]), spare.name]
    for name, entry in doc["nodes"].items():
        entry["roles"] = ["worker", "record"] if name in back else ["worker"]
    # The fleet keeps its peer CA's key on a record node (fleet.engine.shared.peer_ca); this test's CA was kept here.
    for path, text in ((FILES.ca_key, cluster.ca.key.reveal()), (FILES.ca_cert, cluster.ca.cert_pem)):
        await pool.check(wanted[0], write_file(path, "0600", size=len(text.encode())), stdin=text, timeout=10)
    inventory = tmp_path / "apply.yaml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    events: list[str] = []
    async with Fleet.connect(load_inventory(str(inventory)), connect_attempts=1,
                             on_event=lambda e: events.append(e.message)) as f:
        planned = await f.plan([])
        assert planned.members.lines() == [f"records: add member {spare.name}"] and planned.changed
        result = await f.apply([])
    assert result.ok, result
    assert f"records: add member {spare.name}" in events, events
    assert any(line.startswith(f"  promoted {spare.name}") for line in events), events
    assert sorted(m.name for m in await membership.members()) == sorted(back)
