"""The error tree of fleet: every exception class fleet defines lives here; every layer raises these, never a
library's own errors (the transport maps asyncssh's at its edge).

    FleetError
    ├── ConfigError              a file the user wrote is wrong; names file, line and field path
    │   ├── InventoryError
    │   └── SpecError
    ├── TransportError           reaching a node failed (carries the node name)
    │   ├── ConnectError         refused, unreachable, DNS, connect timeout
    │   ├── HostKeyError         the host key is unknown or changed, or ~/.ssh/config turns checking off
    │   ├── AuthError            no key was accepted
    │   │   └── BecomeError      logged in, but `sudo -n` refused (a password is needed, or no such right)
    │   ├── SessionError         the session failed after the node was reached
    │   └── CommandTimeout       the command did not finish in time (_Timeout keeps its partial output)
    ├── RemoteCommandError       a command ran and failed (exit status, stderr)
    ├── RuntimeDriverError       the container runtime on a node refused an operation
    │   └── RuntimeCommandError  a runtime command failed (node, exit status, stderr)
    │       ├── ContainerNotFound
    │       ├── ContainerExists
    │       └── ImageNotFound
    ├── LabelError               a node label change the label rules refuse (also a ValueError)
    ├── ContainerLookupError     no container matches a reference, or a prefix matches several
    ├── ImageArchiveError        an image archive is unreadable, compressed, incomplete or corrupt
    ├── PushError                a push names nodes that are not in the inventory
    ├── ImageUnavailable         an image cannot be made present on one node (that node is left out)
    ├── DigestError              an image's tag cannot be resolved to a digest (apply changes nothing)
    ├── SchedulingError          a placement is impossible (with the reason)
    │   └── DrainError           a node's replicas cannot be moved elsewhere (the node stays cordoned)
    ├── VolumeError              a volume cannot be found, removed, backed up or restored (in use, no such)
    │   └── StorageError         a network volume's storage host is down or refused the mount (names it)
    ├── RolloutFailed            new replicas did not become ready; the old ones kept serving
    │   └── CanaryAborted        the canary served too many errors
    ├── LbError                  HAProxy on an lb node did not do what was asked
    │   ├── LbConfigError        `haproxy -c` refused the config (nothing changed)
    │   ├── LbReloadError        a start or reload failed (the old worker kept serving)
    │   └── LbRuntimeError       an admin-socket command was refused
    ├── EdgeError                HTTPS of a host-routed service cannot be set up (its certificate or key)
    │   └── AcmeError            an ACME order failed (the server's reason; no key material)
    ├── StatsParseError          HAProxy's stats or state output could not be read (also a ValueError)
    ├── ScriptOutputError        a node script's output is not in its section format (also a ValueError)
    ├── WireError                a value between fleet's own processes (the watcher's socket) has the wrong shape
    ├── LabError                 the local lab could not be built or torn down
    ├── LeaseError               the fleet's lease (one writer at a time) could not be taken or kept
    │   ├── LeaseHeld            another run holds it (carries its LeaseInfo: who, pid, command, until)
    │   └── LeaseLost            a renewal found it gone, taken, or no longer held on a majority
    ├── RecordsError             the fleet's records on its record nodes cannot be read or written
    │   └── StoreUnreachable     no record node's etcd member answered (none running yet, or no quorum)
    ├── HistoryError             the local history cache is unusable
    └── SecretStoreError         the secrets or this controller's identity cannot be used
        ├── KeyringUnavailable   no keyring backend on this machine (cron, a service without a desktop session)
        ├── KeyringLocked        the keyring is locked
        ├── SecretMissing        the keyring has no secret by that name, or this controller no identity
        └── SecretUnreadable     a sealed secret fails to decode or open (named; nothing acts on it)

Outcomes are values, not errors: a canary waiting for `fleet promote` is an `Outcome(waiting=True)`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    """The node could not be connected to (refused, unreachable, timed out). `slow`: it took seconds to find
    out (a timeout, no route to the host), so the pool does not try again at once."""

    slow = False


class HostKeyError(TransportError):
    """The node's host key is not the pinned one, or ~/.ssh/config turns checking off for a node the inventory
    pins no key for; the connection was refused (or never opened)."""


class AuthError(TransportError):
    """The node accepted none of the offered credentials."""


class BecomeError(AuthError):
    """A node whose inventory says `become`: the login worked but `sudo -n` did not (it needs a password, the user
    may not run commands as the become user, or sudo is missing). Nothing was run on the node; the message names
    the sudoers line to add."""


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


class DrainError(SchedulingError):
    """`fleet node drain` cannot move a node's replicas elsewhere; the node is left cordoned, its replicas run."""


class LabelError(FleetError, ValueError):
    """A node label change that the label rules refuse (a bad key or value, a key set and removed at once)."""


class VolumeError(FleetError):
    """A volume operation was refused or failed: no such volume, in use, or the node said no."""


class StorageError(VolumeError):
    """A network volume could not be mounted or reached: the message names the storage host."""


class WireError(FleetError, ValueError):
    """A value sent between fleet's own processes does not decode as the type expected (names where in it)."""


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
    """The fleet's shared state (etcd on the record nodes) refused a request, or a value in it is unreadable."""


class StoreUnreachable(RecordsError):
    """No record node's etcd member answered: none is running yet (a fleet's first run), or none has a quorum."""


class StatsParseError(FleetError, ValueError):
    """The text is not the output of the command it was parsed as."""


class SessionError(TransportError):
    """The SSH session failed after the node was reached (key exchange, channel refused, connection lost)."""


class _Timeout(CommandTimeout):
    def __init__(self, node: str, message: str, stdout: bytes, stderr: bytes) -> None:
        super().__init__(node, message)
        self.stdout = stdout
        self.stderr = stderr


class ImageArchiveError(FleetError):
    """An image archive is unreadable, compressed, incomplete or corrupt."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class PushError(FleetError):
    """A push was asked of nodes that are not in the inventory."""


class DigestError(FleetError):
    """An image's tag could not be resolved to a digest: its registry did not answer, refused, or lacks the tag."""


class ImageUnavailable(FleetError):
    """An image could not be made present on one node: its image list failed or did not answer in time, the pull
    failed or timed out, or an image built here was never pushed there. Only that node is concerned: the caller
    leaves it out of this run and places its share elsewhere."""

    def __init__(self, node: str, image: str, reason: str) -> None:
        self.node = node
        self.image = image
        self.reason = reason
        super().__init__(f"{node}: image {image} not available: {reason}")


class ContainerLookupError(FleetError):
    """No container matches a reference, or a prefix matches several."""


class RolloutFailed(FleetError):
    """New replicas did not become ready (or crashed); they were removed and the old ones kept serving."""


class CanaryAborted(RolloutFailed):
    """The canary served more errors than the baseline allows; it was removed, the old replicas kept serving."""


class HistoryError(FleetError):
    """The history database is unusable (newer schema, unreadable file) or a revision does not exist."""


class RuntimeCommandError(RuntimeDriverError):
    """A runtime command ran on a node and failed; carries the node, exit status and stderr."""

    def __init__(self, node: str, what: str, exit_status: int | None, stderr: str) -> None:
        self.node = node
        self.what = what
        self.exit_status = exit_status
        self.stderr = stderr
        lines = stderr.strip().splitlines()
        detail = lines[-1] if lines else "no output"
        super().__init__(f"{node}: {what} failed (exit {exit_status}): {detail}")


class ContainerNotFound(RuntimeCommandError):
    """The container does not exist on the node."""


class ContainerExists(RuntimeCommandError):
    """A container with this ID already exists on the node."""


class ImageNotFound(RuntimeCommandError):
    """The image is not present on the node (or in the registry)."""


class SecretStoreError(FleetError):
    """The keyring cannot be used (no backend on this machine, or it refused)."""


class KeyringUnavailable(SecretStoreError):
    """No keyring backend on this machine: typical under cron or a service, which have no desktop session."""


class KeyringLocked(SecretStoreError):
    """The keyring is there but locked (a Secret Service collection nobody unlocked)."""


class SecretMissing(SecretStoreError):
    """The keyring works and has no secret by that name (or no identity for this controller)."""


class SecretUnreadable(SecretStoreError):
    """A sealed secret (or the digest key) that fails to decode or to open with this controller's identity; the
    message names it, and nothing acts on it."""


class ScriptOutputError(FleetError, ValueError):
    """A script's output is not in the `@@fleet` section format (a truncated or foreign output)."""


class LbError(FleetError):
    """HAProxy on an lb node did not do what was asked."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        self.message = message
        super().__init__(f"{node}: {message}")


class LbConfigError(LbError):
    """`haproxy -c` refused the config; the running config and process were left as they were."""

    def __init__(self, node: str, alerts: Sequence[str], output: str) -> None:
        self.alerts = tuple(alerts)
        self.output = output
        reasons = "; ".join(self.alerts) if self.alerts else (output.strip().splitlines() or ["no output"])[-1]
        super().__init__(node, f"haproxy refused the config: {reasons}")


class LbReloadError(LbError):
    """HAProxy could not be started, or a reload failed and the previous worker kept serving the old config."""

    def __init__(self, node: str, message: str, log: str = "", alerts: Sequence[str] = ()) -> None:
        self.log = log
        super().__init__(node, f"{message}: {'; '.join(alerts)}" if alerts else message)


class LbRuntimeError(LbError):
    """An admin-socket command was refused, or the socket could not be reached."""

    def __init__(self, node: str, command: str, reply: str) -> None:
        self.command = command
        self.reply = reply
        detail = reply.strip().splitlines()[-1] if reply.strip() else "no reply"
        super().__init__(node, f"`{command}`: {detail}")


class EdgeError(FleetError):
    """A host-routed service's HTTPS cannot be set up: its certificate or key is missing or wrong."""


class AcmeError(EdgeError):
    """An ACME order (an automatic certificate) failed; the message carries the server's reason."""


class VrrpValueError(ValueError):
    """A bad `vrrp` value in an inventory; `key` names the field (the inventory reader adds file and line)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
