"""The one read path (fleet.engine.reader.Reader): a watcher's answer when one comes, else the direct reads, opened
only when first needed and closed with the reader; the watcher's socket names its reads the same way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from fleet.api import Reader
from fleet.core.model import Node
from fleet.results import FleetStatus, NodeReport, PsResult

REPORT = NodeReport(Node("n1", "10.0.0.1"), "ready", None, None, 0.01)
STATUS = FleetStatus((), {}, {})


class Direct:
    """Direct reads that record each call (what a Fleet over a pool would answer)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        self.calls.append(("nodes", ports))
        return [REPORT]

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus:
        self.calls.append(("status", None if reports is None else len(reports)))
        return STATUS

    async def ps(self, *, all: bool = False, timeout: float = 8.0) -> PsResult:
        self.calls.append(("ps", all, timeout))
        return PsResult(())


class Opener:
    """Opens one Direct on demand and says when it was closed."""

    def __init__(self) -> None:
        self.direct = Direct()
        self.opened = self.closed = 0

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Direct]:
        self.opened += 1
        try:
            yield self.direct
        finally:
            self.closed += 1


async def test_a_watchers_answer_is_used_and_no_pool_is_opened() -> None:
    asked: list[tuple[str, str, dict[str, Any]]] = []

    async def ask(path: str, op: str, **args: Any) -> Any:
        asked.append((path, op, args))
        return {"nodes": [REPORT], "status": STATUS, "ps": PsResult(())}[op]

    opener = Opener()
    async with Reader("/inv.yaml", open=opener, ask=ask) as read:
        assert await read.nodes() == [REPORT]
        assert await read.status() is STATUS
        assert await read.ps(all=True, timeout=3.0) == PsResult(())
        assert read.via == "fleet watch"
    assert asked == [("/inv.yaml", "nodes", {}), ("/inv.yaml", "status", {}),
                     ("/inv.yaml", "ps", {"all": True, "timeout": 3.0})]
    assert opener.opened == 0 and opener.direct.calls == []


async def test_without_a_watcher_the_reads_go_direct_over_one_pool_closed_on_exit() -> None:
    asked: list[str] = []

    async def ask(path: str, op: str, **args: Any) -> Any:
        asked.append(op)
        return None

    opener = Opener()
    async with Reader("/inv.yaml", open=opener, ask=ask) as read:
        reports = await read.nodes(ports=True)
        await read.status(reports)
        await read.ps(all=False, timeout=2.0)
        assert read.via == "" and opener.closed == 0
    assert asked == ["nodes"], "after the watcher did not answer once, it is not asked again"
    assert opener.direct.calls == [("nodes", True), ("status", 1), ("ps", False, 2.0)]
    assert (opener.opened, opener.closed) == (1, 1)


async def test_the_watchers_side_answers_from_its_recent_reports_and_names_its_reads() -> None:
    direct = Direct()
    read = Reader("/inv.yaml", direct, ask=None, recent=lambda: [REPORT, REPORT])
    assert await read.answer("nodes", {}) == [REPORT, REPORT]
    assert await read.answer("status", {}) is STATUS
    assert await read.answer("ps", {"all": True}) == PsResult(())
    assert direct.calls == [("status", 2), ("ps", True, 8.0)], "the recent reports, not a new facts round"
    with pytest.raises(ValueError, match="unknown op 'drop'"):
        await read.answer("drop", {})
    stale = Reader("/inv.yaml", direct, ask=None)
    await stale.answer("nodes", {"ports": True})
    assert direct.calls[-1] == ("nodes", True)
