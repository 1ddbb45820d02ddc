"""The fleet's lease on the real lab (real sshd; lb1 is the record node): holders in other processes, one of them
SIGKILLed while holding it, seen and broken through the real `fleet lock` CLI."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import INSTALLED_CLI, run_fleet

from fleet.core.errors import LeaseHeld
from fleet.store import Lease, record_nodes
from fleet.transport import Pool

pytestmark = pytest.mark.lab

# A controller process that takes the fleet's lease through the API and works under it until it is lost.
HOLDER = r"""
import asyncio, sys
from fleet.core.errors import LeaseLost
from fleet.config.inventory import load_inventory
from fleet.store import Lease, record_nodes
from fleet.transport import Pool

async def main(path, ttl, command):
    inv = load_inventory(path)
    async with Pool() as pool:
        try:
            async with Lease(pool, record_nodes(inv), command=command, ttl=ttl) as lease:
                print("held", flush=True)
                while True:
                    await asyncio.sleep(0.2)
                    lease.check()
        except LeaseLost as exc:
            print(f"lost: {exc}", flush=True)
            sys.exit(3)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
"""


def fleet(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, input=stdin, columns=200, timeout=60, cli=INSTALLED_CLI)


def read_line(proc: subprocess.Popen[str], within: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], within)
    if not ready:
        raise AssertionError(f"no output from pid {proc.pid} within {within}s")
    return proc.stdout.readline().strip()


@pytest.fixture
def holders(lab) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
        fleet(lab, "lock", "break", "--yes")


def hold(lab, holders: list[subprocess.Popen[str]], ttl: float, command: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, lab.inventory_path, str(ttl), command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holders.append(proc)
    assert read_line(proc, 30) == "held"
    return proc


def test_the_labs_record_node_is_its_load_balancer(lab):
    assert [n.name for n in record_nodes(lab.inventory)] == ["lb1"]


async def test_a_sigkilled_holder_is_named_until_its_lease_expires_then_another_takes_it(lab, holders):
    nodes = record_nodes(lab.inventory)
    lb = nodes[0].name
    # A ttl long enough that the CLI runs below (seconds each on a loaded machine) end well before it expires.
    killed = hold(lab, holders, 10.0, "fleet apply web.yaml")
    status = fleet(lab, "lock", "status")
    assert status.returncode == 0, status.stderr
    assert f'held by root@{os.uname().nodename} (pid {killed.pid}, "fleet apply web.yaml")' in status.stdout
    assert status.stdout.splitlines()[0].startswith(lb)
    on_node = lab.lab.exec_in(lb, ["cat", "/var/lib/fleet/lease"]).stdout
    assert f"pid={killed.pid}\n" in on_node  # the lease lives on the record node itself

    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    killed_at = time.monotonic()
    after = json.loads(fleet(lab, "lock", "status", "--json").stdout)
    assert after["held"] and after["holder"]["pid"] == killed.pid  # a dead holder's lease outlives it ...
    async with Pool() as pool:
        second = Lease(pool, nodes, command="fleet reconcile", ttl=30)
        with pytest.raises(LeaseHeld, match=f"pid {killed.pid}"):
            await second.acquire()
        await second.acquire(wait=20)  # ... until its ttl runs out
        waited = time.monotonic() - killed_at
        assert 0.5 < waited < 16, waited
        status = fleet(lab, "lock", "status")
        assert f"pid {os.getpid()}, \"fleet reconcile\"" in status.stdout
        await second.release()
    assert "the fleet's lease is free" in fleet(lab, "lock", "status").stdout


def test_lock_break_frees_it_and_the_running_holder_stops(lab, holders):
    holder = hold(lab, holders, 6.0, "fleet apply api.yaml")
    declined = fleet(lab, "lock", "break", stdin="n\n")
    assert declined.returncode == 1 and "nothing broken" in declined.stderr
    assert f"pid {holder.pid}" in fleet(lab, "lock", "status").stdout  # still held

    broke = fleet(lab, "lock", "break", "--yes")
    assert broke.returncode == 0, broke.stderr
    assert f"broke the lease of root@{os.uname().nodename} (pid {holder.pid}, \"fleet apply api.yaml\")" in broke.stdout
    status = fleet(lab, "lock", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["held"] is False
    # Its next renewal (every ttl/3 = 2 s) finds the lease gone: the holder stops instead of writing on.
    line = read_line(holder, 10)
    assert line.startswith("lost: the fleet's lease was lost") and "removed" in line
    assert holder.wait(timeout=10) == 3
