"""The one read path under the façade for `nodes`, `status` and `ps`, which the CLI, the terminal UI and a watcher's
socket all take: warm through a running `fleet watch` (fleet.transport.warm), else direct over a Fleet's pool."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, cast

from fleet.results import LIST_TIMEOUT, FleetStatus, NodeReport, PsResult
from fleet.transport import warm

Ask = Callable[..., Awaitable[Any]]  # (inventory path, op, **args) -> a watcher's answer, or None


class Reads(Protocol):
    """The direct reads (the façade's Fleet answers them over its pool)."""

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]: ...

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus: ...

    async def ps(self, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult: ...


class Reader:
    """Reads of one inventory's fleet: through a running `fleet watch`'s warm connections when one answers for
    `inventory_path`, else over `direct` (or what `open` opens on first use, closed with the reader).

    After one read the watcher does not answer, the others go direct too. `recent()` gives node reports read
    moments ago (a watcher's last round), used instead of reading the nodes again. `ask` is how the watcher is
    asked (None: never); `via` says "fleet watch" when every read came through one."""

    def __init__(self, inventory_path: str, direct: Reads | None = None, *,
                 open: Callable[[], AbstractAsyncContextManager[Reads]] | None = None, ask: Ask | None = warm.ask,
                 recent: Callable[[], list[NodeReport] | None] = lambda: None) -> None:
        self.inventory_path = inventory_path
        self._direct = direct
        self._open = open
        self._ask = ask
        self._recent = recent
        self._stack = contextlib.AsyncExitStack()
        self.warm = 0  # reads the watcher answered
        self.direct = 0  # reads made over a pool

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def via(self) -> str:
        return "fleet watch" if self.warm and not self.direct else ""

    async def _watcher(self, op: warm.Op, **args: Any) -> Any | None:
        if self._ask is None:
            return None
        got = await self._ask(self.inventory_path, op, **args)
        if got is None:
            self._ask = None
        else:
            self.warm += 1
        return got

    async def _reads(self) -> Reads:
        self.direct += 1
        if self._direct is None:
            if self._open is None:
                raise ValueError("a Reader needs direct reads or a way to open them")
            self._direct = await self._stack.enter_async_context(self._open())
        return self._direct

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        got = await self._watcher("nodes")
        if got is not None:
            return list(got)
        recent = self._recent()
        if recent is not None:
            return recent
        return await (await self._reads()).nodes(ports=ports)

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus:
        """The fleet's status, read from the ready nodes of `reports` (default: `recent()`, else the run's own)."""
        got = await self._watcher("status")
        if got is not None:
            return cast(FleetStatus, got)
        return await (await self._reads()).status(reports if reports is not None else self._recent())

    async def ps(self, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult:
        # As ever: `timeout` bounds the wait for the watcher's answer, which lists with its own deadline.
        got = await self._watcher("ps", all=all, timeout=timeout)
        if got is not None:
            return cast(PsResult, got)
        return await (await self._reads()).ps(all=all, timeout=timeout)

    async def answer(self, op: str, args: Mapping[str, Any]) -> Any:
        """A read named on a watcher's socket (`nodes`, `status`, `ps` and their arguments); ValueError for
        another name."""
        if op == "nodes":
            return await self.nodes(ports=bool(args.get("ports", False)))
        if op == "status":
            return await self.status()
        if op == "ps":
            return await self.ps(all=bool(args.get("all", False)), timeout=float(args.get("timeout", LIST_TIMEOUT)))
        raise ValueError(f"unknown op {op!r}")
