"""Driver for nerdctl (Docker-compatible CLI for containerd): builds argv and scripts, parses JSON output.

NOT run against a real nerdctl here: nerdctl is not packaged in Debian 12 and could not be installed in the
sandbox. Commands and output shapes follow nerdctl's source and docs (v1.7/v2.0; FACTS §8); the parsers are
tested on outputs written from those documented formats, not recorded ones. Pin nerdctl ≤ 2.0.x on
containerd 1.6 (later `load` needs the 1.7 Transfer API). The fleet container ID is the nerdctl `--name`.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from fleet.core import labels as L
from fleet.core.errors import RuntimeCommandError
from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.node.paths import DEFAULT as NODE_PATHS
from fleet.node.runtime.base import (
    Call,
    CliDriver,
    ContainerInfo,
    ImportedImage,
    Mount,
    RunSpec,
    Status,
    StopResult,
    Usage,
    check,
    identity,
    parse_ok,
    parse_text,
)

_EXISTS_RC = 17
_LOGIN_PULL_SCRIPT = r"""
mkdir -p "$TMPFS" && D=$(mktemp -d "$TMPFS/registry.XXXXXX") || exit 1
trap 'rm -rf "$D"' EXIT
export DOCKER_CONFIG="$D"
n login --username "$LOGIN_USER" --password-stdin "$REGISTRY" >/dev/null || exit 1
eval "$PULL"
"""
_STATES = {"running": Status.RUNNING, "paused": Status.RUNNING, "restarting": Status.STOPPED,
           "exited": Status.STOPPED, "dead": Status.STOPPED, "created": Status.CREATED}


def _mount_args(m: Mount) -> list[str]:
    if m.type == "tmpfs":
        opts = ",".join(m.options) if m.options else "mode=1777"
        return ["--tmpfs", f"{m.target}:{opts}{',ro' if m.readonly else ''}"]
    for part in (m.source, m.target):
        if "," in part:
            raise ValueError(f"--mount cannot express a ',' in a path: {part!r}")
    # A volume's nosuid,nodev (m.options) are not passed: nerdctl's --mount, like docker's, documents readonly and
    # propagation keys, not mount flags, and this driver is not run against a real nerdctl to find out. ctr applies
    # them.
    spec = f"type=bind,source={m.source},target={m.target}"
    if m.readonly:
        spec += ",readonly"
    return ["--mount", spec]


def _security_args(spec: RunSpec) -> list[str]:
    """Docker's flags (nerdctl run --help, v1.7/v2.0); nerdctl allows new privileges unless told, so fleet's
    default (none) is said each time."""
    argv = ["--user", spec.user] if spec.user is not None else []
    if spec.read_only:
        argv.append("--read-only")
    for cap in spec.cap_add:
        argv += ["--cap-add", cap]
    for cap in spec.cap_drop:
        argv += ["--cap-drop", cap]
    return [*argv, "--security-opt", "no-new-privileges"] if spec.no_new_privileges else argv


class NerdctlDriver(CliDriver):
    """`nerdctl [-a ADDRESS] -n NAMESPACE …`; untested against a real nerdctl (see the module docstring)."""

    name = "nerdctl"
    shell_function = "n"

    def __init__(self, namespace: str = "fleet", address: str | None = None, binary: str = "nerdctl") -> None:
        super().__init__(namespace, address, binary)

    # --- run

    def run_argv(self, spec: RunSpec) -> list[str]:
        if not L.is_valid_container_id(spec.id):
            raise ValueError(f"invalid container ID: {spec.id!r}")
        argv = [*self.base(), "run", "-d", "--name", spec.id, "--restart", spec.restart]
        if spec.ports:
            # nerdctl runs the CNI chain itself (bridge + portmap, its default network); documented flags,
            # tested on their documented form only, like the rest of this driver.
            argv += ["--network", "bridge"]
            for host, container in spec.ports:
                argv += ["-p", f"{host}:{container}"]
        elif spec.net_host:
            argv += ["--network", "host"]
        for name, value in spec.env.items():
            if not name or "=" in name:
                raise ValueError(f"invalid environment variable name: {name!r}")
            argv += ["-e", f"{name}={value}"]
        if spec.env_file:
            argv += ["--env-file", spec.env_file]
        for m in spec.mounts:
            argv += _mount_args(m)
        argv += _security_args(spec)
        # nerdctl's json-file driver rotates itself (Docker's options).
        argv += ["--log-opt", f"max-size={spec.log_max_size}", "--log-opt", f"max-file={spec.log_max_files}"]
        if spec.cpu is not None and spec.cpu > 0:
            argv += ["--cpus", format(spec.cpu, "g")]
        if spec.memory is not None and spec.memory > 0:
            argv += ["--memory", str(int(spec.memory))]
        for key, value in spec.labels.items():
            if not key or "=" in key:
                raise ValueError(f"invalid label key: {key!r}")
            argv += ["-l", f"{key}={value}"]
        argv.append(spec.image)
        if spec.command:
            argv += list(spec.command)
        return argv

    def run(self, spec: RunSpec) -> Call[None]:
        """Start detached; refuse an existing name; remove what a failed start left behind."""
        text = (
            self._fn()
            + 'if n container inspect "$ID" >/dev/null 2>&1; then\n'
            + f'  echo "nerdctl: container \\"$ID\\": already exists" >&2; exit {_EXISTS_RC}\n'
            + "fi\n"
            + shlex.join(self.run_argv(spec)) + " >/dev/null\n"
            + "rc=$?\n"
            + 'if [ "$rc" -ne 0 ]; then n rm -f "$ID" >/dev/null 2>&1; exit "$rc"; fi\n'
        )
        return Call(Script(text, {"ID": spec.id}), parse_ok("nerdctl"), what=f"run {spec.id}")

    # --- stop / remove

    def stop(self, container_id: str, grace: float = 10.0, exit_code: bool = True,
             remove: bool = True) -> Call[StopResult]:
        """`nerdctl stop -t` (TERM, then KILL after the grace), read the exit code (always: `exit_code` saves
        nothing here), then `rm -f` (without `remove`: `delete` does, later)."""
        text = self._fn() + _STOP_SCRIPT
        env = {"ID": container_id, "GRACE": str(max(0, math.ceil(grace))), "REMOVE": str(int(remove))}
        parse = partial(parse_stop, container_id=container_id)
        return Call(Script(text, env), parse, what=f"stop {container_id}")

    def delete(self, container_id: str) -> Call[None]:
        """Remove a stopped container (`stop` without `remove`); fine when it is gone already."""
        text = self._fn() + 'n rm -f "$ID" >/dev/null 2>&1 || ! n container inspect "$ID" >/dev/null 2>&1\n'
        return Call(Script(text, {"ID": container_id}), parse_ok("delete"), what=f"delete {container_id}")

    def remove(self, container_id: str) -> Call[None]:
        text = self._fn() + (
            'if n container inspect "$ID" >/dev/null 2>&1; then n rm -f "$ID" >/dev/null; fi\n'
        )
        return Call(Script(text, {"ID": container_id}), parse_ok("nerdctl"), what=f"remove {container_id}")

    # --- inspection

    def list_containers(self) -> Call[list[ContainerInfo]]:
        """`ps -a -q` then one `inspect` of them all (ps's Labels column is an unordered `k=v,…` string)."""
        text = self._fn() + (
            "ids=$(n ps -a -q --no-trunc) || exit 1\n"
            'if [ -z "$ids" ]; then echo "[]"; exit 0; fi\n'
            "n container inspect $ids\n"
        )
        return Call(Script(text), parse_list, what="list containers")

    def tasks(self) -> Call[dict[str, tuple[int | None, Status]]]:
        """Every container's PID and state (the list: nerdctl's inspect of them all is one call already)."""
        listing = self.list_containers()
        return Call(listing.command, lambda r: {i.id: (i.pid, i.status) for i in parse_list(r)}, what="list tasks")

    def task(self, container_id: str) -> Call[dict[str, tuple[int | None, Status]]]:
        return self.tasks()

    def metrics_argv(self, container_id: str) -> list[str]:
        return [*self.base(), "stats", "--no-stream", "--format", "{{json .}}", container_id]

    def metrics(self, container_id: str) -> Call[Usage]:
        return Call(self.metrics_argv(container_id), parse_stats, what=f"stats {container_id}")

    def logs_argv(self, container_id: str, tail: int | None = 100, follow: bool = False) -> list[str]:
        argv = [*self.base(), "logs"]
        if tail is not None:
            argv += ["--tail", str(int(tail))]
        if follow:
            argv.append("-f")
        return [*argv, container_id]

    def logs(self, container_id: str, tail: int | None = 100, follow: bool = False) -> Call[str]:
        return Call(self.logs_argv(container_id, tail, follow), parse_text("nerdctl logs"), what=f"logs {container_id}")

    def logs_dated(self, container_id: str, tail: int | None, follow: bool, token: str) -> Call[str]:
        # nerdctl's json-file logs carry their own times (`nerdctl logs -t`), read in another format: not done.
        raise ValueError("--since and --timestamps read ctr's log files; this node runs nerdctl")

    def exec_argv(self, container_id: str, argv: Sequence[str], exec_id: str | None = None,
                  tty: bool = False) -> list[str]:
        if not argv:
            raise ValueError("exec needs a command")
        return [*self.base(), "exec", *(["-i", "-t"] if tty else []), container_id, *argv]

    def exec(self, container_id: str, argv: Sequence[str], exec_id: str | None = None,
             tty: bool = False) -> Call[CommandResult]:
        return Call(self.exec_argv(container_id, argv, tty=tty), identity, what=f"exec {container_id}")

    # --- images

    def image_import_argv(self) -> list[str]:
        """`nerdctl load` from stdin (it also accepts gzip)."""
        return [*self.base(), "load"]

    def image_import(self, archive_path: str) -> Call[list[ImportedImage]]:
        return Call(self.image_import_argv(), parse_load, stdin_path=archive_path, what="image load")

    def image_list_argv(self) -> list[str]:
        return [*self.base(), "images", "--no-trunc", "--format", "{{json .}}"]

    def image_list(self) -> Call[dict[str, str]]:
        return Call(self.image_list_argv(), parse_images, what="image list")

    def image_pull_argv(self, ref: str, plain_http: bool = False) -> list[str]:
        return [*self.base(), "pull", *(["--insecure-registry"] if plain_http else []), ref]

    def image_pull(self, ref: str, plain_http: bool = False) -> Call[None]:
        return Call(self.image_pull_argv(ref, plain_http), parse_ok("nerdctl"), what=f"pull {ref}")

    def image_pull_login(self, ref: str, username: str, plain_http: bool = False) -> Call[None]:
        """Pull with credentials, the password read from stdin: `nerdctl login --password-stdin` into a Docker
        config directory of this pull alone on the node's tmpfs (`DOCKER_CONFIG`), removed when it ends. Written
        from nerdctl's documented flags; not run (see the module docstring)."""
        env = {"REGISTRY": ref.partition("/")[0], "LOGIN_USER": username, "TMPFS": NODE_PATHS.secrets_dir,
               "PULL": shlex.join(self.image_pull_argv(ref, plain_http))}
        return Call(Script(self._fn() + _LOGIN_PULL_SCRIPT, env), parse_ok("nerdctl"), what=f"pull {ref}")

    def image_remove_argv(self, ref: str) -> list[str]:
        return [*self.base(), "rmi", ref]

    def image_remove(self, ref: str) -> Call[None]:
        return Call(self.image_remove_argv(ref), parse_ok("nerdctl"), what=f"rmi {ref}")


_STOP_SCRIPT = r"""
if ! n container inspect "$ID" >/dev/null 2>&1; then echo '@@found false'; exit 0; fi
echo '@@found true'
n stop -t "$GRACE" "$ID" >/dev/null || exit 1
printf '@@state %s\n' "$(n container inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$ID")"
[ "$REMOVE" = 0 ] || n rm -f "$ID" >/dev/null || exit 1
echo '@@rc 0'
"""


def parse_stop(result: CommandResult, container_id: str = "") -> StopResult:
    """Exit code from `inspect` after `stop`; 137 (SIGKILL) means the grace period ran out."""
    check(result, "stop")
    lines = result.stdout.splitlines()
    if "@@found false" in lines:
        return StopResult(container_id, found=False)
    if "@@rc 0" not in lines:
        raise RuntimeCommandError(result.node, "stop", result.exit_status, result.stderr or result.stdout)
    exit_code = None
    for line in lines:
        if line.startswith("@@state "):
            parts = line.split()
            if len(parts) == 3 and parts[2].lstrip("-").isdigit():
                exit_code = int(parts[2])
    return StopResult(container_id, found=True, exit_code=exit_code, killed=exit_code == 137)


def _time(value: object) -> float | None:
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _json(result: CommandResult, what: str) -> Any:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeCommandError(result.node, what, result.exit_status, f"not JSON: {exc}") from exc


def parse_list(result: CommandResult) -> list[ContainerInfo]:
    """`nerdctl container inspect` (dockercompat mode: a JSON array) → ContainerInfo; names are fleet IDs."""
    check(result, "list")
    data = _json(result, "list")
    if not isinstance(data, list):
        raise RuntimeCommandError(result.node, "list", result.exit_status, "inspect printed no JSON array")
    out = []
    for item in data:
        state = item.get("State") or {}
        labels = (item.get("Config") or {}).get("Labels") or {}
        raw = str(state.get("Status", "")).lower()
        status = _STATES.get(raw, Status.UNKNOWN)
        pid = state.get("Pid")
        out.append(ContainerInfo(
            id=str(item.get("Name") or str(item.get("Id", ""))[:12]),
            image=str(item.get("Image", "")),
            labels={str(k): str(v) for k, v in labels.items()},
            status=status,
            pid=pid if isinstance(pid, int) and pid > 0 else None,
            exit_code=state.get("ExitCode") if status is Status.STOPPED else None,
            started_at=_time(state.get("StartedAt")) if status is Status.RUNNING else None,
            created_at=item.get("Created") or None,
        ))
    return out


_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "pb": 1000**5,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5, "eib": 1024**6}
_SIZE_RE = re.compile(r"^\s*([0-9.]+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """go-units sizes as nerdctl prints them: `1.512MiB`, `64MiB`, `0B`, `1.2kB`."""
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_stats(result: CommandResult) -> Usage:
    """`stats --no-stream --format '{{json .}}'`: human strings only, so no CPU time (cpu_ns is 0)."""
    check(result, "stats")
    line = next((ln for ln in result.stdout.splitlines() if ln.strip()), "")
    try:
        entry = json.loads(line)
        used, _, limit = str(entry.get("MemUsage", "")).partition("/")
        pids = str(entry.get("PIDs", "0")).strip()
        return Usage(
            cpu_ns=0,
            memory_bytes=parse_size(used),
            memory_limit=parse_size(limit) if limit else None,
            pids=int(pids) if pids.isdigit() else 0,
        )
    except (json.JSONDecodeError, ValueError, AttributeError) as exc:
        raise RuntimeCommandError(result.node, "stats", result.exit_status, f"unreadable: {exc}") from exc


_LOAD_RE = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)\.\.\.", re.MULTILINE)


def parse_load(result: CommandResult) -> list[ImportedImage]:
    """`unpacking NAME (sha256:…)...` then `Loaded image: NAME` per image."""
    check(result, "load")
    digests = {m.group(1): m.group(2) for m in _LOAD_RE.finditer(result.stdout)}
    lines = result.stdout.splitlines()
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Loaded image:")]
    return [ImportedImage(n, digests.get(n)) for n in names]


def parse_images(result: CommandResult) -> dict[str, str]:
    """`images --format '{{json .}}'` NDJSON → {name: target digest}; untagged images are left out."""
    check(result, "images")
    out = {}
    for line in result.stdout.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RuntimeCommandError(result.node, "images", result.exit_status, f"bad JSON: {exc}") from exc
        name = row.get("Name") or (f"{row.get('Repository')}:{row.get('Tag')}" if row.get("Tag") else "")
        untagged = row.get("Tag") == "<none>" or name.startswith("sha256:") or "<none>" in name
        if name and not untagged and str(row.get("Digest", "")).startswith("sha256:"):
            out[name] = row["Digest"]
    return out
