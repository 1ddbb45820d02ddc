"""The engine stays in small rooms (issue 17): no class in fleet/engine/ over 300 lines, no module over 600, and
no import cycle among its modules (function-local and TYPE_CHECKING imports count)."""

from __future__ import annotations

import ast
import pathlib

from test_layers import imported_modules

ENGINE = pathlib.Path(__file__).resolve().parent.parent / "fleet" / "engine"


def _modules() -> dict[str, pathlib.Path]:
    return {f"fleet.engine.{p.stem}": p for p in sorted(ENGINE.glob("*.py")) if p.name != "__init__.py"}


def test_no_engine_class_over_300_lines_and_no_module_over_600():
    big = []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 600:
            big.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > 300:
                    big.append(f"{name}.{node.name}: {size} lines")
    assert big == []


def test_engine_modules_import_each_other_without_a_cycle():
    mods = _modules()
    graph = {m: {i for i in imported_modules(p.read_text(), m) if i in mods and i != m} for m, p in mods.items()}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        for n in sorted(graph[m]):
            if n in path:
                cycles.append(" -> ".join([*path[path.index(n):], n]))
            elif n not in done:
                visit(n, [*path, n])
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    assert cycles == []
