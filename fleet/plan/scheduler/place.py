"""Decide where every wanted replica runs: keep what may stay, then feasibility → ranking → selection.

One pass over nodes in name order; capacity and host ports count what this pass has already placed. Selection
uses heaps keyed by (replicas of the service on the node, replicas in the node's spread group, free capacity),
so placing R replicas on N nodes costs O(S·N + R·log N) for S services, not O(R·N).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter

from fleet.core.errors import SchedulingError
from fleet.plan.scheduler.feasibility import (
    ASKED,
    CHANGING,
    DRAINING,
    NODE_STATE,
    UNHEALTHY,
    FilterKey,
    Refusal,
    count_nodes,
    cpu_ceil,
    cpu_floor,
    filter_key,
    no_port,
    over_limit,
    shortfall,
    show_cpu,
    show_memory,
)
from fleet.plan.scheduler.values import (
    Assignment,
    Existing,
    NodeState,
    Placement,
    Reason,
    ServiceDemand,
    Unplaced,
)

_NodeKey = tuple[int, float, str, int]  # (replicas of the service here, free score, name, node index)
# (head node's count, group count, head score, head name, group, version)
_GroupKey = tuple[int, int, float, str, str, int]
_Ranked = tuple[float, str, int]  # (free score, name, node index): best fit order, fullest first


@dataclass
class _Order:
    """Eligible nodes for one (required labels, data nodes, spread label) key, per spread group, in best fit
    order."""

    groups: dict[str, list[_Ranked]]
    group_of: dict[int, str]


@dataclass
class _Verdicts:
    """The fixed checks' outcome for one filter key: the nodes passing them in name order, and the reason
    recorded for each node that failed one."""

    eligible: list[int]
    refused: dict[int, Refusal]


class _Pass:
    """Free capacity and host ports of every node during one pass, indexed by position in name order."""

    def __init__(self, nodes: Sequence[NodeState]) -> None:
        self.states = sorted(nodes, key=lambda n: n.name)
        self.names = [n.name for n in self.states]
        dupes = sorted(name for name, n in Counter(self.names).items() if n > 1)
        if dupes:
            raise SchedulingError(f"node listed more than once: {', '.join(dupes)}")
        self.index = {name: i for i, name in enumerate(self.names)}
        self.healthy = [n.healthy for n in self.states]
        self.draining = [n.draining for n in self.states]
        self.cordoned = [n.cordoned for n in self.states]
        self.labels = [n.labels for n in self.states]
        self.lacks = [n.lacks for n in self.states]
        self.free_cpu = [cpu_floor(n.capacity.cpu) - cpu_ceil(n.reserved.cpu) for n in self.states]
        self.free_mem = [n.capacity.memory - n.reserved.memory for n in self.states]
        self.used_ports = [set(n.ports_in_use) for n in self.states]
        self.fleet_ports: list[set[int]] = [set() for _ in self.states]
        self._next_port: list[dict[tuple[int, int], int]] = [{} for _ in self.states]
        # Free capacity is scored in units of the largest healthy node: best fit weighs CPU and memory alike.
        healthy = [i for i, ok in enumerate(self.healthy) if ok]
        self.cpu_weight = 1.0 / max([self.free_cpu[i] for i in healthy] + [1])
        self.mem_weight = 1.0 / max([self.free_mem[i] for i in healthy] + [1])
        # The node's own state, checked once per pass: the first check of it each node fails (None: it passed).
        self.node_refusal = [_first_refusal(self, i) for i in range(len(self.states))]
        self._verdicts: dict[FilterKey, _Verdicts] = {}
        self._orders: dict[tuple[FilterKey, str | None], _Order] = {}
        self._ranked: list[_Ranked] = [(self.score(i), name, i) for i, name in enumerate(self.names)]
        self._dirty: set[int] = set()

    def score(self, i: int) -> float:
        """Free capacity left on node i; lower means more allocated, which best fit prefers."""
        return self.free_cpu[i] * self.cpu_weight + self.free_mem[i] * self.mem_weight

    def fits(self, i: int, cpu: int, memory: int) -> bool:
        """Whether node i has room left for `cpu` micro-cores and `memory` bytes."""
        return self.free_cpu[i] >= cpu and self.free_mem[i] >= memory

    def verdicts(self, d: ServiceDemand, only: frozenset[str] | None) -> _Verdicts:
        """Run the fixed checks over every node for `d` (limited to `only`, when given), recording each refusal:
        once per filter key."""
        key = filter_key(d, only)
        found = self._verdicts.get(key)
        if found is None:
            found = _Verdicts([], {})
            for i, refusal in enumerate(self.node_refusal):
                if refusal is None:
                    for check in ASKED:
                        if (refusal := check(self, i, d, only)) is not None:
                            break
                if refusal is None:
                    found.eligible.append(i)
                else:
                    found.refused[i] = refusal
            self._verdicts[key] = found
        return found

    def order(self, d: ServiceDemand, only: frozenset[str] | None, group_label: str | None) -> _Order:
        """The nodes passing the fixed checks for `d` (and `only`), grouped by `group_label`, each group in best fit
        order.

        Built once per distinct key and kept current by `refresh`: a service's turn need not walk all nodes.
        """
        self.refresh()
        key = (filter_key(d, only), group_label)
        found = self._orders.get(key)
        if found is None:
            found = _Order({}, {})
            for i in self.verdicts(d, only).eligible:
                g = self.labels[i].get(group_label, "") if group_label is not None else ""
                found.group_of[i] = g
                found.groups.setdefault(g, []).append(self._ranked[i])
            for ranked in found.groups.values():
                ranked.sort()
            self._orders[key] = found
        return found

    def refresh(self) -> None:
        """Re-rank the nodes whose free capacity changed since the last refresh, in every order built."""
        for i in sorted(self._dirty):
            old, new = self._ranked[i], (self.score(i), self.names[i], i)
            for found in self._orders.values():
                g = found.group_of.get(i)
                if g is not None:
                    ranked = found.groups[g]
                    del ranked[bisect.bisect_left(ranked, old)]
                    bisect.insort(ranked, new)
            self._ranked[i] = new
        self._dirty.clear()

    def free_port(self, i: int, port_range: tuple[int, int]) -> int | None:
        """Lowest host port in the range free on node i; ports are only ever taken, so a cursor remembers."""
        lo, hi = port_range
        cursors = self._next_port[i]
        port = cursors.get(port_range, lo)
        used = self.used_ports[i]
        while port <= hi and port in used:
            port += 1
        cursors[port_range] = port
        return port if port <= hi else None

    def measure_others(self) -> None:
        """Take what each node measures in use beyond fleet's reservations: after the replicas already there are
        settled (they are not moved for it), before new ones are placed (they fit only beside it)."""
        for i, n in enumerate(self.states):
            if n.others.cpu > 0 or n.others.memory > 0:
                self.free_cpu[i] -= cpu_ceil(n.others.cpu)
                self.free_mem[i] -= n.others.memory
                self._dirty.add(i)

    def take(self, i: int, cpu: int, memory: int, port: int) -> None:
        self.free_cpu[i] -= cpu
        self.free_mem[i] -= memory
        self.used_ports[i].add(port)
        self.fleet_ports[i].add(port)
        self._dirty.add(i)


def place(
    nodes: Sequence[NodeState], existing: Sequence[Existing], wanted: Sequence[ServiceDemand]
) -> Placement:
    """Place every replica of `wanted` on `nodes`, keeping `existing` replicas where nothing forces a move.

    Pure and deterministic: the result does not depend on the order of any input. Raises SchedulingError
    only for inconsistent input (a node or service listed twice); unplaceable replicas are reported instead.
    """
    state = _Pass(nodes)
    demands: dict[str, ServiceDemand] = {}
    for d in sorted(wanted, key=lambda d: d.service):
        if d.service in demands:
            raise SchedulingError(f"service listed more than once: {d.service}")
        demands[d.service] = d

    kept, stops, moved = _settle_existing(state, demands, existing)
    state.measure_others()

    assignments = [
        Assignment(e.service, e.replica, e.node, e.port, demands[e.service].resources, "keep",
                   demands[e.service].spec_hash)
        for e in kept.values()
    ]
    on_node: dict[str, Counter[int]] = {s: Counter() for s in demands}
    for e in kept.values():
        on_node[e.service][state.index[e.node]] += 1

    unplaced: list[Unplaced] = []
    per_node: dict[int, list[str]] = {}
    counts: dict[str, int] = {}
    for d in sorted(demands.values(), key=lambda d: _size_order(state, d)):
        if d.per_node:
            numbers = {r for s, r in kept if s == d.service}
            placed, short = _on_every_node(state, d, numbers, on_node[d.service])
            counts[d.service] = len(numbers) + len(placed) + len(short)
            assignments += [Assignment(d.service, r, state.names[i], port, d.resources, "new", d.spec_hash)
                            for r, i, port in placed]
            for r, i, why in short:
                unplaced.append(Unplaced(d.service, r, f"{state.names[i]}: {why}"))
                per_node.setdefault(i, []).append(f"{d.service}: {why}")
            continue
        pending = [r for r in range(d.replicas) if (d.service, r) not in kept]
        waiting = _waiting(state, d, len(pending))
        if waiting:
            unplaced.extend(Unplaced(d.service, r, _wait_reason(state, d)) for r in pending[-waiting:])
            pending = pending[:-waiting]
        if not pending:
            continue
        placed = [p for part, only in _data_split(state, d, pending, on_node[d.service])
                  for p in _select(state, d, part, on_node[d.service], only)]
        for replica, i, port in placed:
            reason: Reason = "move" if (d.service, replica) in moved else "new"
            assignments.append(
                Assignment(d.service, replica, state.names[i], port, d.resources, reason, d.spec_hash)
            )
        if len(placed) < len(pending):
            why, node_reasons = _explain(state, d, on_node[d.service])
            done = {replica for replica, _, _ in placed}
            unplaced.extend(Unplaced(d.service, r, why) for r in pending if r not in done)
            for i, text in node_reasons.items():
                per_node.setdefault(i, []).append(f"{d.service}: {text}")

    rejected = {name: "unhealthy" for name, ok in zip(state.names, state.healthy, strict=True) if not ok}
    for e in stops:
        if e.node not in state.index:
            rejected[e.node] = "not in the node list"
    for i, texts in sorted(per_node.items()):
        rejected[state.names[i]] = "; ".join(texts)
    return Placement(
        assignments=tuple(sorted(assignments, key=_BY_REPLICA)),
        stops=tuple(sorted(stops, key=_existing_order)),
        unplaced=tuple(sorted(unplaced, key=_BY_REPLICA)),
        rejected=dict(sorted(rejected.items())),
        stop_reasons={e: stops[e] for e in sorted(stops, key=_existing_order)},
        counts=counts,
    )


# (service, replica): the order of a placement's assignments and unplaced replicas (a C key, not a lambda: a
# reconcile round sorts every replica of the fleet once per service).
_BY_REPLICA = attrgetter("service", "replica")
_REPLICA_FIRST = itemgetter(1, 0)  # (service, replica) -> (replica, service)


def _existing_order(e: Existing) -> tuple[str, int, str, int, str, float, int]:
    return (e.service, e.replica, e.node, e.port, e.spec_hash, e.resources.cpu, e.resources.memory)


def _size_order(state: _Pass, d: ServiceDemand) -> tuple[float, float, str]:
    """Biggest services first (first-fit decreasing packs tighter); the name breaks ties."""
    cpu = cpu_ceil(d.resources.cpu) * state.cpu_weight
    mem = d.resources.memory * state.mem_weight
    return (-max(cpu, mem), -(cpu + mem), d.service)


def _settle_existing(
    state: _Pass, demands: Mapping[str, ServiceDemand], existing: Sequence[Existing]
) -> tuple[dict[tuple[str, int], Existing], dict[Existing, str], set[tuple[str, int]]]:
    """Split running replicas into kept and stopped; `moved` names wanted replicas that lost their place."""
    stops: dict[Existing, str] = {}
    moved: set[tuple[str, int]] = set()
    candidates: dict[tuple[str, int], list[Existing]] = {}
    for e in sorted(set(existing), key=_existing_order):
        d = demands.get(e.service)
        ident = (e.service, e.replica)
        if d is None:
            stops[e] = f"service {e.service} is no longer wanted"
        elif not d.per_node and not 0 <= e.replica < d.replicas:
            stops[e] = f"surplus: {e.service} wants {d.replicas} replicas"
        elif (problem := _node_problem(state, e.node, d)) is not None:
            stops[e] = problem
            moved.add(ident)
        else:
            candidates.setdefault(ident, []).append(e)

    kept: dict[tuple[str, int], Existing] = {}
    need_cpu = {name: cpu_ceil(d.resources.cpu) for name, d in demands.items()}
    here: Counter[tuple[str, int]] = Counter()  # replicas kept per (service, node index), for `max_per_node`
    # Lowest replica numbers claim room first, so an overfull node sheds its highest-numbered replicas. Of several
    # copies of one replica, the first that still fits is kept and the others are duplicates of it.
    for ident in sorted(candidates, key=_REPLICA_FIRST):
        copies = candidates[ident]
        why: dict[Existing, str] = {}
        for e in copies:
            i = state.index[e.node]
            cpu, mem = need_cpu[e.service], demands[e.service].resources.memory
            limit = demands[e.service].limit
            if e.port in state.fleet_ports[i]:
                why[e] = f"port {e.port} on {e.node} is taken by another replica"
            elif limit is not None and here[(e.service, i)] >= limit:
                # A per-node service's extra replica on a node is surplus; an ordinary one moves elsewhere.
                why[e] = f"{'surplus: ' if demands[e.service].per_node else ''}{over_limit(e.node, limit)}"
            elif not state.fits(i, cpu, mem):
                why[e] = f"{e.node} has no room: {shortfall(cpu, mem, state.free_cpu[i], state.free_mem[i])}"
            else:
                state.take(i, cpu, mem, e.port)
                here[(e.service, i)] += 1
                kept[ident] = e
                break
        keeper = kept.get(ident)
        for e in copies:
            if e is keeper:
                continue
            stops[e] = f"duplicate of {e.service}[{e.replica}] on {keeper.node}" if keeper is not None else why[e]
        if keeper is None:
            moved.add(ident)
    return kept, stops, moved  # in settling order; place() sorts what it returns


def _first_refusal(state: _Pass, i: int) -> Refusal | None:
    """The first check of its own state that node i fails, or None."""
    for check in NODE_STATE:
        if (refusal := check(state, i)) is not None:
            return refusal
    return None


def _node_problem(state: _Pass, node: str, d: ServiceDemand) -> str | None:
    """Why a replica of `d` already on `node` must leave: the first fixed check it fails that evicts too.

    Cordoned nodes and nodes outside the data's keep what they run; a held replica stays on a draining node
    (only its own service's convergence moves it)."""
    i = state.index.get(node)
    if i is None:
        return f"node {node} is gone"
    # The node's state is walked in full only where it refused the node: the first refusal may let the replica
    # stay (cordoned), a later one may not.
    if state.node_refusal[i] is not None:
        for node_check in NODE_STATE:
            if (refusal := node_check(state, i)) is not None and (why := _evicts(refusal, d)) is not None:
                return f"node {node} {why}"
    for check in ASKED:
        if (refusal := check(state, i, d, None)) is not None and (why := _evicts(refusal, d)) is not None:
            return f"node {node} {why}"
    return None


def _evicts(refusal: Refusal, d: ServiceDemand) -> str | None:
    """Why a replica of `d` already on the refused node leaves too, or None: it stays."""
    return None if refusal is DRAINING and d.held else refusal.evicts


def _data_only(d: ServiceDemand) -> frozenset[str] | None:
    """The nodes holding a service's node-local data; None: no node holds any."""
    return d.data_nodes if d.data_nodes else None


def _data_split(state: _Pass, d: ServiceDemand, pending: list[int],
                on_node: Counter[int]) -> list[tuple[list[int], frozenset[str] | None]]:
    """Pending replicas in two parts: one per healthy node holding the service's data and running none of it
    (each goes back to its data), then the rest, which start with fresh data wherever they fit."""
    only = _data_only(d)
    if only is None:
        return [(pending, None)]
    free = frozenset(n for n in only if (i := state.index.get(n)) is not None and state.healthy[i]
                     and not on_node[i])
    k = min(len(pending), len(free))
    return [(pending[:k], free), (pending[k:], None)]


def _waiting(state: _Pass, d: ServiceDemand, pending: int) -> int:
    """How many pending replicas wait for a node holding their data: no more than the nodes that hold it (or
    may) and cannot run it now, and none whose data is accounted for by the healthy nodes holding it."""
    if not d.lost_data:
        return 0
    holding = sum(1 for n in d.data_nodes if (i := state.index.get(n)) is not None and state.healthy[i])
    return max(0, min(pending, d.replicas - holding, len(d.lost_data)))


def _wait_reason(state: _Pass, d: ServiceDemand) -> str:
    where = []
    for n in sorted(d.lost_data):
        i = state.index.get(n)
        # A healthy node is only ever here because its volume directories could not be listed.
        where.append(f"{n} ({'unreachable' if i is None or not state.healthy[i] else 'not listed'})")
    return (f"{d.data_what} may be on {', '.join(where)}: waiting for it, not starting empty elsewhere "
            "(volumes[].on_node_loss: start-empty allows that)")


def _select(
    state: _Pass, d: ServiceDemand, pending: list[int], on_node: Counter[int], only: frozenset[str] | None = None,
) -> list[tuple[int, int, int]]:
    """Choose a node and port for each pending replica, in order; returns (replica, node index, port).

    With `only`, just those nodes are candidates.
    Spread ranks by (replicas of this service on the node, replicas in its spread group, free capacity, name);
    pack ranks by free capacity alone. Each spread group has a heap of candidate nodes and one entry in a heap
    of groups; placing on a node changes only that node and its group, so only they are pushed again.
    A group's heap holds the nodes already holding this service plus only the next untouched node of the
    group's best fit order: every later untouched node ranks behind it, so the rest are read when needed.
    """
    cpu, mem = cpu_ceil(d.resources.cpu), d.resources.memory
    # `_Pass.fits` inlined below: in a pass of many small services this loop reads millions of nodes, and the
    # method call doubled its cost (bench/pack.py, 10,000 services).
    free_cpu, free_mem, names = state.free_cpu, state.free_mem, state.names
    spread = d.strategy == "spread"
    if not pending:
        return []
    order = state.order(d, only, d.spread_by if spread else None)
    # A node that fits has at least this score, so the fuller nodes before it need not be read.
    floor = (cpu * state.cpu_weight + mem * state.mem_weight - 1e-9,)
    cursor = {g: bisect.bisect_left(ranked, floor) for g, ranked in order.groups.items()}
    heaps: dict[str, list[_NodeKey]] = {g: [] for g in order.groups}
    frontier: dict[str, int] = {}
    seen: set[int] = set()

    def pull(g: str) -> None:
        """Move the next untouched node of group g that fits into its heap."""
        ranked, pos = order.groups[g], cursor[g]
        frontier[g] = -1
        while pos < len(ranked):
            score, name, i = ranked[pos]
            pos += 1
            if i not in seen and free_cpu[i] >= cpu and free_mem[i] >= mem:
                seen.add(i)
                heapq.heappush(heaps[g], (0, score, name, i))
                frontier[g] = i
                break
        cursor[g] = pos

    group_count: Counter[str] = Counter()
    limit = d.limit
    for i, n in sorted(on_node.items()):
        g = order.group_of.get(i)
        if g is None:
            continue  # a node that takes no new replica (cordoned): its replicas stay, it gets no more
        group_count[g] += n
        if limit is not None and n >= limit:
            seen.add(i)  # full for this service: never a candidate
        elif spread and n and free_cpu[i] >= cpu and free_mem[i] >= mem:
            seen.add(i)
            heaps[g].append((n, state.score(i), names[i], i))
    version: Counter[str] = Counter()
    groups: list[_GroupKey] = []
    for g, h in heaps.items():
        heapq.heapify(h)
        pull(g)
        if h:
            groups.append((h[0][0], group_count[g], h[0][1], h[0][2], g, 0))
    heapq.heapify(groups)

    placed: list[tuple[int, int, int]] = []
    while groups and len(placed) < len(pending):
        _, _, _, head_name, g, ver = heapq.heappop(groups)
        if ver != version[g]:
            continue
        h = heaps[g]
        port: int | None = None
        while h:
            i = h[0][3]
            if free_cpu[i] >= cpu and free_mem[i] >= mem:
                port = state.free_port(i, d.port_range)
                if port is not None:
                    break
            heapq.heappop(h)  # capacity and ports only shrink during a service's turn: gone for good
            if i == frontier[g]:
                pull(g)
        if port is None:
            continue
        version[g] += 1
        if h[0][2] == head_name:
            i = h[0][3]
            state.take(i, cpu, mem, port)
            on_node[i] += 1
            group_count[g] += 1
            placed.append((pending[len(placed)], i, port))
            if limit is not None and on_node[i] >= limit:
                heapq.heappop(h)
            else:
                heapq.heapreplace(h, (on_node[i] if spread else 0, state.score(i), names[i], i))
            if i == frontier[g]:
                pull(g)
        if h:
            head = h[0]
            heapq.heappush(groups, (head[0], group_count[g], head[1], head[2], g, version[g]))
    return placed


def _on_every_node(state: _Pass, d: ServiceDemand, numbers: set[int],
                   on_node: Counter[int]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, str]]]:
    """A per-node service's new replicas: one on every node passing the checks that runs none, in name order,
    numbered from the lowest free number. Returns those placed (replica, node index, port) and those that do
    not fit their node (replica, node index, why)."""
    only = _data_only(d)
    cpu, mem = cpu_ceil(d.resources.cpu), d.resources.memory
    free = (n for n in itertools.count() if n not in numbers)
    placed: list[tuple[int, int, int]] = []
    short: list[tuple[int, int, str]] = []
    for i in state.verdicts(d, only).eligible:
        if on_node[i]:
            continue
        replica = next(free)
        port = state.free_port(i, d.port_range) if state.fits(i, cpu, mem) else None
        if port is None:
            short.append((replica, i, next(r.text for check in CHANGING if (r := check(state, i, d, only)))))
            continue
        state.take(i, cpu, mem, port)
        on_node[i] += 1
        placed.append((replica, i, port))
    return placed, short


def _explain(state: _Pass, d: ServiceDemand, on_node: Counter[int]) -> tuple[str, dict[int, str]]:
    """Why no more replicas of `d` fit: its need, most free on an eligible node, what ruled out the rest.

    The fixed checks' refusals are those recorded when the nodes were filtered; room and ports are asked now,
    after the service's turn, of the nodes that passed."""
    only = _data_only(d)
    verdicts = state.verdicts(d, only)
    names, free_cpu, free_mem = state.names, state.free_cpu, state.free_mem
    per_node: dict[int, str] = {}
    lacking: Counter[str] = Counter()
    refused_by: dict[str, list[str]] = {"unhealthy": [], "draining": [], "cordoned": [], "port": []}
    for i, refusal in verdicts.refused.items():
        refused_by.setdefault(refusal.check, []).append(names[i])
        lacking.update(refusal.labels)
        if refusal is not UNHEALTHY:  # the node's own reason, "unhealthy", is given for every service at once
            per_node[i] = refusal.text
    for i in verdicts.eligible:
        if d.limit is not None and on_node[i] >= d.limit:
            refused_by.setdefault("limit", []).append(names[i])
            per_node[i] = over_limit(names[i], d.limit)
            continue
        for check in CHANGING:
            if (late := check(state, i, d, only)) is not None:
                refused_by.setdefault(late.check, []).append(names[i])
                per_node[i] = late.text
                break
    parts = [f"needs cpu {show_cpu(cpu_ceil(d.resources.cpu))}, memory {show_memory(d.resources.memory)}"]
    if only is not None:
        parts.append(f"{d.data_what} is on {', '.join(sorted(only))} only")
    if verdicts.eligible:
        # max() keeps the first of equals: the first node in name order, as the reason has always named.
        best_cpu = max(verdicts.eligible, key=free_cpu.__getitem__)
        best_mem = max(verdicts.eligible, key=free_mem.__getitem__)
        most_cpu = f"cpu {show_cpu(free_cpu[best_cpu])} ({names[best_cpu]})"
        most_mem = f"memory {show_memory(free_mem[best_mem])} ({names[best_mem]})"
        parts.append(f"most free on an eligible node: {most_cpu}, {most_mem}")
    else:
        parts.append("no eligible node" if names else "no nodes")
    for label, n in sorted(lacking.items()):
        parts.append(count_nodes(n, f"lacks label {label}", f"lack label {label}"))
    if lack := refused_by.get("lacks"):
        parts.append(f"{', '.join(lack)} {'lacks' if len(lack) == 1 else 'lack'} what it needs")
    if unhealthy := len(refused_by["unhealthy"]):
        parts.append(count_nodes(unhealthy, "is unhealthy", "are unhealthy"))
    if portless := len(refused_by["port"]):
        parts.append(count_nodes(portless, f"has {no_port(d.port_range)}", f"have {no_port(d.port_range)}"))
    if full := refused_by.get("disk"):
        parts.append(f"not enough free disk on {', '.join(full)}")
    if at_limit := len(refused_by.get("limit", ())):
        parts.append(count_nodes(at_limit, f"already runs max_per_node {d.limit}",
                                 f"already run max_per_node {d.limit}"))
    for what in ("draining", "cordoned"):
        if closed := refused_by[what]:
            parts.append(f"{', '.join(closed)} {'is' if len(closed) == 1 else 'are'} {what}")
    return "; ".join(parts), per_node
