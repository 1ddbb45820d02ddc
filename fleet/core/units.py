"""Parse and format CPU and memory quantities the way Kubernetes and Nomad users write them, and durations: the
one duration syntax of every command-line flag and every playbook and inventory field."""

from __future__ import annotations

import contextlib
import math
import re

_MEM_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

# `ms` before `m`: the alternation takes the first unit that matches.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DAY = 86400.0


def parse_memory(value: object) -> int:
    """Bytes from `512Mi`, `512MiB`, `2G`, `1.5GiB` or a plain integer of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size such as 512MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory cannot be negative: {value}")
        return value
    if isinstance(value, float):
        raise ValueError(f"expected a memory size with a unit such as 512MiB, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a memory size such as 512MiB, got {value!r}")
    m = _MEM_RE.match(value)
    if not m or m.group(2).lower() not in _MEM_UNITS:
        raise ValueError(f"expected a memory size such as 512MiB or 2GiB, got {value!r}")
    size = float(m.group(1)) * _MEM_UNITS[m.group(2).lower()]
    if not size < 2**63:  # also inf, from a number of hundreds of digits
        raise ValueError(f"memory size too large: {value!r}")
    return int(size)


def parse_cpu(value: object) -> float:
    """Cores from `0.5`, `2`, or millicores `500m`."""
    if isinstance(value, bool):
        raise ValueError(f"expected a CPU amount such as 0.5 or 500m, got {value!r}")
    cores: float
    if isinstance(value, int):
        cores = float(value) if abs(value) <= 2**53 else math.inf if value > 0 else -math.inf  # no float() overflow
    elif isinstance(value, float):
        cores = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise ValueError(f"expected a CPU amount such as 0.5 or 500m, got {value!r}") from None
    else:
        raise ValueError(f"expected a CPU amount such as 0.5 or 500m, got {value!r}")
    if math.isnan(cores) or math.isinf(cores):
        raise ValueError(f"expected a finite CPU amount such as 0.5 or 500m, got {value!r}")
    if cores < 0:
        raise ValueError(f"cpu cannot be negative: {value!r}")
    return cores


def format_memory(n: int | float) -> str:
    """Human binary size: 512 MiB, 1.5 GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit in ("B", "KiB", "MiB") or size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_cpu(cores: float) -> str:
    """0.25 → `250m`, 2.0 → `2`."""
    if cores == int(cores):
        return str(int(cores))
    return f"{round(cores * 1000)}m"


def short_size(n: int) -> str:
    """Compact binary size for tables and narrow columns: 512M, 1.5G, 23G."""
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 and value != int(value) else f"{value:.0f}{unit}"
    return f"{n}B"


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 2s or 500ms, got {value!r}")
    if isinstance(value, int):
        # Compared as an int first: a huge one would overflow float().
        return float(value) if abs(value) <= 10**9 else math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if text and pos == len(text):
                return total
    raise ValueError(f"expected a duration such as 2s, 500ms or 1m, got {value!r}")


def _limit(seconds: float) -> str:
    """A maximum as a user would write it, then in seconds: `24h (86400s)`, `3650d (315360000s)`."""
    if seconds > DAY and seconds % DAY == 0:
        short = f"{seconds / DAY:g}d"
    elif seconds % 3600 == 0:
        short = f"{seconds / 3600:g}h"
    else:
        short = f"{seconds:g}s"
    return f"{short} ({seconds:.0f}s)"


def parse_duration(value: object, maximum: float = DAY) -> float:
    """Seconds from `500ms`, `2s`, `1m`, `1m30s`, `1h`, `1d`, or a number (int or float) of seconds: 0 to
    `maximum` (24 h unless told), in whole milliseconds (returned as `milliseconds / 1000`, so equal durations
    are equal floats). Text needs its unit: in a YAML file a quoted `"2"` is refused, as a typo may hide there;
    `parse_duration_flag` reads the command line's bare numbers. The ValueError's text does not name the
    flag or the field: the caller adds that (`--wait: …`, `file:12: services.web.health.interval: …`)."""
    seconds = _seconds(value)
    if math.isnan(seconds):
        raise ValueError(f"expected a duration such as 2s or 500ms, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if seconds > maximum:
        raise ValueError(f"a duration can be at most {_limit(maximum)}, got {value!r}")
    millis = round(seconds * 1000)
    if abs(seconds * 1000 - millis) > 1e-6:
        raise ValueError(f"durations are counted in whole milliseconds, got {value!r}")
    return millis / 1000


def parse_duration_flag(value: object, maximum: float = DAY) -> float:
    """A command-line flag's duration: as `parse_duration`, and a bare number such as `30`, `2.5`, `.5` or `1e3`
    (whatever Python reads as a float: all a flag took before it took units) is seconds."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: text with units, parsed below
            value = float(value)
    return parse_duration(value, maximum)
