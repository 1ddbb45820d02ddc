"""The edge on the lb nodes: certificates of host-routed services put on every lb node (0600, never printed),
ACME certificates issued and renewed ahead of expiry, and the stats page's password hash.

`Edge.prepare` runs inside every HAProxy sync (so under the fleet's lease, as part of apply and reconcile): it
reads the bundles on the nodes (certificates only), brings each TLS service's bundle up to date on every node,
and returns what the config renders (`LbTls` per service: file, fingerprint, redirect, HSTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from fleet.config.edge import CertInfo, TlsSpec, bundle, cert_info, cover, read_pem, split_bundle
from fleet.core.edge import EdgeSettings
from fleet.core.errors import AcmeError, EdgeError, FleetError, LbError, RemoteCommandError, ScriptOutputError
from fleet.engine.acme import issue
from fleet.node.haproxy.certs import (
    ACME_ACCOUNT_KEY,
    ACME_MAP,
    CERT_DIR,
    NodeCert,
    add_token,
    cert_file,
    del_token,
    parse_optional,
    parse_state,
    read_optional_script,
    read_script,
    state_script,
)
from fleet.node.haproxy.render import EdgeConfig, LbTls
from fleet.node.paths import write_secret_file
from fleet.transport import Pool

if TYPE_CHECKING:
    from fleet.engine.haproxy import LbNode

CERT_TIMEOUT = 30.0
STATS_USER = "fleet"
_SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def stats_password_hash(password: str) -> str:
    """A SHA-512 crypt(3) hash of the stats password for HAProxy's userlist. The salt is derived from the
    password, so the same password renders the same config (no reload on every run); the password itself travels
    to openssl on stdin only."""
    digest = hashlib.sha256(b"fleet-stats-salt\0" + password.encode()).digest()
    salt = "".join(_SALT_CHARS[b % 64] for b in digest[:16])
    try:
        out = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EdgeError(f"cannot hash the stats password with openssl: {type(exc).__name__}") from None
    return out.stdout.strip()


class Edge:
    """The edge settings of one run, and what the last `prepare` found and put on the lb nodes."""

    def __init__(self, pool: Pool, settings: EdgeSettings,
                 secrets: Callable[[str], str | None] | None = None,
                 now: Callable[[], float] = time.time,
                 on_note: Callable[[str, str], None] | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.secrets = secrets
        self.now = now
        self.on_note = on_note or (lambda service, message: None)
        self._stats_hash: str | None = None
        # Per service: the certificate last put on every node (so repeated syncs in one run do no work).
        self.current: dict[str, tuple[bytes, CertInfo]] = {}
        self.issued: list[str] = []
        # What the last `prepare` could not do (the config was still applied with what it could).
        self.problems: dict[str, FleetError] = {}
        # ACME orders that failed in this run are not tried again by its later syncs (one order per service
        # and run: a CA that is down is not asked again at every rollout step).
        self.failed_orders: dict[str, FleetError] = {}
        # Whether the token map exists on every lb node (made by the certificates' script), so it can be rendered.
        self.acme_ready = False

    # --- rendering ------------------------------------------------------------------------------------
    def config(self) -> EdgeConfig:
        return EdgeConfig(self.settings.http_port, self.settings.https_port, "0.0.0.0",
                          ACME_MAP if self.acme_ready else None)

    def expect_acme(self, served: bool) -> None:
        """For a preview (`fleet plan`): render the token map as apply would, where a node serves it already or
        a service wants an ACME certificate (apply makes the map first, see `prepare`)."""
        self.acme_ready = self.acme_ready or served

    def stats(self, port: int) -> tuple[tuple[str, int], str | None]:
        """Where the stats page listens and its password hash: on every address with a password from the
        keyring, else on 127.0.0.1 only (no password). Raises EdgeError when the secret is not there."""
        name = self.settings.stats_password_secret
        if name is None:
            return ("127.0.0.1", port), None
        if self._stats_hash is None:
            value = self.secrets(name) if self.secrets is not None else None
            if not value:
                raise EdgeError(f"the stats password secret {name!r} is not in the keyring "
                                f"(fleet secret set {name})")
            self._stats_hash = stats_password_hash(value)
        return ("0.0.0.0", port), self._stats_hash

    # --- certificates ---------------------------------------------------------------------------------
    async def prepare(self, wanted: Mapping[str, tuple[TlsSpec, tuple[str, ...]]], nodes: Sequence[LbNode],
                      publish_config: Callable[[dict[str, LbTls]], Awaitable[None]]) -> dict[str, LbTls]:
        """Every TLS service's bundle on every lb node; `wanted` is service → (tls, hosts). ACME certificates
        missing, not covering the hosts or within `renew_before` of expiry are (re)issued: `publish_config` is
        first called with the certificates ready so far, so HAProxy serves the challenge path. A service whose
        certificate cannot be had is left out (plain HTTP) when it has none on the nodes, else keeps its old one;
        its problem is in `problems` (by service) until a later prepare gets it."""
        self.problems = {}
        if not nodes or not wanted:
            return {}
        states = await asyncio.gather(*(self._state(lb) for lb in nodes))
        self.acme_ready = self.acme_ready or any(tls.acme for tls, _ in wanted.values())
        by_node = {lb.node.name: st for lb, st in zip(nodes, states, strict=True)}
        ready: dict[str, LbTls] = {}
        problems: dict[str, FleetError] = {}

        async def land(service: str, tls: TlsSpec, fetch: Callable[[], Awaitable[tuple[bytes, CertInfo]]]) -> None:
            """The service's bundle from `fetch` onto every node; on failure its old one stays if every node has
            it, and the problem is kept for later."""
            try:
                text, info = await fetch()
                await self._deploy(service, text, nodes, by_node)
                ready[service] = _lbtls(service, info, tls)
            except FleetError as exc:
                problems[service] = exc
                kept = self._kept(service, by_node, tls)
                if kept is not None:
                    ready[service] = kept

        acme_due: list[str] = []
        for service, (tls, hosts) in sorted(wanted.items()):
            if not tls.acme:
                await land(service, tls, functools.partial(self._static_async, service, tls))
                continue
            try:
                done = await self._acme_current(service, hosts, nodes, by_node)
            except FleetError as exc:
                problems[service] = exc
                continue
            if done is None and service in self.failed_orders:
                problems[service] = self.failed_orders[service]
                if (kept := self._kept(service, by_node, tls)) is not None:
                    ready[service] = kept
            elif done is None:
                acme_due.append(service)
            else:
                await land(service, tls, functools.partial(_ready, done))
        if acme_due:
            # HAProxy must answer the challenges first; a certificate being renewed keeps being served meanwhile.
            for service in acme_due:
                kept = self._kept(service, by_node, wanted[service][0])
                if kept is not None:
                    ready[service] = kept
            await publish_config(dict(ready))
            for service in acme_due:
                tls, hosts = wanted[service]
                await land(service, tls, functools.partial(self._acme_issue, service, hosts, nodes))
                if service in problems:
                    self.failed_orders[service] = problems[service]
        self.problems = problems
        return ready

    async def _state(self, lb: LbNode) -> dict[str, NodeCert]:
        # Bundles of services no longer served over HTTPS stay (an ACME certificate is not ordered again when
        # the service comes back); they are never read back but by their certificates.
        result = await self.pool.run(lb.node, state_script(CERT_DIR, ACME_MAP), timeout=CERT_TIMEOUT)
        if result.error is not None or result.exit_status != 0:
            raise LbError(lb.node.name, f"cannot read the certificates in {CERT_DIR}: "
                                        f"{result.error or result.stderr.strip()[-200:]}")
        try:
            return parse_state(result.stdout)
        except ScriptOutputError as exc:
            raise LbError(lb.node.name, str(exc)) from exc

    async def _static_async(self, service: str, tls: TlsSpec) -> tuple[bytes, CertInfo]:
        return self._static(service, tls)

    def _static(self, service: str, tls: TlsSpec) -> tuple[bytes, CertInfo]:
        """The bundle of a certificate from files or from a keyring secret."""
        try:
            if tls.secret is not None:
                value = self.secrets(tls.secret) if self.secrets is not None else None
                if not value:
                    raise EdgeError(f"{service}: lb.tls.secret {tls.secret!r} is not in the keyring "
                                    f"(fleet secret set {tls.secret} < bundle.pem)")
                certs, key = split_bundle(value.encode())
                text = bundle(certs, key)
            else:
                assert tls.cert_file is not None and tls.key_file is not None
                text = bundle(read_pem(tls.cert_file, "certificate"), read_pem(tls.key_file, "key"))
        except ValueError as exc:
            raise EdgeError(f"{service}: lb.tls: {exc}") from None
        return text, cert_info(text)

    def _kept(self, service: str, by_node: Mapping[str, Mapping[str, NodeCert]], tls: TlsSpec) -> LbTls | None:
        """The certificate already on every node, when the wanted one cannot be had."""
        certs = {st[service].certs for st in by_node.values() if service in st}
        if len(certs) != 1 or any(service not in st for st in by_node.values()):
            return None
        try:
            info = cert_info(certs.pop())
        except ValueError:
            return None
        return _lbtls(service, info, tls)

    async def _acme_current(self, service: str, hosts: tuple[str, ...], nodes: Sequence[LbNode],
                            by_node: Mapping[str, Mapping[str, NodeCert]]) -> tuple[bytes, CertInfo] | None:
        """The ACME certificate to keep: the newest one on the nodes when it covers the hosts and is not due for
        renewal (its bundle read from a node that has it, when some node lacks it); None: issue a new one."""
        acme = self.settings.acme
        if acme is None:
            raise EdgeError(f"{service}: lb.tls.acme needs the inventory's edge.acme.directory")
        best: tuple[CertInfo, str] | None = None
        for node, st in by_node.items():
            if service in st:
                try:
                    info = cert_info(st[service].certs)
                except ValueError:
                    continue
                if best is None or info.not_after > best[0].not_after:
                    best = (info, node)
        if best is None:
            return None
        info, holder = best
        if any(not cover(info.names, h) for h in hosts) or info.not_after - self.now() < acme.renew_before:
            return None
        digests = {st[service].digest for st in by_node.values() if service in st}
        cached = self.current.get(service)
        if cached is not None and cached[1].fingerprint == info.fingerprint:
            return cached
        if len(digests) == 1 and all(service in st for st in by_node.values()):
            # Every node has the same bundle: nothing to copy, and the key stays where it is.
            return b"", info
        lb = next(n for n in nodes if n.node.name == holder)
        result = await self.pool.run(lb.node, read_script(cert_file(service)), timeout=CERT_TIMEOUT)
        if result.error is not None or result.exit_status != 0:
            raise LbError(holder, f"cannot read the certificate of {service}")
        return result.stdout.encode(), info

    async def _acme_issue(self, service: str, hosts: tuple[str, ...], nodes: Sequence[LbNode]
                          ) -> tuple[bytes, CertInfo]:
        acme = self.settings.acme
        assert acme is not None

        async def publish(tokens: Sequence[tuple[str, str]]) -> None:
            cmds = [add_token(t, v) for t, v in tokens]
            await asyncio.gather(*(lb.runtime(cmds) for lb in nodes))

        async def withdraw(tokens: Sequence[tuple[str, str]]) -> None:
            cmds = [del_token(t) for t, _ in tokens]
            await asyncio.gather(*(lb.runtime(cmds) for lb in nodes), return_exceptions=True)

        self.on_note(service, f"ordering a certificate for {', '.join(hosts)} from {acme.directory}")
        account, lacking = await self._account(nodes)
        issued = await issue(acme, hosts, publish, withdraw, account)
        await self._keep_account(issued.account_key, [lb for lb in nodes if lb.node.name in lacking])
        try:
            text = bundle(issued.chain, issued.key)
        except ValueError as exc:
            raise AcmeError(f"{service}: the issued certificate is unusable: {exc}") from None
        info = cert_info(text)
        self.issued.append(service)
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.not_after))
        self.on_note(service, f"certificate issued, valid until {until} UTC")
        return text, info

    async def _account(self, nodes: Sequence[LbNode]) -> tuple[bytes | None, set[str]]:
        """The ACME account key kept on the lb nodes (the first one found), and the nodes that lack it."""
        results = await asyncio.gather(*(self.pool.run(lb.node, read_optional_script(ACME_ACCOUNT_KEY),
                                                       timeout=CERT_TIMEOUT) for lb in nodes))
        key: bytes | None = None
        lacking = set()
        for lb, res in zip(nodes, results, strict=True):
            got = None
            if res.error is None and res.exit_status == 0:
                with contextlib.suppress(ScriptOutputError):
                    got = parse_optional(res.stdout)
            if got:
                key = key or got
            else:
                lacking.add(lb.node.name)
        return key, lacking

    async def _keep_account(self, key: bytes, nodes: Sequence[LbNode]) -> None:
        """The account key onto `nodes` (0600), so the next order, from any controller, uses the same account."""
        if not key:
            return

        async def put(lb: LbNode) -> None:
            result = await self.pool.run(lb.node, write_secret_file(ACME_ACCOUNT_KEY, allow_disk=True,
                                                                    size=len(key)),
                                         stdin=key.decode(), timeout=CERT_TIMEOUT)
            if result.error is not None or result.exit_status != 0:
                raise RemoteCommandError(lb.node.name, f"<write {ACME_ACCOUNT_KEY}>", result.exit_status,
                                         (result.error or result.stderr)[-200:])

        await asyncio.gather(*(put(lb) for lb in nodes))

    async def _deploy(self, service: str, text: bytes, nodes: Sequence[LbNode],
                      by_node: Mapping[str, Mapping[str, NodeCert]]) -> None:
        """The bundle onto every node whose file differs (0600, written beside and renamed)."""
        if not text:
            return
        digest = hashlib.sha256(text).hexdigest()
        path = cert_file(service)

        async def put(lb: LbNode) -> None:
            have = by_node.get(lb.node.name, {}).get(service)
            if have is not None and have.digest == digest and have.mode == "600":
                return
            result = await self.pool.run(lb.node, write_secret_file(path, allow_disk=True, size=len(text)),
                                         stdin=text.decode(), timeout=CERT_TIMEOUT)
            if result.error is not None or result.exit_status != 0:
                raise RemoteCommandError(lb.node.name, f"<write {path}>", result.exit_status,
                                         (result.error or result.stderr)[-200:])

        await asyncio.gather(*(put(lb) for lb in nodes))
        self.current[service] = (text, cert_info(text))


async def _ready(value: tuple[bytes, CertInfo]) -> tuple[bytes, CertInfo]:
    return value


def _lbtls(service: str, info: CertInfo, tls: TlsSpec) -> LbTls:
    return LbTls(cert_file(service), info.fingerprint, tls.redirect, tls.hsts)
