"""The ``editgraph`` command: run and plan recipes.

Exit codes: 0 all done; 1 some edits failed (finished ones are saved); 2 bad input
(recipe, ``--set`` value, graph, budget), reported before any spend in one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from .errors import BudgetError, EditGraphError, GraphError, RunError, StoreError
from .graph import Graph
from .providers.base import Provider
from .recipe import build_recipe
from .runs import Run

__all__ = ["main"]

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            _fail(f"--set {pair!r}: expected NAME=VALUE, e.g. --set colour=#2E4057")
        settings[name.strip()] = value
    return settings


def _provider(name: str | None) -> Provider | None:
    if name is None:
        return None
    if name == "preview":
        from .providers.preview import Preview

        return Preview()
    from .providers.together import Together

    try:
        return Together()
    except EditGraphError as exc:  # no key: bad input, reported before anything runs
        _fail(f"--provider together: {exc}")


def _load(recipe: str, sets: tuple[str, ...]) -> Graph:
    try:
        return build_recipe(recipe, _settings(sets))
    except GraphError as exc:
        _fail(str(exc))


_recipe_argument = click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
_set_option = click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE",
    help="Set a recipe parameter (checked against its type hint). Repeatable.",
)
_provider_option = click.option(
    "--provider", type=click.Choice(["together", "preview"]), default=None,
    help="Where edits run. Default: together when TOGETHER_API_KEY is set, else preview.",
)
_cache_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=str), default=None,
    envvar="EDITGRAPH_CACHE_DIR", show_envvar=True,
    help="Cache directory (default: the platform's user cache directory).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="editgraph")
def main() -> None:
    """Multi-step image editing with FLUX.2, as a cached graph of edits.

    A recipe is a Python file defining recipe(...) -> eg.Graph. Start with

        editgraph plan recipes/recolour.py    # what would run, why, and the cost

        editgraph run recipes/recolour.py     # run it; images land in out/recolour/

    Without TOGETHER_API_KEY, runs use the free offline preview provider.
    """
    # The command prints its own notices; keep the library's log line from doubling them.
    library_log = logging.getLogger("editgraph")
    if not any(isinstance(handler, logging.NullHandler) for handler in library_log.handlers):
        library_log.addHandler(logging.NullHandler())


@main.command()
@_recipe_argument
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write images and manifest.json [default: out/<recipe name>/].")
@_set_option
@_provider_option
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Edits generating at once [default: 8].")
@click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="Refuse to start if the estimate exceeds USD; never spend past it.")
@click.option("--cache-only", is_flag=True,
              help="Serve every edit from the cache; a miss is an error (for demos and CI).")
@_cache_option
def run(recipe: str, out_dir: Path | None, sets: tuple[str, ...], provider: str | None,
        concurrency: int | None, budget: float | None, cache_only: bool,
        cache_dir: str | None) -> None:
    """Run RECIPE: generate what is not cached, write one image per edit."""
    graph = _load(recipe, sets)
    out_dir = out_dir or Path("out") / Path(recipe).stem
    chosen = _provider(provider)
    try:
        if cache_only:
            plan = graph.plan(provider=chosen, cache_dir=cache_dir)
            if plan.to_run:
                _fail(f"--cache-only: edit {plan.to_run[0]!r} is not in the cache "
                      f"({len(plan.to_run)} edit(s) missing); run without --cache-only first")
        result = graph.run(provider=chosen, cache_dir=cache_dir, concurrency=concurrency,
                           budget=budget, cache_only=cache_only)
    except RunError as exc:
        partial = exc.run if isinstance(exc.run, Run) else None
        if partial is not None:
            _save(partial, out_dir)
            _summary(partial, out_dir)
        for name, error in exc.failures.items():
            _err.print(f"[red]failed[/] {name}: {error}", markup=True, soft_wrap=True)
        sys.exit(1)
    except (BudgetError, GraphError, StoreError) as exc:
        _fail(str(exc))
    except EditGraphError as exc:
        _fail(str(exc), code=1)
    _save(result, out_dir)
    _summary(result, out_dir)


def _save(result: Run, out_dir: Path) -> None:
    try:
        result.save(out_dir)
    except OSError as exc:
        _fail(f"--out {out_dir}: cannot write the images ({exc.strerror or exc}); every "
              "result is in the cache, so run again with another --out", code=1)


def _summary(result: Run, out_dir: Path) -> None:
    manifest = result.manifest
    if manifest.notice:
        _out.print(f"note: {manifest.notice}", soft_wrap=True)
    parts = [f"{manifest.edits_run} run", f"{manifest.edits_cached} cached"]
    if result.failures:
        parts.append(f"{len(result.failures)} failed")
    _out.print(
        f"{len(result) + len(result.failures)} edits: {', '.join(parts)} · estimated spend "
        f"${manifest.estimated_cost:.2f} · wrote {out_dir}/ ({len(result)} images + manifest.json)",
        soft_wrap=True,
    )
    if manifest.possibly_billed_twice:
        _out.print(
            "possibly billed twice (an answer was lost and the request re-sent): "
            + ", ".join(manifest.possibly_billed_twice),
            soft_wrap=True,
        )


@main.command()
@_recipe_argument
@_set_option
@_provider_option
@_cache_option
def plan(recipe: str, sets: tuple[str, ...], provider: str | None, cache_dir: str | None) -> None:
    """Show what running RECIPE would do and cost; spends nothing."""
    graph = _load(recipe, sets)
    try:
        result = graph.plan(provider=_provider(provider), cache_dir=cache_dir)
    except EditGraphError as exc:
        _fail(str(exc))
    from rich.table import Table

    table = Table(show_lines=False, box=None, pad_edge=False)
    for column in ("edit", "state", "cost", "prompt / references / why"):
        table.add_column(column, overflow="fold")
    for step in result.steps:
        details: list[Any] = [step.prompt]
        if step.references:
            details.append("refs: " + ", ".join(step.references))
        if step.cached and step.made_at is not None:
            import datetime

            made = datetime.datetime.fromtimestamp(step.made_at).strftime("%Y-%m-%d %H:%M")
            state = f"cached ({made})"
        else:
            state = "to run"
        if step.reason:
            details.append(f"why: {step.reason}")
        cost = "$0" if step.cached else f"${step.estimated_cost:.4f}"
        table.add_row(step.name, state, cost, "\n".join(details))
    _out.print(table)
    _out.print(
        f"{len(result.to_run)} to run, {len(result.cached)} cached · estimated "
        f"${result.estimated_cost:.4f} with provider {result.provider}",
        soft_wrap=True,
    )
