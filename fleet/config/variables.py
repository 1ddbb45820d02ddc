"""`${VAR}` in playbooks: one playbook over staging and production. A playbook file's text is expanded before it
is read as YAML, line by line, so every problem names its file and line and a value takes the YAML type it reads
as (`replicas: ${REPLICAS:-2}` is a number).

    ${NAME}            NAME's value; an error naming file:line and NAME when it is not set
    ${NAME:-default}   NAME's value, or `default` when NAME is unset or empty
    $$                 a literal `$` (`$$$${X}` reaches the container as `$${X}`)

A `$` followed by anything else stays as it is (`$PORT` in a command is the container's to expand), and so do
comments. A value cannot hold a newline (it would change the YAML's structure). The variables come from the
caller (the CLI: the environment over an `--env-file`), never from here: `read_env_file` reads such a file."""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleet.core.errors import Problem

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"({_NAME})(?::-(.*))?", re.DOTALL)
_ENV_LINE = re.compile(rf"^(?:export\s+)?({_NAME})=(.*)$")


def _comment_at(line: str) -> int:
    """Where the line's YAML comment starts (len(line) when it has none): a `#` at the start or after a blank,
    outside quotes."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and (i == 0 or line[i - 1] in " \t:[{,-"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return len(line)


def _expand_line(text: str, variables: Mapping[str, str], where: tuple[str, int],
                 problems: list[Problem]) -> str:
    out: list[str] = []
    i = 0
    while (j := text.find("$", i)) >= 0:
        out.append(text[i:j])
        nxt = text[j + 1:j + 2]
        if nxt == "$":
            out.append("$")
            i = j + 2
            continue
        if nxt != "{":
            out.append("$")
            i = j + 1
            continue
        end = text.find("}", j + 2)
        if end < 0:
            problems.append(Problem(*where, "", "unclosed ${ (write ${NAME}, or $$ for a literal $)"))
            return "".join(out) + text[j:]
        body = text[j + 2:end]
        i = end + 1
        m = _REFERENCE.fullmatch(body)
        if m is None:
            problems.append(Problem(*where, "", f"${{{body}}}: expected ${{NAME}} or ${{NAME:-default}} (NAME: "
                                                "letters, digits, _), or $$ for a literal $"))
            continue
        name, default = m.group(1), m.group(2)
        value = variables.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(Problem(*where, "", f"${{{name}}}: {name} is not set (set it in the environment "
                                                    f"or an --env-file, or give a default: ${{{name}:-value}})"))
                continue
            value = default
        if "\n" in value or "\r" in value:
            problems.append(Problem(*where, "", f"${{{name}}}: the value of {name} holds a line break"))
            continue
        out.append(value)
    out.append(text[i:])
    return "".join(out)


def expand(text: str, file: str, variables: Mapping[str, str]) -> tuple[str, list[Problem]]:
    """The playbook's text with its `${...}` references replaced, and a Problem (file:line) for each one that
    cannot be; comments are left as they are."""
    problems: list[Problem] = []
    lines = []
    for n, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        cut = _comment_at(body)
        lines.append(_expand_line(body[:cut], variables, (file, n), problems) + line[cut:])
    return "".join(lines), problems


def read_env_file(path: str, text: str) -> tuple[dict[str, str], list[Problem]]:
    """`NAME=value` lines (`export` allowed, `#` comments and blank lines skipped, one pair of quotes around a
    value removed), and a Problem (file:line) for each line that is none of these."""
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if m is None:
            problems.append(Problem(path, n, "", f"expected NAME=value, got {line[:60]!r}"))
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[m.group(1)] = value
    return out, problems
