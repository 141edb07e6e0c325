"""Recipes: Python files that define ``recipe(...) -> eg.Graph`` with typed parameters."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import GraphError, RecipeError
from .graph import Graph
from .sources import source_root
from .store import DEFAULT_GRAPH

__all__ = ["Recipe", "build_recipe", "load_recipe", "recipe_from_source", "recipe_parameters"]


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
    except (Exception, SystemExit) as exc:  # any failure of user code
        sys.modules.pop(name, None)  # is reported as such, sys.exit() included
        raise RecipeError(
            f"recipe {str(file)!r}: failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(getattr(module, "recipe", None)):
        sys.modules.pop(name, None)
        raise RecipeError(f"recipe {str(file)!r}: defines no recipe(...) function")
    return module


def recipe_from_source(source: str, label: str) -> types.ModuleType:
    """Import a recipe from its source text (as a cluster worker receives it); ``label``
    names it in errors, as its file's path does for :func:`load_recipe`."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"editgraph_recipe_{Path(label).stem}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = label
    sys.modules[name] = module
    try:
        exec(compile(source, label, "exec"), module.__dict__)  # runs the recipe as an import would
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise RecipeError(
            f"recipe {label!r}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    except (Exception, SystemExit) as exc:  # any failure of user code, sys.exit() included
        sys.modules.pop(name, None)
        raise RecipeError(f"recipe {label!r}: failed to import: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(module, "recipe", None)):
        sys.modules.pop(name, None)
        raise RecipeError(f"recipe {label!r}: defines no recipe(...) function")
    return module


def recipe_parameters(function: Callable[..., Any] | types.ModuleType) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of a recipe function's keyword parameters."""
    target = function.recipe if isinstance(function, types.ModuleType) else function
    hints = get_type_hints(target)
    parameters = {}
    for name, parameter in inspect.signature(target).parameters.items():
        default = parameter.default if parameter.default is not inspect.Parameter.empty else ...
        parameters[name] = (hints.get(name, Any), default)
    return parameters


class Recipe:
    """A recipe loaded once and built as often as needed (one graph per batch item).

    ``function`` returns an ``eg.Graph``; ``label`` names it in errors; ``root`` is the
    folder its relative source paths resolve against (a recipe file's own folder);
    ``graph_name`` names the graphs it builds (unless the recipe names them), so that
    ``plan`` compares with this recipe's history only (a file's resolved path).
    """

    def __init__(
        self, function: Callable[..., Graph], *, label: str, root: Path | None = None,
        graph_name: str | None = None,
    ) -> None:
        self.function = function
        self.label = label
        self.root = root
        self.graph_name = graph_name
        #: The recipe file's text when loaded from a file: what a cluster worker builds from.
        self.source: str | None = None
        self.parameters = recipe_parameters(function)
        self._model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            "recipe_parameters",
            # nan compares false with every bound a recipe checks: refused, as inf is.
            __config__=ConfigDict(allow_inf_nan=False),
            **self.parameters,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """The recipe defined by the Python file at ``path``."""
        file = Path(path)
        module = load_recipe(file)
        loaded = cls(module.recipe, label=str(file), root=file.resolve().parent,
                     graph_name=str(file.resolve()))
        loaded.source = file.read_text(encoding="utf-8")
        return loaded

    @classmethod
    def from_source(cls, source: str, *, label: str, root: Path | None) -> Recipe:
        """The recipe defined by ``source`` (a recipe file's text), named ``label``, its
        relative source paths resolving against ``root``; its graph is named as the file's
        would be (its plan history is the same on a cluster worker as on the client)."""
        module = recipe_from_source(source, label)
        graph_name = str(root / Path(label).name) if root is not None else label
        loaded = cls(module.recipe, label=label, root=root, graph_name=graph_name)
        loaded.source = source
        return loaded

    @property
    def name(self) -> str:
        """A short name: the file's stem, or the function's name."""
        return Path(self.label).stem

    def build(self, settings: Mapping[str, Any] | None = None, *, option: str = "--set") -> Graph:
        """Check ``settings`` against the parameters' type hints, then build the graph.

        ``option`` is how the caller names a setting in errors (``--set``, or a batch
        item's column).
        """
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(self.parameters))
        if unknown:
            known = ", ".join(self.parameters) or "none"
            raise RecipeError(
                f"recipe {self.label!r}: {option} {unknown[0]}: unknown parameter; it takes: "
                f"{known}"
            )
        try:
            values = self._model.model_validate(settings)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing":
                raise RecipeError(
                    f"recipe {self.label!r}: parameter {field!r} has no default; pass "
                    f"{option} {field}=VALUE"
                ) from None
            raise RecipeError(
                f"recipe {self.label!r}: {option} {field}={settings.get(field, '')}: "
                f"{error['msg']}"
            ) from None
        token = source_root.set(self.root)
        try:
            graph = self.function(**dict(values))
        except GraphError as exc:
            raise RecipeError(f"recipe {self.label!r}: {exc}") from exc
        except (Exception, SystemExit) as exc:  # any failure of user code
            raise RecipeError(  # is reported as such: sys.exit() must not end the command
                f"recipe {self.label!r}: recipe() raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            source_root.reset(token)
        if not isinstance(graph, Graph):
            raise RecipeError(
                f"recipe {self.label!r}: recipe() must return an eg.Graph, got "
                f"{type(graph).__name__}"
            )
        if self.graph_name is not None and graph.name == DEFAULT_GRAPH:
            graph.name = self.graph_name
        return graph


def build_recipe(path: str | Path, settings: dict[str, str] | None = None) -> Graph:
    """Import the recipe at ``path``, check ``settings`` against its type hints, build it.

    Relative source paths in the recipe resolve against the recipe's own folder. The
    graph is named after the recipe's resolved path unless the recipe named it.
    """
    return Recipe.load(path).build(settings)
