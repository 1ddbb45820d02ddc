"""The error tree of fleet; every layer raises these, never a library's own errors.

    FleetError
    ├── ConfigError            a file the user wrote is wrong; names file, line and field path
    │   ├── InventoryError
    │   └── SpecError
    ├── TransportError         reaching a node failed (carries the node name)
    │   ├── ConnectError       refused, unreachable, DNS, connect timeout
    │   ├── HostKeyError       the host key is unknown or changed
    │   ├── AuthError          no key was accepted
    │   └── CommandTimeout     the command did not finish in time
    ├── RemoteCommandError     a command ran and failed (exit status, stderr)
    ├── RuntimeDriverError     the container runtime on a node refused an operation
    ├── SchedulingError        a placement is impossible (with the reason)
    ├── LabError               the local lab could not be built or torn down
    ├── LeaseError             the fleet's lease (one writer at a time) could not be taken or kept
    │   ├── LeaseHeld          another run holds it (carries its LeaseInfo: who, pid, command, until)
    │   └── LeaseLost          a renewal found it gone, taken, or no longer held on a majority
    └── RecordsError           the fleet's records on its record nodes cannot be read or written
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class FleetError(Exception):
    """Base of every error fleet raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a user's file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(FleetError):
    """A user's file is invalid; lists every problem found, each with file, line and field path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InventoryError(ConfigError):
    """An inventory file is invalid."""


class SpecError(ConfigError):
    """A playbook (service spec) is invalid."""


class TransportError(FleetError):
    """Reaching a node over SSH failed."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        self.message = message
        super().__init__(f"{node}: {message}")


class ConnectError(TransportError):
    """The node could not be connected to (refused, unreachable, timed out)."""


class HostKeyError(TransportError):
    """The node's host key is not the pinned one; the connection was refused."""


class AuthError(TransportError):
    """The node accepted none of the offered credentials."""


class CommandTimeout(TransportError):
    """A remote command did not finish within its timeout."""


class RemoteCommandError(FleetError):
    """A remote command ran and exited non-zero."""

    def __init__(self, node: str, argv: list[str] | str, exit_status: int | None, stderr: str) -> None:
        self.node = node
        self.argv = argv
        self.exit_status = exit_status
        self.stderr = stderr
        cmd = argv if isinstance(argv, str) else " ".join(argv)
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{node}: `{cmd[:120]}` exited {exit_status}: {detail}")


class RuntimeDriverError(FleetError):
    """The container runtime on a node refused an operation."""


class SchedulingError(FleetError):
    """Replicas cannot be placed; the message says what is needed and what is free."""


class LabError(FleetError):
    """The local lab could not be built, inspected or torn down."""


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds the fleet's lease on one record node; times are the NODE's Unix seconds.

    `read_at` is the node's clock when the lease was read, so `expired` and `remaining` need no trust in
    the controller's clock. The token identifies the holder's run; it never appears in str() or repr().
    """

    holder: str
    pid: int
    command: str
    since: float
    until: float
    node: str
    read_at: float = 0.0
    token: str = field(default="", repr=False)

    @property
    def expired(self) -> bool:
        return self.read_at >= self.until

    @property
    def remaining(self) -> float:
        """Seconds until the lease expires unless renewed (0 when it has)."""
        return max(self.until - self.read_at, 0.0)

    def __str__(self) -> str:
        def clock(ts: float) -> str:
            return time.strftime("%H:%M:%S", time.localtime(ts))

        return f'{self.holder} (pid {self.pid}, "{self.command}") since {clock(self.since)}, until {clock(self.until)}'


class LeaseError(FleetError):
    """The fleet's lease could not be taken or kept (held elsewhere, lost, or too few record nodes answered)."""


class LeaseHeld(LeaseError):
    """Another run holds the fleet's lease; `info` says who, since when and until when."""

    def __init__(self, info: LeaseInfo) -> None:
        self.info = info
        super().__init__(f"the fleet's lease is held by {info}; wait with --wait 60s or see `fleet lock status`")


class LeaseLost(LeaseError):
    """The lease this run held was broken, taken by another run, or could not be renewed on a majority."""


class RecordsError(FleetError):
    """The fleet's records could not be read from any record node, or a write reached no majority of them."""
