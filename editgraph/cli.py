"""The ``editgraph`` command: run, plan and show recipes; keep the cache; report and replay.

Exit codes: 0 all done; 1 some edits failed (finished ones are saved); 2 bad input
(recipe, ``--set`` value, graph, budget), reported before any spend in one line; 130 / 143
a run stopped by SIGINT / SIGTERM (what finished is saved).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import re
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

from .errors import (
    BudgetError,
    ConfigurationError,
    EditGraphError,
    GraphError,
    ProvenanceError,
    RunError,
    RunInterrupted,
    StoreError,
)
from .providers import registry as providers
from .redact import for_terminal

# Everything else a subcommand needs is imported inside it, so that ``--help``,
# ``--version`` and a mistyped command load only click, rich and the names above.
if TYPE_CHECKING:
    from .batch import BatchItem
    from .graph import Graph
    from .nodes import EditNode
    from .providers.base import Provider
    from .records import EditRecord
    from .requests import Submission
    from .runs import Run
    from .store import DiskStore
    from .stores.absent import AbsentStore
    from .stores.s3 import S3Store

__all__ = ["main"]


class _TerminalConsole(Console):
    """A rich Console whose every printed text passes through ``for_terminal``.

    Prompts, node names, manifests and the service's messages may carry escape
    sequences; here they are shown as text, and secrets are masked, whatever renders
    them (plain strings, ``Text``, table cells). rich's own styling is untouched.
    """

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        """The segments rich would write, with their text made safe for a terminal."""
        for segment in super().render(renderable, options):
            if segment.control is None and segment.text:
                yield Segment(for_terminal(segment.text), segment.style)
            else:
                yield segment


# Markup off: prompts, paths and error messages are printed as they are, never parsed
# as rich markup (a prompt may well say "[logo]").
_out = _TerminalConsole(highlight=False, markup=False)
_err = _TerminalConsole(stderr=True, highlight=False, markup=False)


class _ConsoleLogHandler(logging.Handler):
    """Shows the ``editgraph`` logger's records on stderr (``editgraph --verbose``)."""

    def emit(self, record: logging.LogRecord) -> None:
        _err.print(Text.assemble((f"{record.levelname.lower()}:", "dim"), " ",
                                 self.format(record)), soft_wrap=True)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


# ---------------------------------------------------------------------------- helpers


class _Notices(logging.Handler):
    """Prints a library notice on stderr, as one line."""

    def emit(self, record: logging.LogRecord) -> None:
        _err.print(record.getMessage(), soft_wrap=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    sys.exit(code)


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            _fail(f"--set {pair!r}: expected NAME=VALUE, e.g. --set colour=#2E4057")
        if name.strip() in settings and settings[name.strip()] != value:
            _fail(f"--set {name.strip()}: given twice ({settings[name.strip()]!r} and "
                  f"{value!r}); pass it once")
        settings[name.strip()] = value
    return settings


def _provider(name: str | None) -> Provider | None:
    if name is None:
        return None
    try:
        return providers.by_name(name)
    except ConfigurationError as exc:  # no key: bad input, reported before anything runs
        _fail(f"--provider {name}: {exc}")


def _load(recipe: str, sets: tuple[str, ...]) -> Graph:
    from .recipe import build_recipe

    try:
        return build_recipe(recipe, _settings(sets))
    except GraphError as exc:
        _fail(str(exc))


def _open_store(cache_dir: str | None, *, create: bool = True
                ) -> DiskStore | S3Store | AbsentStore:
    """The store at --cache; ``create=False`` (the cache commands, which only read or
    remove) reads a missing folder as an empty cache instead of making it."""
    from .store import DiskStore
    from .stores.absent import AbsentStore
    from .stores.base import open_store
    from .stores.s3 import S3Store

    try:
        store = open_store(cache_dir, create=create)
    except StoreError as exc:
        _fail(str(exc))
    assert isinstance(store, (DiskStore, S3Store, AbsentStore))
    return store


def _provider_with_host(name: str | None, image_host: str | None) -> Provider | None:
    """The provider named (or the default one), sending references through ``image_host``."""
    if image_host is None:
        return _provider(name)
    from .hosts import S3ImageHost

    try:
        host = S3ImageHost(image_host)
    except StoreError as exc:
        _fail(f"--image-host: {exc}")
    chosen = name if name is not None else providers.default_provider()[0].name
    try:
        return providers.by_name(chosen, image_host=host)
    except ConfigurationError as exc:
        _fail(f"--provider {chosen}: {exc}")
    except TypeError:
        _fail(f"--image-host: provider {chosen!r} sends no reference URLs; drop --image-host "
              "or pick a hosted provider with --provider")


def _human_bytes(size: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as ``--max-size`` reads them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _parse_duration(text: str) -> float:
    """``'30d'`` -> seconds; units s, m, h, d, w. ValueError when unreadable."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return float(match[1]) * _SECONDS[match[2].lower()]


def _parse_size(text: str) -> int:
    """``'500MB'`` -> bytes; units B, KB, MB, GB, TB (powers of 1000). ValueError when unreadable."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return int(float(match[1]) * _BYTES[(match[2] or "b").lower()])


def _age(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length:.0f} {unit} ago"
    return "just now"


def _when(timestamp: float) -> str:
    made = datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
    return f"{made} ({_age(timestamp)})"


class _Budget(click.FloatRange):
    """USD, at least 0: ``nan`` is refused (it compares false with every cost, so it would
    be no limit for ``run`` and skip every item of a batch)."""

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        converted: float = super().convert(value, param, ctx)
        if math.isnan(converted):
            self.fail(f"{value!r} is not a number of USD", param, ctx)
        return converted


def _plural(count: int, word: str) -> str:
    if word.endswith("y") and count != 1:
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------- options

_recipe_argument = click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
_set_option = click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE",
    help="Set a recipe parameter (checked against its type hint). Repeatable.",
)
_provider_option = click.option(
    "--provider", type=click.Choice(providers.names()), default=None,
    help="Where edits run. Default: together when TOGETHER_API_KEY is set, else bfl when "
         "BFL_API_KEY is set, else preview.",
)
_cache_option = click.option(
    "--cache", "--cache-dir", "cache_dir", metavar="DIR|s3://BUCKET/PREFIX", default=None,
    envvar="EDITGRAPH_CACHE_DIR", show_envvar=True,
    help="Cache: a folder, or s3://BUCKET/PREFIX shared by a team (endpoint and keys from "
         "the AWS_* variables) [default: the platform's user cache directory].",
)
_image_host_option = click.option(
    "--image-host", metavar="s3://BUCKET/PREFIX", default=None,
    help="Upload local reference images here once per content hash and send presigned "
         "URLs (for a service that takes only URLs) [default: inline data: URIs].",
)


class _Ordered(click.Group):
    """Lists commands in the order of the workflow, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Ordered, context_settings=_CONTEXT)
@click.version_option(package_name="editgraph")
@click.option("--verbose", "-v", is_flag=True,
              help="Show what happens under the hood: retries, waits, notices.")
def main(verbose: bool) -> None:
    """Multi-step image editing with FLUX.2, as a cached graph of edits.

    A recipe is a Python file that defines recipe(...) -> eg.Graph. Each edit is one
    FLUX.2 call whose reference images are sources and earlier edits; every result is
    cached by content hash, so changing one step re-runs only that step and what
    depends on it.

    \b
    A session:
      editgraph show recipes/recolour.py        # the graph: sources, edits, "image N"
      editgraph plan recipes/recolour.py        # what would run, why, and the cost
      editgraph run recipes/recolour.py         # images + manifest.json in out/recolour/
      editgraph run recipes/recolour.py --set colour=#8B0000   # re-runs what changed
      editgraph report out/recolour             # an HTML page of the saved run
      editgraph batch recipes/catalogue.py --over examples/catalogue/   # one per input
      editgraph cache info                      # what the cache holds and has saved

    With TOGETHER_API_KEY runs use Together, else with BFL_API_KEY BFL (BFL_BASE_URL
    optional), else the free offline Preview provider. The cache is
    in $EDITGRAPH_CACHE_DIR, else the platform's user cache directory.

    Exit codes: 0 done; 1 some edits failed (the finished ones are saved); 2 bad input,
    reported in one line before anything is spent.
    """
    # The command prints its own notices; keep the library's log line from doubling them,
    # unless --verbose asks for every record (retries included) on stderr.
    library_log = logging.getLogger("editgraph")
    for handler in list(library_log.handlers):
        if isinstance(handler, (logging.NullHandler, _ConsoleLogHandler)):
            library_log.removeHandler(handler)
    if verbose:
        library_log.addHandler(_ConsoleLogHandler())
        library_log.setLevel(logging.INFO)
    else:
        library_log.addHandler(logging.NullHandler())
        library_log.setLevel(logging.NOTSET)
    # ... and the notices of an interrupt (draining, abandoning), about a source (an
    # animated image sent as its first frame) or a wait for the cache, as they happen.
    for notices in ("editgraph.interrupt", "editgraph.sources", "editgraph.store"):
        notice_log = logging.getLogger(notices)
        notice_log.propagate = False  # shown once, also with --verbose
        if not any(isinstance(handler, _Notices) for handler in notice_log.handlers):
            notice_log.addHandler(_Notices())


# ---------------------------------------------------------------------------- run


@main.command()
@_recipe_argument
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write images and manifest.json [default: out/<recipe name>/].")
@_set_option
@_provider_option
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Edits generating at once [default: 8].")
@click.option("--budget", type=_Budget(), default=None, metavar="USD",
              help="Refuse to start if the estimate exceeds USD; never spend past it.")
@click.option("--cache-only", is_flag=True,
              help="Serve every edit from the cache; a miss is an error (for demos and CI).")
@_cache_option
@_image_host_option
def run(recipe: str, out_dir: Path | None, sets: tuple[str, ...], provider: str | None,
        concurrency: int | None, budget: float | None, cache_only: bool,
        cache_dir: str | None, image_host: str | None) -> None:
    """Run RECIPE: generate what is not cached, write one image per edit.

    Edits start as soon as their inputs are ready; independent ones run at once. Each
    image is written to --out, named after its edit, next to manifest.json (the
    reproducible record of the run). On a terminal a progress bar shows while it works.

    \b
    Examples:
      editgraph run recipes/recolour.py
      editgraph run recipes/recolour.py --set colour=#8B0000 --out out/red
      editgraph run recipes/recolour.py --budget 0.50     # never spend more than $0.50
      editgraph run recipes/recolour.py --cache-only      # CI: fail on any cache miss

    Ctrl-C (or SIGTERM) lets the edits in flight finish, saves what finished and says
    what did not start; Ctrl-C again abandons at once.

    Exit codes: 0 all done; 1 some edits failed (the finished ones are saved); 2 bad
    input (recipe, --set, graph, over budget), before anything is spent; 130 / 143
    stopped by Ctrl-C / SIGTERM (run again to continue).
    """
    graph = _load(recipe, sets)
    out_dir = out_dir or Path("out") / Path(recipe).stem
    chosen = _provider_with_host(provider, image_host)
    try:
        if cache_only:
            missing = graph.plan(provider=chosen, cache_dir=cache_dir).to_run
            if missing:
                _fail(f"--cache-only: edit {missing[0]!r} is not in the cache "
                      f"({_plural(len(missing), 'edit')} missing); run without --cache-only first")
        result = graph.run(provider=chosen, cache_dir=cache_dir, concurrency=concurrency,
                           budget=budget, cache_only=cache_only, progress=_out.is_terminal)
    except RunError as exc:
        if exc.run is not None:
            _save(exc.run, out_dir)
            _summary(exc.run, out_dir)
        for name, error in exc.failures.items():
            _err.print(Text.assemble(("failed", "red"), f" {name}: {error}"), soft_wrap=True)
        sys.exit(1)
    except RunInterrupted as exc:
        _interrupted(exc, out_dir)
    except (BudgetError, ConfigurationError, GraphError, StoreError) as exc:
        _fail(str(exc))
    except EditGraphError as exc:
        _fail(str(exc), code=1)
    _save(result, out_dir)
    _summary(result, out_dir)


def _interrupted(interrupt: RunInterrupted, out_dir: Path) -> NoReturn:
    """After SIGINT/SIGTERM: save what finished and say what did not; exit 128 + signal."""
    from .runs import Run

    stopped = interrupt.run
    code = 128 + interrupt.signal_number
    if not isinstance(stopped, Run):
        sys.exit(code)
    if stopped.abandoned:
        _err.print(f"abandoned: {', '.join(stopped.in_flight) or 'no edit'} was in flight and "
                   "may have been billed without a result; finished edits are cached: run "
                   "again to continue", soft_wrap=True)
        sys.exit(code)
    _save(stopped, out_dir)
    _summary(stopped, out_dir)
    finished = [name for name in stopped if name not in stopped.in_flight]
    in_flight_done = [name for name in stopped.in_flight if name in stopped]
    _out.print(f"interrupted: {len(finished)} finished before it, {len(in_flight_done)} in "
               f"flight and finished ({', '.join(in_flight_done) or 'none'}), "
               f"{len(stopped.not_run)} did not start "
               f"({', '.join(stopped.not_run) or 'none'}); run again to continue",
               soft_wrap=True)
    sys.exit(code)


def _save(result: Run, out_dir: Path) -> None:
    try:
        result.save(out_dir)
    except OSError as exc:
        _fail(f"--out {out_dir}: cannot write the images ({exc.strerror or exc}); every "
              "result is in the cache, so run again with another --out", code=1)
    except StoreError as exc:  # an image damaged in the cache since the run read it
        _fail(f"--out {out_dir}: {exc}", code=1)


def _summary(result: Run, out_dir: Path) -> None:
    manifest = result.manifest
    if manifest.notice:
        _out.print(f"note: {manifest.notice}", soft_wrap=True)
    width = max((len(entry.file) for entry in manifest.finished_edits), default=0)
    for entry in manifest.finished_edits:
        if entry.cached:
            line = Text.assemble(("  cached    ", "green"), entry.file)
        else:
            line = Text.assemble(("  generated ", "cyan"), entry.file.ljust(width),
                                 (f"  {entry.record.elapsed:5.1f}s  ${entry.estimated_cost:.4f}", "dim"))
        _out.print(line, soft_wrap=True)
    parts = [f"{manifest.edits_run} run", f"{manifest.edits_cached} cached"]
    if result.failures:
        parts.append(f"{len(result.failures)} failed")
    total = len(result) + len(result.failures)
    operations = sum(entry.record.kind == "op" for entry in manifest.finished_edits)
    counted = (f"{_plural(total - operations, 'edit')} and {_plural(operations, 'op')}"
               if operations else _plural(total, "edit"))
    spend = (f"cost ${manifest.estimated_cost:.2f} as charged"
             if any(entry.record.charged for entry in manifest.finished_edits if not entry.cached)
             else f"estimated cost ${manifest.estimated_cost:.2f}")
    _out.print(
        f"{counted}: {', '.join(parts)} · {spend} · wrote {out_dir}/ "
        f"({_plural(len(result), 'image')} + manifest.json)",
        soft_wrap=True,
    )
    # A finished edit with an unknown outcome may have been paid twice; a failed edit that
    # may have been billed (an answer lost, or a result withheld after generating) got
    # no image for what it may have cost: each said as it is.
    unfinished = set(result.failures)
    twice = [name for name in manifest.possibly_billed_twice if name not in unfinished]
    lost = [name for name in manifest.possibly_billed_twice if name in unfinished]
    _say_possibly_billed(twice, lost)
    for name, reason in result.uncached.items():
        _out.print(f"not cached: {name} ({reason}); its image is in {out_dir}/, and a later "
                   "run will generate it again", soft_wrap=True)
    if result.repaired:
        _out.print(f"cache repaired: {_plural(result.repaired, 'entry')} (damaged records "
                   "or images removed; their edits ran again)", soft_wrap=True)
    _billed_not_delivered(manifest.billed_not_delivered)



def _say_possibly_billed(twice: list[str], lost: list[str]) -> None:
    """Name the edits maybe paid twice, and those maybe paid with no image delivered."""
    if twice:
        _out.print("possibly billed twice (an answer was lost and the request re-sent): "
                   + ", ".join(twice), soft_wrap=True)
    if lost:
        _out.print("possibly billed, no image delivered (see the error): " + ", ".join(lost),
                   soft_wrap=True)

def _billed_not_delivered(submissions: Sequence[Submission]) -> None:
    for submission in submissions:
        cost = f"${submission.cost:.4f}" if submission.cost is not None else "cost unknown"
        _out.print(
            f"billed, not delivered: {submission.node} (task {submission.task_id}, {cost}; "
            "its result expired before it could be collected)",
            soft_wrap=True,
        )


# ---------------------------------------------------------------------------- resume


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With RECIPE: where to write images and manifest.json "
              "[default: out/<recipe name>/].")
@_set_option
@_provider_option
@_cache_option
def resume(recipe: str | None, out_dir: Path | None, sets: tuple[str, ...],
           provider: str | None, cache_dir: str | None) -> None:
    """Collect the paid tasks of an interrupted run; start nothing new.

    Providers that submit and poll (BFL) journal every task before polling it. resume
    polls those tasks and stores their results; with RECIPE it also writes the recipe's
    images (edits without a journaled task are left for `editgraph run`). A task whose
    result expired is reported "billed, not delivered".

    \b
    Examples:
      editgraph resume recipes/recolour.py     # after a crash: collect, then write out/
      editgraph resume                         # every journaled task in the cache

    Exit codes: 0 every journaled task found was delivered; 1 otherwise; 2 bad input.
    """
    from .runs import Run

    chosen = _provider(provider)
    if recipe is None:
        _resume_journal(chosen, cache_dir)
        return
    graph = _load(recipe, sets)
    out_dir = out_dir or Path("out") / Path(recipe).stem
    try:
        result = graph.run(provider=chosen, cache_dir=cache_dir, journaled_only=True,
                           progress=_out.is_terminal)
    except RunError as exc:
        if not isinstance(exc.run, Run):
            _fail(str(exc), code=1)
        result = exc.run
    except (BudgetError, ConfigurationError, GraphError, StoreError) as exc:
        _fail(str(exc))
    except EditGraphError as exc:
        _fail(str(exc), code=1)
    undelivered = [name for name in result.resumed if name not in result]
    for name in undelivered:
        _err.print(Text.assemble(("failed", "red"), f" {name}: {result.failures[name]}"),
                   soft_wrap=True)
    _save(result, out_dir)
    collected = sorted(name for name in result.resumed if name in result)
    _out.print(f"resumed {_plural(len(result.resumed), 'journaled task')}: "
               f"{len(collected)} delivered" + (f" ({', '.join(collected)})" if collected else "")
               + f" · wrote {out_dir}/", soft_wrap=True)
    _billed_not_delivered(result.billed_not_delivered)
    if undelivered or result.billed_not_delivered:
        sys.exit(1)


def _resume_journal(chosen: Provider | None, cache_dir: str | None) -> None:
    from .execute import resume_journal, run_sync

    try:
        provider = chosen if chosen is not None else providers.default_provider()[0]
        outcome = run_sync(resume_journal(provider, _open_store(cache_dir)))
    except (ConfigurationError, StoreError) as exc:
        _fail(str(exc))
    for name, error in outcome.failures.items():
        _err.print(Text.assemble(("failed", "red"), f" {name}: {error}"), soft_wrap=True)
    found = len(outcome.delivered) + len(outcome.failures)
    _out.print(f"resumed {_plural(found, 'journaled task')}: {len(outcome.delivered)} delivered"
               + (f" ({', '.join(outcome.delivered)})" if outcome.delivered else "")
               + "; run the recipe to write its images (they are in the cache)",
               soft_wrap=True)
    if outcome.skipped:
        _out.print(f"left for another provider: {', '.join(outcome.skipped)}", soft_wrap=True)
    _billed_not_delivered(outcome.billed_not_delivered)
    if outcome.failures or outcome.billed_not_delivered:
        sys.exit(1)


# ---------------------------------------------------------------------------- plan


@main.command()
@_recipe_argument
@_set_option
@_provider_option
@_cache_option
@click.option("--over", "over", metavar="PATH|GLOB|CSV|JSONL", default=None,
              help="Plan a batch: RECIPE once per input (see `editgraph batch`).")
@click.option("--param", default=None, metavar="NAME",
              help="With --over: the parameter that receives each input image.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --over: plan the first N items only.")
def plan(recipe: str, sets: tuple[str, ...], provider: str | None, cache_dir: str | None,
         over: str | None, param: str | None, limit: int | None) -> None:
    """Show what running RECIPE would do and cost; spends nothing.

    Per edit: cached (at $0, with when it was made) or to run, the rewritten prompt
    exactly as it will be sent, its references as "image N = name", the estimated
    cost, and for each edit that will run why: new, or what changed since it last ran
    (the prompt, a parameter, the model, or which reference's bytes). Then a total.

    \b
    Examples:
      editgraph plan recipes/recolour.py
      editgraph plan recipes/recolour.py --set colour=#8B0000   # what would re-run?
      editgraph plan recipes/catalogue.py --over examples/catalogue/   # a whole batch
    """
    if over is not None:
        _plan_batch(recipe, over, sets, provider, cache_dir, param, limit)
        return
    graph = _load(recipe, sets)
    try:
        result = graph.plan(provider=_provider(provider), cache_dir=cache_dir)
    except EditGraphError as exc:
        _fail(str(exc))
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("edit", "state", "cost", "prompt / references / why"):
        table.add_column(column, overflow="fold")
    for step in result.steps:
        details = Text(step.prompt)
        if step.references:
            details.append("\n" + ", ".join(step.references), style="dim")
        if step.cached:
            state = Text("cached", style="green")
            cost = "$0"
            if step.made_at is not None:
                details.append(f"\nmade {_when(step.made_at)}", style="green")
        else:
            state = Text("to run", style="yellow")
            cost = f"${step.estimated_cost:.4f}"
            if step.reason:
                details.append(f"\nwhy: {step.reason}", style="yellow")
        name = Text(step.name)
        if step.kind == "op":
            name.append(" (op)", style="dim")
        table.add_row(name, state, cost, details)
    _out.print(table)
    _out.print(
        f"{len(result.to_run)} to run, {len(result.cached)} cached · estimated "
        f"${result.estimated_cost:.4f} with provider {result.provider}",
        soft_wrap=True,
    )


def _plan_batch(recipe: str, over: str, sets: tuple[str, ...], provider: str | None,
                cache_dir: str | None, param: str | None, limit: int | None) -> None:
    from .batch import plan_batch

    try:
        planned = plan_batch(recipe, over, param=param, settings=_settings(sets),
                             provider=_provider(provider), cache=cache_dir, limit=limit)
    except EditGraphError as exc:
        _fail(str(exc))
    _out.print(
        f"{_plural(planned.items, 'item')}: {planned.edits_to_run} edits to run, "
        f"{planned.edits_cached} cached · estimated ${planned.estimated_cost:.4f}",
        soft_wrap=True,
    )
    if planned.items_invalid:
        _out.print(f"{planned.items_invalid} items would fail before running:", soft_wrap=True)
        for item, error in planned.invalid.items():
            _out.print(Text.assemble(("  invalid ", "red"), f"{item}: {error}"), soft_wrap=True)


# ---------------------------------------------------------------------------- batch


@main.command()
@_recipe_argument
@click.option("--over", "over", required=True, metavar="PATH|GLOB|CSV|JSONL",
              help="The inputs: a folder of images, a glob, or a CSV / JSONL file of "
                   "parameter values (one item per row; an optional id column).")
@click.option("--param", default=None, metavar="NAME",
              help="The recipe parameter that receives each input image [default: the "
                   "only one annotated pathlib.Path].")
@_set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where items go: OUT/<item id>/, batch.jsonl, batch.html "
                   "[default: out/<recipe name>/].")
@_provider_option
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Edits generating at once, across all items.")
@click.option("--budget", type=_Budget(), default=None, metavar="USD",
              help="For the whole batch: an item starts only if its estimate fits in what "
                   "is left; the others are skipped.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run the first N items only.")
@click.option("--retry-moderated", is_flag=True,
              help="Run again the items an earlier pass recorded as moderated.")
@click.option("--cluster", default=None, metavar="ADDRESS|local[:N]",
              help="Run each item as a task on a Dask cluster: local:N starts N worker "
                   "processes here; tcp://HOST:PORT joins a running scheduler (then --cache "
                   "must be s3://...).")
@click.option("--max-inflight", type=click.IntRange(min=1), default=None, metavar="N",
              help="Provider calls at once, across all items (and all workers) "
                   "[default: --concurrency].")
@click.option("--rate", type=click.FloatRange(min=1), default=None, metavar="PER_MINUTE",
              help="Provider calls started in any rolling minute, across all workers, at "
                   "most (rounded down).")
@_cache_option
@_image_host_option
def batch(recipe: str, over: str, param: str | None, sets: tuple[str, ...],
          out_dir: Path | None, provider: str | None, concurrency: int, budget: float | None,
          limit: int | None, retry_moderated: bool, cluster: str | None,
          max_inflight: int | None, rate: float | None, cache_dir: str | None,
          image_host: str | None) -> None:
    """Run RECIPE once per input: a folder, glob, CSV or JSONL file of items.

    Each item's images and manifest.json go to OUT/<item id>/; OUT/batch.jsonl gets one
    line per finished item as it finishes, and OUT/batch.html shows every input beside
    its outputs. One failing item never stops the others. Running the same batch again
    pays nothing for finished items, retries failed ones and keeps moderated ones (unless
    --retry-moderated). Ctrl-C stops starting items and lets those in flight finish; a
    second Ctrl-C abandons them.

    \b
    Examples:
      editgraph batch recipes/catalogue.py --over examples/catalogue/
      editgraph batch recipes/catalogue.py --over 'photos/**/*.jpg' --set backdrop=#F4E1C1
      editgraph batch recipes/catalogue.py --over items.csv --budget 20

    Exit codes: 0 every item done; 1 some items failed or were moderated; 2 bad recipe or
    arguments, before anything is spent; 130/143 interrupted (what finished is kept).
    """
    from .batch import abatch, count_items
    from .providers.registry import default_provider

    chosen = _provider_with_host(provider, image_host)
    if chosen is None:
        chosen, notice = default_provider()
        if notice:
            _out.print(f"note: {notice}", soft_wrap=True)
    settings = _settings(sets)
    if cluster is not None:
        _check_cluster(cluster, cache_dir)
    total = count_items(over, limit)
    display = _BatchDisplay(total, enabled=_err.is_terminal)
    # The batch takes SIGINT/SIGTERM itself (its notices reach stderr through the
    # interrupt log): the first drains every item at the edit level, a second abandons.
    try:
        with display:
            result = asyncio.run(abatch(
                recipe, over, param=param, settings=settings, out=out_dir, provider=chosen,
                cache=cache_dir, concurrency=concurrency, budget=budget, limit=limit,
                retry_moderated=retry_moderated, progress=display,
                cluster=cluster, max_inflight=max_inflight, rate=rate,
            ))
    except (KeyboardInterrupt, asyncio.CancelledError):  # a second Ctrl-C abandoned it
        in_flight = sorted(display.in_flight)
        _err.print(f"{_plural(len(in_flight), 'item')} in flight "
                   f"({', '.join(in_flight) or 'none'}) abandoned; every finished item and "
                   "edit is kept — run again to continue", soft_wrap=True)
        sys.exit(130)
    except EditGraphError as exc:
        _fail(str(exc))
    summary = result.summary
    parts = [f"{summary.done} done", f"{summary.failed} failed"]
    if summary.moderated:
        parts.append(f"{summary.moderated} moderated")
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (budget)")
    if summary.possibly_billed_twice:
        parts.append(f"{summary.possibly_billed_twice} possibly billed twice")
    if summary.possibly_billed:
        parts.append(f"{summary.possibly_billed} possibly billed without an image")
    _out.print(
        f"{_plural(summary.items, 'item')}: {', '.join(parts)} · {summary.cached} fully cached "
        f"· estimated cost ${summary.cost:.2f} · wrote {summary.out}/ (batch.jsonl, "
        "batch.html)",
        soft_wrap=True,
    )
    twice: list[str] = []
    lost: list[str] = []
    for item in result:
        if item.status in ("failed", "moderated"):
            _err.print(Text.assemble((item.status, "red"), f" {item.id}: {item.error}"),
                       soft_wrap=True)
        twice.extend(f"{item.id}/{name}" for name in item.possibly_billed_twice)
        lost.extend(f"{item.id}/{name}" for name in item.possibly_billed)
    _say_possibly_billed(twice, lost)  # as `run` says them
    if summary.interrupted:
        _out.print(
            f"interrupted: {_plural(summary.items, 'item')} finished "
            f"({summary.in_flight - summary.unfinished} of the {summary.in_flight} in flight "
            f"among them), {summary.unfinished} stopped between edits (their finished edits "
            f"are cached and saved), {summary.not_started} did not start — run again to "
            "continue (finished items and edits are free)", soft_wrap=True)
        sys.exit(128 + (summary.signal_number or signal.SIGINT))
    sys.exit(summary.exit_code)


def _check_cluster(cluster: str, cache_dir: str | None) -> None:
    """Bad --cluster input (an unreadable address, a remote cluster with a local cache
    folder, the extra not installed) exits 2 before anything starts."""
    from .stores.base import is_s3

    try:
        from .cluster import parse_cluster
    except ImportError:
        _fail("--cluster needs Dask: pip install 'editgraph[cluster]'")
    try:
        kind, _ = parse_cluster(cluster)
    except EditGraphError as exc:
        _fail(str(exc))
    if kind == "remote" and not is_s3(cache_dir or ""):
        _fail(f"--cluster {cluster}: a remote cluster's workers cannot see this machine's "
              "cache folder; pass --cache s3://BUCKET/PREFIX (or set EDITGRAPH_CACHE_DIR to one)")


class _BatchDisplay:
    """The batch's progress in the terminal: items done/failed/left, spend and ETA."""

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.in_flight: set[str] = set()
        self._progress = Progress(
            TextColumn("items"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed · ${task.fields[spend]:.2f}"),
            TimeRemainingColumn(), console=_err, transient=True, disable=not enabled,
        )
        self._task = self._progress.add_task("items", total=total, failed=0, spend=0.0)

    def __enter__(self) -> _BatchDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def note(self, text: str) -> None:
        self._progress.console.print(text, soft_wrap=True)

    def started(self, item_id: str) -> None:
        self.in_flight.add(item_id)

    def finished(self, item: BatchItem, failed: int, spend: float) -> None:
        self.in_flight.discard(item.id)
        self._progress.update(self._task, advance=1, failed=failed, spend=spend)


# ---------------------------------------------------------------------------- show


@main.command()
@_recipe_argument
@_set_option
@click.option("--svg", is_flag=True, help="Draw the graph as SVG instead of text.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the SVG to this file instead of stdout (with --svg).")
def show(recipe: str, sets: tuple[str, ...], svg: bool, out_file: Path | None) -> None:
    """Show the graph RECIPE builds: sources, edits, their references.

    Each edit lists its references as "image N = name" (the numbering its rewritten
    prompt uses), its model and its parameters. Reads no cache and spends nothing.

    \b
    Examples:
      editgraph show recipes/recolour.py
      editgraph show recipes/recolour.py --svg > recolour.svg
      editgraph show recipes/recolour.py --svg --out recolour.svg
    """
    if out_file is not None and not svg:
        _fail("--out writes the SVG drawing; add --svg (the text view goes to stdout)")
    graph = _load(recipe, sets)
    if svg:
        from .display import dag_svg
        from .saved import write_atomically

        drawing = dag_svg(graph)
        if out_file is None:
            click.echo(for_terminal(drawing))
            return
        try:
            write_atomically(out_file, drawing.encode("utf-8"))
        except OSError as exc:
            _fail(f"--out {out_file}: cannot write ({exc.strerror or exc})", code=1)
        _out.print(f"wrote {out_file}", soft_wrap=True)
        return
    _show_text(Path(recipe), graph)


def _show_text(recipe: Path, graph: Graph) -> None:
    from rich.table import Table

    from .nodes import OpNode

    sources = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("source", "from", "type", "sha256"):
        sources.add_column(column, overflow="fold")
    for name, source in graph.sources.items():
        sources.add_row(Text(name), Text(source.source), source.media_type, source.hash[:12])
    edits = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("edit", "prompt / references / model"):
        edits.add_column(column, overflow="fold")
    for name, node in graph.edits.items():
        is_op = isinstance(node, OpNode)
        details = Text(node.description if isinstance(node, OpNode) else node.prompt)
        if node.references:
            details.append("\n" + ", ".join(
                f"{'input' if is_op else 'image'} {index} = {reference}"
                for index, reference in enumerate(node.references, 1)
            ), style="dim")
        if isinstance(node, OpNode):
            details.append(f"\nop {node.operation.name} version {node.operation.version} · "
                           "local, $0 · png", style="cyan")
        else:
            details.append(f"\n{_describe_model(node)}", style="cyan")
        edits.add_row(Text(f"{name} (op)" if is_op else name), details)
    op_count = sum(isinstance(node, OpNode) for node in graph.edits.values())
    counts = [_plural(len(graph.sources), 'source'), _plural(len(graph.edits) - op_count, 'edit')]
    if op_count:
        counts.append(_plural(op_count, "op"))
    _out.print(f"{recipe.name}: {', '.join(counts)}", soft_wrap=True)
    if graph.sources:
        _out.print()
        _out.print(sources)
    if graph.edits:
        _out.print()
        _out.print(edits)


def _describe_model(node: EditNode) -> str:
    parameters = node.parameters
    parts = [node.model.id, f"{parameters['width']}x{parameters['height']}"]
    seed = parameters.get("seed")
    parts.append(f"seed {seed}" if seed is not None else "seed from key")
    for field in ("steps", "guidance"):
        if parameters.get(field) is not None:
            parts.append(f"{field} {parameters[field]}")
    if parameters.get("prompt_upsampling"):
        parts.append("prompt upsampling on")
    parts.append(str(parameters.get("output_format", "jpeg")))
    return " · ".join(parts)


# ---------------------------------------------------------------------------- cache


@main.group(cls=_Ordered)
def cache() -> None:
    """See what the cache holds, check it, and trim or empty it.

    Every generated image is kept by content hash with a JSON record of the request
    that made it. The cache is $EDITGRAPH_CACHE_DIR, else the platform's user cache
    directory; each subcommand also takes --cache (a folder or s3://BUCKET/PREFIX).

    \b
    Examples:
      editgraph cache info
      editgraph cache prune --older-than 30d
      editgraph cache prune --max-size 500MB
      editgraph cache verify --repair
      editgraph cache clear --yes
    """


@cache.command("info")
@_cache_option
def cache_info(cache_dir: str | None) -> None:
    """Show where the cache is, what it holds, and the spend it has saved.

    \b
    Example:
      editgraph cache info
    """
    store = _open_store(cache_dir, create=False)
    try:
        stats = store.stats()
        records = list(store.records())
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    images = {record.output_hash: record.size_bytes or 0 for record in records}
    rows = [
        ("directory", stats.directory),
        ("records", f"{stats.records} (one per generated edit)"),
        ("images", f"{stats.blobs} ({_human_bytes(sum(images.values()))} of image data)"),
        ("size", f"{_human_bytes(stats.bytes)} on disk"),
        ("saved", f"${stats.saved_usd:.2f} of spend served from the cache"),
    ]
    if records:
        oldest = min(record.created_at for record in records)
        newest = max(record.created_at for record in records)
        rows.append(("made", f"{_when(oldest)} to {_when(newest)}"))
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(value))
    _out.print(table)


@cache.command("prune")
@click.option("--older-than", "older_than", metavar="AGE", default=None,
              help="Remove records made longer ago than AGE: a number and s, m, h, d or w "
                   "(e.g. 30d, 12h, 2w).")
@click.option("--max-size", "max_size", metavar="SIZE", default=None,
              help="Then remove the oldest records until the images fit in SIZE: a number "
                   "and B, KB, MB or GB (e.g. 500MB).")
@_cache_option
def cache_prune(older_than: str | None, max_size: str | None, cache_dir: str | None) -> None:
    """Remove old records, or the oldest ones until the cache fits a size.

    Images no remaining record uses go too. Give --older-than, --max-size or both
    (age first, then size). Records that can no longer be served (image gone, written
    by another version) are always removed, and so is a batch report's place in the
    journal of an out folder that is gone (a note of the folder's path and a scan).

    \b
    Examples:
      editgraph cache prune --older-than 30d
      editgraph cache prune --max-size 500MB
      editgraph cache prune --older-than 2w --max-size 1GB
    """
    if older_than is None and max_size is None:
        _fail("cache prune: say what to remove: --older-than AGE (e.g. 30d) and/or "
              "--max-size SIZE (e.g. 500MB)")
    seconds = max_bytes = None
    if older_than is not None:
        try:
            seconds = _parse_duration(older_than)
        except ValueError:
            _fail(f"--older-than {older_than!r}: expected a number and a unit s, m, h, d "
                  "or w, e.g. 30d")
    if max_size is not None:
        try:
            max_bytes = _parse_size(max_size)
        except ValueError:
            _fail(f"--max-size {max_size!r}: expected a number and a unit B, KB, MB or "
                  "GB, e.g. 500MB")
    from .batch import prune_report_notes

    store = _open_store(cache_dir, create=False)
    try:
        before = list(store.records())
        dropped = store.prune(older_than=seconds, max_bytes=max_bytes)
        prune_report_notes(store)  # of out folders that are gone
        after = list(store.records())
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    _report_removed(before, after, dropped)


def _report_removed(before: list[EditRecord], after: list[EditRecord], dropped: int) -> None:
    kept = {record.key for record in after}
    removed = sorted((r for r in before if r.key not in kept), key=lambda r: r.created_at)
    freed = _image_bytes(before) - _image_bytes(after)
    if not dropped:
        _out.print(f"nothing to remove · {_plural(len(after), 'record')}, "
                   f"{_human_bytes(_image_bytes(after))} of images kept", soft_wrap=True)
        return
    for record in removed:
        detail = f"  made {_age(record.created_at)}, {_human_bytes(record.size_bytes or 0)}"
        _out.print(Text.assemble(("  removed ", "red"), record.node, (detail, "dim")),
                   soft_wrap=True)
    stale = dropped - len(removed)
    extra = f" (and {_plural(stale, 'unusable record')})" if stale > 0 else ""
    _out.print(f"removed {_plural(len(removed), 'record')}{extra}, freed {_human_bytes(freed)} "
               f"· {_plural(len(after), 'record')}, {_human_bytes(_image_bytes(after))} of "
               "images kept", soft_wrap=True)


def _image_bytes(records: Iterable[EditRecord]) -> int:
    return sum({record.output_hash: record.size_bytes or 0 for record in records}.values())


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Remove every damaged entry found.")
@_cache_option
def cache_verify(repair: bool, cache_dir: str | None) -> None:
    """Check every record and image in the cache; with --repair, remove damaged ones.

    An image whose bytes no longer match their hash, a missing image file, or a record
    that cannot be read is damage. Runs never serve damaged entries (they remove them
    and run the edit again); this checks the whole cache at once.

    \b
    Examples:
      editgraph cache verify
      editgraph cache verify --repair

    Exit codes: 0 nothing damaged, or all of it removed with --repair; 1 damage found
    and left in place.
    """
    store = _open_store(cache_dir, create=False)
    try:
        stats = store.stats()
        damage = store.verify(repair=repair)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    for found in damage:
        state = ("  removed ", "yellow") if repair else ("  damaged ", "red")
        _out.print(Text.assemble(state, found.entry, (f": {found.problem}", "dim")),
                   soft_wrap=True)
    checked = f"checked {_plural(stats.records, 'record')} and {_plural(stats.blobs, 'image')}"
    if not damage:
        _out.print(f"{checked}: no damage", soft_wrap=True)
        return
    if repair:
        _out.print(f"{checked}: repaired {_plural(len(damage), 'entry')} (the next run makes "
                   "their edits again)", soft_wrap=True)
        return
    _out.print(f"{checked}: {_plural(len(damage), 'damaged entry')}; run "
               "`editgraph cache verify --repair` to remove them", soft_wrap=True)
    sys.exit(1)


@cache.command("clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_cache_option
def cache_clear(yes: bool, cache_dir: str | None) -> None:
    """Remove everything in the cache (asks first unless --yes).

    The next run generates every edit again, and plan forgets what each edit last ran
    with.

    \b
    Examples:
      editgraph cache clear
      editgraph cache clear --yes       # in scripts
    """
    store = _open_store(cache_dir, create=False)
    try:
        stats = store.stats()
        if not yes:
            click.confirm(
                f"Remove {_plural(stats.records, 'record')} and {_plural(stats.blobs, 'image')} "
                f"({_human_bytes(stats.bytes)}) from {stats.directory}?",
                abort=True, err=True,
            )
        store.clear()
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    _out.print(f"removed {_plural(stats.records, 'record')} and {_plural(stats.blobs, 'image')} "
               f"({_human_bytes(stats.bytes)}) from {stats.directory}", soft_wrap=True)


# ---------------------------------------------------------------------------- report, replay


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page [default: OUT_DIR/report.html].")
def report(out_dir: Path, out_file: Path | None) -> None:
    """Write an HTML report of the run saved in OUT_DIR.

    OUT_DIR is a folder `editgraph run` wrote (images + manifest.json). The page is
    self-contained: each edit's image, rewritten prompt, references, seed and cost.

    \b
    Examples:
      editgraph report out/recolour                 # writes out/recolour/report.html
      editgraph report out/recolour --out recolour.html
    """
    if not (out_dir / "manifest.json").is_file():
        _fail(f"report: {out_dir} holds no manifest.json; pass a folder that "
              "`editgraph run RECIPE --out FOLDER` wrote")
    from .report import report_from_folder

    try:
        written = report_from_folder(out_dir, out_file)
    except EditGraphError as exc:
        _fail(f"report {out_dir}: {exc}")
    except OSError as exc:
        _fail(f"report: cannot write {out_file or out_dir / 'report.html'} "
              f"({exc.strerror or exc})", code=1)
    _out.print(f"wrote {written}", soft_wrap=True)


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True,
              help="Check that every output is reproduced exactly (same key, same bytes); "
                   "exit 1 if any is not.")
@_provider_option
@_cache_option
def replay(target: Path, verify: bool, provider: str | None, cache_dir: str | None) -> None:
    """Re-run a saved run from its manifest.json or a saved image.

    TARGET is a manifest.json that `editgraph run` wrote (or the folder holding it),
    or an image it saved (the record of how it was made is embedded in it). Edits still
    in the cache are served from it; the rest are generated again with the recorded
    requests and seeds.

    \b
    Examples:
      editgraph replay out/recolour/manifest.json
      editgraph replay out/recolour/poster.png --verify
      editgraph replay out/recolour                  # the folder of a saved run

    Exit codes: 0 done (and, with --verify, every output matches); 1 an edit failed or,
    with --verify, an output differs; 2 bad input.
    """
    if target.is_dir() and (target / "manifest.json").is_file():
        target = target / "manifest.json"
    if not target.is_file():
        _fail(f"replay {target}: no such file; pass a manifest.json or an image that "
              "`editgraph run` saved")
    from .replay import replay as replay_saved

    chosen = _provider(provider)
    try:
        result = replay_saved(target, provider=chosen, cache_dir=cache_dir, verify=verify)
    except RunError as exc:
        for name, error in exc.failures.items():
            _err.print(Text.assemble(("failed", "red"), f" {name}: {error}"), soft_wrap=True)
        sys.exit(1)
    except (BudgetError, ConfigurationError, GraphError, ProvenanceError, StoreError) as exc:
        _fail(f"replay {target}: {str(exc).removeprefix('replay: ')}")
    except EditGraphError as exc:
        _fail(f"replay {target}: {str(exc).removeprefix('replay: ')}", code=1)
    cached, generated = set(result.cached), set(result.generated)
    for name in result.edits:
        if name in result.mismatches:
            state = ("  differs   ", "red")
        elif name in cached:
            state = ("  cached    ", "green")
        elif name in generated:
            state = ("  generated ", "cyan")
        else:
            state = ("  not run   ", "yellow")
        _out.print(Text.assemble(state, name), soft_wrap=True)
    summary = (f"{_plural(len(result.edits), 'edit')}: {len(generated)} generated, "
               f"{len(cached)} cached")
    if verify:
        summary += (f" · {len(result.mismatches)} not reproduced" if result.mismatches
                    else " · verified: every output reproduced")
    _out.print(summary, soft_wrap=True)
    for name, explanation in result.mismatches.items():
        _err.print(Text.assemble(("mismatch", "red"), f" {name}: {explanation}"),
                   soft_wrap=True)
    if verify and result.mismatches:
        sys.exit(1)
