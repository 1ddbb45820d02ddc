"""Shared fixtures: the session's real lab (3 workers + 1 lb), built once and always torn down."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from etcd_local import LocalEtcd
from hypothesis import HealthCheck, settings
from sshserver import SSHFarm

from fleet.config.inventory import load_inventory
from fleet.core.model import Inventory, Node
from fleet.engine.etcd import EtcdMembers
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig
from fleet.node.etcd import etcdctl
from fleet.store.etcd import EtcdStore
from fleet.store.etcd_pki import issue_peer, new_ca
from fleet.store.nodes import record_nodes
from fleet.transport import Pool

T = TypeVar("T")

# Tests send traffic only to lab nodes and loopback: never through a proxy the environment may name.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"
# The CLI renders to COLUMNS when it is set (else a wide fixed width on a pipe): a width inherited from wherever the
# suite was started would wrap the messages tests read; a test that wants a width passes it (helpers.run_fleet).
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)

# Tests signal the processes they start as a terminal's Ctrl-C or a service manager would (SIGINT among them). A suite
# started in the background by a non-interactive shell (`sh -c '… &'`, as a CI runner may) inherits SIGINT ignored,
# every process it starts would too, and a shell cannot trap a signal ignored on entry (seen: 3 tests failed so):
# take the default back, which the processes started here then get.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests share two cores with lab tests in parallel workers: a slow example or slow input generation is
# the machine being busy, not a failure of what the property states.
settings.register_profile("fleet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fleet")

# Parsed inventories are cached by content (fleet.config.inventory.cache_dir): keep this run's cache to itself.
_CACHE = tempfile.mkdtemp(prefix="fleet-test-cache-")
os.environ["FLEET_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

# Under pytest-xdist (scripts/test.sh) each worker builds a lab of its own: gw0 gets ft0 on 10.241.40.0/24, gw1 ft1
# on 10.241.41.0/24, … so labs of parallel workers never share a name, a subnet or a directory.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
TEST_LAB = LabConfig(prefix=os.environ.get("FLEET_TEST_LAB", f"ft{_WORKER}"),
                     subnet=os.environ.get("FLEET_TEST_SUBNET",
                                           f"10.241.{40 + int(_WORKER)}.0/24" if _WORKER else "10.241.0.0/24"),
                     nodes=3, lb=1, root="/var/lib/fleet-lab-test")


class LabHandle:
    """The running test lab: the Lab engine, its inventory path and parsed inventory."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.inventory_path = lab.inventory_path
        self.inventory: Inventory = load_inventory(lab.inventory_path)

    def workers(self) -> list[str]:
        return [n.name for n in self.inventory.nodes if n.has_role("worker")]


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    engine = Lab(TEST_LAB)
    # A crashed earlier run may have left this lab behind: remove it by its names first.
    engine.down()
    try:
        engine.up()
        yield LabHandle(engine)
    finally:
        engine.down()


class LabEtcd:
    """The lab's shared state: etcd on its record nodes. `clear()` forgets the fleet's controllers and secrets, so
    a test's controller (its own keyring, a new identity) is the first of a new fleet and registers itself."""

    def __init__(self, lab: LabHandle, nodes: list[Node]) -> None:
        self.lab = lab
        self.nodes = nodes

    def clear(self) -> None:
        for prefix in ("/fleet/controllers/", "/fleet/secrets/"):
            self.lab.lab.exec_in(self.nodes[0].name, etcdctl("del", "--prefix", prefix))


@pytest.fixture(scope="session")
def lab_etcd(lab: LabHandle) -> Iterator[LabEtcd]:
    """etcd on the lab's record nodes (one member each, peers with certificates of a CA made here), where the
    fleet's shared state (the sealed secrets) lives. Members already running are left alone, and only those
    started here are stopped (by the PID their start recorded) and their data removed at the end."""
    nodes = record_nodes(lab.inventory)

    async def each(act: Callable[[EtcdMembers], Awaitable[T]]) -> T:
        async with Pool(connect_attempts=1) as pool:
            return await act(EtcdMembers(pool, nodes, cluster_token=f"{TEST_LAB.prefix}-state"))

    async def start(members: EtcdMembers) -> list[str]:
        ca = new_ca(f"{TEST_LAB.prefix}-state")
        reports = await members.ensure((ca, {n.name: issue_peer(ca, members.configs[n.name].member) for n in nodes}))
        assert all(r.ok for r in reports), [r.error or r.state for r in reports]
        return [r.node for r in reports if r.state is not None and r.state.result == "started"]

    async def stop(members: EtcdMembers) -> None:
        mine = [n for n in nodes if n.name in started]
        await members.stop(mine)
        for node in mine:
            await members.pool.run(node, ["rm", "-rf", members.configs[node.name].files.dir], timeout=20)

    started = asyncio.run(each(start))
    try:
        yield LabEtcd(lab, nodes)
    finally:
        if started:
            asyncio.run(each(stop))


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[SSHFarm]:
    """Three real in-process SSH servers running /bin/sh, with pinned host keys (tests/sshserver.py)."""
    async with SSHFarm(tmp_path / "farm") as f:
        await f.start(3)
        yield f


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """A connection pool that gives up fast on a node that is down (one attempt, 5 s)."""
    async with Pool(backoff=0.01, connect_attempts=1, connect_timeout=5) as p:
        yield p


@pytest.fixture
def local_etcd() -> Iterator[LocalEtcd]:
    """One real etcd member on a loopback port, stopped and its data removed after the test."""
    with LocalEtcd(prefix="hxr") as server:
        yield server


@pytest.fixture
def shared_store(local_etcd: LocalEtcd, farm: SSHFarm, pool: Pool) -> EtcdStore:
    """The shared state as a controller reaches it: etcdctl over SSH on a record node (the farm's first node, whose
    shell reaches `local_etcd` on loopback)."""
    return EtcdStore(pool, farm.nodes[:1], port=local_etcd.port)


# The longest modules first: `--dist loadfile` hands modules to the workers in collection order, so the lab modules
# that take minutes start at once and the short ones fill in at the end, instead of one long module running alone
# while the other workers wait. The order is a measured run's per-module times (modules of 10 s and more; the
# others keep their places after them).
LONGEST_FIRST = [
    "test_safety_lab.py", "test_fields_lab.py", "test_rollout_lab.py", "test_shared_state_lab.py",
    "test_jobs_lab.py", "test_storage_lab.py", "test_deploy_lab.py", "test_lbsettings_lab.py", "test_servers_lab.py",
    "test_fresh_lab.py",
    "test_netns_lab.py", "test_nodeops_lab.py", "test_haproxy_lbsettings.py", "test_containers_lab.py",
    "test_vrrp_lab.py", "test_registry_lab.py",
    "test_watch_lab.py", "test_edge_lab.py", "test_watch_etcd_lab.py", "test_tui.py", "test_reconcile_lab.py",
    "test_secrets_lab.py", "test_sick_node_lab.py", "test_configs_lab.py",
    "test_bad_input.py", "test_tui_lab.py", "test_measured_lab.py", "test_parallel_lab.py",
    "test_haproxy_rollout_lab.py", "test_store_lab.py", "test_etcd_store.py", "test_scheduler.py",
    "test_etcd_members_lab.py", "test_cli_conventions.py", "test_cli_use.py", "test_volumes_lab.py",
    "test_packaging.py", "test_tui_snapshots.py", "test_wire_lab.py", "test_etcd_lab.py", "test_runtime_ctr.py",
    "test_transport.py", "test_nodeops.py", "test_sealed.py", "test_nodes_lab.py", "test_tui_views.py",
    "test_edge.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
