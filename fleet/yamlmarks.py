"""YAML loading that remembers the line of every key, so errors can name file, line and field path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Problem

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Marked:
    """A loaded document and the 1-based line where each path (key or list item) starts."""

    file: str
    data: Any
    lines: dict[Path, int]

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """The line of the longest prefix of `path` that the document has."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), None)

    def problem(self, path: Iterable[str | int], message: str) -> Problem:
        parts = tuple(path)
        return Problem(self.file, self.line_of(parts), dotted(parts), message)


def dotted(path: Iterable[str | int]) -> str:
    """`services.web.ports[0]` from ("services", "web", "ports", 0)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, (*path, "<key>"), {}, file)
            if isinstance(key, list | dict):
                raise _YamlProblem(Problem(file, key_node.start_mark.line + 1, dotted(path), "a key must be a scalar"))
            if key in out:
                raise _YamlProblem(Problem(file, key_node.start_mark.line + 1, dotted((*path, key)),
                                           "duplicate key"))
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return _SCALARS.construct_object(node)


# A loader used only to turn scalar nodes into Python values with YAML 1.1 safe rules.
_SCALARS = yaml.SafeLoader("")


class _YamlProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def load(text: str, file: str) -> Marked:
    """Parse one YAML document; syntax errors become a Problem with the line."""
    from .errors import ConfigError

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {exc}")]) from exc
    if root is None:
        return Marked(file, None, {(): 1})
    lines: dict[Path, int] = {}
    try:
        data = _convert(root, (), lines, file)
    except _YamlProblem as exc:
        raise ConfigError([exc.problem]) from None
    return Marked(file, data, lines)


def load_file(path: str) -> Marked:
    from .errors import ConfigError

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from exc
    return load(text, path)
