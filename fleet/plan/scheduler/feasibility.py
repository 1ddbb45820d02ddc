"""Feasibility checks a node must pass to take a replica, as one ordered chain, and the words that explain a
failed check. CPU is counted in whole micro-cores so sums are exact: capacity rounds down, demand rounds up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

from fleet.core.model import Resources
from fleet.core.units import format_cpu, format_memory
from fleet.plan.scheduler.values import NodeState, ServiceDemand

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


def over_limit(node: str, limit: int) -> str:
    return f"max_per_node: {node} already runs {limit}"


def count_nodes(n: int, singular: str, plural: str) -> str:
    return f"{n} node {singular}" if n == 1 else f"{n} nodes {plural}"


class NodeTable(Protocol):
    """The nodes of one scheduling pass as the checks read them, indexed by position in name order."""

    names: list[str]
    states: list[NodeState]
    healthy: list[bool]
    draining: list[bool]
    cordoned: list[bool]
    labels: list[Mapping[str, str]]
    lacks: list[Mapping[str, str]]
    free_cpu: list[int]
    free_mem: list[int]

    def fits(self, i: int, cpu: int, memory: int) -> bool: ...

    def free_port(self, i: int, port_range: tuple[int, int]) -> int | None: ...


class Refusal(NamedTuple):
    """Why a node takes no new replica of a service: the first check it fails."""

    check: str  # the check's name: the explanation counts and lists nodes by it
    text: str  # the node's reason, as `Placement.rejected` shows it
    evicts: str | None = None  # why a replica already running there leaves too ("node n1 " + this); None: it stays
    labels: tuple[str, ...] = ()  # the required labels the node lacks


# A check of the node's own state, the same for every service.
NodeCheck = Callable[[NodeTable, int], Refusal | None]
# A check of what service `d` asks of node i; `only`: the nodes it may use for its data (None: any).
Check = Callable[[NodeTable, int, ServiceDemand, frozenset[str] | None], Refusal | None]
FilterKey = tuple[tuple[tuple[str, str], ...], frozenset[str] | None, str, frozenset[str], int]

UNHEALTHY = Refusal("unhealthy", "unhealthy", "is unhealthy")
DRAINING = Refusal("draining", "draining: takes no new replicas", "is draining")
CORDONED = Refusal("cordoned", "cordoned: takes no new replicas")


def filter_key(d: ServiceDemand, only: frozenset[str] | None) -> FilterKey:
    """What the fixed checks' verdicts for `d` depend on (the data's name only where it can rule a node out)."""
    return tuple(sorted(d.required_labels.items())), only, d.data_what if only is not None else "", d.needs, d.disk


# A node with less free disk than this share of its size (where containers live) takes no new replica: a full disk
# stops every container writing there, and containerd pulling or unpacking. Replicas already there stay.
DISK_FULL_SHARE = 0.05


def _disk_not_full(state: NodeTable, i: int) -> Refusal | None:
    s = state.states[i]
    if s.disk_free is None or not s.disk_total or s.disk_free >= s.disk_total * DISK_FULL_SHARE:
        return None
    return Refusal("disk", f"disk nearly full: {show_memory(s.disk_free)} free of {show_memory(s.disk_total)} "
                           f"(under {DISK_FULL_SHARE:.0%})")


def _has_disk(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    free = state.states[i].disk_free
    if not d.disk or free is None or free >= d.disk:
        return None
    return Refusal("disk", f"disk: needs {show_memory(d.disk)}, {show_memory(free)} free")


def _healthy(state: NodeTable, i: int) -> Refusal | None:
    return None if state.healthy[i] else UNHEALTHY


def _not_draining(state: NodeTable, i: int) -> Refusal | None:
    return DRAINING if state.draining[i] else None


def _not_cordoned(state: NodeTable, i: int) -> Refusal | None:
    return CORDONED if state.cordoned[i] else None


def _holds_data(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    if only is None or state.names[i] in only:
        return None
    return Refusal("data", f"holds none of {d.data_what}")


def _has_labels(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    missing = missing_labels(state.labels[i], d.required_labels)
    if not missing:
        return None
    text = f"lacks label {', '.join(missing)}"
    return Refusal("labels", text, text, tuple(missing))


def _has_what_it_needs(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    lacks = state.lacks[i]
    if not lacks or not d.needs:
        return None
    missing = [lacks[n] for n in sorted(d.needs) if n in lacks]
    # Replicas already running there stay: they run; only new ones could not start. What a runtime cannot do
    # (`user` on ctr) is among the node's lacks too, with its words (results.nodes).
    return Refusal("lacks", "; ".join(missing)) if missing else None


def _has_room(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    cpu, memory = cpu_ceil(d.resources.cpu), d.resources.memory
    if state.fits(i, cpu, memory):
        return None
    short = shortfall(cpu, memory, state.free_cpu[i], state.free_mem[i])
    return Refusal("room", f"{short}{measured(state.states[i].others)}")


def _has_port(state: NodeTable, i: int, d: ServiceDemand, only: frozenset[str] | None) -> Refusal | None:
    return None if state.free_port(i, d.port_range) is not None else Refusal("port", no_port(d.port_range))


# The feasibility chain, cheapest check first: a node stops at the first it fails, and that refusal is its reason.
# The node's own state first (draining before cordoned: a node that is both is reported by the stronger): flags,
# decided once per pass for every service. Then what the service asks: a set lookup, then a comparison per
# required label; place.py takes these verdicts once per filter key, recording each refusal as it filters. None
# of these change during a pass. Room and host ports change with every placement: they come last and are asked
# again as replicas are placed, and of the nodes that passed when a shortfall is explained. What a service needs
# that the node lacks (a tool, the CNI plugins, a runtime feature: a set lookup) comes after its labels.
NODE_STATE: tuple[NodeCheck, ...] = (_healthy, _not_draining, _not_cordoned, _disk_not_full)
ASKED: tuple[Check, ...] = (_holds_data, _has_labels, _has_what_it_needs, _has_disk)
CHANGING: tuple[Check, ...] = (_has_room, _has_port)
