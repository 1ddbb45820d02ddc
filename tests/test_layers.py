"""The architecture holds: imports point only downward, and only the transport imports asyncssh."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fleet"
IO_MODULES = {"asyncio", "asyncssh", "subprocess", "socket", "rich", "textual"}
# Pure core: no I/O libraries at all.
PURE = ["errors", "model", "units", "shell", "yamlmarks", "inventory", "inventory_schema", "facts", "labels", "spec",
        "scheduler", "haproxy/render", "haproxy/stats", "haproxy/scripts", "reconcile",
        "rollout", "history", "lab/render", "image/oci", "runtime/base",
        "runtime/ctr", "runtime/nerdctl"]
RENDERERS = {"cli", "tui"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    rel = path.relative_to(ROOT.parent).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                found.add(".".join([*base, node.module] if node.module else base))
            else:
                found.add(node.module or "")
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(ROOT.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT).with_suffix("")).removesuffix("/__init__")


def test_only_transport_imports_asyncssh():
    offenders = [_name(p) for p in _modules()
                 if any(i.split(".")[0] == "asyncssh" for i in _imports(p)) and not _name(p).startswith("transport")]
    assert offenders == []


def test_pure_modules_import_no_io():
    offenders = {}
    for p in _modules():
        name = _name(p)
        if any(name == m or name.startswith(m + "/") for m in PURE):
            bad = {i for i in _imports(p) if i.split(".")[0] in IO_MODULES}
            if bad:
                offenders[name] = bad
    assert offenders == {}


def test_only_cli_and_tui_render_and_nothing_imports_them():
    offenders = {}
    for p in _modules():
        name = _name(p)
        top = name.split("/")[0]
        imports = _imports(p)
        bad = {i for i in imports if i.split(".")[0] in ("rich", "textual")} if top not in RENDERERS else set()
        bad |= {i for i in imports if i.startswith(("fleet.cli", "fleet.tui")) and top not in RENDERERS}
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_pure_core_does_not_import_engines():
    engines = ("fleet.transport", "fleet.api", "fleet.lab.lab", "fleet.engine")
    offenders = {}
    for p in _modules():
        name = _name(p)
        if any(name == m or name.startswith(m + "/") for m in PURE):
            bad = {i for i in _imports(p) if i.startswith(engines)}
            if bad:
                offenders[name] = bad
    assert offenders == {}
