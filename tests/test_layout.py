"""The package layout: module-level imports follow the one-way flow of data.

graph → prompts/keys → execute → providers → store → runs, with shared types at the
bottom (importable by all) and exploration modules (display, report, replay, saved, cli,
the testing fakes) on top: they may import the core, the core never imports them at
module level (an import inside a function, made on use, is allowed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import editgraph

PACKAGE = Path(editgraph.__file__).resolve().parent

#: The flow, left to right: a module may import modules of its own column or further right.
CHAIN: tuple[frozenset[str], ...] = (
    frozenset({"batch", "cluster"}),
    frozenset({"recipe"}),
    frozenset({"graph"}),
    frozenset({"prompts", "keys", "plan", "sources", "ops", "regions"}),
    frozenset({"execute", "progress"}),
    frozenset({"providers", "hosts"}),
    frozenset({"store", "stores"}),
    frozenset({"runs", "provenance"}),
)
#: Shared types and constants: importable by every module; they import only each other.
#: The hostile-input rules (redact, downloads, pixels, names) are shared too: one rule
#: each, used wherever text leaves, a body is read, an image's size is needed, a name is
#: declared.
SHARED = frozenset({"errors", "requests", "nodes", "models", "records", "colours", "_version",
                    "redact", "downloads", "pixels", "names"})
#: Exploration modules: they may import anything; the core never imports them at load.
EXPLORATION = frozenset({"display", "drawing", "report", "replay", "saved", "cli", "testing"})
#: Imports against the flow, each with its reason.
EXCEPTIONS = {
    # The engine computes an edit's key once its inputs' outputs are known.
    ("execute", "keys"),
}


def concept(module: str) -> str:
    """The layout concept of ``editgraph.x.y``: its first component (a package counts once)."""
    return module.split(".")[1] if module.count(".") else module


def module_level_imports(path: Path, name: str) -> set[str]:
    """The ``editgraph.*`` modules ``path`` imports at module level, outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    return {module for module in found if module.startswith("editgraph.")}


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``editgraph.providers.together``...)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def column(concept_name: str) -> int | None:
    """The position of a concept in the flow, None when it is shared or exploration."""
    return next((i for i, names in enumerate(CHAIN) if concept_name in names), None)


def test_every_module_has_a_place_in_the_layout() -> None:
    """Each module is in the flow, a shared type or an exploration module."""
    placed = set().union(*CHAIN) | SHARED | EXPLORATION | {"__init__", "__main__"}
    concepts = {concept(name) for name in package_modules() if name != "editgraph"}
    assert concepts - placed == set()


def test_module_level_imports_follow_the_flow() -> None:
    """No module-level import runs against graph → prompts/keys → execute → providers →
    store → runs, shared types import only shared types, and no core module imports an
    exploration module at load time."""
    modules = package_modules()
    loaded = set(modules)
    wrong = []
    for name, path in modules.items():
        if name in ("editgraph", "editgraph.__main__"):
            continue  # the root only re-exports; __main__ runs the command
        importer = concept(name)
        for imported in module_level_imports(path, name):
            if imported not in loaded:
                continue  # ``from .x import name``: the name, not a module
            target = concept(imported)
            if target in ("", importer) or imported == "editgraph":
                continue
            if importer in EXPLORATION:
                continue
            if target in EXPLORATION:
                wrong.append(f"{name} imports exploration module {imported}")
            elif importer in SHARED:
                if target not in SHARED:
                    wrong.append(f"shared {name} imports {imported}")
            elif target not in SHARED and (importer, target) not in EXCEPTIONS:
                source_column, target_column = column(importer), column(target)
                assert source_column is not None and target_column is not None
                if target_column < source_column:
                    wrong.append(f"{name} imports {imported}, against the flow")
    assert wrong == []


def test_the_check_sees_imports() -> None:
    """The AST walk finds relative imports (so the layout test cannot pass vacuously)."""
    found = module_level_imports(PACKAGE / "execute.py", "editgraph.execute")
    assert {"editgraph.store", "editgraph.nodes", "editgraph.runs"} <= found
    assert not any(concept(name) in EXPLORATION for name in found)
