"""What many test modules share: the `fleet` CLI run as a subprocess, a free loopback port, and bounded waiting.

A plain module (tests import it like `loadgen`), not fixtures: each helper is a function of its arguments.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

FLEET_CLI: tuple[str, ...] = (sys.executable, "-m", "fleet.cli.main")
"""The CLI as a module of this interpreter: what most tests run."""

INSTALLED_CLI: tuple[str, ...] = (str(Path(sys.executable).with_name("fleet")),)
"""The console script the install made (.venv/bin/fleet): the CLI exactly as a user starts it."""


# A command line's start that runs the rest inside a lab replica (namespace `fleet`) on its node: runc's own `exec`,
# as the ctr driver's exec does (fleet.node.runtime.ctr_sh.EXEC_SH): containerd 1.6's `ctr tasks exec` may print
# nothing of a short command's output on a busy node, and a test reading it must not fail for that.
IN_REPLICA = "runc --root /run/containerd/runc/fleet exec"


def with_inventory(inventory: str, args: Sequence[str]) -> list[str]:
    """`args` with `-i INVENTORY` added before a `--` (the words after it are a container's command)."""
    argv = list(args)
    cut = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:cut], "-i", inventory, *argv[cut:]]


def fleet_env(env: Mapping[str, str] | None = None, columns: int | None = None) -> dict[str, str]:
    """The environment for a CLI run: `env` (default: this process's), with COLUMNS set when given."""
    environ = dict(os.environ if env is None else env)
    if columns is not None:
        environ["COLUMNS"] = str(columns)
    return environ


def run_fleet(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0,
              inventory: str | None = None, columns: int | None = None, input: str | None = None,
              cwd: str | Path | None = None, cli: Sequence[str] = FLEET_CLI) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS` in a subprocess, its output captured as text; never raises for an exit code.

    `env` is the whole environment (default: this process's); `inventory` adds `-i INVENTORY` (before a `--`);
    `columns` sets COLUMNS, the width rich renders to; `input` is sent on stdin; `cli` is the command that starts
    the CLI (FLEET_CLI, or INSTALLED_CLI to run it as a user does)."""
    argv = with_inventory(inventory, args) if inventory is not None else list(args)
    environ = fleet_env(env, columns)
    if tuple(cli) == FLEET_CLI and (server := cli_server()) is not None:
        try:
            return _forked(server, argv, environ, timeout, input, cwd)
        except (ConnectionRefusedError, FileNotFoundError):
            _drop_server()  # it went away (seen once in a full run): this run as a plain process, the next anew
    return subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=timeout, input=input, cwd=cwd,
                          env=environ)


_SERVER: list[tuple[subprocess.Popen[bytes], str]] = []


def cli_server() -> str | None:
    """The socket of this process's preloaded CLI (tests/cli_server.py), started on first use and stopped (by its
    PID) when the process ends; None with FLEET_TEST_FORK=0, or when it does not start."""
    if os.environ.get("FLEET_TEST_FORK", "1") == "0":
        return None
    if _SERVER and _SERVER[0][0].poll() is None:
        return _SERVER[0][1]
    _SERVER.clear()
    where = tempfile.mkdtemp(prefix="fleet-cli-")
    path = f"{where}/cli.sock"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_server.py")), path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parent.parent)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(where, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            return None
        time.sleep(0.02)
    _SERVER.append((proc, path))
    return path


def _drop_server() -> None:
    if _SERVER:
        proc, path = _SERVER.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _forked(server: str, argv: list[str], env: dict[str, str], timeout: float, input: str | None,
            cwd: str | Path | None) -> subprocess.CompletedProcess[str]:
    """One run by the preloaded CLI: what `subprocess.run(FLEET_CLI + argv, capture_output=True, text=True)`
    gives, TimeoutExpired too (the run killed by its PID first)."""
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        if input is not None:
            stdin.write(input.encode())
            stdin.seek(0)
        conn.connect(server)
        request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd or os.getcwd())}).encode() + b"\n"
        socket.send_fds(conn, [request], [stdin.fileno(), out.fileno(), err.fileno()])
        conn.settimeout(timeout)
        pid, code, text = None, None, b""
        try:
            while code is None:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                text += chunk
                for line in text.split(b"\n")[:-1]:
                    answer = json.loads(line)
                    pid = answer.get("pid", pid)
                    code = answer.get("exit", code)
        except TimeoutError:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            raise subprocess.TimeoutExpired([*FLEET_CLI, *argv], timeout) from None

        if pid is None and code is None:
            raise ConnectionRefusedError("the preloaded CLI started no run")  # run_fleet runs it plainly

        def read(f: IO[bytes]) -> str:
            f.seek(0)
            return f.read().decode().replace("\r\n", "\n").replace("\r", "\n")

        return subprocess.CompletedProcess([*FLEET_CLI, *argv], -9 if code is None else code, read(out), read(err))


def demo_env(inventory: str, directory: Path, versions: Sequence[str] = ("v1", "v2")) -> dict[str, object]:
    """For a lab module: the CLI's environment (a private revision history under `directory`, lease ttl 5 s) with
    the demo image's `versions` pushed to every node: {"env": environment, "dir": directory}."""
    from fleet.image.demo import build_demo

    environ = {**os.environ, "FLEET_STATE_DIR": str(directory / "state"), "FLEET_INVENTORY": inventory,
               "FLEET_LEASE_TTL": "5"}
    for v in versions:
        img = build_demo(v, str(directory / f"demo-{v}.tar"))
        out = run_fleet("image", "push", img.path, env=environ, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    return {"env": environ, "dir": directory}


def start_fleet(*args: str, env: Mapping[str, str] | None = None, stdout: int | IO[str] | None = subprocess.PIPE,
                stderr: int | IO[str] | None = subprocess.PIPE, cli: Sequence[str] = FLEET_CLI,
                ) -> subprocess.Popen[str]:
    """`fleet ARGS` started in the background (text mode); the caller waits for it or kills it by its PID."""
    return subprocess.Popen([*cli, *args], stdout=stdout, stderr=stderr, text=True, env=fleet_env(env))


def free_port() -> int:
    """A loopback TCP port nothing listens on (yet): bound to port 0, read back, released."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback TCP ports nothing listens on (yet): all bound at once, so no two are the same (two
    `free_port()` calls can be handed one port twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _timed_out(timeout: float, message: str, last: BaseException | None) -> str:
    return f"timed out after {timeout}s waiting for {message}" + (f" (last error: {last!r})" if last else "")


def poll(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1) -> T:
    """Call `predicate` every `interval` s until it returns a truthy value or `timeout` s have passed; return its
    last value (falsy when time ran out), for a test that checks it and says why itself."""
    deadline = time.monotonic() + timeout
    while not (got := predicate()) and time.monotonic() < deadline:
        time.sleep(interval)
    return got


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1,
               message: str = "the condition", *, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call `predicate` every `interval` s until it returns a truthy value, and return that value. After `timeout`
    s fail with an AssertionError naming `message`. An exception of a type in `ignore` counts as "not yet" (the
    last one is named in the failure)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if got := predicate():
                return got
        except ignore as exc:
            last = exc
        assert time.monotonic() < deadline, _timed_out(timeout, message, last)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.1,
                           message: str = "the condition", *, ignore: tuple[type[BaseException], ...] = (),
                           pause: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """`wait_until` for a test that runs in the event loop: `predicate` may be a coroutine function, and the loop
    keeps running between calls (`pause`, asyncio.sleep or e.g. a Textual pilot's pause)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = predicate()
            if inspect.isawaitable(got):
                got = await got
            if got:
                return got  # type: ignore[return-value]  # awaited above: a T now
        except ignore as exc:
            last = exc
        assert time.monotonic() < deadline, _timed_out(timeout, message, last)
        await pause(interval)


async def poll_async(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1) -> T:
    """`poll` inside the event loop: the loop runs between calls."""
    deadline = time.monotonic() + timeout
    while not (got := predicate()) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
    return got


def roll_under_load(fleet: Callable[..., subprocess.CompletedProcess[str]], address: str, port: int, name: str,
                    first: str, second: str) -> list[dict[str, object]]:
    """`fleet apply first`, then `fleet apply second` (the demo at v2) under load through the lb at address:port:
    both succeed, no request fails, both versions answer, every replica ends at v2. Returns the replicas as
    `fleet status --json` lists them."""
    from loadgen import Load

    out = fleet("apply", first)
    assert out.returncode == 0, out.stdout + out.stderr
    with Load(address, port, clients=6, max_seconds=90) as load:
        time.sleep(1.0)
        out = fleet("apply", second)
        time.sleep(1.0)
    assert out.returncode == 0, out.stdout + out.stderr
    r = load.result
    assert r.failed == 0, (r.errors, r.failures[:5])
    assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0, r.versions
    doc = json.loads(fleet("status", "--json").stdout)
    replicas: list[dict[str, object]] = next(s for s in doc["services"] if s["service"] == name)["replicas"]
    assert [x["image"] for x in replicas] == ["fleet.local/demo:v2"] * len(replicas)
    return replicas


def demo_playbook(directory: Path, name: str, port: int, version: str, placement: str | None = None) -> str:
    """A playbook of the demo service `name` at `version` (2 replicas, health-checked, behind the lb on `port`,
    rolled one at a time) written under `directory`; `placement` as its YAML flow text."""
    path = directory / f"{name}-{version}-{time.monotonic_ns()}.yaml"
    where = f"    placement: {placement}\n" if placement else ""
    path.write_text(f"""services:
  {name}:
    image: fleet.local/demo:{version}
    replicas: 2
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
{where}    lb: {{port: {port}}}
    stop_grace_period: 2s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}}
""")
    return str(path)
