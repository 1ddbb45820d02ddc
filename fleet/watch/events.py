"""containerd's event stream as a wake-up call: `ctr events` on every worker, over the watcher's warm connections.

An event never decides anything by itself: it only starts the next round early (the round reads the nodes and
reconciles with the engine). Measured on the lab: a SIGKILLed container's `/tasks/exit` arrives ~2 ms after the
kill, where a task-list round every second would see it 0.5 s later on average and cost one `ctr` start
(~18 ms of node CPU) per node per second.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.core.errors import FleetError
from fleet.core.model import Node

if TYPE_CHECKING:
    from fleet.api import Fleet

# Topics after which what runs may differ from what was wanted: a task ended, was deleted, ran out of memory, or a
# container was removed behind fleet's back.
DRIFT_TOPICS = frozenset({"/tasks/exit", "/tasks/delete", "/tasks/oom", "/containers/delete"})

# `2026-11-30 20:18:35.551466956 +0000 UTC fleet /tasks/exit {"container_id":"…",…}` (containerd 1.6 ctr)
_LINE = re.compile(r"^\S+ \S+ \S+ \S+ (?P<ns>\S+) (?P<topic>/\S+)(?: (?P<body>.*))?$")


@dataclass(frozen=True)
class ContainerEvent:
    namespace: str
    topic: str
    container: str | None
    exit_status: int | None = None


def events_argv(namespace: str) -> list[str]:
    return ["ctr", "-n", namespace, "events"]


def parse_event(line: str) -> ContainerEvent | None:
    """One line of `ctr events`; None for a line that is not an event."""
    m = _LINE.match(line.strip())
    if m is None:
        return None
    container: str | None = None
    status: int | None = None
    body = m.group("body")
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            value = data.get("container_id", data.get("id"))
            container = value if isinstance(value, str) else None
            code = data.get("exit_status")
            status = code if isinstance(code, int) else None
    return ContainerEvent(m.group("ns"), m.group("topic"), container, status)


def is_drift(event: ContainerEvent, namespace: str) -> bool:
    return event.namespace == namespace and event.topic in DRIFT_TOPICS


async def follow(fleet: Fleet, node: Node, on_drift: Callable[[ContainerEvent], None], *,
                 retry: float = 2.0) -> None:
    """Follow one node's events until cancelled; reconnects after `retry` seconds when the stream ends or the
    node cannot be reached (the SSH keepalive ends a stream whose node stopped answering)."""
    while True:
        try:
            async with fleet.stream(node, events_argv(node.namespace)) as lines:
                async for line in lines:
                    event = parse_event(line)
                    if event is not None and is_drift(event, node.namespace):
                        on_drift(event)
        except FleetError:
            pass  # the node is down or restarting: the rounds report it; try again
        await asyncio.sleep(retry)
