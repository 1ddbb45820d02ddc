"""The fleet's lease against real in-process SSH servers running the real lease script under /bin/sh and flock.

Each server stands for one record node; its lease lives in its own temporary directory (`{node}` in base_dir).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sshserver import SSHFarm

from fleet.core.errors import LeaseError, LeaseHeld, LeaseInfo, LeaseLost
from fleet.core.model import Inventory, Node
from fleet.store import Lease, break_lease, lease_status, record_nodes
from fleet.store.lease import parse_reply
from fleet.transport import Pool


@pytest.fixture
def base(tmp_path: Path) -> str:
    return str(tmp_path / "nodes" / "{node}" / "var-lib-fleet")


def lease(pool: Pool, nodes: list[Node], base: str, **kw: object) -> Lease:
    kw.setdefault("command", "fleet apply")
    return Lease(pool, nodes, base_dir=base, **kw)  # type: ignore[arg-type]


async def holders(pool: Pool, nodes: list[Node], base: str) -> dict[str, str | None]:
    """node -> holder of a live lease there (None: free or expired)."""
    out: dict[str, str | None] = {}
    for name, info in await lease_status(pool, nodes, base_dir=base):
        assert not isinstance(info, str), info
        out[name] = info.holder if info is not None and not info.expired else None
    return out


# ---- pure -------------------------------------------------------------------------------------------------------


def test_record_nodes_are_lbs_else_labelled_else_the_first():
    n1, n2 = Node("n1", "10.0.0.1"), Node("n2", "10.0.0.2", labels={"fleet.records": "true"})
    lb1, lb2 = Node("lb1", "10.0.0.9", roles=("lb",)), Node("lb2", "10.0.0.8", roles=("worker", "lb"))
    # Two lb nodes get a tie-breaker (the labelled node), so either lb node may fail and a majority remains.
    assert record_nodes(Inventory("i", (n1, lb1, n2, lb2))) == [lb1, n2, lb2]
    assert record_nodes(Inventory("i", (n1, lb1, Node("n3", "10.0.0.3"), lb2))) == [n1, lb1, lb2]
    assert record_nodes(Inventory("i", (n1, lb1, n2))) == [lb1]
    assert record_nodes(Inventory("i", (n1, n2))) == [n2]
    assert record_nodes(Inventory("i", (n1, Node("n3", "10.0.0.3")))) == [n1]
    assert record_nodes(Inventory("i", ())) == []


def test_lease_reply_parsed_from_the_scripts_output():
    out = ("result=held\nnow=1700000010500\nv=1\nholder=alice@ci-3\npid=4242\ncommand=fleet apply\n"
           "token=0a1b\nsince=1700000000000\nuntil=1700000030000\n")
    reply = parse_reply("lb1", out)
    assert reply.result == "held" and reply.now == 1700000010.5
    assert reply.info == LeaseInfo("alice@ci-3", 4242, "fleet apply", 1700000000.0, 1700000030.0, "lb1",
                                   1700000010.5, "0a1b")
    assert reply.info.remaining == 19.5 and not reply.info.expired
    assert parse_reply("lb1", "result=free\nnow=5\n").info is None
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_reply("lb1", "bash: flock: command not found\n")
    with pytest.raises(ValueError, match="unknown lease result"):
        parse_reply("lb1", "result=maybe\nnow=5\n")


def test_lease_refused_names_holder_pid_command_and_times():
    info = LeaseInfo("alice@ci-3", 4242, "fleet apply", 1700000000.0, 1700000030.0, "lb1", 1700000010.0, "0a1b")
    since = time.strftime("%H:%M:%S", time.localtime(1700000000))
    until = time.strftime("%H:%M:%S", time.localtime(1700000030))
    assert str(LeaseHeld(info)) == (f'the fleet\'s lease is held by alice@ci-3 (pid 4242, "fleet apply") since '
                                    f"{since}, until {until}; wait with --wait 60s or see `fleet lock status`")


# ---- one record node --------------------------------------------------------------------------------------------


async def test_acquire_renew_release_on_one_node(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    first = lease(pool, nodes, base, ttl=30, holder="alice@ci-3", pid=4242)
    await first.acquire()
    assert first.held and first.held_on == ["n1"]
    [(name, info)] = await lease_status(pool, nodes, base_dir=base)
    assert name == "n1" and isinstance(info, LeaseInfo)
    assert (info.holder, info.pid, info.command, info.node) == ("alice@ci-3", 4242, "fleet apply", "n1")
    assert 29 <= info.until - info.read_at <= 30 and info.since <= info.read_at
    await asyncio.sleep(0.05)
    await first.renew()
    first.check()
    [(_, renewed)] = await lease_status(pool, nodes, base_dir=base)
    assert isinstance(renewed, LeaseInfo) and renewed.until > info.until and renewed.since == info.since
    await first.release()
    assert not first.held
    assert await lease_status(pool, nodes, base_dir=base) == [("n1", None)]
    with pytest.raises(LeaseLost, match="not held"):
        first.check()


async def test_second_holder_refused_with_the_first_named(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    first = lease(pool, nodes, base, holder="alice@ci-3", pid=4242, command="fleet apply web.yaml")
    await first.acquire()
    second = lease(pool, nodes, base, holder="bob@laptop", pid=7)
    with pytest.raises(LeaseHeld) as refused:
        await second.acquire()
    assert refused.value.info.holder == "alice@ci-3" and refused.value.info.pid == 4242
    assert 'held by alice@ci-3 (pid 4242, "fleet apply web.yaml")' in str(refused.value)
    assert not second.held
    assert await holders(pool, nodes, base) == {"n1": "alice@ci-3"}


async def test_acquire_with_wait_gets_it_once_the_holder_releases(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    first = lease(pool, nodes, base, holder="alice@ci-3")
    await first.acquire()
    second = lease(pool, nodes, base, holder="bob@laptop")
    started = time.monotonic()
    waiting = asyncio.create_task(second.acquire(wait=10))
    await asyncio.sleep(0.6)
    assert not waiting.done()
    await first.release()
    await waiting
    assert 0.6 <= time.monotonic() - started < 5
    assert await holders(pool, nodes, base) == {"n1": "bob@laptop"}


async def test_a_holder_that_stops_renewing_loses_the_lease_at_expiry(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    stalled = lease(pool, nodes, base, ttl=1.5, holder="alice@ci-3")
    await stalled.acquire()
    taken_at = time.monotonic()
    second = lease(pool, nodes, base, ttl=30, holder="bob@laptop")
    with pytest.raises(LeaseHeld):
        await second.acquire()
    await second.acquire(wait=10)
    assert 1.0 <= time.monotonic() - taken_at < 5
    with pytest.raises(LeaseLost):
        stalled.check()  # its own copy of the ttl ran out: it knows without asking
    await stalled.renew()  # and a late renewal finds bob's lease
    assert await holders(pool, nodes, base) == {"n1": "bob@laptop"}
    await stalled.release()  # releasing a lease now held by another is a no-op
    assert await holders(pool, nodes, base) == {"n1": "bob@laptop"}


async def test_context_renews_while_working_and_releases_on_exit(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    other = lease(pool, nodes, base, holder="bob@laptop")
    async with lease(pool, nodes, base, ttl=1.2, holder="alice@ci-3") as held:
        for _ in range(6):  # 3 s: well past one ttl
            await asyncio.sleep(0.5)
            held.check()
        with pytest.raises(LeaseHeld, match="alice@ci-3"):
            await other.acquire()
    assert await holders(pool, nodes, base) == {"n1": None}
    await other.acquire()


async def test_break_frees_it_and_the_holder_learns_it_was_lost(farm: SSHFarm, pool: Pool, base: str):
    nodes = farm.nodes
    async with lease(pool, nodes, base, ttl=30, holder="alice@ci-3", pid=4242) as held:
        broken = await break_lease(pool, nodes, base_dir=base)
        assert [name for name, _ in broken] == ["n1", "n2", "n3"]
        assert all(isinstance(info, LeaseInfo) and info.holder == "alice@ci-3" and info.pid == 4242
                   for _, info in broken)
        assert await holders(pool, nodes, base) == {"n1": None, "n2": None, "n3": None}
        await held.renew()
        with pytest.raises(LeaseLost, match="removed"):
            held.check()
    assert await break_lease(pool, nodes, base_dir=base) == [("n1", None), ("n2", None), ("n3", None)]


# ---- majority ---------------------------------------------------------------------------------------------------


async def test_majority_with_one_of_three_record_nodes_down(farm: SSHFarm, pool: Pool, base: str):
    await farm.stop("n2")
    first = lease(pool, farm.nodes, base, holder="alice@ci-3")
    await first.acquire()
    assert first.held and first.held_on == ["n1", "n3"]
    status = dict(await lease_status(pool, farm.nodes, base_dir=base))
    assert isinstance(status["n2"], str) and "connection refused" in status["n2"]
    with pytest.raises(LeaseHeld, match="alice@ci-3"):
        await lease(pool, farm.nodes, base, holder="bob@laptop").acquire()
    await first.release()  # never raises for the node that is down
    assert await holders(pool, [farm.node("n1"), farm.node("n3")], base) == {"n1": None, "n3": None}


async def test_two_of_three_down_refused_and_nothing_left_held(farm: SSHFarm, pool: Pool, base: str):
    await farm.stop("n1")
    await farm.stop("n3")
    lonely = lease(pool, farm.nodes, base, holder="alice@ci-3")
    with pytest.raises(LeaseError, match="1 of 3 record nodes granted it, 2 needed") as refused:
        await lonely.acquire(wait=0.5)
    assert not isinstance(refused.value, LeaseHeld)
    assert "n1:" in str(refused.value) and "n3:" in str(refused.value)
    assert not lonely.held
    assert await holders(pool, [farm.node("n2")], base) == {"n2": None}


async def test_a_split_between_two_holders_is_resolved_by_majority(farm: SSHFarm, pool: Pool, base: str):
    # alice holds n1 only (a leftover); bob still wins n2 and n3, and is the fleet's holder.
    await lease(pool, [farm.node("n1")], base, holder="alice@ci-3").acquire()
    bob = lease(pool, farm.nodes, base, holder="bob@laptop")
    await bob.acquire()
    assert bob.held_on == ["n2", "n3"]
    with pytest.raises(LeaseHeld, match="bob@laptop"):  # the holder on the most nodes is named
        await lease(pool, farm.nodes, base, holder="carol@ci-9").acquire()


async def test_lease_lost_when_renewals_reach_no_majority(farm: SSHFarm, pool: Pool, base: str):
    held = lease(pool, farm.nodes, base, ttl=1.5, holder="alice@ci-3")
    await held.acquire()
    await farm.stop("n2")
    await farm.stop("n3")
    await held.renew()
    held.check()  # the copies on n2 and n3 are still valid for now
    await asyncio.sleep(1.6)
    await held.renew()
    with pytest.raises(LeaseLost, match="valid on 1 of 3 record nodes, 2 needed"):
        held.check()


# ---- secrecy and races ------------------------------------------------------------------------------------------


async def test_token_never_in_str_or_repr(farm: SSHFarm, pool: Pool, base: str):
    first = lease(pool, farm.nodes, base, holder="alice@ci-3")
    await first.acquire()
    token = first._token
    statuses = await lease_status(pool, farm.nodes, base_dir=base)
    infos = [info for _, info in statuses if isinstance(info, LeaseInfo)]
    assert len(infos) == 3 and {i.token for i in infos} == {token}  # it is there, and it is this lease's
    with pytest.raises(LeaseHeld) as refused:
        await lease(pool, farm.nodes, base, holder="bob@laptop").acquire()
    await break_lease(pool, farm.nodes, base_dir=base)
    await first.renew()
    with pytest.raises(LeaseLost) as lost:
        first.check()
    texts = [repr(first), str(first), str(refused.value), repr(refused.value), str(lost.value), repr(statuses),
             *(str(i) for i in infos), *(repr(i) for i in infos)]
    assert all(token not in text for text in texts)


async def test_twenty_racing_acquirers_on_one_node_exactly_one_wins(farm: SSHFarm, pool: Pool, base: str):
    nodes = [farm.node("n1")]
    racers = [lease(pool, nodes, base, holder=f"racer{i}@ci") for i in range(20)]
    results = await asyncio.gather(*(r.acquire() for r in racers), return_exceptions=True)
    winners = [r for r, res in zip(racers, results, strict=True) if res is None]
    assert len(winners) == 1
    assert all(isinstance(res, LeaseHeld) and res.info.holder == winners[0].holder
               for res in results if res is not None)
    assert await holders(pool, nodes, base) == {"n1": winners[0].holder}


async def test_twenty_racing_acquirers_on_three_nodes_exactly_one_wins(farm: SSHFarm, tmp_path: Path, base: str):
    # Two "controllers" (pools), ten racers each, all waiting: split votes back off and retry.
    async with Pool(backoff=0.01) as p1, Pool(backoff=0.01) as p2:
        racers = [lease(p1 if i % 2 else p2, farm.nodes, base, holder=f"racer{i}@ci") for i in range(20)]
        results = await asyncio.gather(*(r.acquire(wait=4) for r in racers), return_exceptions=True)
        winners = [r for r, res in zip(racers, results, strict=True) if res is None]
        assert len(winners) == 1, results
        names = {r.holder for r in racers}
        assert all(isinstance(res, LeaseHeld) and res.info.holder in names for res in results if res is not None)
        # The winner holds a majority; a node it lost to a racer's passing claim is left free, never held.
        final = await holders(p1, farm.nodes, base)
        assert list(final.values()).count(winners[0].holder) >= 2
        assert set(final.values()) <= {winners[0].holder, None}
