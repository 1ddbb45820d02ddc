"""A rolling update that only swaps servers reaches HAProxy through its runtime API: no reload, on the real lab,
under load through HAProxy on lb1, and the config file on the node lists exactly the servers HAProxy runs."""

from __future__ import annotations

import asyncio
import time

import pytest
from loadgen import Load
from test_rollout_lab import env, fleet, lb_address, playbook, status  # noqa: F401  (env is a fixture)

from fleet.engine.haproxy import LbNode, LbStatus
from fleet.node.haproxy.runtime import split_servers
from fleet.node.paths import DEFAULT
from fleet.transport import Pool

pytestmark = pytest.mark.lab


def lb_status(lab) -> LbStatus:
    async def ask() -> LbStatus:
        async with Pool() as pool:
            return await LbNode(pool, lab.inventory.node("lb1")).status()
    return asyncio.run(ask())


def servers_on_lb(lab, service: str) -> tuple[set[str], set[str]]:
    """The service's servers in the config file on lb1, and those the running HAProxy has."""
    text = lab.lab.exec_in("lb1", ["cat", DEFAULT.haproxy_config]).stdout
    in_file = {name for backend, name in split_servers(text).servers if backend == f"be_{service}"}
    state = lab.lab.exec_in("lb1", ["sh", "-c", f"echo 'show servers state be_{service}' | "
                                    f"socat -t 5 stdio unix-connect:{DEFAULT.haproxy_admin_socket}"]).stdout
    running = {line.split()[3] for line in state.splitlines()[2:] if line.strip()}
    return in_file, running


def test_server_only_rolling_update_does_not_reload_haproxy(lab, env):  # noqa: F811
    name, port = "hx-roll", 19531
    try:
        before = lb_status(lab)
        assert fleet(env, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        first = lb_status(lab)
        # A new service is a new frontend and backend: the first deploy starts or reloads HAProxy.
        assert first.running and (not before.running or first.reloads > before.reloads), (before, first)
        with Load(lb_address(lab), port, clients=4, max_seconds=90) as load:
            time.sleep(1.0)
            out = fleet(env, "apply", playbook(env, name, port, "v2", replicas=3))
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        r = load.result
        assert r.failed == 0, (r.errors, r.failures[:5])
        assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0 and r.ok > 100
        after = lb_status(lab)
        assert (after.reloads, after.master_pid, after.workers) == (first.reloads, first.master_pid, first.workers)
        assert after.failed_reloads == first.failed_reloads
        replicas = {x["id"] for x in status(env, name)["replicas"]}
        assert len(replicas) == 3 and {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v2"}
        assert servers_on_lb(lab, name) == (replicas, replicas)
    finally:
        fleet(env, "destroy", name)
