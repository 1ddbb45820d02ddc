"""Jobs' records in a real etcd (tests/etcd_local.py, reached over SSH as a controller does): a schedule slot is
claimed by one writer only, even when a second holder of the lease tries after; runs are written fenced and read
back whole; outside the lease nothing is written."""

from __future__ import annotations

import pytest

from fleet.core.errors import LeaseLost, RecordsError
from fleet.results.jobs import Attempt, JobRun
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_records import EtcdRecords
from fleet.store.jobs import JobRecords


def records(store: EtcdStore, lease: EtcdLease | None, command: str) -> JobRecords:
    return JobRecords(EtcdRecords(store, SharedState(store, lease) if lease else None, command=command))


async def test_slot_claimed_once_across_holders_and_runs_read_back(shared_store: EtcdStore) -> None:
    async with EtcdLease(shared_store, command="fleet watch", ttl=5) as first:
        a = records(shared_store, first, "fleet watch")
        assert await a.claim("tick", "2026-12-05T03:00Z")
        assert not await a.claim("tick", "2026-12-05T03:00Z"), "the same writer cannot claim it twice"
        run = JobRun("tick", "20261205T030001Z-abcd", "schedule", "me@h", "fleet watch", "demo:v1", 1.0,
                     "succeeded", 2.0, 0, slot="2026-12-05T03:00Z",
                     attempts=(Attempt(1, 1, "n1", "tick-1-x", "/l", 1.0, 2.0, 0),))
        await a.save(run)
    async with EtcdLease(shared_store, command="fleet reconcile", ttl=5) as second:
        b = records(shared_store, second, "fleet reconcile")
        assert not await b.claim("tick", "2026-12-05T03:00Z"), "another controller finds the slot taken"
        assert await b.claim("tick", "2026-12-05T03:01Z", "missed")
    reader = records(shared_store, None, "")
    assert await reader.runs("tick") == [run] and await reader.runs() == [run]
    slots = await reader.slots("tick")
    assert {k: v["status"] for k, v in slots.items()} == {"2026-12-05T03:00Z": "run", "2026-12-05T03:01Z": "missed"}
    assert slots["2026-12-05T03:00Z"]["command"] == "fleet watch"
    with pytest.raises(RecordsError, match="only under the fleet's lease"):
        await reader.claim("tick", "2026-12-05T03:02Z")


async def test_claim_after_the_lease_was_lost_writes_nothing(shared_store: EtcdStore) -> None:
    lease = EtcdLease(shared_store, command="fleet watch", ttl=5)
    await lease.acquire()
    held = records(shared_store, lease, "fleet watch")
    await shared_store.revoke(lease.lease_id or 0)  # broken meanwhile (`fleet lock break`, an expiry)
    with pytest.raises(LeaseLost):
        await held.claim("tick", "2026-12-05T04:00Z")
    assert await records(shared_store, None, "").slots("tick") == {}
