"""The fleet's virtual IP on the lb nodes: keepalived configured and reloaded over SSH like HAProxy, and who
holds the address now."""

from __future__ import annotations

import asyncio
import contextlib

from fleet.core.errors import LbError, ScriptOutputError
from fleet.core.model import Node, Vrrp
from fleet.core.shell import Script
from fleet.engine.nodes import NodeReport
from fleet.node.haproxy.scripts import parse_script_output
from fleet.node.keepalived import (
    VrrpState,
    apply_script,
    parse_status,
    render,
    retire_script,
    status_script,
    stop_script,
)
from fleet.results.status import VipStatus as VipStatus
from fleet.transport import Pool

APPLY_TIMEOUT = 20.0
STATUS_TIMEOUT = 8.0
_FAILED = {
    "invalid": "keepalived refused the config",
    "start-failed": "keepalived exited during start",
    "locked": "another apply holds the keepalived lock on this node",
    "missing": "keepalived is not installed (Debian: apt install keepalived)",
    "missing-socat": "socat is not installed (Debian: apt install socat): keepalived's check of HAProxy needs it",
}


def fleet_vrrp(nodes: list[Node]) -> Vrrp | None:
    """The inventory's virtual IP settings (the same on every lb node), or None."""
    return next((n.vrrp for n in nodes if n.has_role("lb") and n.vrrp is not None), None)


class VirtualIp:
    """keepalived on every reachable lb node of one run; the priority follows inventory order."""

    def __init__(self, pool: Pool, reports: list[NodeReport]) -> None:
        self.pool = pool
        lbs = [r for r in reports if r.node.has_role("lb")]
        self.vrrp = fleet_vrrp([r.node for r in lbs])
        self.index = {r.node.name: i for i, r in enumerate(lbs)}
        self.nodes = [r.node for r in lbs if r.status not in ("unreachable", "error")]
        self.unreachable = [r.node.name for r in lbs if r.status in ("unreachable", "error")]
        self._retire_checked = False

    def config(self, node: Node) -> str:
        assert self.vrrp is not None
        return render(self.vrrp, node.name, self.index[node.name])

    async def _report(self, node: Node, script: Script, stdin: str | None, timeout: float) -> str:
        result = await self.pool.run(node, script, stdin=stdin, timeout=timeout)
        if result.error is not None:
            raise LbError(node.name, f"keepalived: {result.error}")
        if result.exit_status != 0:
            raise LbError(node.name, f"keepalived script exited {result.exit_status}: "
                                     f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
        return result.stdout

    async def _apply(self, node: Node) -> str:
        assert self.vrrp is not None
        text = self.config(node)
        out = parse_script_output(await self._report(node, apply_script(self.vrrp, len(text.encode())), text,
                                                     APPLY_TIMEOUT))
        if out.result in ("unchanged", "started", "reloaded"):
            return out.result
        detail = (out.section("check") or out.section("log")).strip().splitlines()
        raise LbError(node.name, _FAILED.get(out.result, f"unexpected keepalived result {out.result!r}")
                      + (f": {detail[-1]}" if detail else ""))

    async def sync(self) -> dict[str, str]:
        """Write the config on every reachable lb node and start or reload keepalived there; what happened per
        node (unchanged, started, reloaded). Without a virtual IP in the inventory, a keepalived that fleet left
        running when the inventory had one is stopped and its config removed (`retired`), once per run; an lb
        node where that fails is tried again by the next run."""
        if self.vrrp is None:
            if self._retire_checked:
                return {}
            self._retire_checked = True
            retired = await asyncio.gather(*(self._report(n, retire_script(), None, APPLY_TIMEOUT)
                                             for n in self.nodes), return_exceptions=True)
            out = {}
            for n, res in zip(self.nodes, retired, strict=True):
                if isinstance(res, BaseException) and not isinstance(res, Exception):
                    raise res
                with contextlib.suppress(ScriptOutputError):
                    if isinstance(res, str) and parse_script_output(res).result == "retired":
                        out[n.name] = "retired"
            return out
        results = await asyncio.gather(*(self._apply(n) for n in self.nodes), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                raise res
        return {n.name: str(r) for n, r in zip(self.nodes, results, strict=True)}

    async def status(self) -> VipStatus | None:
        """Who holds the address; None without a virtual IP in the inventory."""
        if self.vrrp is None:
            return None
        vrrp = self.vrrp

        async def one(node: Node) -> VrrpState:
            try:
                return parse_status(await self._report(node, status_script(vrrp), None, STATUS_TIMEOUT))
            except ScriptOutputError as exc:
                raise LbError(node.name, str(exc)) from None

        results = await asyncio.gather(*(one(n) for n in self.nodes), return_exceptions=True)
        status = VipStatus(vrrp.cidr, errors={name: "unreachable" for name in self.unreachable})
        for n, res in zip(self.nodes, results, strict=True):
            if isinstance(res, LbError):
                status.errors[n.name] = res.message
            elif isinstance(res, BaseException):
                raise res
            else:
                status.states[n.name] = res
        return status

    async def stop(self, node: Node) -> str:
        assert self.vrrp is not None
        return parse_script_output(await self._report(node, stop_script(self.vrrp), None, STATUS_TIMEOUT)).result
