"""The layout rules of issue 16, checked on the source itself:

- outside a task's own package (``cellbench/tasks/<name>/``) no code compares a task name with a
  string literal (``==``, ``!=``, ``in (...)``, ``match``/``case``): callers ask the registry;
- the import graph of ``cellbench/`` (every ``import``, those inside functions included; not
  those under ``if TYPE_CHECKING:``, which never run) has no cycle;
- nothing outside ``cellbench/cli/`` (and ``python -m cellbench``) imports ``cellbench.cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cellbench

PACKAGE = Path(cellbench.__file__).parent
TASK_NAMES = {"classify", "organ", "nuclei"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported module name, line) of every import that can run, at any depth."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno  # a submodule, or a name in base
            yield base, node.lineno
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {cellbench module it imports: line}; importing a.b.c also runs the packages
    above it (not ``cellbench`` itself, whose attributes load lazily)."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(), str(path))
        for target, line in _imports(tree, name, path.name == "__init__.py"):
            if target not in modules:
                continue
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                dep = ".".join(parts[:i])
                # a package above this module already ran before it: only a named import of
                # it is an edge (its __init__ may import this module back)
                implicit = i < len(parts) and name.startswith(dep + ".")
                if dep in modules and dep != name and not implicit:
                    edges.setdefault(dep, line)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle, or None (an iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 100 and "cellbench.tasks.nuclei.task" in graph  # the walk saw the tree
    assert "cellbench.tasks" in graph["cellbench.tasks.nuclei.task"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)
    )


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    tree = ast.parse("def f():\n    from cellbench.b import x\n")
    assert ("cellbench.b", 2) in set(_imports(tree, "cellbench.a", False))
    assert _cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}}) is None


def test_nothing_outside_cli_imports_cli():
    offenders = [
        f"{module} imports {dep} (line {line})"
        for module, edges in import_graph().items()
        if not module.startswith("cellbench.cli") and module != "cellbench.__main__"
        for dep, line in edges.items()
        if dep == "cellbench.cli" or dep.startswith("cellbench.cli.")
    ]
    assert offenders == []


def _task_literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and node.value in TASK_NAMES:
        return node.value
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            if isinstance(item, ast.Constant) and item.value in TASK_NAMES:
                return item.value
    return None


def task_name_comparisons(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each comparison of something with a task name literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                name = _task_literal(side)
                if name:
                    found.append((node.lineno, name))
        elif isinstance(node, ast.match_case):
            for pattern in ast.walk(node.pattern):
                if isinstance(pattern, ast.MatchValue) and _task_literal(pattern.value):
                    found.append((pattern.lineno, pattern.value.value))
    return found


def test_no_task_name_comparison_outside_the_task_packages():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tasks" and len(rel.parts) > 2 and rel.parts[1] in TASK_NAMES:
            continue  # a task may name itself
        for line, name in task_name_comparisons(ast.parse(path.read_text(), str(path))):
            offenders.append(f"cellbench/{rel.as_posix()}:{line} compares with '{name}'")
    assert offenders == []


def test_the_comparison_finder_sees_each_form():
    source = (
        "a = t == 'nuclei'\nb = 'organ' != t\nc = t in ('x', 'classify')\n"
        "match t:\n    case 'nuclei':\n        pass\nd = {'nuclei': 1}\n"
    )
    lines = [line for line, _ in task_name_comparisons(ast.parse(source))]
    assert lines == [1, 2, 3, 5]
