"""YAML loading that remembers the line of every key, so errors can name file, line and field path.

Hostile documents are refused with the line at fault instead of exhausting the stack, memory or time: a
recursive alias (`a: &x [*x]`), nesting deeper than `MAX_DEPTH` levels, aliases that add more than `MAX_ALIASED`
values in all ("billion laughs") and a document that would weigh more than `MAX_BYTES` once its aliases are
expanded (a few long strings aliased many times) are found while composing, before anything is expanded. A file
larger than `MAX_BYTES` is not read at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from fleet.core.errors import ConfigError, Problem

Path = tuple[str | int, ...]

# Playbooks and inventories are a few levels deep and use aliases to share a few settings; these bounds leave them
# a wide margin while keeping the loader, pydantic and every recursive walk far from Python's recursion limit, and
# the values a small document can expand to (through aliases of aliases) within what loads in well under a second.
MAX_DEPTH = 64
MAX_ALIASED = 100_000
# Bytes, counted as the UTF-8 bytes of every key and value once aliases are expanded, plus one per value (about
# the document's size as JSON): the count above alone lets a 96 KB file with long aliased strings expand to
# 131 MB. Playbooks and inventories weigh kilobytes; configs' contents are bounded well below this.
MAX_BYTES = 4 * 1024 * 1024
MERGE_TAG = "tag:yaml.org,2002:merge"


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


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer, counting as it goes: nesting depth, the values aliases add once expanded (an
    alias counts every value of the node it names, aliases within included) and the bytes of the expanded
    document. A node's size, weight and height are known once it is complete, so an alias to a node still being
    composed is recursive."""

    file = "<yaml>"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliased = 0
        self._bytes = 0
        self._size: dict[int, int] = {}
        self._weight: dict[int, int] = {}
        self._height: dict[int, int] = {}

    def _refuse(self, event: yaml.Event, message: str) -> ConfigError:
        mark = event.start_mark
        return ConfigError([Problem(self.file, mark.line + 1 if mark is not None else None, "", message)])

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                height = self._height.get(id(target))
                if height is None:
                    raise self._refuse(event, f"alias *{event.anchor} refers to a node that contains it "
                                              "(a recursive alias)")
                if self._depth + height > MAX_DEPTH:
                    raise self._refuse(event, f"alias *{event.anchor} nests the document more than {MAX_DEPTH} "
                                              "levels deep")
                self._aliased += self._size[id(target)]
                if self._aliased > MAX_ALIASED:
                    raise self._refuse(event, f"aliases expand the document by more than {MAX_ALIASED} values "
                                              f"(at *{event.anchor})")
                self._bytes += self._weight[id(target)]
                if self._bytes > MAX_BYTES:
                    raise self._refuse(event, f"aliases expand the document to more than {_mib(MAX_BYTES)} "
                                              f"(at *{event.anchor})")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(event, f"the document is nested more than {MAX_DEPTH} levels deep")
        node = super().compose_node(parent, index)
        assert node is not None
        self._depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        self._height[id(node)] = 1 + max((self._height[id(c)] for c in children), default=0)
        self._size[id(node)] = 1 + sum(self._size[id(c)] for c in children)
        own = 1 + (len(node.value.encode("utf-8", "surrogatepass")) if isinstance(node, yaml.ScalarNode) else 1)
        self._weight[id(node)] = own + sum(self._weight[id(c)] for c in children)
        self._bytes += own
        if self._bytes > MAX_BYTES:
            raise self._refuse(event, f"the document weighs more than {_mib(MAX_BYTES)}")
        return node


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB ({n} bytes)"


def _scalar(node: yaml.ScalarNode, path: Path, file: str, constructor: yaml.constructor.SafeConstructor,
            what: str = "value") -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        message = exc.problem or str(exc)
    except (ValueError, TypeError, OverflowError) as exc:
        message = str(exc)
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise ConfigError([Problem(file, node.start_mark.line + 1, dotted(path),
                               f"cannot read {tag} {what} {node.value!r}: {message}")])


class _Convert:
    """Composed nodes to plain values, recording the line of each path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = yaml.constructor.SafeConstructor()

    def __call__(self, node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, lines)
        if isinstance(node, yaml.SequenceNode):
            return [self(item, (*path, i), lines) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return _scalar(node, path, self.file, self.constructor)

    def _key(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node, path, self.file, self.constructor, "key")
        raise ConfigError([Problem(self.file, node.start_mark.line + 1, dotted(path), "a key must be a scalar")])

    def _mapping(self, node: yaml.MappingNode, path: Path, lines: dict[Path, int]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node, path)
            if key in out:
                raise ConfigError([Problem(self.file, key_node.start_mark.line + 1, dotted((*path, key)),
                                           "duplicate key")])
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        # `<<: *base` (or a list of them): keys written here win, then earlier merged mappings over later ones.
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise ConfigError([Problem(self.file, value_node.start_mark.line + 1, dotted(path),
                                               "a merge key (<<) takes a mapping or a list of mappings")])
                found: dict[Path, int] = {}
                merged = self._mapping(source, path, found)
                for key, value in merged.items():
                    if key not in out:
                        out[key] = value
                        lines.update({p: ln for p, ln in found.items() if p[len(path):len(path) + 1] == (key,)})
        return out


def load(text: str, file: str) -> Marked:
    """Parse one YAML document; syntax errors and hostile documents become a Problem with the line."""
    try:
        loader = _BoundedLoader(text)
        loader.file = file
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
        if root is None:
            return Marked(file, None, {(): 1})
        lines: dict[Path, int] = {}
        data = _Convert(file)(root, (), lines)
    except ConfigError as exc:
        raise ConfigError(exc.problems) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise ConfigError([Problem(file, line, "", f"invalid YAML: character U+{exc.character:04X} is not allowed "
                                                   f"({exc.reason})")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None
    return Marked(file, data, lines)


def read_text(path: str, what: str = "file") -> str:
    """A file's text as UTF-8; unreadable files, files over `MAX_BYTES` and bytes that are not UTF-8 become a
    Problem (naming the line)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read {what}: {exc.strerror or exc}")]) from exc
    if len(raw) > MAX_BYTES:
        raise ConfigError([Problem(path, None, "", f"the {what} is larger than {_mib(MAX_BYTES)}, the most fleet "
                                                   "reads")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([Problem(path, line, "", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                                                   f"{exc.start})")]) from None


def load_file(path: str) -> Marked:
    return load(read_text(path), path)
