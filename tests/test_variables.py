"""`${VAR}` in playbooks (fleet.config.variables, called by the playbook loader): values from the caller's
variables, defaults, `$$`, every unset variable named by file:line, comments and `$NAME` left alone; `--env-file`
through the checkout's CLI (exit 2 naming file:line before any node is contacted)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from helpers import run_fleet

from fleet.config.spec import load_playbooks
from fleet.config.variables import expand, read_env_file
from fleet.core.errors import SpecError


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


def test_cli_env_file_and_an_unset_variable(tmp_path: Path) -> None:
    book = write(tmp_path, "web.yaml", """
        services:
          web:
            image: ${IMAGE}
            replicas: ${REPLICAS}
    """)
    inv = write(tmp_path, "inventory.yaml", "nodes:\n  n1: {address: 127.0.0.1, port: 1, roles: [worker]}\n")
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
