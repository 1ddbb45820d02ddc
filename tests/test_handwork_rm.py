"""`fleet rm` and `fleet stop` by hand (fleet.engine.handwork): a running replica of a service goes through the
lease and the drain (`drained`, the façade's `Fleet.retire`) before it is removed, a foreign or stopped container
is removed at once, a drain that fails leaves its replica where it is, and a lease another run holds refuses the
whole command before anything is done. Fast: the container listing and removal on nodes are replaced by fakes
that record the calls (labelled as such); the lab (test_lbsettings_lab.py) shows the drain under load."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.core import labels as L
from fleet.core.errors import FleetError, LeaseHeld, LeaseInfo
from fleet.engine import containers as C
from fleet.engine import handwork
from fleet.node.runtime.base import ContainerInfo, Status
from fleet.results.containers import PsResult, PsRow

HOLDER = LeaseInfo("ann@ci", 4242, "apply", 1_700_000_000.0, 1_700_000_030.0, "r1")


def row(cid: str, status: Status, service: str | None) -> PsRow:
    labels = L.ContainerLabels(service, revision=1, replica=0) if service else None
    return PsRow("n1", ContainerInfo(cid, "fleet.local/demo:v1", labels.to_labels() if labels else {}, status),
                 labels)


ROWS = (row("web-0-aaa", Status.RUNNING, "web"), row("web-1-bbb", Status.STOPPED, "web"),
        row("debug-ccc", Status.RUNNING, None))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every container removed or stopped on a node and every set of replicas handed to the drain, in order."""
    seen: list[tuple[str, Any]] = []

    async def ps(pool: Any, reports: Any, **kw: Any) -> PsResult:
        return PsResult(ROWS)

    async def remove(pool: Any, report: Any, cid: str) -> None:
        seen.append(("remove", cid))

    monkeypatch.setattr(C, "ps", ps)
    monkeypatch.setattr(C, "remove_container", remove)
    monkeypatch.setattr(C, "report_of", lambda reports, node: node)
    return seen


def drain(calls: list[tuple[str, Any]], error: FleetError | None = None) -> Any:
    async def drained(ids: frozenset[str]) -> None:
        calls.append(("drained", ids))
        if error is not None:
            raise error
    return drained


async def test_rm_drains_a_running_replica_first_and_removes_the_rest_at_once(calls):
    out = await handwork.rm(None, [], "web", drain(calls))  # type: ignore[arg-type]
    assert calls == [("drained", frozenset({"web-0-aaa"})), ("remove", "web-0-aaa"), ("remove", "web-1-bbb")]
    assert [(r.info.id, err) for r, err in out] == [("web-0-aaa", None), ("web-1-bbb", None)]
    calls.clear()
    [(foreign, err)] = await handwork.rm(None, [], "debug-ccc", drain(calls))  # type: ignore[arg-type]
    assert foreign.foreign and calls == [("remove", "debug-ccc")] and err is None  # no lease, no drain


async def test_rm_leaves_a_replica_whose_drain_failed_and_says_why(calls):
    out = await handwork.rm(None, [], "web", drain(calls, FleetError("web: n1 unreachable")))  # type: ignore[arg-type]
    assert calls == [("drained", frozenset({"web-0-aaa"})), ("remove", "web-1-bbb")]
    assert [(r.info.id, err) for r, err in out] == [("web-0-aaa", "web: n1 unreachable"), ("web-1-bbb", None)]


@pytest.mark.parametrize("verb", ["rm", "stop"])
async def test_a_lease_held_by_another_run_refuses_the_whole_command(calls, verb: str):
    with pytest.raises(LeaseHeld, match="held by ann@ci"):
        await getattr(handwork, verb)(None, [], "web", drained=drain(calls, LeaseHeld(HOLDER)))
    assert calls == [("drained", frozenset({"web-0-aaa"}))]  # nothing removed or stopped
