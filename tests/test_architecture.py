"""The package's shape, checked statically (no module is imported): imports flow down the layers of
ARCHITECTURE.md, no import cycle, no private name used outside its module, no module over 450 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "simlib"
# Lowest first: a module may import from its own layer's package or from a lower layer, never higher.
LAYERS = (
    ("simlib.text", "simlib.cache", "simlib.inputs", "simlib.progress"),
    ("simlib.lm",),
    ("simlib.config", "simlib.data"),
    ("simlib.generate",),
    ("simlib.measures",),
    ("simlib.train",),
    ("simlib.findings",),
    ("simlib.steps",),
    ("simlib.publish",),
)
MAX_LINES = 450


def modules(root: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules(ROOT)


def imports(name: str, mods: dict[str, Path] = MODULES) -> tuple[set[str], list[str]]:
    """(simlib modules ``name`` imports, anywhere in the file; private names it takes from them)."""
    def resolve(dotted: str) -> str:  # simlib.lm.weights.resolve -> simlib.lm.weights
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted

    tree = ast.parse(mods[name].read_text())
    deps, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{name}: relative import (use absolute simlib.* imports)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simlib"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                target = full if full in mods else resolve(node.module)
                deps.add(target)
                if full in mods:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_"):
                    private.append(f"{name} takes {a.name} from {target}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("simlib"):
                    deps.add(resolve(a.name))
                    if a.asname:
                        aliases[a.asname] = resolve(a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{name} reads {aliases[node.value.id]}.{node.attr}")
    deps.discard(name)
    deps.discard("simlib")
    return deps, private


GRAPH = {m: imports(m) for m in MODULES}


def layer(name: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(name == g or name.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{name} belongs to no layer of LAYERS (add it, and to ARCHITECTURE.md)")


def test_every_module_has_a_layer():
    for m in MODULES:
        if m != "simlib":
            layer(m)


def test_imports_flow_down_the_layers():
    up = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
          for m, (deps, _) in GRAPH.items() if m != "simlib" for d in deps if layer(d) > layer(m)]
    assert not up, "\n".join(up)


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(GRAPH[m][0]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_no_private_name_crosses_a_module():
    leaks = [p for _, (_, private) in GRAPH.items() for p in private]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines (> {MAX_LINES}): split it by concept"


def test_the_checker_sees_a_cycle_and_a_leak(tmp_path):
    # the checks above must be able to fail: a two-module package with both faults
    pkg = tmp_path / "simlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from simlib.b import _hidden\n")
    (pkg / "b.py").write_text("import simlib.a as a\nx = a._y\n")
    mods = modules(pkg)
    graph = {m: imports(m, mods) for m in mods}
    assert graph["simlib.a"][0] == {"simlib.b"} and graph["simlib.b"][0] == {"simlib.a"}
    assert graph["simlib.a"][1] == ["simlib.a takes _hidden from simlib.b"]
    assert graph["simlib.b"][1] == ["simlib.b reads simlib.a._y"]
