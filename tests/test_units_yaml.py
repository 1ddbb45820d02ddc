"""Units and YAML line marks."""

from __future__ import annotations

import pytest

from fleet.config.yamlmarks import MAX_ALIASED, MAX_DEPTH, dotted, load, load_file
from fleet.core.errors import ConfigError
from fleet.core.units import format_cpu, format_memory, parse_cpu, parse_memory


@pytest.mark.parametrize(("text", "expected"), [
    ("512Mi", 512 * 1024**2), ("512MiB", 512 * 1024**2), ("2G", 2 * 10**9), ("1.5GiB", 3 * 1024**3 // 2),
    (1024, 1024), ("64k", 64000),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "12 apples", "-5", True, 1.5, None, "1e3"])
def test_parse_memory_rejects(bad):
    with pytest.raises(ValueError):
        parse_memory(bad)


@pytest.mark.parametrize(("text", "expected"), [("500m", 0.5), ("2", 2.0), (0.25, 0.25), (3, 3.0)])
def test_parse_cpu(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", True, None])
def test_parse_cpu_rejects(bad):
    with pytest.raises(ValueError):
        parse_cpu(bad)


def test_format():
    assert format_memory(512 * 1024**2) == "512 MiB"
    assert format_memory(3 * 1024**3 // 2) == "1.5 GiB"
    assert format_cpu(0.25) == "250m" and format_cpu(2.0) == "2"


def test_marks_and_dotted_paths():
    doc = load("a:\n  b:\n    - x\n    - y: 1\n", "f.yaml")
    assert doc.line_of(("a", "b", 1, "y")) == 4
    assert doc.line_of(("a", "b", 1, "missing")) == 4
    assert dotted(("services", "web", "ports", 0)) == "services.web.ports[0]"


def test_duplicate_key_is_an_error():
    with pytest.raises(ConfigError, match=r"f.yaml:3: a.b: duplicate key"):
        load("a:\n  b: 1\n  b: 2\n", "f.yaml")


def _laughs(levels: int, width: int = 9) -> str:
    """A "billion laughs" document: each level aliases the previous one `width` times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line"), [
    ("a: &x [*x]\n", 1),
    ("a: 1\nb: &x\n  c: [1, *x]\n", 3),
    ("a: &x {b: {c: *x}}\n", 1),
    ("a: &x\n  - 1\n  - b: &y [*x]\n", 3),
])
def test_recursive_alias_is_refused_with_its_line(text, line):
    with pytest.raises(ConfigError) as exc:
        load(text, "f.yaml")
    assert [str(p) for p in exc.value.problems] == [
        f"f.yaml:{line}: alias *x refers to a node that contains it (a recursive alias)"]


def test_billion_laughs_is_refused_at_the_alias_that_crosses_the_bound_without_expanding_it():
    import time

    start = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        load(_laughs(9), "f.yaml")  # 9**10 values once expanded
    assert time.monotonic() - start < 1.0
    (problem,) = exc.value.problems
    assert (problem.file, problem.line) == ("f.yaml", 6)
    assert problem.message == f"aliases expand the document by more than {MAX_ALIASED} values (at *l4)"


def test_aliases_within_the_bound_still_expand():
    doc = load(_laughs(3), "f.yaml")  # 9**4 = 6561 values
    assert len(doc.data["l3"]) == 9 and doc.data["l3"][8][8][8] == ["lol"] * 9


@pytest.mark.parametrize(("text", "line"), [
    ("a: " + "[" * 100 + "]" * 100 + "\n", 1),
    ("a: 1\nb:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 70)), 34),  # level 65 starts there
])
def test_deep_nesting_is_refused_with_its_line(text, line):
    with pytest.raises(ConfigError) as exc:
        load(text, "f.yaml")
    assert [(p.line, p.message) for p in exc.value.problems] == [
        (line, f"the document is nested more than {MAX_DEPTH} levels deep")]


def test_nesting_through_aliases_counts_the_aliased_depth():
    inner = "[" * 40 + "]" * 40
    text = f"a: &a {inner}\nb: &b [[{'[' * 30}*a{']' * 30}]]\n"
    with pytest.raises(ConfigError) as exc:
        load(text, "f.yaml")
    assert [str(p) for p in exc.value.problems] == [
        f"f.yaml:2: alias *a nests the document more than {MAX_DEPTH} levels deep"]


def test_merge_keys_merge_and_written_keys_win():
    doc = load("base: &b {user: bob, port: 22}\nnode:\n  <<: *b\n  port: 2222\n", "f.yaml")
    assert doc.data["node"] == {"user": "bob", "port": 2222}
    assert doc.line_of(("node", "port")) == 4 and doc.line_of(("node", "user")) == 1


def test_merge_key_of_a_scalar_is_refused():
    with pytest.raises(ConfigError, match=r"^f.yaml:2: node: a merge key \(<<\) takes a mapping"):
        load("a: 1\nnode: {<<: 5}\n", "f.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    ("a:\n  b: !!int x\n", "f.yaml:2: a.b: cannot read !!int value 'x': invalid literal for int() with base 10: 'x'"),
    ("a: !!timestamp 2020-99-99\n", "f.yaml:1: a: cannot read !!timestamp value '2020-99-99': month must be in 1..12"),
    ("a: !custom x\n", "f.yaml:1: a: cannot read !custom value 'x': could not determine a constructor for the tag "
                       "'!custom'"),
    ("a: !!python/name:os.system x\n", "f.yaml:1: a: cannot read !!python/name:os.system value 'x': could not "
                                       "determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"),
    ("? [a]\n: 1\n", "f.yaml:1: a key must be a scalar"),
    ("a: 1\nb: 2\nc: \x00\n", "f.yaml:3: invalid YAML: character U+0000 is not allowed (special characters are not "
                              "allowed)"),
])
def test_values_yaml_cannot_construct_are_problems_with_line_and_field(text, expected):
    with pytest.raises(ConfigError) as exc:
        load(text, "f.yaml")
    assert [str(p) for p in exc.value.problems] == [expected]


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("a: 1\nb: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_file(str(path))
    assert [str(p) for p in exc.value.problems] == [f"{path}:2: not UTF-8 text (byte 0xe9 at offset 11)"]


def test_short_size_for_tables():
    from fleet.core.units import short_size

    assert [short_size(n) for n in (512, 2048, 512 * 1024**2, 3 * 1024**3 // 2, 23 * 1024**3)] == [
        "512B", "2K", "512M", "1.5G", "23G"]
