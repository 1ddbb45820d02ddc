"""Reading HAProxy's config on the lb nodes for people: `fleet lb show` (the config each node runs) and the diff
`fleet plan` shows when a playbook would change it. Read-only; the stats password's hash is masked."""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from fleet.config.spec import ServiceSpec
from fleet.core.errors import LbError
from fleet.core.shell import Script
from fleet.engine.lb import Balancers, Rotation, config
from fleet.node.haproxy.certs import cert_file
from fleet.node.haproxy.render import LbTls
from fleet.node.paths import DEFAULT
from fleet.results.lb import LbConfig as LbConfig
from fleet.transport import Pool

_READ = r"""
set -u
if [ -f "$F" ]; then echo "@@fleet present"; cat "$F"; else echo "@@fleet absent"; fi
"""
_PASSWORD = re.compile(r"^(\s*user \S+ password )'[^']*'$", re.M)
_CERT = re.compile(r"^\s*# certificate of ([A-Za-z0-9_.-]+): sha256 ([0-9a-f]{64}|-)$", re.M)
READ_TIMEOUT = 15.0


def masked(text: str) -> str:
    """The config with the stats page's password hash replaced (the only derived secret it holds)."""
    return _PASSWORD.sub(r"\1'<hidden>'", text)


def tls_in_config(text: str) -> dict[str, str]:
    """Per service, the fingerprint of the certificate a rendered config serves (from its comments)."""
    return {m[1]: m[2] for m in _CERT.finditer(text) if m[2] != "-"}


def config_diff(node: str, current: str | None, proposed: str) -> list[str]:
    """A unified diff of the node's config (masked), empty when nothing would change."""
    old = masked(current or "").splitlines()
    new = masked(proposed).splitlines()
    return list(difflib.unified_diff(old, new, f"{node}: haproxy.cfg (now)", f"{node}: haproxy.cfg (after apply)",
                                     n=2, lineterm=""))


class WithBalancers(Protocol):
    """What reading the configs needs of a run (an `Engine`): its pool and its load balancers."""

    @property
    def pool(self) -> Pool: ...

    @property
    def lbs(self) -> Balancers: ...


async def read_configs(engine: WithBalancers, nodes: Sequence[str] | None = None) -> list[LbConfig]:
    """The current haproxy.cfg of every usable lb node of `engine` (an `Engine`), or of `nodes`."""
    lbs = [lb for lb in engine.lbs.nodes if nodes is None or lb.node.name in nodes]
    script = Script(_READ, {"F": DEFAULT.haproxy_config}, name="fleet-haproxy-show")

    async def one(name: str) -> LbConfig:
        lb = next(n for n in lbs if n.node.name == name)
        result = await engine.pool.run(lb.node, script, timeout=READ_TIMEOUT)
        if result.error is not None or result.exit_status != 0:
            return LbConfig(name, None, result.error or result.stderr.strip()[-200:] or "cannot read the config")
        head, _, rest = result.stdout.partition("\n")
        return LbConfig(name, masked(rest) if head == "@@fleet present" else None)

    return list(await asyncio.gather(*(one(lb.node.name) for lb in lbs)))


async def proposed_configs(engine: WithBalancers, rotation: Rotation,
                           specs: Sequence[ServiceSpec]) -> dict[str, tuple[str | None, str]]:
    """Per lb node: (its config now, the config with `specs` accepted) over the replicas running now, whose
    `rotation` follows the accepted specs of the others. Certificates are those the node serves now (a service
    that gets HTTPS shows as plain HTTP until its certificate is put there by apply). Call after `engine.plan`
    (which observes)."""
    for spec in specs:
        rotation.follow(spec)
    current = {c.node: c for c in await read_configs(engine)}
    out: dict[str, tuple[str | None, str]] = {}
    for lb in engine.lbs.nodes:
        name = lb.node.name
        now = current.get(name)
        if now is not None and now.error is not None:
            raise LbError(name, f"cannot read its HAProxy config: {now.error}")
        now_text = now.text if now is not None else None
        served = tls_in_config(now_text or "")
        services = rotation.services(engine.lbs.addresses)
        if engine.lbs.edge is not None:
            engine.lbs.edge.expect_acme("acme_token" in (now_text or "") or any(
                s.tls_source is not None and s.tls_source.acme for s in services))
        tls: dict[str, LbTls] = {}
        for svc in services:
            src = svc.tls_source
            if src is not None and svc.name in served:
                tls[svc.name] = replace(LbTls(cert_file(svc.name), served[svc.name]), redirect=src.redirect,
                                        hsts=src.hsts)
        text = config(rotation, engine.lbs.addresses, engine.lbs.addresses[name], engine.lbs.edge, tls)
        out[name] = (now_text, text)
    return out
