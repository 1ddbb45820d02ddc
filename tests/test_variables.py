"""`${VAR}` in playbooks (fleet.config.variables, called by the playbook loader): values from the caller's
variables, defaults, `$$`, every unset variable named by file:line, comments and `$NAME` left alone; `--env-file`
through the checkout's CLI (exit 2 naming file:line before any node is contacted), `fleet watch --env-file` too."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import run_fleet
from typer.testing import CliRunner

import fleet.watch.controller as controller
from fleet.cli import common
from fleet.cli.main import app
from fleet.config.spec import load_playbooks
from fleet.config.variables import expand, read_env_file
from fleet.core.errors import SpecError
from fleet.watch.controller import Watcher, WatchOptions


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("image: ${IMAGE}", "image: reg/web:v2"),
    ("replicas: ${N:-2}", "replicas: 2"),
    ("replicas: ${EMPTY:-2}", "replicas: 2"),
    ("replicas: ${IMAGE:-2}", "replicas: reg/web:v2"),
    ("cmd: [sh, -c, 'echo $$HOME $${X}']", "cmd: [sh, -c, 'echo $HOME ${X}']"),
    ("cmd: [sh, -c, 'echo $PORT $1']", "cmd: [sh, -c, 'echo $PORT $1']"),
    ("a: ${IMAGE} # was ${OLD}", "a: reg/web:v2 # was ${OLD}"),
    ("# ${NOT_SET} in a comment", "# ${NOT_SET} in a comment"),
    ("a: 'x # ${IMAGE}'", "a: 'x # reg/web:v2'"),
    ("a: ${D:-x:y}", "a: x:y"),
])
def test_references_expand(text: str, expected: str) -> None:
    out, problems = expand(text + "\n", "p.yaml", {"IMAGE": "reg/web:v2", "EMPTY": ""})
    assert (out, problems) == (expected + "\n", [])


def test_every_bad_reference_is_named_by_file_and_line() -> None:
    text = "a: ${MISSING}\nb: ok\nc: ${1BAD}\nd: ${LINES}\ne: ${OPEN\n"
    _, problems = expand(text, "p.yaml", {"LINES": "x\ny"})
    assert [str(p) for p in problems] == [
        "p.yaml:1: ${MISSING}: MISSING is not set (set it in the environment or an --env-file, or give a default: "
        "${MISSING:-value})",
        "p.yaml:3: ${1BAD}: expected ${NAME} or ${NAME:-default} (NAME: letters, digits, _), or $$ for a literal $",
        "p.yaml:4: ${LINES}: the value of LINES holds a line break",
        "p.yaml:5: unclosed ${ (write ${NAME}, or $$ for a literal $)",
    ]


def test_env_file_lines() -> None:
    found, problems = read_env_file("s.env", "# staging\nIMAGE=reg/web:v2\nexport N='3'\n\nQ=\"a b\"\nbad line\n")
    assert found == {"IMAGE": "reg/web:v2", "N": "3", "Q": "a b"}
    assert [str(p) for p in problems] == ["s.env:6: expected NAME=value, got 'bad line'"]


def test_loader_expands_files_and_values_take_their_yaml_type(tmp_path: Path) -> None:
    book = write(tmp_path, "web.yaml", """
        services:
          web:
            image: ${IMAGE}
            replicas: ${REPLICAS:-2}
    """)
    [web] = load_playbooks([book], {"IMAGE": "reg/web:v7"})
    assert (web.image, web.replicas) == ("reg/web:v7", 2)
    with pytest.raises(SpecError) as info:
        load_playbooks([book], {})
    assert [p.line for p in info.value.problems] == [3]
    assert "IMAGE is not set" in str(info.value)


def variable_playbook(tmp_path: Path) -> tuple[str, str]:
    """A playbook whose image and count are `${IMAGE}` and `${REPLICAS}`, and an inventory of one node that is
    never reached."""
    book = write(tmp_path, "web.yaml", """
        services:
          web:
            image: ${IMAGE}
            replicas: ${REPLICAS}
    """)
    return book, write(tmp_path, "inventory.yaml", "nodes:\n  n1: {address: 127.0.0.1, port: 1, roles: [worker]}\n")


def test_cli_env_file_and_an_unset_variable(tmp_path: Path) -> None:
    book, inv = variable_playbook(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "REPLICAS", "FLEET_INVENTORY")}
    out = run_fleet("plan", book, "-i", inv, env=env, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{book}:3: ${{IMAGE}}: IMAGE is not set" in out.stderr and f"{book}:4: ${{REPLICAS}}" in out.stderr
    envfile = write(tmp_path, "staging.env", "IMAGE=reg/web:v2\nREPLICAS=x\n")
    out = run_fleet("plan", book, "-i", inv, "--env-file", envfile, env={**env, "REPLICAS": "three"}, timeout=60)
    # The environment wins over the file: REPLICAS is "three", which is not a count.
    assert out.returncode == 2 and f"{book}:4: services.web.replicas: expected an integer, got 'three'" in out.stderr
    out = run_fleet("apply", book, "-i", inv, "--env-file", envfile, "--set", "web.tag=v3",
                    env={**env, "REPLICAS": "3"}, timeout=60)
    assert out.returncode == 2 and "expected SERVICE.image=REF" in out.stderr, out.stderr


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[WatchOptions]:
    """The options each `fleet watch` (in process) started its loop with; the loop itself is replaced by one that
    returns exit 0 at once (no node is reached)."""
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
    """`fleet watch --env-file` goes through the loader apply and reconcile use; the real `Watcher` reads the
    playbooks again with the variables it was started with."""
    book, inv = variable_playbook(tmp_path)
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
    book, inv = variable_playbook(tmp_path)
    envfile = write(tmp_path, "bad.env", "IMAGE=reg/web:v9\nnot a line\n")
    out = CliRunner().invoke(app, ["watch", book, "-i", inv, "--once", "--env-file", envfile])
    assert out.exit_code == common.EXIT_USAGE and started == []
    assert f"{envfile}:2" in " ".join(out.output.split()), out.output
