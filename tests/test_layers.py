"""The architecture holds: imports point only downward, and only the transport imports asyncssh."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fleet"
IO_MODULES = {"asyncio", "asyncssh", "subprocess", "socket", "sqlite3", "keyring", "rich", "textual"}
# Each folder is a layer; a module imports fleet modules of its own layer or of layers below it, never above.
LAYERS = ["core", "config", "plan", "node", "results", "transport", "store", "engine", "api", "watch"]
# Pure layers: values and decisions, no I/O library at all.
PURE = {"core", "config", "plan", "node", "results"}
# Beside the product: the local lab and the demo image, on the pure layers only.
BESIDE = {"lab": {"core", "config", "node"}, "image": {"core"}}
RENDERERS = {"cli", "tui"}


def _imports(path: pathlib.Path) -> set[str]:
    return imported_modules(path.read_text(), _module_name(path))


def _modules() -> list[pathlib.Path]:
    return sorted(ROOT.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT).with_suffix("")).removesuffix("/__init__")


def _layer(module: str) -> str:
    """The layer (folder) of a dotted fleet module: fleet.plan.reconcile → plan, fleet.api → api."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_is_in_a_layer_folder():
    loose = [_name(p) for p in _modules() if p.parent == ROOT and p.name != "__init__.py"]
    assert loose == [], "the top of fleet/ holds no module: every module is in its layer's folder (api/ included)"
    tops = {_name(p).split("/")[0] for p in _modules()} - {"__init__"}
    assert tops == set(LAYERS) | set(BESIDE) | RENDERERS


def offending_imports(module: str, imports: set[str]) -> set[str]:
    """The fleet imports of `module` that point up (a higher layer) or sideways into the renderers or the lab."""
    here = _layer(module)
    bad = set()
    for i in imports:
        if not i.startswith("fleet.") or _layer(i) == here:
            continue
        there = _layer(i)
        if here in RENDERERS:
            ok = there not in ("transport", "engine", "store")
        elif here in BESIDE:
            ok = there in BESIDE[here]
        elif here in LAYERS:
            # The engine also ships images (fleet.image builds and reads archives; it is pure).
            below = there in LAYERS and LAYERS.index(there) < LAYERS.index(here)
            ok = below or (here == "engine" and there == "image")
        else:
            ok = False
        if not ok:
            bad.add(i)
    return bad


def test_the_layer_rule_flags_an_upward_import():
    assert offending_imports("fleet.plan.reconcile", {"fleet.node.runtime.base", "fleet.core.model"}) == {
        "fleet.node.runtime.base"}
    assert offending_imports("fleet.config.spec", {"fleet.engine.apply"}) == {"fleet.engine.apply"}
    assert offending_imports("fleet.engine.apply", {"fleet.plan.reconcile", "fleet.store.lease"}) == set()
    assert offending_imports("fleet.lab.lab", {"fleet.transport"}) == {"fleet.transport"}
    assert offending_imports("fleet.cli.ps", {"fleet.api", "fleet.store.records"}) == {"fleet.store.records"}


def test_imports_point_only_downward():
    offenders = {}
    for p in _modules():
        bad = offending_imports(_module_name(p), _imports(p))
        if bad:
            offenders[_name(p)] = bad
    assert offenders == {}


def test_only_transport_imports_asyncssh():
    offenders = [_name(p) for p in _modules()
                 if any(i.split(".")[0] == "asyncssh" for i in _imports(p)) and not _name(p).startswith("transport")]
    assert offenders == []


def test_pure_layers_import_no_io():
    offenders = {}
    for p in _modules():
        if _name(p).split("/")[0] in PURE:
            bad = {i for i in _imports(p) if i.split(".")[0] in IO_MODULES}
            if bad:
                offenders[_name(p)] = bad
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


def _error_names() -> set[str]:
    tree = ast.parse((ROOT / "core" / "errors.py").read_text())
    return {n.name for n in tree.body if isinstance(n, ast.ClassDef)}


_ERRORS = _error_names()


def exception_classes(source: str) -> list[str]:
    """Names of the classes `source` defines that derive from an exception (a base named like one, or one of
    the error tree's classes)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Timeout")) or b.id in _ERRORS))
                or (isinstance(b, ast.Attribute) and b.attr.endswith(("Error", "Exception")))
                for b in node.bases):
            found.append(node.name)
    return found


@pytest.mark.parametrize(("source", "expected"), [
    ("class Oops(FleetError):\n    pass\n", ["Oops"]),
    ("class Gone(LeaseHeld):\n    pass\n", ["Gone"]),
    ("def f():\n    class Inner(builtins.ValueError): ...\n", ["Inner"]),
    ("class Value:\n    pass\nclass Spec(BaseModel): ...\n", []),
])
def test_the_checker_finds_exception_classes(source: str, expected: list[str]) -> None:
    assert exception_classes(source) == expected


def test_exception_classes_live_in_the_error_tree():
    """Every exception class fleet defines is in fleet.core.errors (imported elsewhere, never defined)."""
    outside = {_name(p): found for p in _modules()
               if _name(p) != "core/errors" and (found := exception_classes(p.read_text()))}
    assert outside == {}
    assert "LeaseHeld" in exception_classes((ROOT / "core" / "errors.py").read_text())


# The CLI and the TUI reach the fleet only through the façade (fleet.api): never the layers below it, not even for
# a type under TYPE_CHECKING or an import inside a function.
BELOW_FACADE = ("fleet.transport", "fleet.engine", "fleet.store")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` (the text of module `module`, e.g. "fleet.cli.ps") imports, anywhere in it: top level,
    under `if TYPE_CHECKING:`, inside functions; relative imports resolved; `from pkg import name` counts as
    importing both `pkg` and `pkg.name` (name may be a submodule); `importlib.import_module("…")` and
    `__import__("…")` with a constant name too."""
    package = module.split(".")[:-1]  # a package's own module is named "pkg.__init__"
    found: set[str] = set()

    def absolute(name: str | None, level: int) -> str:
        return _absolute(name, level, package)

    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _named_by(node, package)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            found.add(absolute(name.lstrip(".") or None, level) if level else name)
    return found


def _absolute(name: str | None, level: int, package: list[str]) -> str:
    """The dotted name an import names, a relative one resolved from `package` (the importing module's)."""
    if not level:
        return name or ""
    base = package[: len(package) - level + 1]
    return ".".join([*base, name] if name else base)


def _named_by(node: ast.Import | ast.ImportFrom, package: list[str]) -> set[str]:
    """The modules an import statement may load: `from pkg import name` names `pkg` and `pkg.name`."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = _absolute(node.module, node.level, package)
    return {base} | {f"{base}.{a.name}" for a in node.names if a.name != "*"}


def imports_below_facade(source: str, module: str) -> set[str]:
    """The imports of `source` that reach below the façade (transport, engine, store)."""
    return {i for i in imported_modules(source, module)
            if any(i == layer or i.startswith(layer + ".") for layer in BELOW_FACADE)}


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)


@pytest.mark.parametrize(("source", "expected"), [
    ("import fleet.transport", {"fleet.transport"}),
    ("from fleet.engine.containers import PsRow", {"fleet.engine.containers", "fleet.engine.containers.PsRow"}),
    ("def f():\n    from ..store.lease import lease_status\n",
     {"fleet.store.lease", "fleet.store.lease.lease_status"}),
    ("from .. import engine", {"fleet.engine"}),
    ("from ..engine import containers as c", {"fleet.engine", "fleet.engine.containers"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..transport import Pool\n",
     {"fleet.transport", "fleet.transport.Pool"}),
    ("import importlib\ndef f():\n    return importlib.import_module('fleet.store.nodes')\n", {"fleet.store.nodes"}),
    ("async def go():\n    class X:\n        import fleet.engine.apply as a\n", {"fleet.engine.apply"}),
    ("from ..api import Fleet, PsRow\nfrom ..engineering import x\nimport fleet.transports\nfrom . import common\n"
     "from ..store_notes import y\n", set()),
])
def test_the_checker_finds_every_import_below_the_facade(source: str, expected: set[str]) -> None:
    assert imports_below_facade(source, "fleet.cli.ps") == expected


def test_relative_imports_resolve_from_a_package_init() -> None:
    assert imports_below_facade("from ..engine.status import status", "fleet.tui.__init__") == {
        "fleet.engine.status", "fleet.engine.status.status"}
    assert imports_below_facade("from .data import Snapshot", "fleet.tui.__init__") == set()


def test_cli_and_tui_import_nothing_below_the_facade() -> None:
    paths = sorted(p for top in ("cli", "tui") for p in (ROOT / top).rglob("*.py"))
    assert len(paths) > 10  # the walk found the modules
    offenders = {}
    for path in paths:
        bad = imports_below_facade(path.read_text(), _module_name(path))
        if bad:
            offenders[_module_name(path)] = sorted(bad)
    assert offenders == {}


def test_the_watcher_is_a_client_of_the_facade() -> None:
    """fleet watch reads and changes the fleet through the façade only, as the CLI and the TUI do."""
    paths = sorted((ROOT / "watch").rglob("*.py"))
    assert len(paths) >= 5
    offenders = {_module_name(p): sorted(bad) for p in paths
                 if (bad := imports_below_facade(p.read_text(), _module_name(p)))}
    assert offenders == {}


def test_only_the_facade_asks_a_watcher() -> None:
    """One read path: the watcher's socket is asked by the Reader under the façade alone (the façade serves it)."""
    users = {_module_name(p).removesuffix(".__init__") for p in _modules() if "fleet.transport.warm" in _imports(p)}
    assert users == {"fleet.api", "fleet.engine.reader"}


def test_the_facade_shows_the_engines_listing_deadline() -> None:
    import fleet.api
    import fleet.engine.calls

    assert fleet.api.LIST_TIMEOUT == fleet.engine.calls.LIST_TIMEOUT


def test_types_reexported_by_the_facade_are_the_results() -> None:
    import fleet.api
    import fleet.results
    from fleet.engine.containers import PsRow
    from fleet.engine.status import FleetStatus
    from fleet.results import Event
    from fleet.store.lease import NodeLease

    assert (fleet.api.PsRow, fleet.api.Event, fleet.api.FleetStatus, fleet.api.NodeLease) == (
        PsRow, Event, FleetStatus, NodeLease)
    assert fleet.api.PsRow is fleet.results.PsRow and fleet.api.NodeReport is fleet.results.NodeReport
    for name in fleet.api.__all__:
        assert getattr(fleet.api, name) is not None
    with pytest.raises(AttributeError):
        fleet.api.NoSuchThing  # noqa: B018


def test_the_facade_has_no_lazy_table() -> None:
    import fleet.api

    assert not hasattr(fleet.api, "_LAZY"), "no lazy table: the façade imports what it hands out"


def test_the_cli_starts_without_the_facade_or_asyncssh() -> None:
    """`fleet --help`, `fleet lab …` load the CLI's modules only: each command imports the façade when it runs."""
    import subprocess
    import sys

    code = ("import sys, fleet.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncssh', 'textual') or m.startswith(('fleet.api', 'fleet.engine', 'fleet.transport', "
            "'fleet.store'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_command_line_loads_the_module_of_its_command_only() -> None:
    """`fleet status …` builds the command from fleet.cli.status alone (each CLI start spends most of its CPU
    importing); `--help`, an unknown name or shell completion get every command, each listed once."""
    import subprocess
    import sys

    from fleet.cli.main import COMMANDS, build, named

    code = ("import sys; sys.argv = ['fleet', 'status', '--json']; from fleet.cli.main import build, named; "
            "app = build(named(sys.argv[1:])); print(sorted(m for m in sys.modules if m.startswith('fleet.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    assert "fleet.cli.status" in loaded and not loaded & {"fleet.cli.apply", "fleet.cli.ui", "fleet.cli.job"}
    assert [named(a) for a in (["status", "--json"], ["-h"], ["--version"], ["statsu"], ["job", "ls"])] == [
        "status", None, None, None, "job"]
    names = [c[0] for c in COMMANDS]
    assert len(names) == len(set(names))
    full = build()
    listed = [c.name for c in full.registered_commands] + [g.name for g in full.registered_groups]
    assert sorted(listed) == sorted(names)
    one = build("job")
    assert ([c.name for c in one.registered_commands], [g.name for g in one.registered_groups]) == ([], ["job"])


# ---- size, import cycles, and the façade's imports ------------------------------------------------------------
# A class that does everything, a module that holds everything, and modules that need each other to load are how
# the top of fleet grew hard to follow (issue 17); these checks keep it from growing back.
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 600
# Generated or data modules set aside from the size check (module name -> why). None today: fleet/ holds no
# generated code and no data tables written as Python.
SIZE_EXEMPT: dict[str, str] = {}


def oversized(source: str, name: str) -> list[str]:
    """What in `source` (module `name`) is over the limits: the module itself first, then each class (its
    decorators counted with it)."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > MAX_CLASS_LINES:
                found.append(f"{name}: class {node.name}: {length} lines (at most {MAX_CLASS_LINES})")
    return found


def test_the_size_check_flags_a_long_class_and_a_long_module() -> None:
    body = "    x = 1\n"
    assert oversized("class Fits:\n" + body * 299, "m") == []
    assert oversized("@dataclass\nclass Big:\n" + body * 299, "m") == ["m: class Big: 301 lines (at most 300)"]
    assert oversized("def f():\n    class Inner:\n" + "        x = 1\n" * 300, "m") == [
        "m: class Inner: 301 lines (at most 300)"]
    assert oversized("x = 1\n" * 600, "m") == []
    assert oversized("x = 1\n" * 601, "m") == ["m: 601 lines (at most 600)"]


def test_no_class_over_300_lines_and_no_module_over_600() -> None:
    found = [problem for p in _modules() if _name(p) not in SIZE_EXEMPT
             for problem in oversized(p.read_text(), _name(p))]
    assert found == [], "\n".join(found)


def load_time_imports(source: str, module: str) -> set[str]:
    """What `source` (module `module`, a package's as "pkg.__init__") imports while it loads: its top-level imports,
    also inside top-level `if`, `try`, `with` and class bodies; not those under `if TYPE_CHECKING:` (they never
    run) nor inside functions (they run later, when the modules are loaded)."""
    package = module.split(".")[:-1]
    found: set[str] = set()
    todo = list(ast.parse(source, module).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _named_by(node, package)
        elif isinstance(node, ast.If):
            type_checking = ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            todo += [*([] if type_checking else node.body), *node.orelse]
        elif isinstance(node, ast.Try):
            todo += [*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)]
        elif isinstance(node, (ast.With, ast.ClassDef)):
            todo += node.body
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules among `sources` it imports while loading. `sources` is keyed like `_module_name`
    ("fleet.store.__init__" for a package); the graph names a package by its own name ("fleet.store")."""
    dotted = {name: name.removesuffix(".__init__") for name in sources}
    known = set(dotted.values())
    return {dotted[name]: (load_time_imports(text, name) & known) - {dotted[name]} for name, text in sources.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per set of modules that import one another, as the path that closes it: ["a", "b", "a"].

    The sets are the graph's strongly connected parts (Tarjan); each is named by a shortest cycle through its
    first module in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    parts: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while not part or v not in part:
                part.add(stack.pop())
            if len(part) > 1:
                parts.append(part)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for part in parts:
        start = min(part)
        paths = {start: [start]}
        frontier = [start]
        cycle: list[str] | None = None
        while cycle is None:  # breadth first within the part: every module of it leads back to the start
            reached = []
            for v in frontier:
                for w in sorted(graph[v] & part):
                    if w == start:
                        cycle = cycle or [*paths[v], start]
                    elif w not in paths:
                        paths[w] = [*paths[v], w]
                        reached.append(w)
            frontier = reached
        cycles.append(cycle)
    return sorted(cycles)


def test_the_cycle_check_names_each_cycle_that_runs() -> None:
    sources = {
        "fleet.a": "from fleet.b import thing\n",
        "fleet.b": "import fleet.c\n",
        "fleet.c.__init__": "from .. import a\n",  # a package: `..` is fleet
        "fleet.d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fleet.e import E\n",
        "fleet.e": "import fleet.d\ndef later():\n    import fleet.e\n    from fleet import d\n",
        "fleet.f": "try:\n    from fleet import g\nexcept ImportError:\n    pass\n",
        "fleet.g": "class G:\n    from fleet.f import x\n",
    }
    graph = import_graph(sources)
    assert graph["fleet.d"] == set() and graph["fleet.e"] == {"fleet.d"}
    assert import_cycles(graph) == [["fleet.a", "fleet.b", "fleet.c", "fleet.a"], ["fleet.f", "fleet.g", "fleet.f"]]
    assert import_cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycle_among_fleet_modules() -> None:
    cycles = import_cycles(import_graph({_module_name(p): p.read_text() for p in _modules()}))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def local_fleet_imports(source: str, module: str) -> list[str]:
    """`line N: module` for each fleet module that `source` imports inside a function (in any class), in line
    order: the façade imports what it uses once, at the top, where a reader sees it."""
    package = module.split(".")[:-1]
    found = set()
    for scope in ast.walk(ast.parse(source, module)):
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(scope):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [_absolute(node.module, node.level, package)]
                else:
                    continue
                found |= {(node.lineno, n) for n in names if n == "fleet" or n.startswith("fleet.")}
    return [f"line {line}: {name}" for line, name in sorted(found)]


def test_the_local_import_check_flags_imports_inside_functions() -> None:
    source = ("import fleet.core\nfrom typing import Any\n"
              "def f():\n    from .engine import apply\n    import json\n"
              "class C:\n    async def g(self):\n        def h():\n            from fleet.store.records import F\n"
              "        import os, fleet.plan\n")
    assert local_fleet_imports(source, "fleet.api") == [
        "line 4: fleet.engine", "line 9: fleet.store.records", "line 10: fleet.plan"]
    assert local_fleet_imports("from fleet import results\ndef f():\n    import os\n", "fleet.api") == []


def test_the_facade_imports_no_fleet_module_inside_a_function() -> None:
    found = [f"{p.name}: {line}" for p in sorted((ROOT / "api").glob("*.py"))
             for line in local_fleet_imports(p.read_text(), _name(p).replace("/", "."))]
    assert found == [], "fleet/api/ imports inside functions:\n" + "\n".join(found)
