"""Feasibility checks a node must pass to take a replica, and the words that explain a failed check.

CPU is counted in whole micro-cores so sums are exact: capacity rounds down, demand rounds up, never over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fleet.core.model import Resources
from fleet.core.units import format_cpu, format_memory

MICRO = 1_000_000
_SLACK = 1e-3  # micro-cores of float noise tolerated when rounding (0.7 * 1e6 may be 699999.9999)


def cpu_floor(cores: float) -> int:
    return max(0, math.floor(cores * MICRO + _SLACK))


def cpu_ceil(cores: float) -> int:
    return max(0, math.ceil(cores * MICRO - _SLACK))


def show_cpu(micro: int) -> str:
    return format_cpu(max(0, micro) / MICRO)


def show_memory(n: int) -> str:
    return format_memory(max(0, n))


def missing_labels(labels: Mapping[str, str], required: Mapping[str, str]) -> list[str]:
    """`key=value` for each required label the node does not carry, in key order."""
    if not required:
        return []
    return [f"{k}={v}" for k, v in sorted(required.items()) if labels.get(k) != v]


def shortfall(need_cpu: int, need_mem: int, free_cpu: int, free_mem: int) -> str | None:
    """`cpu: needs 2, 500m free; memory: …` for each resource the node lacks, or None when both fit."""
    parts = []
    if need_cpu > free_cpu:
        parts.append(f"cpu: needs {show_cpu(need_cpu)}, {show_cpu(free_cpu)} free")
    if need_mem > free_mem:
        parts.append(f"memory: needs {show_memory(need_mem)}, {show_memory(free_mem)} free")
    return "; ".join(parts) or None


def measured(others: Resources) -> str:
    """`; 1.7 GiB in use by other processes` for what a node measures beyond fleet's reservations, or ""."""
    parts = []
    if others.memory > 0:
        parts.append(f"{show_memory(others.memory)} in use by other processes")
    if cpu_ceil(others.cpu) > 0:
        parts.append(f"cpu {show_cpu(cpu_ceil(others.cpu))} in use beyond fleet's requests (load)")
    return "".join(f"; {p}" for p in parts)


def no_port(port_range: tuple[int, int]) -> str:
    return f"no free host port in {port_range[0]}-{port_range[1]}"


def count_nodes(n: int, singular: str, plural: str) -> str:
    return f"{n} node {singular}" if n == 1 else f"{n} nodes {plural}"
