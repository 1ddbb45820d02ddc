"""The engine's rooms import one another without a cycle, function-local and TYPE_CHECKING imports counted (issue
17; the sizes of every module and class, and the load-time cycles of all of fleet, are checked in test_layers.py)."""

from __future__ import annotations

import pathlib

from test_layers import imported_modules

ENGINE = pathlib.Path(__file__).resolve().parent.parent / "fleet" / "engine"


def _modules() -> dict[str, pathlib.Path]:
    return {f"fleet.engine.{p.stem}": p for p in sorted(ENGINE.glob("*.py")) if p.name != "__init__.py"}


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
