"""A decision that acts re-reads under the lease what it acts on: within one run, a service's turn to converge
(behind others), a scale, a rollback, a destroy each read that service's records again before acting, not the copy
the run read at its start. Through the engine's harness with `RunCopy` (one run's copy of the records, as
EtcdRecords keeps it): a second writer changes a service's record while the run converges another, and the run
acts on the new one. `EtcdRecords.reread` itself on a real etcd: one service read again, fenced by the lease."""

from __future__ import annotations

import json
import time

import pytest
from etcd_local import ETCD
from harness import Harness, MemoryRecords, RunCopy, service, worker

from fleet.core.errors import FleetError, LeaseLost
from fleet.engine.apply import Engine
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import ServiceState, after_destroy, after_scale
from fleet.store.etcd import LOCK_KEY, EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_records import EtcdRecords

A, B = service("a", 2), service("b", 2)


async def _fleet_with_a_and_b() -> tuple[Harness, MemoryRecords]:
    h = Harness([worker("n1"), worker("n2")], parallel=1)
    await h.apply(A, B)
    return h, h.memory()


def _another_controller(fleet: MemoryRecords, change: str) -> None:
    """What `fleet destroy b` / `fleet scale b 3` from another controller leaves in the records."""
    state = ServiceState.from_json(fleet.states["b"])
    after = after_destroy(state, "bob@ctl2", time.time()) if change == "destroy" else after_scale(state, 3)
    fleet.states["b"] = after.to_json()


@pytest.mark.parametrize("reread", [True, False])
@pytest.mark.parametrize("change", ["destroy", "scale"])
async def test_a_service_waiting_its_turn_acts_on_its_record_as_it_is_then(change: str, reread: bool) -> None:
    h, fleet = await _fleet_with_a_and_b()
    lost = h.ops.of("a")[0]
    h.ops.running.pop(lost.id)  # a's node lost a replica: this reconcile starts one, then b's turn comes
    run = RunCopy(fleet)
    if not reread:
        run.reread = lambda *services: _nothing()  # type: ignore[method-assign]  # the run's copy, as first read

    def on_start(r: Replica) -> None:
        if r.service == "a":
            _another_controller(fleet, change)

    h.ops.on_start = on_start
    engine = Engine(h.pool, h.engine.view.reports, on_event=h.events.append, records=run, user="harness",
                    parallel=1, ops=h.ops)
    result = await engine.apply([A, B], "reconcile")
    assert len(h.ops.of("a")) == 2
    b = next(o for o in result.outcomes if o.service == "b")
    if not reread:
        # The check can fail: acting on the copy read at the run's start keeps b as it was.
        assert len(h.ops.of("b")) == 2 and b.ok
        return
    assert run.rereads == [("a",), ("b",)]  # one service at a time (parallel=1), each before its turn
    if change == "destroy":
        assert h.ops.of("b") == [] and b.ok and b.stopped == 2
    else:
        assert len(h.ops.of("b")) == 3 and b.ok
    assert any(e.service == "b" and "its record changed since this run read it" in e.message for e in h.events)
    if change == "destroy":
        assert fleet.states["b"]["decision"] == "destroyed"
    else:
        assert fleet.states["b"]["replicas"] == 3  # the count the other controller set, kept


async def _nothing() -> None:
    return None


async def test_services_converging_side_by_side_share_their_reads() -> None:
    specs = [service(f"s{i}", 1) for i in range(8)]
    h = Harness([worker("n1"), worker("n2")])
    await h.apply(*specs)
    run = RunCopy(h.memory())
    engine = Engine(h.pool, h.engine.view.reports, records=run, user="harness", parallel=16, ops=h.ops)
    result = await engine.apply(specs, "reconcile")
    assert result.ok and not result.changed
    # Each service read again before its turn, eight turns in two reads: the first, and all that asked meanwhile.
    assert sorted(s for read in run.rereads for s in read) == [s.name for s in specs]
    assert len(run.rereads) == 2, run.rereads


async def test_destroy_scale_and_rollback_read_the_service_again_before_acting() -> None:
    h, fleet = await _fleet_with_a_and_b()
    for act in ("destroy", "scale", "rollback"):
        run = RunCopy(fleet)
        await run.services()  # the run's copy, read at its start
        engine = Engine(h.pool, h.engine.view.reports, records=run, user="harness", ops=h.ops)
        if act == "destroy":
            fleet.states["b"]["accepted"] = 7  # meanwhile, elsewhere: b's accepted revision changed
            await engine.destroy("b")
            # The destroyed record keeps the accepted revision as it was then, for `fleet rollback`.
            assert fleet.states["b"]["decision"] == "destroyed" and fleet.states["b"]["accepted"] == 7
        elif act == "scale":
            await engine.scale(A, 3)
        else:
            with pytest.raises(FleetError, match="no succeeded revision before 1"):
                await engine.turn("rollback", "a")
        assert run.rereads == [({"destroy": "b", "scale": "a", "rollback": "a"}[act],)]


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")
async def test_etcd_records_reread_one_service_fenced(shared_store: EtcdStore) -> None:
    spec = json.dumps({"image": "fleet.local/demo:v1", "replicas": 2})
    async with EtcdLease(shared_store, command="fleet apply", ttl=10, holder="ann@ctl-1") as lease:
        records = EtcdRecords(shared_store, SharedState(shared_store, lease))
        for name in ("web", "api"):
            await records.record(name, spec, "h1", "img", "ann")
            await records.set_state(name, {"decision": "accepted", "accepted": 1})
    lease = EtcdLease(shared_store, command="fleet apply", ttl=10, holder="ann@ctl-1")
    await lease.acquire()
    mine = EtcdRecords(shared_store, SharedState(shared_store, lease))
    assert (await mine.state("web") or {})["decision"] == "accepted"
    # Another writer (the fleet's records as they are now, written past this run's copy).
    other = EtcdRecords(shared_store, SharedState(shared_store, lease))
    await other.set_state("web", {"decision": "destroyed"})
    await other.set_state("api", {"decision": "destroyed"})
    await other.record("web", json.dumps({"image": "fleet.local/demo:v2", "replicas": 2}), "h2", "img:2", "bob")
    await mine.reread("web")
    assert await mine.state("web") == {"decision": "destroyed"}
    assert [r.revision for r in await mine.list("web")] == [1, 2]
    assert await mine.state("api") == {"decision": "accepted", "accepted": 1}  # only the service asked for
    # Fenced: once the lease is gone, the re-read says so instead of answering.
    await lease.release()
    assert await shared_store.get(LOCK_KEY) is None
    with pytest.raises(LeaseLost):
        await mine.reread("api")
