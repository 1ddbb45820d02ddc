"""Tags pinned to digests: `apply` (and `plan`) ask each image's registry once what its tag points to now, and the
spec carries that digest (`ServiceSpec.image_digest`), so every node runs the same image, a re-pushed tag is a
changed spec that rolls like any other, and the history records what ran. `reconcile` does not ask: it heals the
accepted revision, digest included.

The registry HTTP API v2 (`HEAD /v2/NAME/manifests/TAG`, its `Docker-Content-Digest`), from the controller, with
the inventory's credentials for the registry (Basic, or a Bearer token got with them) and plain HTTP where the
inventory says the registry is insecure or it is on loopback (as containerd does). Only registries the inventory
names (`registries:` or `insecure_registries`) are asked: a registry the controller may not reach (Docker Hub from
a closed network) would otherwise stop every apply; their images are pulled by tag, as before. Images built here
(`fleet.local/…`) and references that already name a digest are left as they are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace

from fleet.config.spec import ServiceSpec
from fleet.core.errors import DigestError
from fleet.core.model import Inventory, RegistryLogin
from fleet.engine.images import LOCAL_PREFIX, registry_of

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
))
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
RESOLVE_TIMEOUT = 15.0
_LOOPBACK = re.compile(r"^(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?$")


def split_reference(image: str) -> tuple[str, str, str] | None:
    """(registry, repository, tag) of a tagged reference; None when it names a digest or is built here."""
    if "@" in image or image.startswith(LOCAL_PREFIX):
        return None
    registry = registry_of(image)
    rest = image[len(registry) + 1:] if image.startswith(registry + "/") else image
    name, _, tag = rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, "", "latest")
    if registry == "docker.io" and "/" not in name:
        name = f"library/{name}"
    return registry, name, tag


def _base_url(registry: str, plain: bool) -> str:
    host = "registry-1.docker.io" if registry == "docker.io" else registry
    return f"{'http' if plain or _LOOPBACK.match(registry) else 'https'}://{host}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def resolve_digest(image: str, login: RegistryLogin | None, password: str | None, plain: bool,
                   timeout: float = RESOLVE_TIMEOUT) -> str:
    """The digest `image`'s tag points to now (blocking: run it in a thread). DigestError says why not."""
    parts = split_reference(image)
    if parts is None:
        raise DigestError(f"{image}: not a tag in a registry")
    registry, name, tag = parts
    url = f"{_base_url(registry, plain)}/v2/{name}/manifests/{urllib.parse.quote(tag)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    basic = None
    if login is not None and password is not None:
        basic = "Basic " + base64.b64encode(f"{login.username}:{password}".encode()).decode()
    who = f" as {login.username}" if login is not None else ""

    def head(auth: str | None) -> str | None:
        req = urllib.request.Request(url, method="HEAD", headers={"Accept": ACCEPT, **({"Authorization": auth}
                                                                                        if auth else {})})
        with opener.open(req, timeout=timeout) as resp:
            found: str | None = resp.headers.get("Docker-Content-Digest")
            return found

    try:
        try:
            digest = head(None)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            scheme, params = _challenge(exc.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer" and "realm" in params:
                query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
                token_req = urllib.request.Request(f"{params['realm']}?{query}",
                                                   headers={"Authorization": basic} if basic else {})
                with opener.open(token_req, timeout=timeout) as resp:
                    body = json.loads(resp.read() or b"{}")
                digest = head(f"Bearer {body.get('token') or body.get('access_token') or ''}")
            elif basic is None:
                raise DigestError(f"registry {registry} asks for credentials; give them in the inventory's "
                                  f"registries: (resolving {image})") from exc
            else:
                digest = head(basic)
    except urllib.error.HTTPError as exc:
        what = {401: f"refused the credentials{who}", 403: f"refused access{who}", 404: "has no such tag"}
        raise DigestError(f"registry {registry} {what.get(exc.code, f'answered HTTP {exc.code}')} "
                          f"(resolving {image})") from exc
    except (OSError, ValueError) as exc:
        raise DigestError(f"registry {registry} did not answer ({exc}) (resolving {image})") from exc
    if digest is None or not DIGEST_RE.match(digest):
        raise DigestError(f"registry {registry} gave no digest for {image}")
    return digest


def needs_login(specs: Sequence[ServiceSpec], inventory: Inventory) -> bool:
    """Whether pinning `specs` asks a registry with credentials (so the fleet's secrets must be opened)."""
    return any(n.login_for(registry_of(s.image)) for s in specs for n in inventory.nodes[:1])


async def pinned(specs: Sequence[ServiceSpec], inventory: Inventory,
                 secrets: Callable[[str], str | None] | None) -> list[ServiceSpec]:
    """`specs` with each tagged registry image's digest (`image_digest`), each tag asked once, all at once;
    DigestError (naming the image and the registry) before anything changes when one cannot be resolved."""
    node = next((n for n in inventory.nodes if n.has_role("worker")), inventory.nodes[0] if inventory.nodes else None)
    if node is None:
        return list(specs)
    named = {*node.insecure_registries, *(r.registry for r in node.registry_logins)}
    images = sorted({s.image for s in specs if split_reference(s.image) is not None and registry_of(s.image) in named})

    def one(image: str) -> str:
        registry = registry_of(image)
        login = node.login_for(registry)
        password = secrets(login.secret) if login is not None and secrets is not None else None
        if login is not None and password is None:
            raise DigestError(f"registry {registry}: secret {login.secret!r} (the password of {login.username}) is "
                              f"not in the fleet's secrets (set it with `fleet secret set {login.secret}`)")
        plain = registry in node.insecure_registries
        return resolve_digest(image, login, password, plain)

    found = await asyncio.gather(*(asyncio.to_thread(one, image) for image in images))
    digests = dict(zip(images, found, strict=True))
    return [replace(s, image_digest=digests[s.image]) if s.image in digests else s for s in specs]
