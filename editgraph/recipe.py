"""Recipes: Python files that define ``recipe(...) -> eg.Graph`` with typed parameters."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import ValidationError, create_model

from .errors import GraphError, RecipeError
from .graph import Graph
from .sources import source_root

__all__ = ["build_recipe", "load_recipe", "recipe_parameters"]


def load_recipe(path: str | Path) -> types.ModuleType:
    """Import the recipe file at ``path``; RecipeError naming the file when it fails."""
    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"recipe {str(file)!r}: no such file")
    name = f"editgraph_recipe_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RecipeError(f"recipe {str(file)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: dataclasses and pydantic models in the recipe look their
    # module up in sys.modules. The newest load of a recipe replaces any earlier one.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise RecipeError(
            f"recipe {str(file)!r}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported as such
        sys.modules.pop(name, None)
        raise RecipeError(
            f"recipe {str(file)!r}: failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(getattr(module, "recipe", None)):
        sys.modules.pop(name, None)
        raise RecipeError(f"recipe {str(file)!r}: defines no recipe(...) function")
    return module


def recipe_parameters(module: types.ModuleType) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of a recipe's keyword parameters."""
    function = module.recipe
    hints = get_type_hints(function)
    parameters = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default if parameter.default is not inspect.Parameter.empty else ...
        parameters[name] = (hints.get(name, Any), default)
    return parameters


def build_recipe(path: str | Path, settings: dict[str, str] | None = None) -> Graph:
    """Import the recipe at ``path``, check ``settings`` against its type hints, build it.

    Relative source paths in the recipe resolve against the recipe's own folder.
    """
    file = Path(path)
    module = load_recipe(file)
    parameters = recipe_parameters(module)
    settings = settings or {}
    unknown = sorted(set(settings) - set(parameters))
    if unknown:
        known = ", ".join(parameters) or "none"
        raise RecipeError(
            f"recipe {str(file)!r}: --set {unknown[0]}: unknown parameter; it takes: {known}"
        )
    model = create_model(f"{file.stem}_parameters", **parameters)  # type: ignore[call-overload]
    try:
        values = model.model_validate(settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            raise RecipeError(
                f"recipe {str(file)!r}: parameter {field!r} has no default; pass "
                f"--set {field}=VALUE"
            ) from None
        raise RecipeError(
            f"recipe {str(file)!r}: --set {field}={settings.get(field, '')}: {error['msg']}"
        ) from None
    token = source_root.set(file.resolve().parent)
    try:
        graph = module.recipe(**dict(values))
    except GraphError as exc:
        raise RecipeError(f"recipe {str(file)!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported as such
        raise RecipeError(
            f"recipe {str(file)!r}: recipe() raised {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        source_root.reset(token)
    if not isinstance(graph, Graph):
        raise RecipeError(
            f"recipe {str(file)!r}: recipe() must return an eg.Graph, got {type(graph).__name__}"
        )
    return graph
