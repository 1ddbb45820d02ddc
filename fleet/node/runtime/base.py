"""Values and the seam shared by container runtime drivers: a driver builds commands and parses their output.

A driver never runs anything. Each method returns a `Call`: the command (an argv list or a `Script`), an
optional local file to stream on stdin, and the pure parser for the `CommandResult` it produces. The engine
runs `call.command` over SSH (`pool.run(node, call.command, stdin_path=call.stdin_path)`) and hands the result
to `call.parse`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Literal, Protocol, TypeVar

from fleet.core import shell
from fleet.core.errors import ContainerExists, ContainerNotFound, ImageNotFound, RuntimeCommandError
from fleet.core.model import CommandResult
from fleet.core.shell import Script

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


Command = Sequence[str] | Script


def command_line(command: Command) -> str:
    """The single shell command line that runs `command` (an argv list or a Script)."""
    return command.render() if isinstance(command, Script) else shell.join(list(command))


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """A command to run on one node and the pure parser for what it prints."""

    command: Command
    parse: Callable[[CommandResult], T_co]
    stdin_path: str | None = None
    what: str = ""

    def line(self) -> str:
        return command_line(self.command)


class Status(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    CREATED = "CREATED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Mount:
    """A mount into the container: a host path (`bind`), a fleet volume directory (`volume`) or `tmpfs`."""

    type: Literal["bind", "tmpfs", "volume"]
    target: str
    source: str = ""
    readonly: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to start one container.

    `env` values travel in argv (visible in `ps` on the node): secrets must go in `env_file`, a 0600 file
    written on the node beforehand.
    """

    id: str
    image: str
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    env_file: str | None = None
    mounts: tuple[Mount, ...] = ()
    cpu: float | None = None
    memory: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    net_host: bool = True
    # Join this network namespace file instead (the host's, bind-mounted by fleet): host networking without
    # the runtime also mounting the host's /etc/hosts over the one fleet gives the container.
    netns: str | None = None
    # Its own network (`network: bridge`): these (host port, container port) pairs mapped. ctr joins `netns`,
    # which fleet.node.cni prepared with the mappings; nerdctl makes both itself from `--network bridge -p`.
    ports: tuple[tuple[int, int], ...] = ()
    restart: Literal["no", "always"] = "no"
    log_path: str | None = None
    # The log file is rotated past this size, keeping this many files (fleet.node.logrotate).
    log_max_size: int = 10 * 1024 * 1024
    log_max_files: int = 3
    # Security settings (fleet.config.spec.security): `cap_add`/`cap_drop` are the difference from the runtime's
    # default set, `CAP_`-prefixed; `user` None runs as the image says.
    user: str | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "ports", tuple((int(h), int(c)) for h, c in self.ports))
        object.__setattr__(self, "cap_add", tuple(self.cap_add))
        object.__setattr__(self, "cap_drop", tuple(self.cap_drop))


@dataclass(frozen=True)
class ContainerInfo:
    """One container as the runtime reports it. `exit_code` is None when the runtime does not know it."""

    id: str
    image: str
    labels: Mapping[str, str]
    status: Status
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    created_at: str | None = None
    oom_killed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@dataclass(frozen=True)
class Usage:
    """Resource use of one container: CPU time in ns, memory in bytes (limit None when unlimited)."""

    cpu_ns: int
    memory_bytes: int
    memory_limit: int | None
    oom_kills: int = 0
    pids: int = 0


@dataclass(frozen=True)
class StopResult:
    """How a stop went: `found` False when there was no such container (already gone)."""

    id: str
    found: bool
    exit_code: int | None = None
    killed: bool = False


@dataclass(frozen=True)
class ImportedImage:
    name: str
    digest: str | None


class CliDriver:
    """What the ctr and nerdctl drivers share: a client binary with `-a ADDRESS -n NAMESPACE` global flags,
    and that command as a shell function for their scripts."""

    shell_function = "c"

    def __init__(self, namespace: str, address: str | None, binary: str) -> None:
        self.namespace = namespace
        self.address = address
        self.binary = binary

    def base(self) -> list[str]:
        """The client with its global flags."""
        argv = [self.binary]
        if self.address:
            argv += ["-a", self.address]
        return [*argv, "-n", self.namespace]

    def _fn(self) -> str:
        """A shell function that is the client with the global flags, for scripts."""
        return f'{self.shell_function}() {{ {shell.join(self.base())} "$@"; }}\n'


class RuntimeDriver(Protocol):
    """What the engine needs from a node's container runtime; every method is pure and returns a `Call`."""

    name: str

    def run(self, spec: RunSpec) -> Call[None]: ...
    def stop(self, container_id: str, grace: float = 10.0, exit_code: bool = True,
             remove: bool = True) -> Call[StopResult]: ...
    def delete(self, container_id: str) -> Call[None]: ...
    def remove(self, container_id: str) -> Call[None]: ...
    def list_containers(self) -> Call[list[ContainerInfo]]: ...
    def tasks(self) -> Call[dict[str, tuple[int | None, Status]]]: ...
    def task(self, container_id: str) -> Call[dict[str, tuple[int | None, Status]]]:
        """The container's (pid, status) under its ID, maybe with other tasks' (as `tasks`)."""
        ...
    def metrics(self, container_id: str) -> Call[Usage]: ...
    def logs(self, container_id: str, tail: int | None = 100, follow: bool = False) -> Call[str]: ...
    def logs_dated(self, container_id: str, tail: int | None, follow: bool, token: str) -> Call[str]: ...
    def exec(
        self, container_id: str, argv: Sequence[str], exec_id: str | None = None, tty: bool = False
    ) -> Call[CommandResult]: ...
    def image_import(self, archive_path: str) -> Call[list[ImportedImage]]: ...
    def image_list(self) -> Call[dict[str, str]]: ...
    def image_pull(self, ref: str, plain_http: bool = False) -> Call[None]: ...
    def image_pull_login(self, ref: str, username: str, plain_http: bool = False) -> Call[None]: ...
    def image_remove(self, ref: str) -> Call[None]: ...


_NOT_FOUND = re.compile(r"not found|no such container", re.IGNORECASE)


def parse_ok(what: str) -> Callable[[CommandResult], None]:
    """A parser for commands that print nothing worth keeping: raises (see `check`) unless they succeeded."""
    def parse(result: CommandResult) -> None:
        check(result, what)
    return parse


def parse_text(what: str) -> Callable[[CommandResult], str]:
    """A parser that returns the command's stdout once it succeeded."""
    def parse(result: CommandResult) -> str:
        return check(result, what).stdout
    return parse


def check(result: CommandResult, what: str) -> CommandResult:
    """Return `result` when the command succeeded; raise the most specific RuntimeCommandError otherwise."""
    if result.error is not None:
        raise RuntimeCommandError(result.node, what, result.exit_status, result.error)
    if result.exit_status == 0:
        return result
    err = result.stderr
    if "already exists" in err:
        raise ContainerExists(result.node, what, result.exit_status, err)
    if re.search(r'image "[^"]*": not found', err):
        raise ImageNotFound(result.node, what, result.exit_status, err)
    if _NOT_FOUND.search(err):
        raise ContainerNotFound(result.node, what, result.exit_status, err)
    raise RuntimeCommandError(result.node, what, result.exit_status, err)


def identity(result: CommandResult) -> CommandResult:
    """Parser for commands whose raw result is the answer (exec)."""
    return result
