"""Shared fixtures: the session's real lab (3 workers + 1 lb), built once and always torn down."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from etcd_local import LocalEtcd
from hypothesis import HealthCheck, settings
from sshserver import SSHFarm

from fleet.config.inventory import load_inventory
from fleet.core.model import Inventory
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig
from fleet.store.etcd import EtcdStore
from fleet.transport import Pool

# Tests send traffic only to lab nodes and loopback: never through a proxy the environment may name.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"
# The CLI renders to COLUMNS when it is set (else a wide fixed width on a pipe): a width inherited from wherever the
# suite was started would wrap the messages tests read; a test that wants a width passes it (helpers.run_fleet).
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)

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
