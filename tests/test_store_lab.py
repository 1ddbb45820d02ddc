"""The fleet's lease on the real lab (real sshd; n1 is the record node, its etcd started by the first contact):
holders in other processes, one of them SIGKILLed while holding it, seen and broken through `fleet lock`."""

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
from helpers import run_fleet

from fleet.api import Fleet
from fleet.core.errors import LeaseHeld
from fleet.store import EtcdLease, record_nodes

pytestmark = pytest.mark.lab

# A controller process that takes the fleet's lease through the API and works under it until it is lost.
HOLDER = r"""
import asyncio, os, sys
from fleet.api import Fleet
from fleet.core.errors import LeaseLost
from fleet.config.inventory import load_inventory

async def main(path, ttl, command):
    os.environ["FLEET_LEASE_TTL"] = ttl
    async with Fleet.connect(load_inventory(path), command=command) as fleet:
        try:
            async with fleet.leased() as lease:
                print("held", flush=True)
                while True:
                    await asyncio.sleep(0.2)
                    await lease.check()
        except LeaseLost as exc:
            print(f"lost: {exc}", flush=True)
            sys.exit(3)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def fleet(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, input=stdin, columns=200, timeout=60)


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


def test_the_labs_record_node_is_named_in_its_inventory(lab):
    assert [n.name for n in record_nodes(lab.inventory)] == ["n1"]
    assert lab.inventory.node("n1").roles == ("worker", "record")


async def test_a_sigkilled_holder_is_named_until_its_lease_expires_then_another_takes_it(lab, holders):
    # A ttl long enough that the CLI runs below (seconds each on a loaded machine) end well before it expires.
    killed = hold(lab, holders, 10.0, "fleet apply web.yaml")
    status = fleet(lab, "lock", "status")
    assert status.returncode == 0, status.stderr
    assert f'held by root@{os.uname().nodename} (pid {killed.pid}, "fleet apply web.yaml")' in status.stdout
    assert status.stdout.splitlines()[0].startswith("n1")
    # The lease lives in etcd on the record node itself: its member answers on the node's loopback only.
    on_node = lab.lab.exec_in("n1", ["etcdctl", "--endpoints=127.0.0.1:2379", "get", "/fleet/lock",
                                     "--print-value-only"]).stdout
    assert json.loads(on_node)["pid"] == killed.pid

    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    killed_at = time.monotonic()
    after = json.loads(fleet(lab, "lock", "status", "--json").stdout)
    assert after["held"] and after["holder"]["pid"] == killed.pid  # a dead holder's lease outlives it ...
    async with Fleet.connect(lab.inventory, command="fleet reconcile") as f:
        second = EtcdLease(await f.shared(), command="fleet reconcile", ttl=30)
        with pytest.raises(LeaseHeld, match=f"pid {killed.pid}"):
            await second.acquire()
        await second.acquire(wait=20)  # ... until its ttl runs out, on etcd's clock
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
    # Its next check (every 0.2 s here) finds the lease gone: the holder stops instead of writing on.
    line = read_line(holder, 10)
    # Found by its check ("the lock key is gone") or by its renewal ("etcd no longer has it"), whichever comes first.
    assert line.startswith("lost: the fleet's lease was lost") and ("gone" in line or "no longer has it" in line)
    assert holder.wait(timeout=10) == 3
