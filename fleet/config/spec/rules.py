"""The field rules of the playbook schema: annotated types (durations, sizes, ports, file modes and targets) and
checks that several of its sections share, each failing with the message its author reads."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, StrictInt

from fleet.config.spec.values import (
    FILE_MODE_RE,
    FLEET_MOUNTS,
    MAX_MEMORY,
    MOUNT_PATH_RE,
    normal_path,
    parse_duration,
    within,
)
from fleet.core.ports import RESERVED_LB_PORTS
from fleet.core.units import parse_cpu, parse_memory


def _cpu(value: object) -> float:
    cores = parse_cpu(value)
    if not 0 < cores <= 1024:
        raise ValueError(f"cpu must be more than 0 and at most 1024 cores, got {value!r}")
    millis = round(cores * 1000)
    if millis < 1 or abs(cores * 1000 - millis) > 1e-6:
        raise ValueError(f"cpu is counted in whole millicores (0.001 or 1m), got {value!r}")
    return millis / 1000


def _memory(value: object) -> int:
    size = parse_memory(value)
    if size < 1024 * 1024:
        raise ValueError(f"memory must be at least 1MiB, got {value!r}")
    if size > MAX_MEMORY:
        raise ValueError(f"memory can be at most 1PiB, got {value!r}")
    return size


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be more than 0 (at least 1ms)")
    return seconds


def _percentage_points(value: float) -> float:
    if not 0 <= value <= 100:  # also NaN
        raise ValueError(f"expected percentage points from 0 to 100, got {value!r}")
    return value


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {port}")
    return port


def _lb_port(port: int) -> int:
    _port(port)
    if port in RESERVED_LB_PORTS:
        raise ValueError(f"port {port} is fleet's own on the lb nodes ({RESERVED_LB_PORTS[port]}); choose another")
    return port


def _replicas(value: object) -> int | str:
    """A count from 0 to 10000, or `per-node` (one on every node that meets the placement)."""
    if value == "per-node":
        return "per-node"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"Input should be greater than or equal to 0, got {value}")
    if value > 10000:
        raise ValueError(f"Input should be less than or equal to 10000, got {value}")
    return value


Replicas = Annotated[int | str, BeforeValidator(_replicas)]
Cpu = Annotated[float, BeforeValidator(_cpu)]
Memory = Annotated[int, BeforeValidator(_memory)]
Percent = Annotated[float, AfterValidator(_percentage_points)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Port = Annotated[StrictInt, AfterValidator(_port)]
LbPort = Annotated[StrictInt, AfterValidator(_lb_port)]


def _file_mode(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write the mode as a quoted octal string such as '0444' (got the number {value}; "
                         "unquoted, 0444 is read as the number 292)")
    if not isinstance(value, str) or not FILE_MODE_RE.match(value):
        raise ValueError(f"expected a mode of three octal digits such as '0444' or '0400' (no setuid, setgid or "
                         f"sticky bit), got {value!r}")
    return "0" + value[-3:]


def _file_target(value: str) -> str:
    """A file's path inside the container: absolute, of the characters ctr's --mount takes, not over fleet's own
    mounts."""
    check_mount_path(value)
    target = normal_path(value)
    if target == "/":
        raise ValueError("cannot mount a file over /")
    for mount in FLEET_MOUNTS:
        if within(mount, target) or within(target, mount):
            raise ValueError(f"cannot mount over {target}: fleet mounts its own {mount} in every container")
    return target


FileMode = Annotated[str, BeforeValidator(_file_mode)]
FileTarget = Annotated[str, AfterValidator(_file_target)]


def _argv(argv: list[str]) -> list[str]:
    if not argv:
        raise ValueError("expected a non-empty list of arguments")
    for arg in argv:
        if "\x00" in arg:
            raise ValueError("an argument cannot contain a NUL byte")
    return argv


# A command line (a service's command, an exec health check): what ctr runs, so no empty list and no NUL byte.
Argv = Annotated[list[str], AfterValidator(_argv)]


def check_mount_path(path: str) -> None:
    if not MOUNT_PATH_RE.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/" or len(path) > 4096:
        raise ValueError(f"expected an absolute path of letters, digits and . _ @ + / -, got {path!r}")

