"""The docs say only what exists: every `fleet …` command line in README.md and docs/ parses against the real
command tree (parsed with click's own parser, never run); every command and every flag has its section in
docs/reference/; every field of the playbook schema is named in docs/playbook.md; the playbooks the docs show load.

A failure names each missing or wrong thing with its file and line, so a new command, flag or playbook field is
one line to add to the docs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from pydantic import BaseModel
from test_cli_conventions import _commands
from typer._click import exceptions as click_exceptions

from fleet.cli.main import app
from fleet.config.spec import parse_playbook
from fleet.config.spec.inputs import ServiceInput

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
ROOT: Any = typer.main.get_command(app)
# Fenced blocks whose lines are commands; others (yaml, text: playbooks, output, error messages) are not.
COMMAND_BLOCKS = {"", "sh", "bash", "console", "shell", "cron", "ini"}
# `fleet` as a command: at the start, after a space or a path (/usr/local/bin/fleet), followed by a space.
FLEET_WORD = re.compile(r"(?:^|(?<=[\s/(]))fleet (?=\S)")
SHELL_STOPS = {"|", "||", ">", ">>", "<", "&&", ";", "2>&1", "&"}
# An upper-case word where a value goes (`fleet scale SERVICE N`): a placeholder, not a value to check.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?:[.…|/-][A-Z0-9_.…|/-]*)?…?$")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def command_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, `fleet …` text) of every command line: in fenced command blocks, and every inline code span
    that starts with `fleet ` outside fenced blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence is not None:
            if fence in COMMAND_BLOCKS:
                # A shell or cron comment is prose; in a unit file only ExecStart runs a command.
                line = re.sub(r"(^|\s)#.*", "", line)
                if fence == "ini" and not line.startswith("ExecStart="):
                    continue
                for m in FLEET_WORD.finditer(line):
                    yield number, line[m.start():]
            continue
        for span in re.findall(r"`([^`]+)`", line):
            if span.startswith("fleet "):
                yield number, span


def words_of(command: str) -> list[str]:
    """The words after `fleet`, cut at a comment or a shell operator, optional brackets of a synopsis removed
    (`[--json]` is the flag `--json`)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    out = []
    for w in words[1:]:
        if w in SHELL_STOPS or w.startswith((">", "2>", "<")):
            break
        w = w.strip("[]")
        if w and w not in ("…", "..."):
            out.append(w)
    return out


def parse_problem(words: list[str]) -> str | None:
    """Why `fleet WORDS` does not parse (a command or a flag that does not exist, a value refused), or None.
    A mention without its required argument (`fleet promote`) and a placeholder value (`--nodes N`) parse."""
    group: Any = ROOT
    path: list[str] = []
    rest = list(words)
    while hasattr(group, "commands") and rest and not rest[0].startswith("-"):
        sub = group.commands.get(rest[0])
        if sub is None and PLACEHOLDER.match(rest[0]):  # `fleet COMMAND -h`
            return None
        if sub is None:
            known = ", ".join(sorted(group.commands))
            return f"no command `fleet {' '.join([*path, rest[0]])}` (`fleet {' '.join(path)}` has: {known})"
        path.append(rest.pop(0))
        group = sub
    if not rest and hasattr(group, "commands"):  # `fleet`, `fleet secret`: a group named in prose
        return None
    name = " ".join(["fleet", *path])
    try:
        _parse(group, name, rest)
    except click_exceptions.MissingParameter:
        return None
    except click_exceptions.NoSuchOption as exc:
        return f"`{name}` has no option {exc.option_name}"
    except click_exceptions.BadParameter as exc:
        # A synopsis's placeholders (`--nodes N`) stand for values: the line parses when a plain value does.
        if any(PLACEHOLDER.match(w) for w in rest):
            with contextlib.suppress(click_exceptions.MissingParameter):
                try:
                    _parse(group, name, ["1" if PLACEHOLDER.match(w) else w for w in rest])
                except click_exceptions.UsageError:
                    pass
                else:
                    return None
        return f"`{name}`: {exc.format_message()}"
    except click_exceptions.UsageError as exc:
        message = exc.format_message()
        if "requires an argument" in message:  # a flag named without its value in prose: it exists
            return None
        return f"`fleet {' '.join(path)}`: {message}"
    except typer.Exit:  # --help, --version
        return None
    return None


def _parse(command: Any, name: str, args: list[str]) -> None:
    """click's parse of `args` for `command` (conversions and eager callbacks included; the command never runs);
    what an eager option prints (--help, --version) is dropped."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), command.make_context(name, list(args)):
        pass


def all_command_lines() -> list[tuple[str, int, str]]:
    return [(rel(p), n, c) for p in doc_files() for n, c in command_lines(p.read_text())]


def test_the_docs_name_commands_to_check() -> None:
    lines = all_command_lines()
    assert len(lines) > 200, len(lines)
    files = {f for f, _, _ in lines}
    assert {"README.md", "docs/quickstart.md", "docs/operations.md", "docs/reference/deploy.md"} <= files


def test_every_fleet_command_line_in_the_docs_parses() -> None:
    problems = []
    for file, number, command in all_command_lines():
        why = parse_problem(words_of(command))
        if why is not None:
            problems.append(f"{file}:{number}: {command!r}: {why}")
    assert not problems, "command lines in the docs that do not parse:\n" + "\n".join(problems)


@pytest.mark.parametrize(("words", "wrong"), [
    (["release", "promote", "web"], "no command `fleet release`"),
    (["apply", "--bogus-flag", "playbooks/"], "has no option --bogus-flag"),
    (["ps", "--timeout", "soon"], "soon"),
    (["scale", "web", "three"], "Invalid value for 'replicas'"),
])
def test_a_wrong_command_line_is_reported(words: list[str], wrong: str) -> None:
    """The check is not vacuous: a command, a flag or a value that does not exist is named."""
    why = parse_problem(words)
    assert why is not None and wrong in why, why


@pytest.mark.parametrize("words", [["scale", "SERVICE", "N", "-f", "PLAYBOOKS"], ["promote"], ["--version"],
                                   ["lab", "up", "--nodes", "N"], ["logs", "--since"], ["-h"]])
def test_synopses_and_mentions_parse(words: list[str]) -> None:
    assert parse_problem(words) is None


def test_a_bogus_flag_in_a_doc_line_fails(tmp_path: Path) -> None:
    text = "```sh\nfleet apply playbooks/            # fine\nfleet apply --parralel 4 playbooks/\n```\n"
    found = [(n, parse_problem(words_of(c))) for n, c in command_lines(text)]
    assert found == [(2, None), (3, "`fleet apply` has no option --parralel")]


# ---- the reference: every command and every flag -------------------------------------------------------

def reference_sections() -> dict[str, tuple[str, str]]:
    """`fleet PATH` → (file, the section's text) for every `## fleet PATH` heading of docs/reference/."""
    out = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for head, body in re.findall(r"(?m)^## (fleet [^\n]+)\n(.*?)(?=^## |\Z)", page.read_text(), re.S):
            out[head.strip()] = (rel(page), body)
    return out


def test_every_command_and_flag_has_its_reference_section() -> None:
    sections = reference_sections()
    missing = []
    for path, cmd in _commands():
        name = "fleet " + " ".join(path)
        if name not in sections:
            missing.append(f"no section `## {name}` in docs/reference/ (its group's page: {panel_of(path)})")
            continue
        file, body = sections[name]
        for param in cmd.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            for flag in (*param.opts, *param.secondary_opts):
                if not re.search(rf"`{re.escape(flag)}`", body):
                    missing.append(f"{file}: section `## {name}` does not name its option `{flag}`")
    stale = sorted(set(sections) - {"fleet " + " ".join(p) for p, _ in _commands()})
    missing += [f"{sections[s][0]}: section `## {s}` names a command that does not exist" for s in stale]
    assert not missing, "the command reference is out of date:\n" + "\n".join(missing)


def panel_of(path: tuple[str, ...]) -> str:
    cmd = ROOT.commands[path[0]]
    return {"Deploy": "deploy.md", "Inspect": "inspect.md", "Nodes and containers": "nodes.md", "State": "state.md",
            "Lab and setup": "lab.md"}.get(getattr(cmd, "rich_help_panel", None) or "", "?")


def test_every_group_has_its_reference_page() -> None:
    index = (DOCS / "reference" / "README.md").read_text()
    missing = [f"docs/reference/README.md does not list `{' '.join(p)}`" for p, _ in _commands()
               if f"`{' '.join(p)}`" not in index]
    for panel in ("Deploy", "Inspect", "Nodes and containers", "State", "Lab and setup"):
        if f"[{panel}](" not in index:
            missing.append(f"docs/reference/README.md has no link for the group {panel}")
    assert not missing, "\n".join(missing)


# ---- the playbook reference: every field of the schema -------------------------------------------------

def _models(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """The pydantic models inside an annotation, with `[]` for an item of a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple):
        return [(m, "[]" + s) for a in args for m, s in _models(a)]
    if origin is typing.Annotated:
        return _models(args[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models(a)]
    return []


def schema_fields(model: type[BaseModel] = ServiceInput, prefix: str = "") -> Iterator[str]:
    """Every field a service takes, by its path: `lb.timeouts.server`, `volumes[].target`."""
    for name, field in model.model_fields.items():
        yield prefix + name
        for sub, suffix in _models(field.annotation):
            yield from schema_fields(sub, f"{prefix}{name}{suffix}.")


def test_schema_walk_finds_nested_fields() -> None:
    fields = set(schema_fields())
    assert {"image", "lb.timeouts.server", "lb.tls.acme", "volumes[].target", "update.canary.steps"} <= fields


def test_every_playbook_field_is_in_the_playbook_reference() -> None:
    text = (DOCS / "playbook.md").read_text()
    named = set(re.findall(r"`([a-z_\[\].]+)(?::[^`]*)?`", text))
    missing = [f for f in schema_fields() if f not in named]
    assert not missing, ("docs/playbook.md does not name these playbook fields (add a table row "
                         "`| `FIELD` | type | default | meaning |` for each):\n  " + "\n  ".join(missing))


@pytest.mark.parametrize("page", ["docs/playbook.md", "docs/quickstart.md"])
def test_the_playbooks_the_docs_show_load(page: str) -> None:
    blocks = re.findall(r"```yaml\n(services:.*?)```", (REPO / page).read_text(), re.S)
    assert blocks
    for i, block in enumerate(blocks):
        assert parse_playbook(block, f"{page} block {i}").services


def test_the_readme_keeps_the_two_commands() -> None:
    """`.ci/run` runs the README's test command; the README is where a newcomer finds both."""
    readme = (REPO / "README.md").read_text()
    assert "sh scripts/demo.sh" in readme and "sh scripts/test.sh" in readme
    assert "sh scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_links_between_the_docs_lead_to_files() -> None:
    broken = []
    for page in doc_files():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", line):
                if target.startswith(("http://", "https://", "mailto:")):
                    continue
                if not (page.parent / target).exists():
                    broken.append(f"{rel(page)}:{number}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
