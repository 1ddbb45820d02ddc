"""`fleet node check` and `fleet node prepare` over the transport: the check script on every chosen node at once
(one round trip each, read-only), and the prepare script where a node's plan has something to do, then the check
again there. One result per node; a node that is down or refuses sudo is that node's error, never the others'.

Prepare takes no lease: the fleet's lease is kept on the record nodes by what prepare installs there (etcd), and
prepare touches packages, kernel settings and fleet's directories only, never a replica, a load balancer or the
records.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.core.errors import ScriptOutputError
from fleet.core.model import Inventory, Node
from fleet.node.paths import write_file
from fleet.node.preflight import NodeCheck, check_script, clock_offset, judge, parse_found
from fleet.node.provision import PACKAGES_DIR, Plan, Prepared, parse_prepared, prepare_script
from fleet.store.nodes import record_nodes
from fleet.transport import Pool

CHECK_TIMEOUT = 30.0
# apt-get update and install of a worker's packages on a slow mirror: minutes, not seconds.
PREPARE_TIMEOUT = 900.0


def node_roles(inventory: Inventory, node: Node) -> tuple[str, ...]:
    """What `node` is checked for: its inventory roles, `records` when it keeps the fleet's shared state (named by
    the role `record`, a label, or chosen by fleet.store.nodes.record_nodes), `vip` when it is an lb node with a
    virtual IP."""
    records = {n.name for n in record_nodes(inventory)}
    extra = (["records"] if node.name in records else []) + (["vip"] if node.vrrp is not None else [])
    return (*(r for r in node.roles if r != "record"), *extra)


async def check_node(pool: Pool, inventory: Inventory, node: Node) -> NodeCheck:
    """One node's check: the script, its output judged for the node's roles, its clock against this one's."""
    roles = node_roles(inventory, node)
    result = await pool.run(node, check_script(), timeout=CHECK_TIMEOUT)
    received = time.time()
    if result.error is not None:
        return NodeCheck(node.name, roles, error=result.error)
    if result.exit_status != 0:
        why = " ".join(result.stderr.split())[:300] or f"exit status {result.exit_status}"
        return NodeCheck(node.name, roles, error=f"the check script failed: {why}")
    try:
        found = parse_found(result.stdout)
    except ScriptOutputError as exc:
        return NodeCheck(node.name, roles, error=str(exc))
    return judge(node.name, roles, found, offset=clock_offset(found, received), become=node.become,
                 become_user=node.become_user)


async def check_nodes(pool: Pool, inventory: Inventory, nodes: Sequence[Node]) -> list[NodeCheck]:
    """Every node's check at once, in the order of `nodes`."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(check_node(pool, inventory, node)) for node in nodes]
    return [t.result() for t in tasks]


@dataclass(frozen=True)
class PrepareReport:
    """What `fleet node prepare` did on one node: its plan, what the script changed (or why it failed), and the
    check after (None when nothing was run)."""

    node: str
    plan: Plan
    prepared: Prepared | None = None
    after: NodeCheck | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        if self.error is not None or self.plan.error is not None or self.plan.left or self.plan.blocked:
            return False
        if self.prepared is not None and self.prepared.error is not None:
            return False
        return self.after is None or self.after.ok


async def send_debs(pool: Pool, node: Node, plan: Plan, source: str) -> str | None:
    """The plan's .deb files from the local directory `source` into PACKAGES_DIR on the node, one at a time
    through the node's stdin (so through sudo too); None when all arrived, else why not."""
    for name in plan.debs:
        local = os.path.join(source, name)
        size = os.path.getsize(local)
        result = await pool.run(node, write_file(f"{PACKAGES_DIR}/{name}", "0644", size=size), stdin_path=local,
                                timeout=PREPARE_TIMEOUT)
        if not result.ok:
            return f"sending {name} failed: {result.error or result.stderr.strip() or result.exit_status}"
    return None


async def prepare_node(pool: Pool, inventory: Inventory, node: Node, plan: Plan,
                       offline: str | None = None) -> PrepareReport:
    """Carry out one node's plan (nothing runs when it has nothing to do), then check the node again; with
    `offline`, the directory its .deb files are sent from."""
    if plan.nothing or plan.error is not None or plan.blocked is not None:
        return PrepareReport(node.name, plan)
    if plan.debs:
        if offline is None:
            raise ValueError("an offline plan needs the directory its .deb files are in")
        unsent = await send_debs(pool, node, plan, offline)
        if unsent is not None:
            return PrepareReport(node.name, plan, error=unsent)
    result = await pool.run(node, prepare_script(plan), timeout=PREPARE_TIMEOUT)
    if result.error is not None:
        return PrepareReport(node.name, plan, error=result.error)
    try:
        prepared = parse_prepared(result.stdout, result.exit_status, result.stderr)
    except ScriptOutputError as exc:
        return PrepareReport(node.name, plan, error=str(exc))
    if prepared.error is not None:
        return PrepareReport(node.name, plan, prepared)
    return PrepareReport(node.name, plan, prepared, await check_node(pool, inventory, node))


async def prepare_nodes(pool: Pool, inventory: Inventory, plans: Sequence[Plan],
                        offline: str | None = None) -> list[PrepareReport]:
    """Every plan carried out at once (each node's apt runs on that node), one report per plan, in order;
    `offline`: the local directory of the plans' .deb files."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(prepare_node(pool, inventory, inventory.node(p.node), p, offline)) for p in plans]
    return [t.result() for t in tasks]
