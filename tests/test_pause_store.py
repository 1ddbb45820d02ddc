"""Pauses of rollouts on a real etcd (fleet.store.pause): a single member on loopback reached by `etcdctl` over
SSH (an in-process asyncssh server), as a controller reaches a record node. A pause is written without the
lease, the first author kept; the records' reader passes over the key; a bad value is refused by its key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from etcd_local import ETCD, LocalEtcd
from sshserver import SSHFarm

from fleet.core.errors import RecordsError
from fleet.node import etcd as E
from fleet.store.etcd import EtcdStore
from fleet.store.etcd_records import EtcdRecords
from fleet.store.pause import clear_pause, pause_key, read_pause, request_pause
from fleet.transport import Pool

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    with LocalEtcd(prefix="hxp") as server:
        yield server


@pytest.fixture
async def store(etcd: LocalEtcd, tmp_path: Path) -> AsyncIterator[EtcdStore]:
    async with SSHFarm(tmp_path / "farm") as farm, Pool(connect_attempts=1) as pool:
        yield EtcdStore(pool, [(await farm.start(1))[0]], port=etcd.port)


async def test_pause_is_written_without_the_lease_kept_by_its_first_author_and_cleared(store: EtcdStore):
    assert await read_pause(store, "web") is None
    first = await request_pause(store, "web", "ann@ci")
    again = await request_pause(store, "web", "bob@laptop")
    assert again == first and (await read_pause(store, "web")) == first
    assert await read_pause(store, "api") is None
    assert await EtcdRecords(store).services() == [] and await EtcdRecords(store).state("web") is None
    assert await clear_pause(store, "web") == first
    assert await read_pause(store, "web") is None and await clear_pause(store, "web") is None


async def test_a_bad_pause_value_is_refused_by_its_key(store: EtcdStore):
    await store.txn([], [E.Put(pause_key("web"), '{"by": 3}')])
    with pytest.raises(RecordsError, match=r"/fleet/services/web/pause: by: expected who paused"):
        await read_pause(store, "web")
    with pytest.raises(ValueError, match="service name"):
        pause_key("Web Site")
