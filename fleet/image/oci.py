"""Read an OCI layout or Docker image archive (a tar) without unpacking it: names, manifest digests, validity.

Every blob is hashed and sized while the tar streams past, and every manifest, config and layer referenced
from `index.json` (or Docker's `manifest.json`) must be present and intact, so a corrupt or truncated tar is
refused here, before anything is sent to a node.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Any, Literal

from fleet.core.errors import ImageArchiveError

NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_KEEP_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageArchive:
    """A built image archive on local disk: its image name and manifest digest."""

    path: str
    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class ArchiveImage:
    """One image in an archive: its name (None if unnamed) and manifest (or index) digest."""

    name: str | None
    digest: str | None


@dataclass(frozen=True)
class ArchiveInfo:
    path: str
    size: int
    format: Literal["oci", "docker"]
    images: tuple[ArchiveImage, ...]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.images if i.name]

    @property
    def digest(self) -> str | None:
        """The manifest digest when the archive holds exactly one distinct one."""
        digests = {i.digest for i in self.images if i.digest}
        return digests.pop() if len(digests) == 1 else None


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    data: bytes | None


def _scan(path: str) -> tuple[dict[str, _Blob], dict[str, bytes]]:
    """Stream the tar once: hash every regular file; keep small files (metadata, manifests) in memory."""
    blobs: dict[str, _Blob] = {}
    files: dict[str, bytes] = {}
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            raise ImageArchiveError(path, "is gzip-compressed; ctr import needs an uncompressed tar")
        fh.seek(0)
        try:
            with tarfile.open(fileobj=fh, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = os.path.normpath(member.name).lstrip("/")
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    h = hashlib.sha256()
                    kept = bytearray()
                    total = 0
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        total += len(chunk)
                        if total <= _KEEP_BYTES:
                            kept += chunk
                    if total != member.size:
                        raise ImageArchiveError(path, f"{name}: truncated ({total} of {member.size} bytes)")
                    data = bytes(kept) if total <= _KEEP_BYTES else None
                    blobs[name] = _Blob("sha256:" + h.hexdigest(), total, data)
                    if data is not None and not name.startswith("blobs/"):
                        files[name] = data
        except (tarfile.TarError, EOFError) as exc:
            raise ImageArchiveError(path, f"not a valid tar: {exc}") from exc
    return blobs, files


def _load(path: str, name: str, data: bytes | None) -> Any:
    if data is None:
        raise ImageArchiveError(path, f"{name}: too large to be JSON metadata")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImageArchiveError(path, f"{name}: not valid JSON: {exc}") from exc


def _blob(path: str, blobs: dict[str, _Blob], desc: Any, what: str) -> _Blob:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ImageArchiveError(path, f"{what}: descriptor without a digest")
    digest: str = desc["digest"]
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise ImageArchiveError(path, f"{what}: unsupported digest {digest!r}")
    blob = blobs.get(f"blobs/sha256/{hexd}")
    if blob is None:
        raise ImageArchiveError(path, f"{what}: blob {digest} is missing")
    if blob.digest != digest:
        raise ImageArchiveError(path, f"{what}: blob {digest} is corrupt (content hashes to {blob.digest})")
    if isinstance(desc.get("size"), int) and desc["size"] != blob.size:
        raise ImageArchiveError(
            path, f"{what}: blob {digest} has {blob.size} bytes, descriptor says {desc['size']}"
        )
    return blob


def _check_manifest(path: str, blobs: dict[str, _Blob], desc: Any, what: str, depth: int = 0) -> None:
    blob = _blob(path, blobs, desc, what)
    doc = _load(path, what, blob.data)
    if not isinstance(doc, dict):
        raise ImageArchiveError(path, f"{what}: not a JSON object")
    if doc.get("mediaType") in INDEX_TYPES or (desc.get("mediaType") in INDEX_TYPES):
        if depth > 2:
            raise ImageArchiveError(path, f"{what}: indexes nested too deep")
        for i, sub in enumerate(doc.get("manifests") or []):
            _check_manifest(path, blobs, sub, f"{what}.manifests[{i}]", depth + 1)
        return
    _blob(path, blobs, doc.get("config"), f"{what}.config")
    for i, layer in enumerate(doc.get("layers") or []):
        _blob(path, blobs, layer, f"{what}.layers[{i}]")


def read_archive(path: str | os.PathLike[str]) -> ArchiveInfo:
    """Validate an image archive and list its images; raise ImageArchiveError when it is unusable."""
    p = os.fspath(path)
    try:
        size = os.path.getsize(p)
        blobs, files = _scan(p)
    except OSError as exc:
        raise ImageArchiveError(p, f"cannot read: {exc.strerror or exc}") from exc
    if "index.json" in files:
        index = _load(p, "index.json", files["index.json"])
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise ImageArchiveError(p, "index.json lists no manifests")
        images = []
        for i, desc in enumerate(manifests):
            _check_manifest(p, blobs, desc, f"index.json manifests[{i}]")
            notes = desc.get("annotations") or {}
            name = notes.get(NAME_ANNOTATION) or notes.get(REF_ANNOTATION)
            images.append(ArchiveImage(name if isinstance(name, str) else None, desc["digest"]))
        return ArchiveInfo(p, size, "oci", tuple(images))
    if "manifest.json" in files:
        entries = _load(p, "manifest.json", files["manifest.json"])
        if not isinstance(entries, list) or not entries:
            raise ImageArchiveError(p, "manifest.json lists no images")
        images = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ImageArchiveError(p, f"manifest.json[{i}]: not an object")
            for ref in [entry.get("Config"), *(entry.get("Layers") or [])]:
                if not isinstance(ref, str) or os.path.normpath(ref) not in blobs:
                    raise ImageArchiveError(p, f"manifest.json[{i}]: {ref!r} is missing from the archive")
            tags = entry.get("RepoTags") or [None]
            images += [ArchiveImage(t, None) for t in tags]
        return ArchiveInfo(p, size, "docker", tuple(images))
    raise ImageArchiveError(p, "neither index.json (OCI) nor manifest.json (Docker) found")
