"""`fleet watch --env-file`: a playbook with `${VAR}` loads in the watcher as it does in apply and reconcile (one
loader, cli/apply.playbook_variables), the environment winning over the file, and a variable set nowhere is a
usage error naming file:line before the watcher starts. In process: the watch loop is replaced by one that keeps
the options it was given (no node is reached), and the real `Watcher` reads the playbooks with them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import fleet.watch.controller as controller
from fleet.cli import common
from fleet.cli.main import app
from fleet.watch.controller import Watcher, WatchOptions


def write(d: Path, name: str, text: str) -> str:
    path = d / name
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[WatchOptions]:
    """The options each `fleet watch` started its loop with (the loop itself replaced: it returns exit 0)."""
    seen: list[WatchOptions] = []

    async def loop(inventory: Any, options: WatchOptions, log: Any, *, once: bool, serve: bool) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(controller, "watch", loop)
    for name in ("IMAGE", "REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_watch_loads_a_variable_playbook_with_env_file(tmp_path: Path, started: list[WatchOptions],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    book = write(tmp_path, "web.yaml", """
        services:
          web:
            image: ${IMAGE}
            replicas: ${REPLICAS}
    """)
    inv = write(tmp_path, "inventory.yaml", "nodes:\n  n1: {address: 127.0.0.1, port: 1, roles: [worker]}\n")
    envfile = write(tmp_path, "prod.env", "IMAGE=reg/web:v9\nREPLICAS=2\n")

    missing = CliRunner().invoke(app, ["watch", book, "-i", inv, "--once"])
    assert missing.exit_code == common.EXIT_USAGE and started == []
    assert f"{book}:3: ${{IMAGE}}: IMAGE is not set" in " ".join(missing.output.split())

    monkeypatch.setenv("REPLICAS", "4")  # the environment wins over the file, as in apply
    ok = CliRunner().invoke(app, ["watch", book, "-i", inv, "--once", "--env-file", envfile])
    assert ok.exit_code == 0, ok.output
    [options] = started
    monkeypatch.delenv("REPLICAS")  # the watcher reads what it was started with, not the environment of later
    watcher = Watcher(SimpleNamespace(inventory=None), options, lambda event, **f: None)  # type: ignore[arg-type]
    [web] = watcher.specs()
    assert (web.image, web.replicas) == ("reg/web:v9", 4)


def test_watch_env_file_with_a_bad_line_is_a_usage_error_naming_it(tmp_path: Path,
                                                                   started: list[WatchOptions]) -> None:
    book = write(tmp_path, "web.yaml", "services:\n  web:\n    image: ${IMAGE}\n")
    inv = write(tmp_path, "inventory.yaml", "nodes:\n  n1: {address: 127.0.0.1, port: 1, roles: [worker]}\n")
    envfile = write(tmp_path, "bad.env", "IMAGE=reg/web:v9\nnot a line\n")
    out = CliRunner().invoke(app, ["watch", book, "-i", inv, "--once", "--env-file", envfile])
    assert out.exit_code == common.EXIT_USAGE and started == []
    assert f"{envfile}:2" in " ".join(out.output.split()), out.output
