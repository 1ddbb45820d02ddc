"""Which nodes keep the fleet's shared state (named in the inventory, never from its order), the lease's ttl in
etcd's whole seconds, and `fleet lock status/break` and the watcher's leadership on a real etcd member reached by
etcdctl over SSH (the lease itself: tests/test_etcd_store.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from etcd_local import ETCD, LocalEtcd
from sshserver import SSHFarm

from fleet.config.inventory import load_inventory
from fleet.core.errors import InventoryError, LeaseHeld, LeaseInfo, LeaseLost
from fleet.core.model import Inventory, Node
from fleet.store.access import break_lock, lease_seconds, lock_status, watcher_lease
from fleet.store.etcd import LOCK_KEY, WATCH_LEADER_KEY, EtcdLease, EtcdStore
from fleet.store.nodes import record_nodes, record_warnings
from fleet.transport import Pool

needs_etcd = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")


def inventory(tmp_path: Path, body: str, name: str = "inv.yaml") -> Inventory:
    path = tmp_path / name
    path.write_text(body)
    return load_inventory(str(path))


NODES = {f"n{i}": f"10.0.0.{i}" for i in range(1, 6)}


def fleet_yaml(**extra: str) -> str:
    return "nodes:\n" + "".join(f"  {n}:\n    address: {a}\n{extra.get(n, '')}" for n, a in NODES.items())


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def test_record_nodes_are_those_named_whatever_the_order_and_the_other_nodes(tmp_path: Path) -> None:
    role = "    roles: [worker, record]\n"
    inv = inventory(tmp_path, fleet_yaml(n2=role, n4=role, n5="    roles: [lb]\n"))
    assert names(record_nodes(inv)) == ["n2", "n4"]
    # Adding or removing workers, or reordering the file, changes nothing: the set is named.
    fewer = Inventory(inv.path, tuple(n for n in reversed(inv.nodes) if n.name not in ("n1", "n3")))
    assert sorted(names(record_nodes(fewer))) == ["n2", "n4"]
    # A label names them when no role does; the role wins over it.
    labelled = inventory(tmp_path, fleet_yaml(n3="    labels: {fleet.records: 'true'}\n"), "l.yaml")
    assert names(record_nodes(labelled)) == ["n3"] and record_warnings(labelled) == []
    both = Inventory(inv.path, (*labelled.nodes[:1], replace(labelled.nodes[1], roles=("worker", "record")),
                                *labelled.nodes[2:]))
    assert names(record_nodes(both)) == ["n2"]


def test_an_ansible_group_named_record_gives_the_role(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[web]\nw1 ansible_host=10.0.0.1\nw2 ansible_host=10.0.0.2\n[lb]\nedge ansible_host=10.0.0.9\n"
                    "[record]\nw2\nedge\n")
    inv = load_inventory(str(path))
    assert names(record_nodes(inv)) == ["w2", "edge"]
    assert inv.node("w2").roles == ("worker", "record") and inv.node("edge").roles == ("lb", "record")


def test_unnamed_record_nodes_fall_back_to_the_lbs_then_the_first_node_with_a_warning(tmp_path: Path) -> None:
    plain = inventory(tmp_path, fleet_yaml())
    assert names(record_nodes(plain)) == ["n1"]
    assert record_warnings(plain) == [
        f"{plain.path} names no record node, so its first node (n1) keep the fleet's shared state: name them "
        "(`roles: [worker, record]`), so that adding or removing a node never moves it"]
    two_lbs = inventory(tmp_path, fleet_yaml(n3="    roles: [lb]\n", n5="    roles: [lb]\n"), "lb.yaml")
    assert names(record_nodes(two_lbs)) == ["n3", "n5"]  # no tie-breaker taken from the order
    warnings = record_warnings(two_lbs)
    assert warnings[0].startswith(f"{two_lbs.path} names no record node, so its lb nodes keep")
    assert warnings[1] == ("two record nodes (n3 and n5) have no tie-breaker: losing either one stops every write "
                           "to the fleet's shared state (etcd needs 2 of 2) until it is back; name a third record node")


def test_an_unknown_role_and_a_bad_events_keep_are_refused_by_line(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"inv.yaml:4: nodes.n1.roles: unknown role 'records'"):
        inventory(tmp_path, "nodes:\n  n1:\n    address: 10.0.0.1\n    roles: [records]\n")
    with pytest.raises(InventoryError, match=r"k.yaml:1: events_keep"):
        inventory(tmp_path, "events_keep: lots\nnodes:\n  n1:\n    address: 10.0.0.1\n", "k.yaml")
    assert inventory(tmp_path, "events_keep: 50\nnodes:\n  n1:\n    address: 10.0.0.1\n", "k2.yaml").events_keep == 50


@pytest.mark.parametrize(("env", "seconds"), [("0.4", 30), ("1", 1), ("2.5", 3), ("30", 30), ("soon", 30)])
def test_the_lease_ttl_in_whole_seconds(monkeypatch: pytest.MonkeyPatch, env: str, seconds: int) -> None:
    monkeypatch.setenv("FLEET_LEASE_TTL", env)
    assert lease_seconds() == seconds


@needs_etcd
async def test_lock_status_and_break_per_record_node_and_the_holder_writes_nothing_after(
        local_etcd: LocalEtcd, farm: SSHFarm, pool: Pool, shared_store: EtcdStore,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_ETCD_PORT", str(local_etcd.port))
    # Two record nodes reach the member; the third is down.
    nodes = tuple(replace(n, roles=("worker", "record")) for n in farm.nodes)
    inv = Inventory(str(tmp_path / "inv.yaml"), nodes)
    await farm.stop("n3")
    assert [(n, i) for n, i in await lock_status(pool, inv, timeout=5) if not isinstance(i, str)] == [
        ("n1", None), ("n2", None)]
    async with EtcdLease(shared_store, command="fleet apply [web]", ttl=10, holder="ann@ctl") as lease:
        status = await lock_status(pool, inv, timeout=5)
        assert [name for name, _ in status] == ["n1", "n2", "n3"] and isinstance(status[2][1], str)
        held = [info for _, info in status[:2]]
        assert all(isinstance(i, LeaseInfo) and i.holder == "ann@ctl" and i.command == "fleet apply [web]"
                   and 0 < i.remaining <= 10 for i in held)
        broken = await break_lock(pool, inv, timeout=5)
        assert [isinstance(i, LeaseInfo) and i.holder == "ann@ctl" for _, i in broken[:2]] == [True, True]
        assert isinstance(broken[2][1], str)
        with pytest.raises(LeaseLost):
            await lease.check()
    assert await shared_store.get(LOCK_KEY) is None


@needs_etcd
async def test_the_watchers_leadership_is_its_own_key(local_etcd: LocalEtcd, farm: SSHFarm, pool: Pool,
                                                      shared_store: EtcdStore, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_ETCD_PORT", str(local_etcd.port))
    inv = Inventory(str(tmp_path / "inv.yaml"), (replace(farm.nodes[0], roles=("worker", "record")),))
    async with watcher_lease(pool, inv, 2.5) as leader, EtcdLease(shared_store, command="fleet apply"):
        assert leader.ttl == 3 and (await shared_store.get(WATCH_LEADER_KEY)) is not None
        with pytest.raises(LeaseHeld, match="fleet watch"):
            await watcher_lease(pool, inv, 3).acquire()
