"""The fleet's records in etcd (fleet.store.etcd_records) on a real etcd member, reached by etcdctl over SSH (an
in-process SSH server whose shell reaches the member on loopback): revision numbers from the shared counter,
never twice, across controllers; decisions; every write fenced by the lease and logged with who made it; a value
that fails to decode refused by name; the first run's import of the old file records (fleet.store.migrate)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from etcd_local import ETCD
from sshserver import SSHFarm

from fleet.core.errors import HistoryError, LeaseLost, RecordsError
from fleet.core.model import Inventory
from fleet.core.nodeops import NodeMark
from fleet.store.etcd import LOCK_KEY, EtcdLease, EtcdStore, SharedState, revision_key
from fleet.store.etcd_records import EtcdRecords, mark_key, read_marks, revision_doc, state_key
from fleet.store.history import Revision
from fleet.store.legacy import decode_record, merge, parse_dump
from fleet.store.migrate import MIGRATED_KEY, migrate, old_record_nodes

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")

SPEC = json.dumps({"image": "fleet.local/demo:v1", "replicas": 2})
SPEC2 = json.dumps({"image": "fleet.local/demo:v2", "replicas": 2})


def _rev(n: int, outcome: str = "succeeded", spec: str = SPEC) -> Revision:
    return Revision("web", n, f"h{n}", "img", "alice", 10.0 + n, 11.0 + n, outcome, "", spec)  # type: ignore[arg-type]


async def test_revisions_numbered_by_the_counter_and_reapplying_returns_the_same(shared_store: EtcdStore) -> None:
    async with EtcdLease(shared_store, command="fleet apply", ttl=10) as lease:
        records = EtcdRecords(shared_store, SharedState(shared_store, lease), command="fleet apply web.yaml")
        assert await records.record("web", SPEC, "h1", "img:1", "alice") == 1
        # The same spec while in progress (its controller died) and once succeeded: the same revision.
        assert await records.record("web", SPEC, "h1", "img:1", "alice") == 1
        assert await records.finish("web", 1, "succeeded") is True
        assert await records.finish("web", 1, "failed") is False  # the first outcome stays
        assert await records.record("web", json.dumps({"image": "fleet.local/demo:v1", "replicas": 5}), "h1",
                                    "img:1", "alice") == 1  # but for the replica count, the same spec
        assert await records.record_many([("web", SPEC2, "h2", "img:2", "bob"),
                                          ("api", SPEC, "a1", "img:1", "bob")]) == [2, 1]
        with pytest.raises(HistoryError, match="no revision 7"):
            await records.finish("web", 7, "failed")
        await records.set_state("web", {"decision": "accepted", "accepted": 1})
        await records.set_state("api", {"decision": "accepted"})
        await records.set_state("api", None)
    # Another controller, outside the lease, reads what was written; it cannot write.
    reader = EtcdRecords(shared_store)
    assert [(r.revision, r.outcome) for r in await reader.list("web")] == [(1, "succeeded"), (2, "in-progress")]
    assert (await reader.get("web", 2)).user == "bob"  # type: ignore[union-attr]
    assert (await reader.latest_succeeded("web")).revision == 1  # type: ignore[union-attr]
    assert await reader.services() == ["api", "web"]
    assert await reader.state("web") == {"decision": "accepted", "accepted": 1}
    assert await reader.state("api") is None
    with pytest.raises(RecordsError, match="only under the fleet's lease"):
        await reader.set_state("web", None)


async def test_two_controllers_one_after_the_other_number_on_and_every_write_is_in_the_event_log(
        shared_store: EtcdStore) -> None:
    for who, spec in (("ann@ctl-1", SPEC), ("bob@ctl-2", SPEC2)):
        async with EtcdLease(shared_store, command="fleet apply", ttl=10, holder=who) as lease:
            shared = SharedState(shared_store, lease)
            records = EtcdRecords(shared_store, shared, command=f"fleet apply ({who})")
            number = await records.record("web", spec, spec, "img", who)
            await records.finish("web", number, "succeeded")
    assert [r.revision for r in await EtcdRecords(shared_store).list("web")] == [1, 2]
    events = await shared.events()
    assert [(e.value["what"], e.value["command"]) for e in events] == [
        ("revision", "fleet apply (ann@ctl-1)"), ("finish", "fleet apply (ann@ctl-1)"),
        ("revision", "fleet apply (bob@ctl-2)"), ("finish", "fleet apply (bob@ctl-2)")]
    assert all(e.value["who"] for e in events) and [e.number for e in events] == sorted(e.number for e in events)


async def test_concurrent_record_calls_on_two_stores_never_share_a_number(shared_store: EtcdStore,
                                                                           farm: SSHFarm) -> None:
    other = EtcdStore(shared_store.pool, farm.nodes[1:2], port=shared_store.at.port)
    async with EtcdLease(shared_store, command="fleet apply", ttl=10) as lease:
        a = EtcdRecords(shared_store, SharedState(shared_store, lease))
        b = EtcdRecords(other, SharedState(other, lease))  # the same run through another record node
        await a.refresh()
        await b.refresh()
        numbers = await asyncio.gather(*(r.record("web", json.dumps({"image": f"v{i}"}), f"h{i}", "i", "u")
                                         for i, r in enumerate([a, b] * 3)))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


async def test_a_run_whose_lease_expired_writes_nothing(shared_store: EtcdStore) -> None:
    lease = EtcdLease(shared_store, command="fleet apply", ttl=1)
    await lease.acquire()  # never renewed: it expires on etcd's clock
    records = EtcdRecords(shared_store, SharedState(shared_store, lease))
    await records.refresh()
    deadline = time.monotonic() + 10
    while await shared_store.get(LOCK_KEY) is not None:  # etcd's leader revokes it once its ttl ran out
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    with pytest.raises(LeaseLost, match="nothing was written"):
        await records.record("web", SPEC, "h1", "img", "alice")
    assert await shared_store.range("/fleet/services/") == ()


async def test_a_record_that_fails_to_decode_is_refused_by_name(shared_store: EtcdStore) -> None:
    async with EtcdLease(shared_store, command="fleet apply", ttl=10) as lease:
        shared = SharedState(shared_store, lease)
        await shared.write({revision_key("web", 1): {"outcome": "done?"}})
        with pytest.raises(RecordsError, match="etcd key /fleet/services/web/revisions/0000000001: field "):
            await EtcdRecords(shared_store).list("web")
        await shared.write({mark_key("n1"): {"cordoned": "yes"}}, [revision_key("web", 1)])
        with pytest.raises(RecordsError, match=r"etcd key /fleet/nodes/n1: not a node mark: nodes\.n1\.cordoned"):
            await read_marks(shared_store)


# ---- the old file records, imported once ---------------------------------------------------------------------------


def _old_file(root: Path, path: str, doc: dict[str, object]) -> None:
    target = root / "records" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"format": 1, **doc}) + "\n")


def _old_revision(rev: Revision, updated_at: float) -> dict[str, object]:
    return {"kind": "revision", "service": rev.service, "revision": rev.revision, "updated_at": updated_at,
            **revision_doc(rev)}


def test_old_record_files_are_validated_and_the_newest_copy_wins() -> None:
    old = json.dumps({"format": 1, **_old_revision(_rev(3, "in-progress"), 5.0)}).encode()
    new = json.dumps({"format": 1, **_old_revision(_rev(3), 9.0)}).encode()
    merged = merge({"n1": {"web/rev-3.json": old}, "n2": {"web/rev-3.json": new, "web/rev-4.json": b"{"}})
    assert merged.revisions[("web", 3)] == _rev(3) and merged.found_on == ["n1", "n2"]
    assert merged.warnings == ["n2: records/web/rev-4.json: not JSON: Expecting property name enclosed in double "
                               "quotes: line 1 column 2 (char 1) (skipped)"]
    with pytest.raises(ValueError, match="does not hold 'web' revision 4"):
        decode_record("web/rev-4.json", new)
    listing = "fleet-records 1\nfile web/rev-3.json " + base64.b64encode(new).decode() + "\nend\n"
    assert parse_dump(listing) == {"web/rev-3.json": new}
    with pytest.raises(ValueError, match="cut short"):
        parse_dump(listing.removesuffix("end\n"))


async def test_the_first_run_imports_the_file_records_keeps_their_numbers_then_removes_them(
        shared_store: EtcdStore, farm: SSHFarm, tmp_path: Path) -> None:
    base = str(tmp_path / "nodes" / "{node}" / "fleet")
    for node, stale in (("n1", False), ("n2", True)):  # n2 missed the last write: its copy is older
        root = Path(base.replace("{node}", node))
        _old_file(root, "web/rev-1.json", _old_revision(_rev(1), 1.0))
        _old_file(root, "web/rev-2.json", _old_revision(_rev(2, "in-progress" if stale else "failed"),
                                                        2.0 if stale else 3.0))
        _old_file(root, "web/state.json", {"kind": "state", "service": "web", "state": {"accepted": 1},
                                           "updated_at": 3.0})
        _old_file(root, "fleet.nodes/state.json", {"kind": "state", "service": "fleet.nodes", "updated_at": 3.0,
                                                   "state": {"format": 1, "nodes": {"n3": {"cordoned": True}}}})
    # The former protocol kept them on the lb nodes, with a third node as a tie-breaker for two.
    nodes = (replace(farm.nodes[0], roles=("lb",)), replace(farm.nodes[1], roles=("lb",)), farm.nodes[2])
    inventory = Inventory(str(tmp_path / "inv.yaml"), nodes)
    assert [n.name for n in old_record_nodes(inventory)] == ["n1", "n2", "n3"]
    async with EtcdLease(shared_store, command="fleet apply", ttl=10) as lease:
        shared = SharedState(shared_store, lease)
        done = await migrate(shared_store.pool, inventory, shared, base)
        assert done is not None and (done.services, done.revisions, done.marks) == (1, 2, 1)
        assert await migrate(shared_store.pool, inventory, shared, base) is None  # once
        # Revision numbers go on from the imported ones.
        records = EtcdRecords(shared_store, shared)
        assert await records.record("web", SPEC2, "h3", "img", "carol") == 3
    revs = await EtcdRecords(shared_store).list("web")
    assert [(r.revision, r.outcome) for r in revs] == [(1, "succeeded"), (2, "failed"), (3, "in-progress")]
    assert await shared_store.read(state_key("web")) == {"accepted": 1}
    assert await read_marks(shared_store) == {"n3": NodeMark(cordoned=True)}
    assert await shared_store.read(MIGRATED_KEY) == {"revisions": 2, "services": 1}
    assert not any((Path(base.replace("{node}", n)) / "records").exists() for n in ("n1", "n2"))
