"""The SSH transport against real in-process asyncssh servers on loopback (no mocks)."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from helpers import poll_async
from sshserver import SSHFarm

from fleet.core.errors import AuthError, CommandTimeout, HostKeyError, RemoteCommandError
from fleet.core.model import CommandResult, Node
from fleet.transport import Pool, Script, SessionError, fanout, render

HOSTILE = [
    "two words",
    "it's",
    'say "hi"',
    "a;rm -rf /tmp/nothing",
    "line1\nline2",
    "ünïcødé ✓ 日本",
    "$(touch /tmp/fleet-pwned)",
    "`id`",
    "${HOME}",
    "*",
    "-n",
    "back\\slash",
    "tab\there",
    "",
]


async def test_commands_on_a_node_reuse_one_connection(farm: SSHFarm) -> None:
    node = farm.nodes[0]
    async with Pool() as pool:
        first = await pool.run(node, ["echo", "hello"])
        rest = await asyncio.gather(*(pool.run(node, ["echo", str(i)]) for i in range(5)))
    assert first.ok and first.stdout == "hello\n" and first.node == "n1"
    assert [r.stdout for r in rest] == [f"{i}\n" for i in range(5)]
    assert farm.servers["n1"].connections == 1
    assert await poll_async(lambda: not farm.servers["n1"].open_conns, 2.0, 0.01)  # the pool closed it on exit


async def test_unreachable_node_reported_others_ok(farm: SSHFarm) -> None:
    down = await farm.add("down", listen=False)
    nodes = [farm.node("n1"), down, farm.node("n2"), farm.node("n3")]
    async with Pool(backoff=0.01) as pool:
        results = await fanout(pool, nodes, ["echo", "up"], timeout=10)
    assert [r.node for r in results] == ["n1", "down", "n2", "n3"]
    assert [r.ok for r in results] == [True, False, True, True]
    bad = results[1]
    assert bad.error_kind == "connect" and bad.exit_status is None
    assert bad.error == f"cannot connect to 127.0.0.1:{down.port}: connection refused (after 3 attempts)"


async def test_changed_host_key_refused_with_clear_message(farm: SSHFarm) -> None:
    await farm.stop("n2")
    await farm.listen("n2", new_host_key=True)
    async with Pool(backoff=0.01) as pool:
        result = await pool.run(farm.node("n2"), ["echo", "never"])
        with pytest.raises(HostKeyError) as raised:
            await pool.check(farm.node("n2"), ["echo", "never"])
    expected = (
        f"host key for 127.0.0.1 does not match the one pinned in {farm.known_hosts_path} (it changed?); "
        "refusing to connect"
    )
    assert result.error_kind == "hostkey" and result.error == expected
    assert raised.value.message == expected and raised.value.node == "n2"
    assert isinstance(raised.value.__cause__, asyncssh.HostKeyNotVerifiable)
    assert farm.servers["n2"].commands == []
    assert farm.servers["n2"].connections == 2  # one per call: a host key failure is never retried


async def test_unknown_host_refused(farm: SSHFarm, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    async with Pool() as pool:
        result = await pool.run(farm.node("n1", known_hosts=str(empty)), ["true"])
    assert result.error_kind == "hostkey"
    assert result.error == (f"host key for 127.0.0.1 (port {farm.node('n1').port}) is not in {empty}; refusing to "
                            f"connect (pin it with `ssh-keyscan -p {farm.node('n1').port} 127.0.0.1 >> {empty}`, "
                            "then check its fingerprint)")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME with ~/.ssh: the user's own ssh config and known_hosts are out of the test."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


def keyscan_hint(node: Node, file: str = "~/.ssh/known_hosts") -> str:
    return f"`ssh-keyscan -p {node.port} 127.0.0.1 >> {file}`"


@pytest.mark.parametrize("setting", ["UserKnownHostsFile none", "UserKnownHostsFile /dev/null",
                                     "StrictHostKeyChecking no", "StrictHostKeyChecking off"])
async def test_ssh_config_that_turns_checking_off_is_refused(farm: SSHFarm, home: Path, setting: str) -> None:
    # The key is pinned in ~/.ssh/known_hosts: the refusal is the config line's, not an unknown key's.
    (home / ".ssh" / "known_hosts").write_text(farm.known_hosts_path.read_text())
    (home / ".ssh" / "config").write_text(f"Host other.example\n  User x\nHost 127.0.0.1\n  {setting}\n")
    node = farm.node("n1", known_hosts=None)
    async with Pool(backoff=0.01) as pool:
        result = await pool.run(node, ["echo", "never"])
        with pytest.raises(HostKeyError) as raised:
            await pool.check(node, ["echo", "never"])
    assert result.error_kind == "hostkey" and result.error == raised.value.message
    assert str(raised.value).startswith("n1: ~/.ssh/config turns host key checking off for 127.0.0.1 "
                                        f"({setting}); fleet always checks host keys and refuses to connect")
    assert keyscan_hint(node) in raised.value.message and "inventory's `known_hosts`" in raised.value.message
    assert farm.servers["n1"].connections == 0 and farm.servers["n1"].commands == []


async def test_inventory_pin_wins_over_an_ssh_config_that_turns_checking_off(farm: SSHFarm, home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  UserKnownHostsFile none\n  StrictHostKeyChecking no\n")
    async with Pool() as pool:
        result = await pool.run(farm.node("n1"), ["echo", "pinned"])
    assert result.ok and result.stdout == "pinned\n"


async def test_key_in_user_known_hosts_connects_without_a_pin(farm: SSHFarm, home: Path) -> None:
    (home / ".ssh" / "known_hosts").write_text(farm.known_hosts_path.read_text())
    async with Pool() as pool:
        result = await pool.run(farm.node("n1", known_hosts=None), ["echo", "known"])
    assert result.ok and result.stdout == "known\n"


async def test_key_in_a_file_the_ssh_config_names_for_the_host_connects(farm: SSHFarm, home: Path) -> None:
    node = farm.node("n2", known_hosts=None)
    (home / "fleet_hosts").write_text(farm.known_hosts_path.read_text())
    (home / ".ssh" / "config").write_text(
        f"Host 10.9.9.9\n  UserKnownHostsFile none\n"
        f"Match host 127.0.0.1\n  UserKnownHostsFile ~/other_hosts_%p\n  GlobalKnownHostsFile {home}/fleet_hosts\n")
    (home / f"other_hosts_{node.port}").write_text(farm.known_hosts_path.read_text())
    async with Pool() as pool:
        by_user_file = await pool.run(node, ["echo", "named"])
    (home / f"other_hosts_{node.port}").unlink()
    async with Pool() as pool:
        by_global_file = await pool.run(node, ["echo", "global"])
    assert by_user_file.ok and by_user_file.stdout == "named\n"
    assert by_global_file.ok and by_global_file.stdout == "global\n"


@pytest.mark.parametrize("strict", [None, "accept-new"])
async def test_unknown_key_without_a_pin_refused_with_the_keyscan_hint(
        farm: SSHFarm, home: Path, strict: str | None) -> None:
    (home / ".ssh" / "known_hosts").write_text(farm.known_hosts_path.read_text().splitlines()[0] + "\n")  # n1 only
    if strict:
        (home / ".ssh" / "config").write_text(f"StrictHostKeyChecking {strict}\n")
    node = farm.node("n3", known_hosts=None)
    async with Pool() as pool:
        with pytest.raises(HostKeyError) as raised:
            await pool.check(node, ["echo", "never"])
    message = raised.value.message
    assert str(raised.value).startswith(
        f"n3: host key for 127.0.0.1 (port {node.port}) is not in ~/.ssh/known_hosts; refusing to connect "
        f"(pin it with {keyscan_hint(node)}, then check its fingerprint, or name a file that pins it in the "
        "inventory's `known_hosts`")
    assert ("accept-new" in message) == (strict is not None)
    assert isinstance(raised.value.__cause__, asyncssh.HostKeyNotVerifiable)
    assert farm.servers["n3"].commands == []


async def test_unreadable_ssh_config_is_a_host_key_error_naming_its_line(farm: SSHFarm, home: Path) -> None:
    (home / ".ssh" / "known_hosts").write_text(farm.known_hosts_path.read_text())
    (home / ".ssh" / "config").write_text("Host 127.0.0.1\n  Port twenty-two\n")
    async with Pool() as pool:
        with pytest.raises(HostKeyError) as raised:
            await pool.check(farm.node("n1", known_hosts=None), ["true"])
    assert raised.value.message.startswith("cannot read ~/.ssh/config to find the known_hosts files for 127.0.0.1: "
                                           f"{home}/.ssh/config line 2: ")
    assert raised.value.message.endswith("; refusing to connect")
    assert farm.servers["n1"].connections == 0


async def test_changed_key_without_a_pin_names_the_file_that_pins_it(farm: SSHFarm, home: Path) -> None:
    (home / "fleet_hosts").write_text(farm.known_hosts_path.read_text())
    (home / ".ssh" / "config").write_text("UserKnownHostsFile ~/fleet_hosts\n")
    await farm.stop("n2")
    await farm.listen("n2", new_host_key=True)
    async with Pool() as pool:
        result = await pool.run(farm.node("n2", known_hosts=None), ["true"])
    assert result.error == ("host key for 127.0.0.1 does not match the one pinned in ~/fleet_hosts (it changed?); "
                            "refusing to connect")


async def test_rejected_key_is_an_auth_error_not_retried(farm: SSHFarm, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    node = farm.node("n1", key_files=(str(other),))
    async with Pool(backoff=0.01) as pool:
        result = await pool.run(node, ["true"])
        with pytest.raises(AuthError):
            await pool.check(node, ["true"])
    assert result.error_kind == "auth"
    assert result.error == f"fleet@127.0.0.1:{node.port}: authentication failed, no offered key was accepted"
    assert farm.servers["n1"].connections == 2


async def test_command_timeout_keeps_partial_output_and_connection(farm: SSHFarm) -> None:
    node = farm.nodes[0]
    async with Pool() as pool:
        start = time.monotonic()
        result = await pool.run(node, ["sh", "-c", "echo started; sleep 10"], timeout=0.5)
        elapsed = time.monotonic() - start
        after = await pool.run(node, ["echo", "still here"])
    assert result.error_kind == "timeout" and result.exit_status is None
    assert result.error == "`sh -c echo started; sleep 10` did not finish within 0.5s"
    assert result.stdout == "started\n"
    assert 0.5 <= elapsed < 3
    assert after.ok and after.stdout == "still here\n"
    assert farm.servers["n1"].connections == 1


async def test_connect_retried_until_a_late_server_listens(farm: SSHFarm) -> None:
    late = await farm.add("late", listen=False)

    async def start_later() -> None:
        await asyncio.sleep(0.4)
        await farm.listen("late")

    async with Pool(connect_attempts=5, backoff=0.1) as pool:
        starter = asyncio.create_task(start_later())
        start = time.monotonic()
        result = await pool.run(late, ["echo", "late"])
        await starter
    assert result.ok and result.stdout == "late\n"
    assert time.monotonic() - start >= 0.4


async def test_silent_server_is_one_connect_timeout_not_retried(farm: SSHFarm) -> None:
    accepted = 0

    async def never_speak(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()
        writer.close()

    silent = await asyncio.start_server(never_speak, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with Pool(connect_timeout=0.3, connect_attempts=3, backoff=0.01) as pool:
            start = time.monotonic()
            result = await pool.run(farm.node("n1", port=port), ["true"])
            elapsed = time.monotonic() - start
    finally:
        silent.close()
        await silent.wait_closed()
    assert result.error_kind == "connect"
    assert result.error == f"cannot connect to 127.0.0.1:{port}: timed out after 0.3s"
    assert accepted == 1 and 0.3 <= elapsed < 0.6  # a hung sshd costs one connect timeout, not three


async def test_dropped_connection_is_reopened(farm: SSHFarm) -> None:
    node = farm.nodes[0]
    async with Pool() as pool:
        assert (await pool.run(node, ["true"])).ok
        await farm.stop("n1")
        await farm.listen("n1")
        await asyncio.sleep(0.05)
        again = await pool.run(node, ["echo", "back"])
    assert again.ok and again.stdout == "back\n"
    assert farm.servers["n1"].connections == 2


async def test_hostile_args_arrive_byte_identical(farm: SSHFarm) -> None:
    async with Pool() as pool:
        result = await pool.run(farm.nodes[0], ["printf", "%s\\0", *HOSTILE])
        script = await pool.run(
            farm.nodes[0],
            Script('printf "%s\\0" "$V" "$@"', env={"V": HOSTILE[6]}, args=tuple(HOSTILE)),
        )
    assert result.ok, result
    assert result.stdout.split("\0")[:-1] == HOSTILE
    assert script.stdout.split("\0")[:-1] == [HOSTILE[6], *HOSTILE]
    assert not Path("/tmp/fleet-pwned").exists()


def test_a_bare_string_is_not_a_command() -> None:
    with pytest.raises(TypeError):
        render("rm -rf /")  # type: ignore[arg-type]
    assert render(["ls", "a b"]) == "ls 'a b'"


async def test_stdin_file_streamed_in_chunks_with_byte_count(farm: SSHFarm, tmp_path: Path) -> None:
    blob = tmp_path / "image.tar"
    data = os.urandom(6 * 1024 * 1024 + 123)
    blob.write_bytes(data)
    progress: list[int] = []
    async with Pool() as pool:
        result = await pool.run(
            farm.nodes[0], ["sha256sum"], stdin_path=str(blob), on_progress=progress.append
        )
        small = await pool.run(farm.nodes[0], ["wc", "-c"], stdin="12345")
    assert result.ok, result
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert progress[-1] == len(data) and len(progress) > 10
    assert progress == sorted(progress)
    assert small.stdout.strip() == "5"


async def test_stream_yields_lines_as_they_come(farm: SSHFarm) -> None:
    arrivals: list[tuple[str, float]] = []
    async with Pool() as pool:
        start = time.monotonic()
        cmd = ["sh", "-c", "echo one; sleep 0.6; echo two >&2; echo three; exit 3"]
        async with pool.stream(farm.nodes[0], cmd) as lines:
            async for line in lines:
                arrivals.append((line, time.monotonic() - start))
        separate = pool.stream(farm.nodes[0], cmd, merge_stderr=False)
        out = [line async for line in separate]
    assert [text for text, _ in arrivals] == ["one", "two", "three"]
    assert arrivals[0][1] < 0.5 <= arrivals[1][1]
    assert lines.exit_status == 3 and lines.result is not None and lines.result.exit_status == 3
    assert out == ["one", "three"] and separate.stderr == "two\n"


async def test_stream_left_early_closes_the_remote_command(farm: SSHFarm) -> None:
    async with Pool() as pool:
        async with pool.stream(farm.nodes[0], ["sh", "-c", "while :; do echo y; sleep 0.01; done"]) as lines:
            got = []
            async for line in lines:
                got.append(line)
                if len(got) == 3:
                    break
        assert await poll_async(lambda: not farm._handlers, 2.0, 0.01)  # the server saw the close, killed the command
    assert got == ["y", "y", "y"]


async def test_check_raises_on_nonzero_exit(farm: SSHFarm) -> None:
    async with Pool() as pool:
        with pytest.raises(RemoteCommandError) as raised:
            await pool.check(farm.nodes[0], ["sh", "-c", "echo boom >&2; exit 4"])
        ok = await pool.check(farm.nodes[0], ["echo", "fine"])
    assert raised.value.exit_status == 4 and raised.value.stderr == "boom\n"
    assert ok.stdout == "fine\n"


async def test_fanout_per_node_commands_and_deadline(farm: SSHFarm) -> None:
    async with Pool() as pool:
        named = await fanout(pool, farm.nodes, lambda n: ["echo", n.name])
        slow = await fanout(
            pool, farm.nodes, lambda n: ["sleep", "10"] if n.name == "n2" else ["true"], timeout=0.5
        )
        checked = await fanout(pool, farm.nodes, lambda n: pool.check(n, ["sh", "-c", f"exit {n.port % 2}"]))
    assert [r.stdout for r in named] == ["n1\n", "n2\n", "n3\n"]
    assert [(r.node, r.ok, r.error_kind) for r in slow] == [
        ("n1", True, None),
        ("n2", False, "timeout"),
        ("n3", True, None),
    ]
    assert slow[1].error == "no result within 0.5s"
    assert [r.exit_status for r in checked] == [n.port % 2 for n in farm.nodes]


@pytest.mark.parametrize("limit", [None, 2])
async def test_hung_node_times_out_alone_others_answer_promptly(tmp_path: Path, limit: int | None) -> None:
    release = asyncio.Event()

    async def hang_on_n3(process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.command == "hang":
            await release.wait()  # a node whose runtime never answers
        process.stdout.write(b"ok\n")
        process.exit(0)

    async with SSHFarm(tmp_path / "hung", handler=hang_on_n3) as hung_farm:
        nodes = await hung_farm.start(5)
        done_at: dict[str, float] = {}

        async def timed(node: Node) -> CommandResult:
            result = await pool.run(node, ["hang"] if node.name == "n3" else ["answer"])
            done_at[node.name] = time.monotonic() - start
            return result

        async with Pool(command_timeout=1.0) as pool:
            await fanout(pool, nodes, ["warm-up"])  # connections open: only the commands are timed
            start = time.monotonic()
            results = await fanout(pool, nodes, timed, limit=limit)
            elapsed = time.monotonic() - start
            with pytest.raises(CommandTimeout) as raised:
                await pool.check(nodes[2], ["hang"], timeout=0.3)
            release.set()
    assert [(r.node, r.ok, r.error_kind) for r in results] == [
        ("n1", True, None), ("n2", True, None), ("n3", False, "timeout"), ("n4", True, None), ("n5", True, None)]
    assert results[2].error == "`hang` did not finish within 1s"
    assert all(done_at[n] < 0.5 for n in ("n1", "n2", "n4", "n5")), done_at  # not held up by n3
    assert 1.0 <= done_at["n3"] < 1.5 and elapsed < 1.5
    assert str(raised.value) == "n3: `hang` did not finish within 0.3s" and raised.value.node == "n3"


def test_commands_have_a_deadline_unless_told_otherwise() -> None:
    assert Pool().command_timeout == 30.0
    assert Pool(command_timeout=None).command_timeout is None


@pytest.fixture
def separate_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Node]]:
    """One SSH server in its own process (tests/sshserver.py), so that the test can freeze it with SIGSTOP."""
    script = Path(__file__).with_name("sshserver.py")
    argv = [sys.executable, str(script), "--count", "1", "--dir", str(tmp_path / "sep"), "--handler", "shell"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            info = json.loads(proc.stdout.readline())
            node = Node("frozen", "127.0.0.1", info["nodes"][0]["port"], user="fleet",
                        key_files=(info["client_key"],), known_hosts=info["known_hosts"])
            yield proc, node
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.stdin.close()  # the server stops when its stdin closes
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_frozen_node_command_times_out_at_its_deadline(
        separate_server: tuple[subprocess.Popen[str], Node]) -> None:
    server, node = separate_server
    async with Pool(keepalive_interval=0, command_timeout=1.0) as pool:
        assert (await pool.run(node, ["echo", "up"])).ok
        os.kill(server.pid, signal.SIGSTOP)  # the connection stays open; the peer no longer answers anything
        start = time.monotonic()
        result = await pool.run(node, ["echo", "again"])
        elapsed = time.monotonic() - start
    assert result.error_kind == "timeout"
    assert result.error == "`echo again` did not start within 1s: the node did not open a session (sshd not answering)"
    assert 1.0 <= elapsed < 2.0


async def test_keepalive_ends_a_stream_to_a_frozen_node_and_drops_its_connection(
        separate_server: tuple[subprocess.Popen[str], Node]) -> None:
    server, node = separate_server
    async with Pool(keepalive_interval=0.3, keepalive_count_max=2, connect_timeout=0.5, connect_attempts=1) as pool:
        async with pool.stream(node, ["sh", "-c", "echo started; exec sleep 60"]) as stream:
            lines = aiter(stream)
            assert await anext(lines) == "started"
            os.kill(server.pid, signal.SIGSTOP)
            start = time.monotonic()
            with pytest.raises(SessionError) as raised:
                await anext(lines)  # a stream has no deadline: only the keepalive can end it
            lost_after = time.monotonic() - start
        # The dead connection is not reused: a new one is tried, and the frozen server never says hello.
        again = await pool.run(node, ["echo", "again"])
    assert "not responding to keepalive" in raised.value.message
    assert 0.6 <= lost_after < 0.3 * (2 + 1) + 2.0
    assert again.error_kind == "connect"
    assert again.error == f"cannot connect to 127.0.0.1:{node.port}: timed out after 0.5s"


async def test_concurrency_is_bounded_by_the_pool_limit(tmp_path: Path) -> None:
    in_flight = 0
    peak = 0

    async def slow(process: asyncssh.SSHServerProcess[bytes]) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        process.exit(0)

    async with SSHFarm(tmp_path / "slow", handler=slow) as slow_farm:
        nodes = await slow_farm.start(6)
        async with Pool(limit=2) as pool:
            results = await fanout(pool, nodes, ["x"])
        assert all(r.ok for r in results) and peak == 2
        peak = 0
        async with Pool(max_sessions=3) as pool:
            results = await fanout(pool, [nodes[0]] * 8, ["x"])
        assert all(r.ok for r in results) and peak == 3


def test_only_the_transport_imports_asyncssh() -> None:
    root = Path(__file__).resolve().parent.parent / "fleet"
    offenders = []
    for path in root.rglob("*.py"):
        if "transport" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "asyncssh" or n.startswith("asyncssh.") for n in names):
                offenders.append(str(path))
    assert offenders == []
