"""Units and YAML line marks."""

from __future__ import annotations

import pytest

from fleet.errors import ConfigError
from fleet.units import format_cpu, format_memory, parse_cpu, parse_memory
from fleet.yamlmarks import dotted, load


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
