"""Driver for containerd 1.6 through `ctr`: builds argv lists and POSIX sh scripts, parses what they print.

Works around ctr's gaps (FACTS §2-§3): `-d` always gets `--log-uri`; a failed `run -d` is cleaned up; stop is
TERM → poll → SIGKILL after the grace period, in one script; the exit code is read from `tasks rm` stderr;
restart=always uses the containerd restart monitor's labels, which are cleared before any stop.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import shlex
from collections.abc import Sequence
from functools import partial
from types import MappingProxyType

from fleet.core import labels as L
from fleet.core.errors import RuntimeCommandError
from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.node.logdates import dated_script
from fleet.node.logrotate import LOGGER_SH
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
from fleet.node.runtime.ctr_sh import (
    DELETE_SCRIPT as _DELETE_SCRIPT,
)
from fleet.node.runtime.ctr_sh import (
    EXEC_SH as _EXEC_SH,
)
from fleet.node.runtime.ctr_sh import (
    LIST_SCRIPT as _LIST_SCRIPT,
)
from fleet.node.runtime.ctr_sh import (
    LOGIN_PULL_SCRIPT as _LOGIN_PULL_SCRIPT,
)
from fleet.node.runtime.ctr_sh import (
    READ_LOGS as _READ_LOGS,
)
from fleet.node.runtime.ctr_sh import (
    REMOVE_SCRIPT as _REMOVE_SCRIPT,
)
from fleet.node.runtime.ctr_sh import (
    RM_FN as _RM_FN,
)
from fleet.node.runtime.ctr_sh import (
    RUN_FAILED as _RUN_FAILED,
)
from fleet.node.runtime.ctr_sh import (
    STOP_SCRIPT as _STOP_SCRIPT,
)
from fleet.node.runtime.ctr_sh import (
    TASK_PID_FN as _TASK_PID_FN,
)
from fleet.node.runtime.runas import runas_script

NO_MEMORY_LIMIT = 9223372036854771712
# What a service may ask that `ctr run` (containerd 1.6) cannot do, and why: the scheduler refuses ctr nodes for
# such a service with this reason (never a setting silently ignored). None today: `user`, which ctr 1.6 `run` has
# no flag for, goes through a runc wrapper (fleet.node.runtime.runas).
LACKS: MappingProxyType[str, str] = MappingProxyType({})
DEFAULT_LOG_DIR = NODE_PATHS.logs_dir
_EXISTS_RC = 17
DEFAULT_STATE_DIR = "/run/containerd"
# Where containerd's runc shim keeps runc's state (`--root`, one directory per namespace): its default.
DEFAULT_RUNC_ROOT = "/run/containerd/runc"

DEFAULT_LOGGER = f"{NODE_PATHS.base}/bin/logger-{hashlib.sha256(LOGGER_SH.encode()).hexdigest()[:12]}"


def _install(var: str) -> str:
    """The run script's lines that put the script in `$<var>_SH` at `$<var>`, executable, unless it is there (a new
    version gets a new name, so none is changed in use)."""
    return (
        f'if [ ! -x "${var}" ]; then\n'
        f'  mkdir -p "$(dirname "${var}")" && printf \'%s\' "${var}_SH" >"${var}.$$" && chmod 755 "${var}.$$" '
        f'&& mv -f "${var}.$$" "${var}" || exit 1\n'
        'fi\n'
    )


def _mount_arg(m: Mount) -> str:
    for part in (m.source, m.target, *m.options):
        if "," in part:
            raise ValueError(f"ctr cannot express a ',' in a mount: {part!r}")
    if m.type == "tmpfs":
        opts = ":".join(m.options or ("mode=1777",))
        if m.readonly:
            opts += ":ro"
        return f"type=tmpfs,src=tmpfs,dst={m.target},options={opts}"
    opts = ":".join(("rbind", "ro" if m.readonly else "rw", *m.options))
    return f"type=bind,src={m.source},dst={m.target},options={opts}"


def _cpus(cpu: float) -> str:
    return format(cpu, "g")


class CtrDriver(CliDriver):
    """`ctr -a ADDRESS -n NAMESPACE …`; `address` None means the node's default socket."""

    name = "ctr"
    shell_function = "c"

    def __init__(self, namespace: str = "fleet", address: str | None = None, log_dir: str = DEFAULT_LOG_DIR,
                 binary: str = "ctr", logger: str = DEFAULT_LOGGER, state_dir: str = DEFAULT_STATE_DIR,
                 runc_root: str = DEFAULT_RUNC_ROOT) -> None:
        super().__init__(namespace, address, binary)
        self.log_dir = log_dir
        self.logger = logger
        # containerd's state directory (its `--state`), where a task's bundle holds its init process's PID.
        self.state_dir = state_dir
        self.runc_root = runc_root

    def log_path(self, container_id: str, spec_path: str | None = None) -> str:
        return spec_path or f"{self.log_dir}/{self.namespace}/{container_id}.log"

    def log_uri(self, log: str, max_size: int, max_files: int) -> str:
        """Where the shim sends a container's output: fleet's logger (`LOGGER_SH`) appending to `log`, rotated
        past `max_size` bytes, keeping `max_files` files."""
        return f"binary://{self.logger}?file={log}&size={int(max_size)}&files={int(max_files)}"

    # --- run

    def run_argv(self, spec: RunSpec) -> list[str]:
        """The bare `ctr run -d` argv (the `run` script adds the existence check and failure cleanup)."""
        if not L.is_valid_container_id(spec.id):
            raise ValueError(f"invalid container ID for containerd: {spec.id!r}")
        log = self.log_path(spec.id, spec.log_path)
        uri = self.log_uri(log, spec.log_max_size, spec.log_max_files)
        argv = [*self.base(), "run", "-d", "--log-uri", uri]
        if spec.netns:
            argv += ["--with-ns", f"network:{spec.netns}"]
        elif spec.net_host:
            argv.append("--net-host")
        for name, value in spec.env.items():
            if not name or "=" in name:
                raise ValueError(f"invalid environment variable name: {name!r}")
            argv += ["--env", f"{name}={value}"]
        if spec.env_file:
            argv += ["--env-file", spec.env_file]
        for m in spec.mounts:
            argv += ["--mount", _mount_arg(m)]
        argv += self.security_args(spec)
        if spec.cpu is not None and spec.cpu > 0:
            argv += ["--cpus", _cpus(spec.cpu)]
        if spec.memory is not None and spec.memory > 0:
            argv += ["--memory-limit", str(int(spec.memory))]
        for key, value in spec.labels.items():
            if not key or "=" in key:
                raise ValueError(f"invalid label key: {key!r}")
            argv += ["--label", f"{key}={value}"]
        argv += [spec.image, spec.id]
        if spec.command:
            argv += list(spec.command)
        return argv

    def security_args(self, spec: RunSpec) -> list[str]:
        """Read-only root, capabilities, no-new-privileges (ctr's default: on), and `user` through fleet's runc
        wrapper for it (`runas`)."""
        argv = ["--read-only"] if spec.read_only else []
        for cap in spec.cap_add:
            argv += ["--cap-add", cap]
        for cap in spec.cap_drop:
            argv += ["--cap-drop", cap]
        if spec.user is not None:
            argv += ["--runc-binary", self.runas(spec.user)[0]]
        return argv if spec.no_new_privileges else [*argv, "--allow-new-privs"]

    def runas(self, user: str) -> tuple[str, str]:
        """The runc wrapper that runs a container as `user` (fleet.node.runtime.runas): its path on the node, beside
        the logger, and its text; the run script puts it there."""
        path, text = runas_script(user)
        return f"{posixpath.dirname(self.logger)}/{posixpath.basename(path)}", text

    def run(self, spec: RunSpec) -> Call[None]:
        """Start a container detached; refuse an existing ID, and remove the leftovers of a failed start."""
        log = self.log_path(spec.id, spec.log_path)
        text = (
            self._fn()
            # The log's directory by a shell pattern, not `dirname`: every start runs it.
            + 'case $LOG in */*) d=${LOG%/*}; [ -d "${d:-/}" ] || mkdir -p "${d:-/}" || exit 1 ;; esac\n'
            + _install("LOGGER")
            + (_install("RUNAS") if spec.user is not None else "")
            # How this log is rotated, beside it: for the rotation of fleet's runs (fleet.node.logrotate).
            + 'printf \'%s %s\\n\' "$LOG_SIZE" "$LOG_FILES" >"$LOG.rotate" || exit 1\n'
            + "out=$(" + shlex.join(self.run_argv(spec)) + " 2>&1)\n"
            + _RUN_FAILED.replace("EXISTS_RC", str(_EXISTS_RC))
        )
        if spec.restart == "always":
            # Labelled only once the task runs: with the label already set at create time, the restart
            # monitor can start the task itself and `ctr run` then fails ("cannot start a container that
            # has stopped"), seen with a 1 s monitor interval.
            uri = self.log_uri(log, spec.log_max_size, spec.log_max_files)
            label = [*self.base(), "containers", "label", spec.id, *self.restart_labels(uri)]
            text += shlex.join(label) + " >/dev/null\n"
        env = {"ID": spec.id, "LOG": log, "LOG_SIZE": str(spec.log_max_size), "LOG_FILES": str(spec.log_max_files),
               "LOGGER": self.logger, "LOGGER_SH": LOGGER_SH}
        if spec.user is not None:
            env["RUNAS"], env["RUNAS_SH"] = self.runas(spec.user)
        return Call(Script(text, env), parse_run, what=f"run {spec.id}")

    def restart_labels(self, log_uri: str) -> list[str]:
        """Labels that put a container under the containerd restart monitor, restarts logging to `log_uri`."""
        return [f"{L.RESTART_STATUS}=running", f"{L.RESTART_LOGURI}={log_uri}"]

    # --- stop / remove

    def stop(self, container_id: str, grace: float = 10.0, exit_code: bool = True,
             remove: bool = True) -> Call[StopResult]:
        """SIGTERM (the image's stop signal), wait `grace` s, SIGKILL, then delete task and container; without
        `exit_code`, one ctr less (`tasks rm`, whose warning gives it) and the result has none; without `remove`,
        done once the process is gone (`delete` removes the container later)."""
        text = self._fn() + _TASK_PID_FN + _RM_FN + _STOP_SCRIPT
        # The grace period in the script's 0.1 s ticks, rounded up (a fraction of a tick is a whole one).
        ticks = math.ceil(round(max(grace, 0.0) * 10, 6))
        env = {**self._task_env(container_id), "TICKS": str(ticks), "EXIT": str(int(exit_code)),
               "REMOVE": str(int(remove))}
        parse = partial(parse_stop, container_id=container_id)
        return Call(Script(text, env), parse, what=f"stop {container_id}")

    def delete(self, container_id: str) -> Call[None]:
        """Remove a container whose process is gone (`stop` without `remove`), keeping its log; succeeds when
        it is already gone."""
        return Call(Script(self._fn() + _RM_FN + _DELETE_SCRIPT, {"ID": container_id}), parse_ok("delete"),
                    what=f"delete {container_id}")

    def remove(self, container_id: str) -> Call[None]:
        """Kill and delete at once, and delete the log file; succeeds when the container is already gone."""
        text = self._fn() + _REMOVE_SCRIPT
        env = {"ID": container_id, "LOG": self.log_path(container_id)}
        return Call(Script(text, env), parse_remove, what=f"remove {container_id}")

    # --- inspection

    def list_containers(self) -> Call[list[ContainerInfo]]:
        """Every container in the namespace with labels, task state, start time and OOM kills, in one trip."""
        text = self._fn() + _LIST_SCRIPT
        return Call(Script(text, {"NS": self.namespace}), parse_list, what="list containers")

    def tasks(self) -> Call[dict[str, tuple[int | None, Status]]]:
        """Every task's PID and state, one `ctr tasks ls` (the full list runs `containers info` once per
        container)."""
        return Call([*self.base(), "tasks", "ls"], parse_tasks_result, what="list tasks")

    def task(self, container_id: str) -> Call[dict[str, tuple[int | None, Status]]]:
        """The container's task, as `tasks` gives it (what a readiness wait polls): read from its bundle while its
        process runs in the container's cgroup, with no ctr at all; else `ctr tasks ls` (every task) decides."""
        text = self._fn() + _TASK_PID_FN + (
            "if p=$(fleet_task_pid); then printf 'TASK PID STATUS\\n%s %s RUNNING\\n' \"$ID\" \"$p\"; "
            "else c tasks ls; fi\n")
        return Call(Script(text, self._task_env(container_id)), parse_tasks_result, what=f"task {container_id}")

    def _task_env(self, container_id: str) -> dict[str, str]:
        return {"ID": container_id, "NS": self.namespace, "STATE": self.state_dir}

    def metrics_argv(self, container_id: str) -> list[str]:
        return [*self.base(), "tasks", "metrics", "--format", "json", container_id]

    def metrics(self, container_id: str) -> Call[Usage]:
        return Call(self.metrics_argv(container_id), parse_metrics, what=f"metrics {container_id}")

    def logs_argv(self, container_id: str, tail: int | None = 100, follow: bool = False,
                  log_path: str | None = None) -> list[str]:
        path = self.log_path(container_id, log_path)
        if tail is None:
            return ["tail", "-n", "+1", "-F", path] if follow else ["cat", path]
        return ["tail", "-n", str(int(tail)), *(["-F"] if follow else []), path]

    def logs(self, container_id: str, tail: int | None = 100, follow: bool = False) -> Call[str]:
        """The container's log file (stdout and stderr interleaved, no timestamps); streams when following."""
        if follow:
            # tail -F's notices of each rotation ("has become inaccessible", "has appeared") would land inside a
            # line the rotation split between two files: the stream merges stderr into the lines.
            argv = self.logs_argv(container_id, tail, follow)
            return Call(Script('exec "$@" 2>/dev/null', args=tuple(argv)), parse_text("read"),
                        what=f"logs {container_id}")
        # The rotated files too (fleet.node.logrotate), oldest first: the last lines may have just been rotated.
        env = {"F": self.log_path(container_id), "N": "" if tail is None else str(int(tail))}
        return Call(Script(_READ_LOGS, env), parse_text("read"), what=f"logs {container_id}")

    def logs_dated(self, container_id: str, tail: int | None, follow: bool, token: str) -> Call[str]:
        """The log file with what dates it (fleet.node.logdates): its size and times, then the lines."""
        return Call(dated_script(self.log_path(container_id), tail, follow, token), parse_text("read"),
                    what=f"logs {container_id}")

    def exec_argv(self, container_id: str, argv: Sequence[str], exec_id: str | None = None,
                  tty: bool = False) -> list[str]:
        if not argv:
            raise ValueError("exec needs a command")
        eid = exec_id or f"fleet-exec-{L.random_suffix(8)}"
        # --tty: ctr gives the process a console of its own, attached to ctr's stdin (the SSH session's pty).
        through_ctr = [*self.base(), "tasks", "exec", *(["--tty"] if tty else []), "--exec-id", eid, container_id]
        if tty:
            return [*through_ctr, *argv]
        # Without a terminal, runc's own `exec` where runc runs the container (_EXEC_SH says why), else ctr.
        root = f"{self.runc_root}/{self.namespace}"
        return ["/bin/sh", "-c", _EXEC_SH, "fleet-exec", root, container_id, str(len(through_ctr)), *through_ctr,
                *argv]

    def exec(self, container_id: str, argv: Sequence[str], exec_id: str | None = None,
             tty: bool = False) -> Call[CommandResult]:
        return Call(self.exec_argv(container_id, argv, exec_id, tty), identity, what=f"exec {container_id}")

    # --- images

    def image_import_argv(self) -> list[str]:
        """Import an uncompressed OCI/Docker archive from stdin (ctr rejects a gzip stream)."""
        return [*self.base(), "images", "import", "-"]

    def image_import(self, archive_path: str) -> Call[list[ImportedImage]]:
        return Call(self.image_import_argv(), parse_import, stdin_path=archive_path, what="image import")

    def image_list_argv(self) -> list[str]:
        return [*self.base(), "images", "ls"]

    def image_list(self) -> Call[dict[str, str]]:
        return Call(self.image_list_argv(), parse_image_list, what="image list")

    def image_pull_argv(self, ref: str, plain_http: bool = False) -> list[str]:
        return [*self.base(), "images", "pull", *(["--plain-http"] if plain_http else []), ref]

    def image_pull(self, ref: str, plain_http: bool = False) -> Call[None]:
        return Call(self.image_pull_argv(ref, plain_http), parse_ok("ctr"), what=f"pull {ref}")

    def image_pull_login(self, ref: str, username: str, plain_http: bool = False) -> Call[None]:
        """Pull with credentials, the password read from this command's stdin (one line). ctr 1.6 takes it only in
        argv (`--user user:password`, which `ps` shows) or from a terminal it prompts on; so the pull runs under
        script(1), whose terminal's input is the stdin, with echo off from the start (`-E never`: with echo on, the
        password would come back in the output). Only the last lines of ctr's progress are kept."""
        pull = [*self.base(), "images", "pull", *(["--plain-http"] if plain_http else []), "--user", username, ref]
        return Call(Script(_LOGIN_PULL_SCRIPT, {"PULL": shlex.join(pull)}), parse_login_pull, what=f"pull {ref}")

    def image_remove_argv(self, ref: str) -> list[str]:
        return [*self.base(), "images", "rm", ref]

    def image_remove(self, ref: str) -> Call[None]:
        return Call(self.image_remove_argv(ref), parse_ok("ctr"), what=f"image rm {ref}")


def parse_run(result: CommandResult) -> None:
    check(result, "ctr run")


def _sections(text: str) -> list[tuple[str, str, str]]:
    """Split marker-delimited output into (marker, rest of marker line, body): a section starts at a line that
    begins with "@@"; what comes before the first is not part of any. Split on the markers, not line by line:
    a node's listing is mostly `containers info` JSON, a couple of hundred lines per container."""
    out: list[tuple[str, str, str]] = []
    for chunk in ("\n" + text).split("\n@@")[1:]:
        line, _, body = chunk.partition("\n")
        head, _, rest = line.partition(" ")
        out.append((head, rest, body))
    return out


_EXIT_RE = re.compile(r"exit with non-zero exit code (\d+)")


def parse_stop(result: CommandResult, container_id: str = "") -> StopResult:
    """Read the stop script's markers; the exit code comes from `tasks rm` stderr (absent means 0)."""
    if result.error is not None:
        check(result, "stop")
    secs = _sections(result.stdout)
    heads = {h: (rest, body) for h, rest, body in secs}
    cid = container_id
    if "found" not in heads:
        raise RuntimeCommandError(result.node, "stop", result.exit_status, result.stderr or result.stdout)
    if heads["found"][0] == "false":
        return StopResult(cid, found=False)
    exit_code: int | None = None
    if "taskrm" in heads:
        m = _EXIT_RE.search(heads.get("taskrm", ("", ""))[1])
        exit_code = int(m.group(1)) if m else 0
    rc = heads.get("rc", ("1", ""))[0]
    if rc != "0":
        detail = heads.get("containerrm", ("", ""))[1].rstrip("\n")
        status = int(rc) if rc.isdigit() else None
        raise RuntimeCommandError(result.node, "stop: containers rm", status, detail)
    return StopResult(cid, found=True, exit_code=exit_code, killed="killed" in heads)


_RC_RE = re.compile(r"^@@rc (\d+)$", re.MULTILINE)


def parse_login_pull(result: CommandResult) -> None:
    """The pull's exit status from its `@@rc` line (the script's own is `tail`'s); its `ctr:` lines on failure."""
    check(result, "pull")
    text = result.stdout.replace("\r", "")
    m = _RC_RE.search(text)
    if m is None or m.group(1) != "0":
        errors = [line for line in text.splitlines() if line.startswith("ctr: ")]
        raise RuntimeCommandError(result.node, "pull", int(m.group(1)) if m else None,
                                  errors[-1] if errors else text.strip()[-300:] or "no output")


def parse_remove(result: CommandResult) -> None:
    check(result, "remove")


_STATUS = {"RUNNING": Status.RUNNING, "STOPPED": Status.STOPPED, "CREATED": Status.CREATED,
           "PAUSED": Status.RUNNING, "PAUSING": Status.RUNNING}


def parse_tasks(text: str) -> dict[str, tuple[int | None, Status]]:
    """`ctr tasks ls` table → {id: (pid, status)}."""
    tasks: dict[str, tuple[int | None, Status]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            pid = int(parts[1]) if parts[1].isdigit() and int(parts[1]) > 0 else None
            tasks[parts[0]] = (pid, _STATUS.get(parts[2], Status.UNKNOWN))
    return tasks


def parse_tasks_result(result: CommandResult) -> dict[str, tuple[int | None, Status]]:
    check(result, "tasks ls")
    return parse_tasks(result.stdout)


def parse_list(result: CommandResult) -> list[ContainerInfo]:
    """The list script's output → one ContainerInfo per container (no task: CREATED)."""
    check(result, "list")
    infos: dict[str, dict[str, object]] = {}
    oom: dict[str, int] = {}
    tasks: dict[str, tuple[int | None, Status]] = {}
    starts: dict[int, float] = {}
    for head, rest, body in _sections(result.stdout):
        if head == "container":
            text = body.strip()
            if text and not text.endswith("}"):  # cut before its "Spec" by the script
                text = text.rstrip(",") + "\n}"
            if text:
                try:
                    infos[rest] = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise RuntimeCommandError(result.node, "list: containers info", 0, str(exc)) from exc
        elif head == "oom":
            cid, _, count = rest.partition(" ")
            oom[cid] = int(count) if count.strip().isdigit() else 0
        elif head == "tasks":
            tasks = parse_tasks(body)
        elif head == "proc":
            fields = rest.split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                btime, hz = int(fields[0]), int(fields[1]) or 100
                for line in body.splitlines():
                    spid, _, ticks = line.partition(" ")
                    if spid.isdigit() and ticks.strip().isdigit():
                        starts[int(spid)] = btime + int(ticks) / hz
    out = []
    for cid, info in infos.items():
        labels = info.get("Labels") or {}
        pid, status = tasks.get(cid, (None, Status.CREATED))
        out.append(ContainerInfo(
            id=str(info.get("ID", cid)),
            image=str(info.get("Image", "")),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            status=status,
            pid=pid,
            started_at=starts.get(pid) if pid is not None and status is Status.RUNNING else None,
            created_at=str(info["CreatedAt"]) if "CreatedAt" in info else None,
            oom_killed=oom.get(cid, 0) > 0,
        ))
    return out


def _get(data: object, *path: str) -> int:
    for key in path:
        if not isinstance(data, dict):
            return 0
        data = data.get(key, 0)
    return int(data) if isinstance(data, int | float) else 0


def parse_metrics(result: CommandResult) -> Usage:
    """`ctr tasks metrics --format json` (cgroup v1 shape; zero fields are omitted, so default to 0)."""
    check(result, "metrics")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeCommandError(result.node, "metrics", result.exit_status, f"not JSON: {exc}") from exc
    limit = _get(data, "memory", "usage", "limit")
    return Usage(
        cpu_ns=_get(data, "cpu", "usage", "total"),
        memory_bytes=_get(data, "memory", "usage", "usage"),
        memory_limit=None if limit in (0, NO_MEMORY_LIMIT) or limit >= NO_MEMORY_LIMIT else limit,
        oom_kills=_get(data, "memory_oom_control", "oom_kill"),
        pids=_get(data, "pids", "current"),
    )


_IMPORT_RE = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)\.\.\.done", re.MULTILINE)


def parse_import(result: CommandResult) -> list[ImportedImage]:
    """`unpacking NAME (sha256:…)...done` lines → the imported images."""
    check(result, "image import")
    return [ImportedImage(m.group(1), m.group(2)) for m in _IMPORT_RE.finditer(result.stdout)]


def parse_image_list(result: CommandResult) -> dict[str, str]:
    """`ctr images ls` table (REF TYPE DIGEST SIZE PLATFORMS LABELS) → {ref: manifest digest}."""
    check(result, "image list")
    out = {}
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("sha256:"):
            out[parts[0]] = parts[2]
    return out
