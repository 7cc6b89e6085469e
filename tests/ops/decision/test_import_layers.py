"""Imports flow one way: every module of ops/ imports only from its own layer or the
layers before it in ``ops.LAYERS``, and no two modules import each other, directly or
round a longer loop. Read from the source with ast, so a lazy import inside a function
counts as much as one at the top."""

import ast
from pathlib import Path

import ops

OPS = Path(ops.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Every module of ops/, but a package's ``__init__`` that holds only its docstring
    (``ops.maintenance`` spans several layers; it is a folder, not code)."""
    out = {}
    for path in OPS.rglob("*.py"):
        parts = path.relative_to(OPS.parent).with_suffix("").parts
        if parts[-1] == "__init__" and _docstring_only(path):
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return path.parent == OPS or all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ops modules ``name`` imports (``from ops.x import y`` counts y when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ops")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ops") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


def _layer(module: str) -> int:
    best = max(
        (layer for layer in ops.LAYERS if module == layer or module.startswith(layer + ".")), key=len, default=None
    )
    assert best is not None, f"{module} belongs to no layer of ops.LAYERS"
    return ops.LAYERS.index(best)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_belongs_to_a_declared_layer():
    for name in _modules():
        _layer(name)


def test_no_module_imports_from_a_later_layer():
    upward = [
        f"{name} ({ops.LAYERS[_layer(name)]}) imports {dep} ({ops.LAYERS[_layer(dep)]})"
        for name, deps in _graph().items()
        for dep in sorted(deps)
        if _layer(dep) > _layer(name)
    ]
    assert upward == []


def test_no_import_cycle_between_modules():
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of meaning.
    for name in graph:
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".") and not d.startswith(name + ".")}
    state, cycles = {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """A lower layer importing a higher one is reported (the check can fail)."""
    bad = tmp_path / "x.py"
    bad.write_text("from ops.reports.status import status\n")
    deps = _imports("ops.sys.x", bad, set(_modules()))
    assert deps == {"ops.reports.status"} and _layer("ops.reports.status") > _layer("ops.sys.x")
