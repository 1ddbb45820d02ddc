"""Which nodes keep the fleet's shared state (etcd, one member each), and what every store module shares about
reaching them."""

from __future__ import annotations

from fleet.core.model import CommandResult, Inventory, Node
from fleet.node.paths import DEFAULT

DEFAULT_BASE_DIR = DEFAULT.base
RECORD_ROLE = "record"
RECORDS_LABEL = "fleet.records"


def record_nodes(inventory: Inventory) -> list[Node]:
    """The record nodes, in inventory order: those the inventory names (role `record`; in an Ansible inventory
    the group `record` or `fleet_roles`), else those labelled `fleet.records=true`; if none is named, the lb
    nodes; if none, the first node (see `record_warnings`). A named set never depends on the inventory's order
    or on which other nodes it lists, so adding or removing a worker never changes it, and every controller
    reading the same inventory gets the same list."""
    named = [n for n in inventory.nodes if n.has_role(RECORD_ROLE)]
    if named:
        return named
    labelled = [n for n in inventory.nodes if n.labels.get(RECORDS_LABEL, "").strip().lower() == "true"]
    if labelled:
        return labelled
    lbs = [n for n in inventory.nodes if n.has_role("lb")]
    return lbs or list(inventory.nodes[:1])


def record_warnings(inventory: Inventory) -> list[str]:
    """What is unsafe about the inventory's record nodes, one sentence each (none for a named, odd-sized set)."""
    nodes = record_nodes(inventory)
    named = any(n.has_role(RECORD_ROLE) or n.labels.get(RECORDS_LABEL, "").strip().lower() == "true"
                for n in inventory.nodes)
    out: list[str] = []
    if nodes and not named:
        which = "its lb nodes" if nodes[0].has_role("lb") else f"its first node ({nodes[0].name})"
        out.append(f"{inventory.path} names no record node, so {which} keep the fleet's shared state: name them "
                   f"(`roles: [worker, record]`), so that adding or removing a node never moves it")
    if len(nodes) == 2:
        names = " and ".join(n.name for n in nodes)
        out.append(f"two record nodes ({names}) have no tie-breaker: losing either one stops every write to the "
                   f"fleet's shared state (etcd needs 2 of 2) until it is back; name a third record node")
    return out


def node_dir(base_dir: str, node: Node) -> str:
    """The node's base directory: `base_dir` with `{node}` replaced by the node's name (several test nodes
    share one machine, each needs its own directory)."""
    return base_dir.replace("{node}", node.name)


def failure(result: CommandResult) -> str | None:
    """Why a remote call failed, in one line; None when it succeeded."""
    if result.error is not None:
        return result.error
    if result.exit_status != 0:
        lines = result.stderr.strip().splitlines()
        return f"exited {result.exit_status}: {lines[-1] if lines else 'no output'}"
    return None


def clean(text: str, limit: int) -> str:
    """One printable line of at most `limit` characters (control characters become spaces)."""
    line = "".join(c if c.isprintable() else " " for c in text).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."
