"""The packages an offline node lacks, worked out on the controller, as values: the node's installed packages (its
dpkg status file, read over SSH) given to the controller's own apt as the state to plan against, so apt names
exactly the .deb files that node needs (the packages fleet asks for and every dependency it does not have yet),
and downloads them into the offline directory. A manifest there (MANIFEST) keeps, per node, the files apt chose,
so `fleet node prepare --offline DIR` sends each node those files and no other.

This needs apt on the controller with package lists of the nodes' release (a Debian 12 controller for Debian 12
nodes): `fleet node prepare --download DIR` refuses a node of another release, naming both. No I/O here;
fleet.engine.offline runs these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.core.errors import ScriptOutputError

DPKG_STATUS = "/var/lib/dpkg/status"
MANIFEST = "fleet-offline.json"
_STATUS_START = "@@status"


def node_state_argv() -> list[str]:
    """Read-only: the node's architecture, then its dpkg status file (world-readable; no root needed)."""
    return ["sh", "-c", f'dpkg --print-architecture && echo {_STATUS_START} && cat {DPKG_STATUS}']


@dataclass(frozen=True)
class NodeState:
    arch: str
    status: str  # the dpkg status file's text



def parse_node_state(stdout: str) -> NodeState:
    arch, sep, status = stdout.partition(f"\n{_STATUS_START}\n")
    arch = arch.strip()
    if not sep or not arch or " " in arch:
        raise ScriptOutputError(f"not an architecture and a dpkg status file: {stdout[:120]!r}")
    return NodeState(arch, status)


def apt_argv(packages: Sequence[str], status_file: str, arch: str, archives: str, *, download: bool) -> list[str]:
    """apt-get planning against a node's dpkg status (`status_file`) instead of this machine's, for the node's
    architecture, into `archives` (a directory ending in /): with `download`, the files are fetched there;
    without, apt prints the URI, file name, size and checksum of each file it would fetch (`--print-uris`), for
    an empty `archives`: every file the node needs."""
    return ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
            "--download-only" if download else "--print-uris",
            "-o", "Debug::NoLocking=1", "-o", f"Dir::State::status={status_file}",
            "-o", f"APT::Architecture={arch}", "-o", f"Dir::Cache::Archives={archives}", *packages]


def parse_print_uris(stdout: str) -> list[str]:
    """The .deb file names in `apt-get --print-uris` output (`'URI' FILE SIZE [HASH]` per line), in its order."""
    files = []
    for line in stdout.splitlines():
        if line.startswith("'"):
            parts = line.split()
            if len(parts) >= 3 and parts[1].endswith(".deb"):
                files.append(parts[1])
    return files


def release(os_release: str) -> str:
    """`debian 12` from an /etc/os-release text (as `fleet node check` names a node's system)."""
    fields = {}
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"')
    return f"{fields.get('ID', '?')} {fields.get('VERSION_ID', '?')}"


def read_manifest(text: str | None) -> dict[str, dict[str, list[str]]]:
    """{node: {"packages": [...], "files": [...]}} from the manifest's text ({} when there is none)."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
        nodes = doc["nodes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ScriptOutputError(f"{MANIFEST}: not a manifest written by fleet node prepare --download: {exc}") \
            from None
    return {str(k): {"packages": list(v["packages"]), "files": list(v["files"])} for k, v in nodes.items()}


def manifest_text(nodes: Mapping[str, Mapping[str, Sequence[str]]]) -> str:
    return json.dumps({"nodes": {k: {"packages": list(v["packages"]), "files": list(v["files"])}
                                 for k, v in sorted(nodes.items())}}, indent=1) + "\n"
