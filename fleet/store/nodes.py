"""Which nodes keep the fleet's lease and records, and what every store module shares about reaching them."""

from __future__ import annotations

from fleet.core.model import CommandResult, Inventory, Node
from fleet.node.paths import DEFAULT
from fleet.results.records import majority as majority

DEFAULT_BASE_DIR = DEFAULT.base
RECORDS_LABEL = "fleet.records"


def record_nodes(inventory: Inventory) -> list[Node]:
    """The record nodes, in inventory order: the `lb` nodes; if none, those labelled `fleet.records=true`;
    if none, the first node. An even number of lb nodes gets one more node as a tie-breaker (the first labelled
    one, else the first other node), so that losing one lb node still leaves a majority: two lb nodes with a
    virtual IP must survive the loss of either. Every controller derives the same list from the same inventory."""
    labelled = [n for n in inventory.nodes if n.labels.get(RECORDS_LABEL, "").strip().lower() == "true"]
    lbs = [n for n in inventory.nodes if n.has_role("lb")]
    if lbs:
        if len(lbs) % 2 == 0:
            other = [n for n in labelled if n not in lbs] or [n for n in inventory.nodes if n not in lbs]
            return [n for n in inventory.nodes if n in lbs or (other and n is other[0])]
        return lbs
    if labelled:
        return labelled
    return list(inventory.nodes[:1])


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
