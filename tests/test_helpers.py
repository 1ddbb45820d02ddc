"""The shared test helpers (tests/helpers.py) do what the tests rely on: bounded waits that fail with their
message, the inventory option placed before a container's command, the CLI run as a subprocess."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from helpers import (
    FLEET_CLI,
    INSTALLED_CLI,
    free_port,
    poll,
    run_fleet,
    wait_until,
    wait_until_async,
    with_inventory,
)


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, "", "ready", "later"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001) == "ready"


def test_wait_until_fails_with_its_message_once_the_timeout_is_spent() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.2s waiting for the moon"):
        wait_until(lambda: False, timeout=0.2, interval=0.01, message="the moon")
    assert 0.2 <= time.monotonic() - started < 2


def test_wait_until_counts_ignored_errors_as_not_yet_and_names_the_last_one() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(AssertionError, match=r"last error: ConnectionRefusedError\('nope'\)"):
        wait_until(refused, timeout=0.1, interval=0.01, ignore=(OSError,))
    with pytest.raises(KeyError):  # not ignored: raised at once
        wait_until(lambda: {}["x"], timeout=5, ignore=(OSError,))


async def test_wait_until_async_awaits_coroutine_predicates_and_keeps_the_loop_running() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)

    async def is_set() -> bool:
        return flag.is_set()

    assert await wait_until_async(is_set, timeout=5, interval=0.01) is True
    with pytest.raises(AssertionError, match="waiting for never"):
        await wait_until_async(lambda: None, timeout=0.05, interval=0.01, message="never")


def test_poll_returns_the_last_falsy_value_when_time_runs_out() -> None:
    assert poll(lambda: [], timeout=0.05, interval=0.01) == []
    values = iter([0, 0, 7])
    assert poll(lambda: next(values), timeout=5, interval=0.001) == 7


def test_inventory_goes_before_a_containers_command() -> None:
    assert with_inventory("inv.yaml", ["ps", "--json"]) == ["ps", "--json", "-i", "inv.yaml"]
    assert with_inventory("inv.yaml", ["exec", "web", "--", "ls", "-i"]) == [
        "exec", "web", "-i", "inv.yaml", "--", "ls", "-i"]


def test_free_port_is_bindable_and_nothing_listens_on_it() -> None:
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_run_fleet_starts_the_module_or_the_installed_script_at_the_width_asked() -> None:
    for cli, prog in ((FLEET_CLI, "python -m fleet.cli.main"), (INSTALLED_CLI, "fleet")):
        out = run_fleet("--help", cli=cli, columns=150, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"Usage: {prog} [OPTIONS] COMMAND" in out.stdout
        widths = [len(line) for line in out.stdout.splitlines()]
        assert 80 < max(widths) <= 150, widths
