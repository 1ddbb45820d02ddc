"""`fleet restart` and `fleet deploy`: a service rolled anew from its accepted revision, same image or a new one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fleet.cli import common
from fleet.cli.apply import FileOpt, _exit, _run
from fleet.cli.completion import ServiceArg
from fleet.cli.rollout import _say
from fleet.config.spec import IMAGE_RE

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.config.spec import JobSpec
    from fleet.results import RunResult


def restart(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            wait: common.WaitOpt = None) -> None:
    """Replace every replica of SERVICE with a fresh one: same image and settings, never all at once.

    The replicas roll by the service's update settings (max_surge, max_unavailable: surge first by default),
    each new one health-checked and in the load balancers before an old one is drained and stopped; under the
    fleet's lease. The history records it as a new revision, "restart of revision N". Not a stop-then-start.

    Example:

      fleet restart web"""

    async def op(f: Fleet) -> RunResult:
        rev, result = await f.restart(service)
        _say(json, f"restarted {service} (from revision {rev.revision}, {rev.image})")
        return result

    raise _exit(_run(op, inventory, json, wait))


def deploy(service: ServiceArg,
           image: Annotated[str, typer.Option("--image", help="The image to run, e.g. registry.local/web:v2.")],
           inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
           wait: common.WaitOpt = None, file: FileOpt = None) -> None:
    """Roll SERVICE to a new image without editing its playbook (a deploy from CI).

    The service's accepted revision with IMAGE rolls out as a deploy does (health-checked, rolled back on
    failure) and becomes the accepted revision: `fleet reconcile` and `fleet watch` keep it while the playbook
    is unchanged, and `fleet plan` shows the drift ("the playbook says X, accepted revision N runs Y"). The
    next change of the playbook, or `fleet apply`, makes the playbook's image the one again. A service with
    `before_deploy` runs that job (read from the playbooks: -f, $FLEET_PLAYBOOKS or ./playbooks) with IMAGE
    first; if it fails, nothing is rolled out.

    Example:

      fleet deploy web --image registry.local/web:v2"""
    if len(image) > 255 or not IMAGE_RE.match(image):
        common.fail(f"--image: expected an image reference such as registry.local/web:v2, got {image!r}")

    jobs = _jobs(file)

    async def op(f: Fleet) -> RunResult:
        rev, result = await f.with_jobs(jobs).deploy(service, image)
        _say(json, f"deployed {image} to {service} (from revision {rev.revision}, {rev.image})")
        return result

    raise _exit(_run(op, inventory, json, wait))


def _jobs(files: list[str] | None) -> dict[str, JobSpec]:
    """The playbooks' jobs, for a `before_deploy` hook: none when no playbook is named and the default is not
    there (a hook then fails the deploy, saying so)."""
    import os

    from fleet.cli.job import load

    if not files and not os.path.exists(os.environ.get("FLEET_PLAYBOOKS") or "playbooks"):
        return {}
    return load(None, files)[1]
