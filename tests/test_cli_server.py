"""The preloaded CLI (tests/cli_server.py) that `run_fleet` uses: a forked run gives what a plain
`python -m fleet.cli.main` process gives (exit code, stdout, stderr, stdin, working directory, environment), and a
run past its timeout raises TimeoutExpired with its process gone."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import FLEET_CLI, _forked, cli_server, fleet_env, free_port, run_fleet


def plain(*args: str, env: dict[str, str], input: str | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET_CLI, *args], capture_output=True, text=True, timeout=60, input=input, cwd=cwd,
                          env=env)


def test_a_forked_run_gives_what_a_plain_process_gives(tmp_path: Path) -> None:
    server = cli_server()
    assert server is not None, "the preloaded CLI did not start"
    env = fleet_env({**os.environ, "HOME": str(tmp_path), "FLEET_STATE_DIR": str(tmp_path / "state")}, 100)
    (tmp_path / "pb.yaml").write_text("services:\n  web:\n    image: r.io/web:v1\n    replicas: many\n")
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(f"nodes:\n  n1: {{address: 127.0.0.1, port: {free_port()}, roles: [worker]}}\n")
    for args, stdin in ((("--help",), None), (("statsu",), None), (("--version",), None),
                        (("plan", "pb.yaml", "-i", str(inventory)), None),  # relative to the working directory
                        (("secret", "set", "bad name", "-i", str(inventory)), "value")):
        want = plain(*args, env=env, input=stdin, cwd=tmp_path)
        got = _forked(server, list(args), env, 60, stdin, tmp_path)
        assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr), args
    assert "replicas" in plain("plan", "pb.yaml", "-i", str(inventory), env=env, cwd=tmp_path).stderr


def test_a_forked_run_past_its_timeout_is_killed(tmp_path: Path) -> None:
    # A loopback port that accepts and never says a word: `fleet nodes` waits for the SSH banner.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(
            f"nodes:\n  n1: {{address: 127.0.0.1, port: {silent.getsockname()[1]}, roles: [worker]}}\n")
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            run_fleet("nodes", "--timeout", "50s", inventory=str(inventory), timeout=2,
                      env={**os.environ, "HOME": str(tmp_path)})
        assert time.monotonic() - started < 20
