"""Build the demo web image: a deterministic OCI layout tar holding busybox httpd and a start script.

Standard library only; every timestamp is 0 and entries are sorted, so the same busybox binary, version and
size always give the same manifest digest. Behaviour knobs are environment variables read at start (see
`START_SH`). Two layers: a base (busybox, /etc, padding) shared by every version, and a small app layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fleet.image.oci import NAME_ANNOTATION, REF_ANNOTATION, ImageArchive

REPOSITORY = "fleet.local/demo"
BUSYBOX = "/usr/bin/busybox"
APPLETS = (
    "[", "ash", "awk", "basename", "cat", "chmod", "cp", "date", "dd", "df", "dirname", "echo", "env",
    "false", "free", "grep", "head", "hostname", "httpd", "id", "kill", "ln", "ls", "mkdir", "mv", "nc",
    "printf", "ps", "rm", "sed", "seq", "sh", "sleep", "sort", "tail", "tee", "test", "top", "touch", "true",
    "uname", "wc", "wget", "yes",
)

START_SH = r"""#!/bin/sh
# fleet demo web server. Knobs (environment): PORT (8080), FLEET_NODE, FLEET_REPLICA, DEMO_START_DELAY=s,
# DEMO_HEALTH=fail, DEMO_CRASH_AFTER=s, DEMO_ERROR_RATE=0..100, DEMO_IGNORE_TERM=1, DEMO_MEMORY_MB=n (the main
# process holds n MiB once listening: past the container's memory limit it is OOM-killed).
PORT="${PORT:-8080}"
NODE="${FLEET_NODE:-$(hostname)}"
REPLICA="${FLEET_REPLICA:-0}"
VERSION="$(cat /etc/demo-version)"
RATE="${DEMO_ERROR_RATE:-0}"
case "$RATE" in ''|*[!0-9]*) RATE=0 ;; esac
log() { echo "demo $VERSION: $*"; }
mkdir -p /run/demo
echo "$RATE" > /run/demo/error_rate
{
  printf '<!doctype html>\n<html><head><title>fleet demo</title></head><body>\n'
  printf '<h1>fleet demo %s</h1>\n' "$(httpd -e "$VERSION")"
  printf '<p id="info">version=%s host=%s replica=%s</p>\n' \
    "$(httpd -e "$VERSION")" "$(httpd -e "$NODE")" "$(httpd -e "$REPLICA")"
  printf '</body></html>\n'
} > /run/demo/index.html
rm -f /www/healthz
if [ "${DEMO_HEALTH:-ok}" = fail ]; then log "health check will fail"; else echo ok > /www/healthz; fi
pid=
if [ "${DEMO_IGNORE_TERM:-0}" = 1 ]; then
  trap '' TERM
  log "ignoring SIGTERM"
else
  trap 'log "SIGTERM: stopping"; [ -n "$pid" ] && kill "$pid" 2>/dev/null; exit 0' TERM INT
fi
if [ "${DEMO_START_DELAY:-0}" != 0 ]; then
  log "start delay ${DEMO_START_DELAY}s"
  sleep "$DEMO_START_DELAY" & wait $!
fi
httpd -f -p "$PORT" -h /www & pid=$!
log "listening on :$PORT host=$NODE replica=$REPLICA"
case "${DEMO_MEMORY_MB:-}" in
  ''|*[!0-9]*) ;;
  *) log "holding ${DEMO_MEMORY_MB} MiB"
     hog=$(yes | head -c "$((DEMO_MEMORY_MB * 1048576))")
     log "holding ${#hog} bytes" ;;
esac
if [ -n "${DEMO_CRASH_AFTER:-}" ]; then
  sleep "$DEMO_CRASH_AFTER" & wait $!
  log "crashing (DEMO_CRASH_AFTER=$DEMO_CRASH_AFTER)"
  exit 1
fi
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
log "httpd exited"
exit 1
"""

# busybox httpd runs /cgi-bin/index.cgi for `/` when there is no index.html; output starting with
# "HTTP/1.0" is passed through, which lets the script choose the status.
INDEX_CGI = r"""#!/bin/sh
rate=$(cat /run/demo/error_rate 2>/dev/null || echo 0)
if [ "${rate:-0}" -gt 0 ]; then
  u=$(cat /proc/sys/kernel/random/uuid)
  n=$(( 0x${u%%-*} % 100 ))
  if [ "$n" -lt "$rate" ]; then
    printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\ninjected error\n'
    exit 0
  fi
fi
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n'
cat /run/demo/index.html
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
_VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str
    mode: int
    data: bytes = b""
    target: str = ""


def _tar(entries: list[_Entry]) -> bytes:
    """An uncompressed ustar archive with fixed owners and mtime 0, entries in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def base_layer(busybox: bytes, size_mb: int = 0) -> bytes:
    """The uncompressed base layer: busybox with applet links, /etc, empty dirs, optional padding."""
    entries = [_Entry("bin/", "dir", 0o755), _Entry("bin/busybox", "file", 0o755, busybox)]
    entries += [_Entry(f"bin/{a}", "symlink", 0o777, target="busybox") for a in sorted(APPLETS)]
    entries += [
        _Entry("etc/", "dir", 0o755),
        _Entry("etc/group", "file", 0o644, GROUP.encode()),
        _Entry("etc/passwd", "file", 0o644, PASSWD.encode()),
        _Entry("root/", "dir", 0o700),
        _Entry("run/", "dir", 0o755),
        _Entry("tmp/", "dir", 0o1777),
        _Entry("www/", "dir", 0o755),
    ]
    if size_mb > 0:
        # Incompressible but seeded, so the padded layer is the same every build.
        pad = random.Random(f"fleet-demo-pad-{size_mb}").randbytes(size_mb * 1024 * 1024)
        entries.append(_Entry("pad/", "dir", 0o755))
        entries.append(_Entry("pad/blob", "file", 0o644, pad))
    return _tar(entries)


def app_layer(version: str) -> bytes:
    return _tar([
        _Entry("etc/", "dir", 0o755),
        _Entry("etc/demo-version", "file", 0o644, f"{version}\n".encode()),
        _Entry("start.sh", "file", 0o755, START_SH.encode()),
        _Entry("www/", "dir", 0o755),
        _Entry("www/cgi-bin/", "dir", 0o755),
        _Entry("www/cgi-bin/index.cgi", "file", 0o755, INDEX_CGI.encode()),
    ])


def image_name(version: str) -> str:
    return f"{REPOSITORY}:{version}"


def build_demo_bytes(version: str, busybox: bytes, size_mb: int = 0, user: str | None = None) -> tuple[bytes, str]:
    """The OCI layout tar as bytes and its manifest digest (pure: no file access); `user` is the image config's
    User (who its processes run as: ctr 1.6 cannot set it per container)."""
    if not _VERSION_RE.match(version):
        raise ValueError(f"version must be a valid image tag, got {version!r}")
    if size_mb < 0:
        raise ValueError("size_mb cannot be negative")
    arch = _arch()
    layers = [base_layer(busybox, size_mb), app_layer(version)]
    gz_layers = [_gzip(layer) for layer in layers]
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/start.sh"],
            "WorkingDir": "/",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.title": "fleet demo",
            },
            "StopSignal": "SIGTERM",
            **({"User": user} if user is not None else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "fleet.image.demo"}],
    }
    config_blob = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config_blob),
                   "size": len(config_blob)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(gz),
                    "size": len(gz)} for gz in gz_layers],
    }
    manifest_blob = _json(manifest)
    digest = _sha(manifest_blob)
    name = image_name(version)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": len(manifest_blob),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {NAME_ANNOTATION: name, REF_ANNOTATION: version},
        }],
    }
    blobs = {_sha(b)[7:]: b for b in (*gz_layers, config_blob, manifest_blob)}
    docker_manifest = [{
        "Config": f"blobs/sha256/{_sha(config_blob)[7:]}",
        "RepoTags": [name],
        "Layers": [f"blobs/sha256/{_sha(gz)[7:]}" for gz in gz_layers],
    }]
    entries = [
        _Entry("blobs/", "dir", 0o755),
        _Entry("blobs/sha256/", "dir", 0o755),
        *(_Entry(f"blobs/sha256/{h}", "file", 0o644, blobs[h]) for h in sorted(blobs)),
        _Entry("index.json", "file", 0o644, _json(index)),
        _Entry("manifest.json", "file", 0o644, _json(docker_manifest)),
        _Entry("oci-layout", "file", 0o644, _json({"imageLayoutVersion": "1.0.0"})),
    ]
    return _tar(entries), digest


def build_demo(version: str, output: str | os.PathLike[str], size_mb: int = 0,
               busybox: str = BUSYBOX, *, user: str | None = None) -> ImageArchive:
    """Write the demo image `fleet.local/demo:<version>` to `output` (atomically) and describe it."""
    data, digest = build_demo_bytes(version, Path(busybox).read_bytes(), size_mb, user)
    out = Path(output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return ImageArchive(str(out), image_name(version), digest, len(data))
