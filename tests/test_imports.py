"""The shape of the ``ser`` package, read from its source with ``ast`` (nothing is imported):
no import cycle between its modules, counting module-level and function-level imports, and no
module over 500 lines unless its docstring says why ("over 500 lines" and a reason)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ser"
MAX_LINES = 500


def module_name(path: Path) -> str:
    """``ser/ppo/stage.py`` -> ``ser.ppo.stage``; a package is its ``__init__.py``: ``ser/ppo/__init__.py`` -> ``ser.ppo``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at module level or inside functions and classes (not under
    ``if TYPE_CHECKING:``, which never runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, known: set[str]) -> str | None:
    """The module ``name`` names, or the longest known package/module that contains it."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def dependencies(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``ser`` modules that module ``name`` imports. ``import ser.x.y`` and ``from ser.x.y import z``
    depend on ``ser.x.y`` (its ``__init__`` when it is a package); ``from ser.x import y`` depends on
    the submodule ``ser.x.y`` when there is one, else on ``ser.x`` (``y`` is a name of its ``__init__``)."""
    is_package = path.name == "__init__.py"
    deps = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:  # relative: from the module's package (a package's own __init__ is level 1)
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for t in targets:
            if t == "ser" or t.startswith("ser."):
                dep = _known(t, known)
                if dep and dep != name:
                    deps.add(dep)
    return deps


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: dependencies(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, iters = [root], [iter(sorted(graph.get(root, ())))]
        state[root] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "d"}, "b": set(), "d": {"e"}, "e": {"d"}}) == ["d", "e", "d"]


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "ser" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from ser.sub import b\n    return b\n")
    (pkg / "b.py").write_text("from ser.sub.a import f\n")
    known = {"ser.sub", "ser.sub.a", "ser.sub.b"}
    assert dependencies("ser.sub", pkg / "__init__.py", known) == {"ser.sub.a"}
    assert dependencies("ser.sub.a", pkg / "a.py", known) == {"ser.sub.b"}
    assert find_cycle({m: dependencies(m, pkg / (m.split(".")[-1] + ".py"), known) for m in known - {"ser.sub"}}) \
        == ["ser.sub.a", "ser.sub.b", "ser.sub.a"]


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"ser.train", "ser.ppo", "ser.ppo.stage", "ser.report", "ser.data", "ser.checkpoint"} <= set(graph)
    assert "ser.checkpoint" in graph["ser.ppo.stage"] and "ser.checkpoint" in graph["ser.train"]
    assert "ser.ppo" in graph["ser.train"]  # function-level: the PPO hand-off in ser.train.run


def test_no_import_cycle_in_ser():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_500_lines_without_a_reason():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_LINES and "over 500 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            too_long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not too_long, (f"modules over {MAX_LINES} lines (split them, or say in the module docstring why it is "
                          f"'over 500 lines'): " + ", ".join(too_long))
