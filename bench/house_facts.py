"""Facts about the source tree anyone can re-check (issue #28): long files, long functions,
import circles and upward imports.

    python bench/house_facts.py

prints, for ``src/imseg``:

* files over 500 lines;
* functions (and methods) over 80 lines, from the syntax tree (``def`` line to last line);
* import circles: groups of modules that import each other, counting every import
  (also those inside a function);
* upward imports as ``tests/test_layers.py`` finds them (its layers, its reading of
  imports), each marked ``inside a function`` or ``module level``, and the exceptions
  that test still needs.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "imseg"
LONG_FILE = 500
LONG_FUNCTION = 80


def layers_test():
    """``tests/test_layers.py`` as a module: one reading of imports and layers, not two."""
    spec = importlib.util.spec_from_file_location("test_layers", ROOT / "tests" / "test_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def name_of(path: Path) -> str:
    return str(path.relative_to(ROOT))


def long_files() -> list[tuple[str, int]]:
    """``(file, lines)`` of the files over :data:`LONG_FILE` lines, longest first."""
    counts = [(name_of(p), len(p.read_text().splitlines())) for p in sources()]
    return sorted(((f, n) for f, n in counts if n > LONG_FILE), key=lambda fn: -fn[1])


def long_functions() -> list[tuple[str, int]]:
    """``(file:line qualified name, lines)`` of the functions over :data:`LONG_FUNCTION` lines."""
    found = []
    for path in sources():
        found.extend((f"{name_of(path)}:{line} {name}", n)
                     for name, line, n in _functions(ast.parse(path.read_text()))
                     if n > LONG_FUNCTION)
    return sorted(found, key=lambda fn: -fn[1])


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, first line, lines)`` of every function, methods and nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node.lineno, node.end_lineno - node.lineno + 1
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _functions(node, f"{prefix}{node.name}.")


def circles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _module_edges(found: list[tuple[str, str, int, bool]]) -> set[tuple[str, str]]:
    """Import edges between modules; importing a package counts as importing its
    ``__init__`` (``models`` → ``models.__init__``)."""
    packages = {".".join(p.relative_to(SRC).parent.parts) for p in SRC.rglob("__init__.py")}
    return {(m, f"{t}.__init__" if t in packages else t) for m, t, _, _ in found}


def main() -> None:
    layers = layers_test()
    found = layers.imports()
    print(f"files over {LONG_FILE} lines:")
    for name, n in long_files():
        print(f"  {n:5d}  {name}")
    print(f"functions over {LONG_FUNCTION} lines:")
    for name, n in long_functions():
        print(f"  {n:5d}  {name}")
    print("import circles (all imports, also inside functions):")
    for group in circles(_module_edges(found)):
        print("  " + " <-> ".join(group))
    upward = [(m, t, line, lazy) for m, t, line, lazy in found
              if layers.layer_of(t) > layers.layer_of(m)]
    print("upward imports (tests/test_layers.py's layers):")
    for m, t, line, lazy in upward:
        print(f"  {m}:{line} imports {t} ({'inside a function' if lazy else 'module level'})")
    print("exceptions tests/test_layers.py still needs:")
    for a, b in sorted({(m, t) for m, t, _, _ in upward}):
        print(f"  ({a!r}, {b!r})")


if __name__ == "__main__":
    main()
