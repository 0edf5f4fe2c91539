"""Lower layers never import the orchestration above them (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "imseg"

LAYERS: list[tuple[str, ...]] = [
    ("errors", "runtime", "storage", "csvrows", "results", "logs", "config", "parts", "tasks",
     "models.names"),
    ("data", "evaluation.metrics", "evaluation.hela"),
    ("models",),
    ("training",),
    ("pseudo",),
    ("evalnet",),
    ("evaluation",),
    ("experiment",),
    ("commands", "cli", "predict", "export", "active", "__main__", "__init__"),
]
"""Bottom first; a module may import its own layer and those below."""

EXCEPTIONS: set[tuple[str, str]] = set()
"""Known upward imports ``(module, imported module)``, each inside a function, with a reason
in docs/architecture.md; none today: fix the layering rather than add one."""


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix (``evaluation.metrics`` before ``evaluation``)."""
    best = max(((len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def imports() -> list[tuple[str, str, int, bool]]:
    """``(module, imported imseg module, line, inside a function)`` for every import."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                                  ast.AsyncFunctionDef))
                  for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imseg."):
                targets = [_submodule(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("imseg.")]
            else:
                continue
            found.extend((module, t[len("imseg."):], node.lineno, id(node) in nested)
                         for t in targets)
    return found


def _submodule(package: str, name: str) -> str:
    """``imseg.models`` + ``encoders`` → ``imseg.models.encoders`` (a module), else the
    package itself (``name`` is something it defines)."""
    path = SRC.joinpath(*package.split(".")[1:], name)
    is_module = path.with_suffix(".py").is_file() or path.is_dir()
    return f"{package}.{name}" if is_module else package


def test_no_module_imports_a_layer_above_its_own():
    upward = [(m, t, line, lazy) for m, t, line, lazy in imports()
              if layer_of(t) > layer_of(m)]
    unexpected = [f"{m}:{line} imports {t}" for m, t, line, _ in upward
                  if not any(m == a and (t == b or t.startswith(b + ".")) for a, b in EXCEPTIONS)]
    assert not unexpected
    assert all(lazy for *_, lazy in upward), "a known upward import moved to module level"
    # every listed exception still exists (else remove it here and in the docs)
    assert {(a, b) for a, b in EXCEPTIONS} == {
        (a, b) for a, b in EXCEPTIONS for m, t, *_ in upward
        if m == a and (t == b or t.startswith(b + "."))}
