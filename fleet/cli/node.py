"""`fleet node cordon|uncordon|drain|label NODE`: take a node out of service and back, and label it.

What these commands record is kept on the fleet (its records, under the lease), so every controller respects it;
`fleet nodes` shows it. Exit codes as the other writing commands: 0 done, 1 failed, 2 bad input, 75 the fleet's
lease is held (see --wait).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli import common, completion
from fleet.cli.common import esc

if TYPE_CHECKING:
    from fleet.api import Fleet

app = typer.Typer(help="Node operations, kept on the fleet: cordon, uncordon, drain, label.", no_args_is_help=True)

NodeArg = completion.NodeArg
LabelsArg = Annotated[list[str], typer.Argument(help="key=value to set a label, key- to remove one.",
                                                show_default=False)]


def label_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The label changes of the command line, or exit 2 naming the bad argument."""
    from fleet.core.nodeops import parse_label_args

    try:
        return parse_label_args(args)
    except ValueError as exc:
        common.fail(f"fleet node label: {exc}")


def _change(op: Callable[[Fleet], Awaitable[Any]], inventory: str | None, wait: str | None) -> Any:
    """Run one node operation through the façade (it takes the fleet's lease)."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    seconds = common.wait_seconds(wait)

    async def go() -> Any:
        async with Fleet.connect(inv, wait=seconds) as f:
            return await op(f)

    return common.run(go)


def _done(node: str, json: bool, text: str, **fields: Any) -> None:
    if json:
        common.print_json({"node": node, **fields})
    else:
        common.console().print(esc(text), highlight=False)


def cordon(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
           wait: common.WaitOpt = None) -> None:
    """No new replicas go to NODE; those running there stay (until `fleet node drain` or `uncordon`).

    Example:

      fleet node cordon n2"""
    _change(lambda f: f.cordon(node), inventory, wait)
    _done(node, json, f"{node} cordoned: no new replicas go there", cordoned=True, draining=False)


def uncordon(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
             wait: common.WaitOpt = None) -> None:
    """Replicas may be placed on NODE again (the next apply, scale or reconcile).

    Example:

      fleet node uncordon n2"""
    _change(lambda f: f.uncordon(node), inventory, wait)
    _done(node, json, f"{node} uncordoned: replicas may be placed there again", cordoned=False, draining=False)


def drain(node: NodeArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Move every replica off NODE, then leave it cordoned.

    Rolling: a new replica elsewhere is ready before the old one is drained from the load balancers and
    stopped. When they cannot all go elsewhere, nothing is moved and NODE is left cordoned with its replicas
    running (exit 1).

    Example:

      fleet node drain n2 --wait 5m"""
    from fleet.cli.apply import _exit, _run

    result = _run(lambda f: f.drain(node), inventory, json, wait)
    if not json:
        moved = sum(o.stopped for o in result.outcomes)
        verdict = "drained" if result.ok else "not fully drained"
        common.console().print(f"{esc(node)} {verdict} ({moved} replica(s) moved off) and cordoned", highlight=False)
    raise _exit(result)


def label(node: NodeArg, changes: LabelsArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Set (key=value) or remove (key-) labels of NODE.

    They win over the inventory's labels; removing one the inventory sets records its removal.
    `placement.require` uses them from the next apply or reconcile.

    Example:

      fleet node label n2 zone=eu-1 disk=ssd gpu-"""
    sets, removes = label_args(changes)
    labels = _change(lambda f: f.label(node, sets, removes), inventory, wait)
    shown = ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"
    _done(node, json, f"{node} labels: {shown}", labels=labels)


app.command("cordon")(cordon)
app.command("uncordon")(uncordon)
app.command("drain")(drain)
app.command("label")(label)
