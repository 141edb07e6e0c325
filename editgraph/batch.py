"""Batches: one recipe over many inputs, streamed, resumable, nothing paid twice.

Each input becomes one item: the recipe is built with the item's parameter values and
run against one shared store and provider. Items stream through a bounded window, so
memory stays flat in the number of inputs; one failing item never stops the others.
Every finished item is appended to ``OUT/batch.jsonl`` at once; running the same batch
again pays nothing for finished items (the cache), retries failed ones and keeps
moderated ones unless asked to retry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import glob as globbing
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import PIL
import PIL.Image
from pydantic import BaseModel, ConfigDict
from pydantic_core import from_json  # twice as fast as json.loads: lines, manifests

from .errors import (
    BudgetError,
    EditGraphError,
    GraphError,
    ModerationError,
    RunError,
    RunInterrupted,
    StoreError,
)
from .execute import Drain, run_in_worker, run_main
from .graph import Graph
from .names import folded, name_problem, portable_stem, shown_name
from .providers.base import Provider
from .recipe import Recipe
from .records import RECORD_VERSION
from .requests import EditRequest, GeneratedImage
from .runs import Run
from .sources import PREPARE_RULES, SourceMemo, prepared_sources
from .store import DiskStore, Store
from .stores.base import CacheLocation, open_store

if TYPE_CHECKING:  # the cluster glue needs the extra `cluster`; imported on use
    from .cluster import ClusterPool, ItemTask

__all__ = [
    "Batch",
    "BatchInterrupt",
    "BatchItem",
    "BatchSummary",
    "IMAGE_SUFFIXES",
    "BatchPlan",
    "BatchProgress",
    "abatch",
    "batch",
    "count_items",
    "plan_batch",
    "read_items",
]

#: The files a folder or glob of inputs contributes: the formats the services document.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})

Status = Literal["done", "failed", "moderated", "skipped"]

#: ``batch.jsonl``: one line per finished item, appended, never rewritten.
JOURNAL = "batch.jsonl"
REPORT = "batch.html"

#: ``rate`` counts provider calls started per this many seconds (``--rate`` is per minute).
RATE_PERIOD = 60.0

#: Interrupt notices (draining, abandoning); the command shows them as they happen.
_interrupt_log = logging.getLogger("editgraph.interrupt")
logger = logging.getLogger("editgraph")
_DRAIN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BatchItem(BaseModel):
    """One finished item of a batch: its inputs, what became of it, where its files are.

    ``outputs`` maps node name to the file written for it, relative to the batch's out
    folder; ``cached`` is true when no provider call was made for the item.
    ``possibly_billed_twice`` names its edits that finished after an unknown outcome (an
    answer lost and the request sent again: maybe paid twice), ``possibly_billed`` its
    failed edits that may have been paid for without an image; its manifest lists both
    under ``possibly_billed_twice``. ``batch.jsonl`` carries each only when it names any.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    inputs: dict[str, Any]
    status: Status
    outputs: dict[str, str] = {}
    cost: float = 0.0
    cached: bool = False
    error: str | None = None
    elapsed: float = 0.0
    finished_at: float = 0.0
    possibly_billed_twice: list[str] = []
    possibly_billed: list[str] = []


class BatchSummary(BaseModel):
    """Totals of one pass over a batch."""

    model_config = ConfigDict(frozen=True)

    items: int
    done: int
    failed: int
    moderated: int
    skipped: int
    not_started: int
    cached: int
    cost: float
    elapsed: float
    out: str
    #: Items with an edit that may have been paid for twice, and items with a failed edit
    #: that may have been paid for (``BatchItem.possibly_billed_twice``, ``.possibly_billed``).
    possibly_billed_twice: int = 0
    possibly_billed: int = 0
    interrupted: bool = False
    #: After an interrupt: the signal, the items running when it came, and those of
    #: them stopped between edits (their finished edits are cached and saved, no
    #: journal line: a re-run finishes them).
    signal_number: int | None = None
    in_flight: int = 0
    unfinished: int = 0

    @property
    def exit_code(self) -> int:
        """The command's exit status for this pass: 0 all done, 1 some items failed."""
        return 1 if self.failed or self.moderated else 0


class Batch(Iterable[BatchItem]):
    """The items one pass finished, read back from ``batch.jsonl``, and its ``summary``.

    Iterating reads the journal lazily, so a batch of any size holds no items in memory.
    """

    def __init__(self, out: Path, start: int, summary: BatchSummary) -> None:
        self.out = out
        self.summary = summary
        self._start = start

    def __iter__(self) -> Iterator[BatchItem]:
        with open(self.out / JOURNAL, "rb") as journal:
            journal.seek(self._start)
            for line in journal:
                if line.strip():
                    yield BatchItem.model_validate_json(line)

    def __len__(self) -> int:
        return self.summary.items

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"<Batch {s.items} items: {s.done} done, {s.failed} failed, {s.moderated} "
            f"moderated, {s.skipped} skipped, ${s.cost:.2f} · {s.out}>"
        )


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Input:
    """An item before it runs: its id, the recipe parameter values it brings, and why its
    given id cannot name a folder (the item then fails without running)."""

    id: str
    values: dict[str, Any]
    problem: str | None = None


def path_parameters(recipe: Recipe) -> list[str]:
    """The recipe parameters annotated ``pathlib.Path`` (those that take an input image)."""
    return [name for name, (kind, _) in recipe.parameters.items() if kind is Path]


def input_parameter(recipe: Recipe, param: str | None) -> str:
    """The parameter that receives each input image path; GraphError when unclear."""
    if param is not None:
        if param not in recipe.parameters:
            raise GraphError(
                f"batch: --param {param}: recipe {recipe.label!r} has no such parameter; it "
                f"takes: {', '.join(recipe.parameters) or 'none'}"
            )
        return param
    candidates = path_parameters(recipe)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise GraphError(
            f"batch: recipe {recipe.label!r} has no parameter annotated pathlib.Path to "
            "receive each input; annotate one or pass --param NAME"
        )
    raise GraphError(
        f"batch: recipe {recipe.label!r} has several pathlib.Path parameters "
        f"({', '.join(candidates)}); pass --param NAME to say which receives each input"
    )


def read_items(
    inputs: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    recipe: Recipe,
    param: str | None = None,
) -> Iterator[_Input]:
    """The items of ``inputs``, read lazily, each with a unique id.

    A folder gives its JPEG/PNG/WebP files (sorted), a glob its matches; a CSV or JSONL
    file one item per row (columns are recipe parameters; an optional ``id`` column;
    image paths relative to the file); any iterable of dicts one item per dict. Ids are
    the input's file stem, made unique with ``-2``, ``-3``…, or the ``id`` column.
    Malformed inputs that concern the whole batch raise GraphError before any item runs.
    """
    rows: Iterator[tuple[str | None, dict[str, Any]]]
    paths = path_parameters(recipe)
    if isinstance(inputs, (str, os.PathLike)):
        location = Path(inputs).expanduser()
        text = str(inputs)
        if location.is_dir():
            name = input_parameter(recipe, param)
            # Absolute: a recipe resolves relative source paths against its own folder.
            files = sorted(
                os.path.abspath(entry.path) for entry in os.scandir(location)
                if _suffix(entry.name) in IMAGE_SUFFIXES and entry.is_file()
            )
            rows = ((None, {name: _as(file, name in paths)}) for file in files)
        elif location.suffix.lower() == ".csv" and location.is_file():
            rows = _table_rows(location, _csv_rows(location), recipe, paths)
        elif location.suffix.lower() in {".jsonl", ".ndjson"} and location.is_file():
            rows = _table_rows(location, _jsonl_rows(location), recipe, paths)
        elif globbing.has_magic(text):
            name = input_parameter(recipe, param)
            files = sorted(
                os.path.abspath(match)
                for match in globbing.glob(os.path.expanduser(text), recursive=True)
                if _suffix(match) in IMAGE_SUFFIXES and os.path.isfile(match)
            )
            if not files:  # a typo more often than an empty catalogue
                raise GraphError(
                    f"batch: --over {text}: the pattern matches no JPEG, PNG or WebP file"
                )
            rows = ((None, {name: _as(file, name in paths)}) for file in files)
        elif location.exists():
            raise GraphError(
                f"batch: --over {text}: not a folder, CSV, JSONL or glob of images"
            )
        else:
            raise GraphError(f"batch: --over {text}: no such file or folder")
    else:
        rows = ((_row_id(row), {k: v for k, v in row.items() if k != "id"}) for row in inputs)
    return _unique(rows)


def count_items(
    inputs: str | os.PathLike[str] | Iterable[Mapping[str, Any]], limit: int | None = None
) -> int | None:
    """How many items ``inputs`` holds, when that is cheap to know (else None).

    Counts files or lines without decoding anything; a progress bar's total.
    """
    total: int | None = None
    if isinstance(inputs, (str, os.PathLike)):
        location = Path(inputs).expanduser()
        try:
            if location.is_dir():
                total = sum(
                    1 for entry in os.scandir(location)
                        if _suffix(entry.name) in IMAGE_SUFFIXES and entry.is_file()
                )
            elif location.is_file() and location.suffix.lower() in {".csv", ".jsonl", ".ndjson"}:
                with open(location, "rb") as handle:
                    total = sum(1 for line in handle if line.strip())
                total -= location.suffix.lower() == ".csv"  # the header row
            elif globbing.has_magic(str(inputs)):
                total = sum(
                    1 for match in globbing.iglob(os.path.expanduser(str(inputs)), recursive=True)
                    if _suffix(match) in IMAGE_SUFFIXES
                )
        except OSError:
            total = None
    elif isinstance(inputs, Sized):
        total = len(inputs)
    if total is not None and limit is not None:
        total = min(total, limit)
    return total


def _suffix(name: str) -> str:
    """A file name's suffix, lower case (``Path(name).suffix``, without making a Path)."""
    return os.path.splitext(name)[1].lower()


def _as(file: str, is_path: bool) -> Path | str:
    """An input file as its parameter takes it: a Path, or the path's text."""
    return Path(file) if is_path else file


def _row_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("id")
    return None if value in (None, "") else str(value)


def _csv_rows(file: Path) -> Iterator[dict[str, Any]]:
    with open(file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield {key: value for key, value in row.items() if key is not None}


def _jsonl_rows(file: Path) -> Iterator[dict[str, Any]]:
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GraphError(f"batch: {file}: line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise GraphError(f"batch: {file}: line {number}: expected a JSON object")
            yield row


def _table_rows(
    file: Path, rows: Iterator[dict[str, Any]], recipe: Recipe, paths: list[str]
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    base = file.resolve().parent
    for number, row in enumerate(rows, 1):
        unknown = sorted(set(row) - set(recipe.parameters) - {"id"})
        if unknown:
            raise GraphError(
                f"batch: {file}: row {number}: column {unknown[0]!r} is not a parameter of "
                f"recipe {recipe.label!r}; it takes: {', '.join(recipe.parameters) or 'none'}"
            )
        values = {key: value for key, value in row.items() if key != "id"}
        for name in paths:
            value = values.get(name)
            if isinstance(value, str) and value and not os.path.isabs(value):
                values[name] = base / value
        yield _row_id(row), values


def _unique(rows: Iterator[tuple[str | None, dict[str, Any]]]) -> Iterator[_Input]:
    seen: set[str] = set()
    next_suffix: dict[str, int] = {}
    for number, (given, values) in enumerate(rows, 1):
        # An id names the item's folder: a given one must be a portable file name, a
        # derived one (a file stem) is made into one.
        problem = None if given is None else name_problem(given)
        stem = given if given and problem is None else portable_stem(
            given or _stem_of(values) or f"item-{number}")
        # The next suffix to try is kept per stem, so a thousand "photo"s cost linear time.
        key = folded(stem)
        candidate, suffix = stem, next_suffix.get(key, 1)
        if suffix > 1:
            candidate = f"{stem}-{suffix}"
        while folded(candidate) in seen:
            suffix += 1
            candidate = f"{stem}-{suffix}"
        next_suffix[key] = suffix + 1
        seen.add(folded(candidate))
        if problem is not None:
            problem = f"id {shown_name(given or '')}: {problem}"
        yield _Input(candidate, values, problem)


def _stem_of(values: Mapping[str, Any]) -> str | None:
    for value in values.values():
        if isinstance(value, Path):
            return value.stem
        if isinstance(value, str) and _suffix(value) in IMAGE_SUFFIXES:
            return Path(value).stem
    return None


# ---------------------------------------------------------------------------- running


class BatchInterrupt:
    """A batch's interrupt, shared by every item's run: ``start`` (the first SIGINT or
    SIGTERM) drains them all at once: no new edit starts in any item and no new item
    starts; edits being generated finish and are cached. ``calling`` names those edits
    (``item/edit``), possibly billed should the batch be abandoned."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.in_flight_items = 0
        #: Set by a second SIGINT: the edits then in flight (``item/edit``), maybe billed.
        self.abandoned: list[str] | None = None
        self._drains: dict[str, Drain] = {}
        #: The pass's loop and task, while it runs (what a second SIGINT cancels).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def started(self) -> bool:
        return self.signal_number is not None

    def start(self, signal_number: int) -> None:
        """Drain every running item (at most once)."""
        if self.signal_number is not None:
            return
        self.signal_number = signal_number
        self.in_flight_items = len(self._drains)
        for drain in self._drains.values():
            drain.start(signal_number)

    def calling(self) -> list[str]:
        """The edits being generated now, as ``item/edit``."""
        return [f"{item}/{name}" for item, drain in self._drains.items()
                for name in drain.calling]

    def item(self, item_id: str) -> Drain:
        """A new item's drain (drained at once if the batch already is)."""
        drain = self._drains[item_id] = Drain()
        if self.signal_number is not None:  # started before the signal, runs after it
            self.in_flight_items += 1
            drain.start(self.signal_number)
        return drain

    def ended(self, item_id: str) -> None:
        self._drains.pop(item_id, None)

    def signalled(self, signal_number: int) -> None:
        """A SIGINT or SIGTERM, on the pass's loop: the first drains every item and says
        so; a second SIGINT abandons the pass (cancels it) naming what may be billed."""
        if not self.started:
            self.start(signal_number)
            calling = self.calling()
            _interrupt_log.warning(
                "interrupted: no new item or edit starts; finishing %d edit(s) in flight "
                "(%s). Press Ctrl-C again to abandon them (they may still be billed).",
                len(calling), ", ".join(calling) or "none",
            )
        elif signal_number == signal.SIGINT and self._task is not None:
            self.abandoned = self.calling()
            _interrupt_log.warning("abandoned: %s may have been billed without a result",
                                   ", ".join(self.abandoned) or "no edit")
            self._task.cancel()

    def interrupt_from_thread(self) -> None:
        """A Ctrl-C seen by another thread (a notebook's, while the pass runs in a
        worker thread no signal reaches): handled on the pass's loop as a SIGINT."""
        loop = self._loop
        if loop is None:  # not started yet: it starts drained
            self.start(signal.SIGINT)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the pass has ended
            loop.call_soon_threadsafe(self.signalled, signal.SIGINT)

    def abandon_message(self) -> str:
        """What a second Ctrl-C's KeyboardInterrupt says."""
        return (f"batch abandoned: {', '.join(self.abandoned or []) or 'no edit'} may have "
                "been billed without a result; every finished item and edit is kept: run "
                "again to continue")


@contextlib.contextmanager
def _drain_on_signals(interrupt: BatchInterrupt) -> Iterator[None]:
    """While a batch runs in the main thread: the first SIGINT or SIGTERM drains every
    item, a second SIGINT abandons the batch (cancels it) naming the edits that may be
    billed. Earlier handlers come back after; a signal the caller already handles on this
    loop is left to the caller."""
    loop = asyncio.get_running_loop()
    interrupt._loop, interrupt._task = loop, asyncio.current_task()
    if threading.current_thread() is not threading.main_thread():
        try:  # no signal reaches this thread: eg.batch passes on a notebook's interrupt
            yield
        finally:
            interrupt._loop = interrupt._task = None
        return
    on_signal = interrupt.signalled
    previous = {number: signal.getsignal(number) for number in _DRAIN_SIGNALS}
    installed = []
    try:
        for number in _DRAIN_SIGNALS:
            if getattr(previous[number], "__module__", None) == "asyncio.unix_events":
                continue  # the caller's loop handles it
            try:
                loop.add_signal_handler(number, on_signal, number)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(number)
        yield
    finally:
        interrupt._loop = interrupt._task = None
        for number in installed:
            loop.remove_signal_handler(number)
            signal.signal(number, previous[number])


class _SharedProvider:
    """The batch's provider behind one bound: at most ``limit`` calls at once, batch-wide,
    and at most ``rate`` calls reaching the service in any rolling minute (each call
    holds one of ``rate`` slots until a minute after it ends)."""

    def __init__(self, provider: Provider, limit: int, rate: float | None = None) -> None:
        self.inner = provider
        self.name = provider.name
        self._limit = limit
        self._rate = rate
        self._semaphore: asyncio.Semaphore | None = None
        self._rate_slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.peak_in_flight = 0
        # Asked of every item's run: looked up once (None when the provider has none,
        # as asking through ``__getattr__`` would answer).
        self.session = getattr(provider, "session", None)
        self.check_edit = getattr(provider, "check_edit", None)

    async def generate(self, request: EditRequest) -> GeneratedImage:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._limit)
        async with self._semaphore:
            slots = None
            if self._rate is not None:
                if self._rate_slots is None:
                    self._rate_slots = asyncio.Semaphore(max(1, int(self._rate)))
                slots = self._rate_slots
                await slots.acquire()
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await self.inner.generate(request)
            finally:
                self.in_flight -= 1
                if slots is not None:  # held a whole minute after the call ends
                    asyncio.get_running_loop().call_later(RATE_PERIOD, slots.release)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


#: What a journal line leaves out, by (any possibly billed twice, any possibly billed):
#: the lists that are empty, as nearly every item's are.
_QUIET: dict[tuple[bool, bool], set[str] | None] = {
    (False, False): {"possibly_billed_twice", "possibly_billed"},
    (True, False): {"possibly_billed"},
    (False, True): {"possibly_billed_twice"},
    (True, True): None,
}


@dataclass
class _Pass:
    """The running state of one pass: counts, spend and the open journal."""

    out: Path
    journal: IO[bytes]
    budget: float | None
    started: float = field(default_factory=time.monotonic)
    items: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"done": 0, "failed": 0, "moderated": 0, "skipped": 0}
    )
    cached: int = 0
    cost: float = 0.0
    reserved: float = 0.0
    interrupt: BatchInterrupt = field(default_factory=BatchInterrupt)
    not_started: int = 0
    unfinished: int = 0
    billed_twice: int = 0
    billed: int = 0

    def record(self, item: BatchItem, *, flush: bool = True) -> None:
        """Count ``item`` and append its line (flushed, unless the caller flushes a group)."""
        twice, billed = item.possibly_billed_twice, item.possibly_billed
        quiet = _QUIET[bool(twice), bool(billed)]
        self.journal.write(item.model_dump_json(exclude=quiet).encode() + b"\n")
        if flush:
            self.journal.flush()
        self.items += 1
        self.counts[item.status] += 1
        self.cached += item.cached
        self.billed_twice += bool(twice)
        self.billed += bool(billed)
        self.cost = round(self.cost + item.cost, 6)

    def summary(self) -> BatchSummary:
        return BatchSummary(
            items=self.items, **self.counts, not_started=self.not_started, cached=self.cached,
            cost=self.cost, elapsed=round(time.monotonic() - self.started, 3),
            out=str(self.out), possibly_billed_twice=self.billed_twice,
            possibly_billed=self.billed, interrupted=self.interrupt.started,
            signal_number=self.interrupt.signal_number,
            in_flight=self.interrupt.in_flight_items, unfinished=self.unfinished,
        )


class BatchProgress(Protocol):
    """What a batch tells its progress display."""

    def started(self, item_id: str) -> None:
        """An item started running."""

    def finished(self, item: BatchItem, failed: int, spend: float) -> None:
        """An item finished; ``failed`` items so far, estimated ``spend`` so far (USD)."""


class _Silent:
    """Shows nothing."""

    def started(self, item_id: str) -> None:
        pass

    def finished(self, item: BatchItem, failed: int, spend: float) -> None:
        pass


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def _moderated(failures: Mapping[str, BaseException]) -> bool:
    return any(
        isinstance(error, ModerationError) or isinstance(error.__cause__, ModerationError)
        for error in failures.values()
    )


def _first_error(failures: Mapping[str, BaseException]) -> str:
    name, error = next(iter(failures.items()))
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{name}: {error}{more}"


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, os.PathLike) else value
        for key, value in values.items()
    }


def _earlier_statuses(journal: Path) -> dict[str, str]:
    """Item id -> its latest moderated status in an earlier pass's journal."""
    moderated: dict[str, str] = {}
    if not journal.is_file():
        return moderated
    with open(journal, "rb") as handle:
        for line in handle:
            if not moderated and b"moderated" not in line and b"\\u" not in line:
                continue  # neither moderated nor able to clear an earlier moderation
            try:
                entry = from_json(line, cache_strings="keys")
            except ValueError:
                continue  # a line cut short by a crash: the item runs again
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if entry.get("status") == "moderated":
                moderated[entry["id"]] = entry.get("error") or "moderated"
            else:
                moderated.pop(entry["id"], None)
    return moderated


class _Finisher:
    """Makes an item's BatchItem, with the time since it started."""

    def __init__(self, entry: _Input) -> None:
        self.entry = entry
        self.inputs = _jsonable(entry.values)
        self.started = time.monotonic()

    def __call__(self, status: Status, **fields: Any) -> BatchItem:
        return BatchItem(id=self.entry.id, inputs=self.inputs, status=status,
                         elapsed=round(time.monotonic() - self.started, 4),
                         finished_at=time.time(), **fields)

    def conclude(self, status: Status, *, outputs: dict[str, str], cost: float, cached: bool,
                 error: str | None, save_error: str | None,
                 billed: tuple[list[str], list[str]] = ([], [])) -> BatchItem:
        """The item as its run ended: failed or moderated with the run's error, failed when
        its files could not be written, else done; with its edits possibly billed twice
        and its failed edits possibly billed (``billed``)."""
        twice, once = billed
        if status != "done":
            return self(status, outputs=outputs, cost=cost, error=error,
                        possibly_billed_twice=twice, possibly_billed=once)
        if save_error:
            return self("failed", outputs=outputs, cost=cost, error=save_error,
                        possibly_billed_twice=twice, possibly_billed=once)
        return self("done", outputs=outputs, cost=cost, cached=cached,
                    possibly_billed_twice=twice, possibly_billed=once)


def _possibly_billed(run: Run | None, failures: Mapping[str, BaseException]
                     ) -> tuple[list[str], list[str]]:
    """The item's edits that finished after an unknown outcome (maybe paid twice), and
    its failed edits that may have been paid for (as the run's summary tells them)."""
    twice = [] if run is None else [name for name in run if run[name].unknown_outcomes]
    once = [name for name, error in failures.items() if getattr(error, "possibly_billed", False)]
    return twice, once


def _budget_refusal(state: _Pass, estimate: float) -> str | None:
    """Why an item estimated at ``estimate`` may not start under the batch's budget."""
    if state.budget is None:
        return None
    left = state.budget - state.cost - state.reserved
    if estimate <= left + 1e-9:
        return None
    return (f"budget: the item is estimated at ${estimate:.4f}, ${max(left, 0):.4f} of the "
            f"${state.budget:.2f} budget is left")


def _build(recipe: Recipe, entry: _Input) -> Graph:
    """The item's graph. Each item is its own instance of the recipe, so plan's history
    (what a node last ran as) is kept per item: a cached pass finds every node as it
    was, rather than each item overwriting one entry for the whole batch."""
    graph = recipe.build(entry.values, option="item")
    graph.name = f"{graph.name}#{entry.id}"
    return graph


def _folder_current(folder: Path, run: Run) -> bool:
    """Whether ``folder`` already holds what saving ``run`` would write: its manifest
    lists exactly the run's edits, each finished under the same key and file name, and
    every file is there, none changed since the manifest was written (its inode change
    time no newer than the manifest: an older file copied in with its mtime kept, as
    ``cp -p`` does, changes that time too).

    Then saving is skipped: the files are the same bytes (an image and its embedded
    record are fixed by its key), and the manifest stays the record of the pass that
    made them. Reads one small file and stats the images; anything unexpected is False.
    """
    if run.failures or len(run) != len(run.nodes):
        return False
    where = os.fspath(folder)
    manifest = os.path.join(where, "manifest.json")
    try:
        with open(manifest, "rb", buffering=0) as handle:
            written = os.fstat(handle.fileno()).st_mtime_ns
            listed = from_json(handle.readall(), cache_strings="keys")
        edits = listed["edits"]
        if listed.get("schema_version") != RECORD_VERSION or len(edits) != len(run.nodes):
            return False
        for entry, name in zip(edits, run.nodes, strict=True):
            result = run[name]
            file = result.filename
            if (entry.get("node") != name or entry.get("status") not in ("done", "cached")
                    or entry.get("key") != result.key or entry.get("file") != file
                    or os.stat(os.path.join(where, file)).st_ctime_ns > written):
                return False
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def _cannot_write(folder: Path, error: OSError) -> str:
    return f"cannot write {folder}: {error.strerror or error}; every result is cached"


async def _run_item(
    recipe: Recipe,
    entry: _Input,
    state: _Pass,
    *,
    provider: _SharedProvider,
    store: Store,
    concurrency: int,
) -> BatchItem | None:
    """The item's outcome; None when an interrupt stopped it between edits (its
    finished edits are cached and its folder says what did not run)."""
    finished = _Finisher(entry)
    try:
        graph = _build(recipe, entry)
        # Only a budget needs the estimate up front; without one the run alone decides.
        estimate = (0.0 if state.budget is None
                    else graph.plan(provider=provider, cache_dir=store).estimated_cost)
    except EditGraphError as exc:
        return finished("failed", error=str(exc))
    refusal = _budget_refusal(state, estimate)
    if refusal is not None:
        return finished("skipped", error=refusal)
    state.reserved += estimate
    try:
        run, failures = await _arun(graph, provider, store, concurrency,
                                    state.interrupt.item(entry.id))
    finally:
        state.reserved -= estimate
        state.interrupt.ended(entry.id)
    folder = state.out / entry.id
    outputs: dict[str, str] = {}
    save_error = None
    if run is not None:
        try:
            if not _folder_current(folder, run):
                run.save(folder)
            outputs = {name: f"{entry.id}/{run[name].filename}" for name in run}
        except OSError as exc:
            save_error = _cannot_write(folder, exc)
        if run.not_run and run.interrupted is not None:
            return None  # unfinished: no journal line, a re-run finishes it
    status: Status = "done"
    if failures:
        status = "moderated" if _moderated(failures) else "failed"
    return finished.conclude(
        status, outputs=outputs, cost=run.cost if run is not None else 0.0,
        cached=run is not None and not failures and all(run[name].cached for name in run),
        error=_first_error(failures) if failures else None, save_error=save_error,
        billed=_possibly_billed(run, failures),
    )


async def _run_item_on_cluster(
    recipe: Recipe,
    entry: _Input,
    state: _Pass,
    *,
    pool: ClusterPool,
    template: ItemTask,
    provider: _SharedProvider,
    store: Store,
) -> BatchItem:
    """``_run_item`` with the run on a cluster worker; the folder is written from the store."""
    from .cluster import save_outcome

    finished = _Finisher(entry)
    estimate = 0.0
    if state.budget is not None:
        try:
            graph = _build(recipe, entry)
            estimate = graph.plan(provider=provider, cache_dir=store).estimated_cost
        except EditGraphError as exc:
            return finished("failed", error=str(exc))
        refusal = _budget_refusal(state, estimate)
        if refusal is not None:
            return finished("skipped", error=refusal)
    state.reserved += estimate
    try:
        outcome = await pool.run(template.model_copy(update={"id": entry.id,
                                                              "values": finished.inputs}))
    finally:
        state.reserved -= estimate
    folder = state.out / entry.id
    outputs: dict[str, str] = {}
    save_error = None
    if outcome.manifest is not None:
        try:
            written = save_outcome(outcome.manifest, store, folder)
            outputs = {name: _relative(folder / file, state.out) for name, file in written.items()}
        except OSError as exc:
            save_error = _cannot_write(folder, exc)
    billed: tuple[list[str], list[str]] = ([], [])
    if outcome.manifest is not None and not outcome.cached:
        manifest = from_json(outcome.manifest)
        failed = manifest.get("failures") or {}
        listed = [name for name in manifest.get("possibly_billed_twice") or ()
                  if isinstance(name, str)]
        billed = ([name for name in listed if name not in failed],
                  [name for name in listed if name in failed])
    return finished.conclude(outcome.status, outputs=outputs, cost=outcome.cost,
                             cached=outcome.cached, error=outcome.error, save_error=save_error,
                             billed=billed)


async def _arun(
    graph: Graph,
    provider: _SharedProvider,
    store: Store,
    concurrency: int,
    drain: Drain | None = None,
) -> tuple[Run | None, dict[str, BaseException]]:
    try:
        run = await graph.arun(provider=provider, cache_dir=store, concurrency=concurrency,
                               progress=False, drain=drain)
    except RunInterrupted as exc:
        assert isinstance(exc.run, Run)
        return exc.run, dict(exc.run.failures)
    except RunError as exc:
        partial = exc.run if isinstance(exc.run, Run) else None
        return partial, dict(exc.failures)
    except (GraphError, BudgetError) as exc:
        return None, {"<graph>": exc}
    return run, {}


async def abatch(
    recipe: str | os.PathLike[str] | Callable[..., Graph],
    inputs: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    param: str | None = None,
    settings: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    provider: Provider | None = None,
    cache: CacheLocation = None,
    concurrency: int = 8,
    budget: float | None = None,
    cluster: str | None = None,
    max_inflight: int | None = None,
    rate: float | None = None,
    retry_moderated: bool = False,
    limit: int | None = None,
    progress: BatchProgress | None = None,
    stop: asyncio.Event | None = None,
    interrupt: BatchInterrupt | None = None,
) -> Batch:
    """``eg.batch`` for async code; ``stop`` set by the caller drains the pass.

    The first SIGINT or SIGTERM (or ``stop`` set, or ``interrupt`` started by the caller)
    drains the pass: no new item and no new edit starts; the edits in flight finish and
    are cached, items that finish are recorded, items stopped between edits are saved
    as far as they got; the summary counts items finished, in flight and not started.
    A second SIGINT abandons the pass: it ends with a ``KeyboardInterrupt`` naming the
    edits (``item/edit``) that may be billed.
    """
    loaded = _recipe(recipe)
    if concurrency < 1:
        raise GraphError(f"batch: concurrency must be at least 1, got {concurrency}")
    if budget is not None and not budget >= 0:  # nan included
        raise GraphError(f"batch: budget must be at least 0, got {budget}")
    if max_inflight is not None and max_inflight < 1:
        raise GraphError(f"batch: max_inflight must be at least 1, got {max_inflight}")
    if rate is not None and not 1 <= rate < math.inf:
        raise GraphError(f"batch: rate must be a number of calls per minute, at least 1; got {rate}")
    if cluster is not None:
        if loaded.source is None:
            raise GraphError(
                "batch: a cluster builds each item from the recipe's source: pass a recipe "
                "file, not a function"
            )
        from .cluster import parse_cluster

        parse_cluster(cluster)  # a bad address is bad input, found before anything runs
    items = read_items(inputs, loaded, param)
    base_settings = dict(settings or {})
    folder = Path(out) if out is not None else Path("out") / loaded.name
    folder.mkdir(parents=True, exist_ok=True)
    chosen = provider or _default_provider()
    shared = _SharedProvider(chosen, max_inflight or concurrency, rate)
    interrupt = interrupt or BatchInterrupt()
    try:
        if cluster is not None:
            from .cluster import open_pool

            async with open_pool(cluster, cache, items_per_worker=max(2, concurrency)) as pool:
                return await _stream_items(
                    loaded, items, base_settings, folder, shared, open_store(cache),
                    concurrency=concurrency, budget=budget, retry_moderated=retry_moderated,
                    limit=limit, progress=progress, stop=stop, interrupt=interrupt,
                    remote=(pool, _task_template(loaded, cache, shared, concurrency,
                                                 max_inflight, rate)),
                )
        return await _stream_items(
            loaded, items, base_settings, folder, shared, open_store(cache),
            concurrency=concurrency, budget=budget, retry_moderated=retry_moderated,
            limit=limit, progress=progress, stop=stop, interrupt=interrupt, remote=None,
        )
    except asyncio.CancelledError:
        if interrupt.abandoned is None:
            raise  # cancelled by the caller, not abandoned by a second Ctrl-C
        # As the command ends: what may be billed, and no CancelledError traceback.
        raise KeyboardInterrupt(interrupt.abandon_message()) from None


def _task_template(
    recipe: Recipe, cache: CacheLocation, provider: _SharedProvider, concurrency: int,
    max_inflight: int | None, rate: float | None,
) -> ItemTask:
    """The part of every item's task that all items share."""
    import uuid

    from .cluster import ItemTask, Limits, cache_location, provider_spec

    assert recipe.source is not None
    return ItemTask(
        recipe_source=recipe.source, recipe_label=recipe.label,
        recipe_root=str(recipe.root) if recipe.root is not None else None,
        id="", values={}, cache=cache_location(cache), provider=provider_spec(provider.inner),
        limits=Limits(name=uuid.uuid4().hex, max_inflight=max_inflight or concurrency,
                      rate=rate),
        concurrency=concurrency,
    )


async def _stream_items(
    loaded: Recipe,
    items: Iterator[_Input],
    base_settings: dict[str, Any],
    folder: Path,
    shared: _SharedProvider,
    store: Store,
    *,
    concurrency: int,
    budget: float | None,
    retry_moderated: bool,
    limit: int | None,
    progress: BatchProgress | None,
    stop: asyncio.Event | None,
    interrupt: BatchInterrupt | None,
    remote: tuple[ClusterPool, ItemTask] | None,
) -> Batch:
    moderated = {} if retry_moderated else _earlier_statuses(folder / JOURNAL)
    shown: BatchProgress = progress or _Silent()
    window = max(2, concurrency)
    interrupt = interrupt or BatchInterrupt()
    watcher = None
    if stop is not None:
        watcher = asyncio.ensure_future(stop.wait())
        watcher.add_done_callback(
            lambda waited: None if waited.cancelled() else interrupt.start(signal.SIGINT))
    with (_pass_store(store) as commit, open(folder / JOURNAL, "ab") as journal,
          _drain_on_signals(interrupt)):
        start = journal.tell()
        state = _Pass(out=folder, journal=journal, budget=budget, interrupt=interrupt)
        running: set[asyncio.Task[BatchItem | None]] = set()

        async def drain(block: bool) -> None:
            if not running:
                return
            try:
                done, _ = await asyncio.wait(
                    running,
                    return_when=asyncio.FIRST_COMPLETED if block else asyncio.ALL_COMPLETED,
                )
            except asyncio.CancelledError:
                # Abandoned: each item's run unwinds now, while the loop runs, rather than
                # all of their tasks at once at asyncio.run's shutdown.
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                raise
            finished = []
            for task in done:
                running.discard(task)
                item = task.result()
                if item is None:
                    state.unfinished += 1
                else:
                    finished.append(item)
            if not finished:
                return
            commit()  # what the store held for these items, before their lines
            for item in finished:
                state.record(item, flush=False)
            journal.flush()  # the group's lines, in one write
            for item in finished:
                shown.finished(item, state.counts["failed"] + state.counts["moderated"],
                               state.cost)

        count = 0
        bad_input: list[Exception] = []
        for entry in _until_error(items, bad_input):
            if interrupt.started:
                state.not_started += 1 + sum(1 for _ in items)
                break
            if limit is not None and count >= limit:
                break
            count += 1
            values = {**base_settings, **entry.values}
            if entry.problem is not None:
                item = BatchItem(id=entry.id, inputs=_jsonable(values), status="failed",
                                 error=entry.problem, finished_at=time.time())
                state.record(item)
                shown.finished(item, state.counts["failed"] + state.counts["moderated"],
                               state.cost)
                continue
            if entry.id in moderated:
                item = BatchItem(id=entry.id, inputs=_jsonable(values), status="moderated",
                                 error=moderated[entry.id], finished_at=time.time())
                state.record(item)
                shown.finished(item, state.counts["failed"] + state.counts["moderated"],
                               state.cost)
                continue
            while len(running) >= window:
                await drain(block=True)
            if interrupt.started:
                state.not_started += 1 + sum(1 for _ in items)
                break
            shown.started(entry.id)
            work: Coroutine[Any, Any, BatchItem | None]
            if remote is not None:
                work = _run_item_on_cluster(
                    loaded, _Input(entry.id, values), state, pool=remote[0],
                    template=remote[1], provider=shared, store=store)
            else:
                work = _run_item(loaded, _Input(entry.id, values), state, provider=shared,
                                 store=store, concurrency=concurrency)
            running.add(asyncio.ensure_future(work))
        await drain(block=False)
    if watcher is not None:
        watcher.cancel()
    summary = state.summary()
    _write_report_quietly(folder, store)
    if bad_input:  # raised once the items already generating (paid for) are recorded
        raise bad_input[0]
    return Batch(folder, start, summary)


@contextlib.contextmanager
def _pass_store(store: Store) -> Iterator[Callable[[], None]]:
    """The store as one pass uses it; yields the commit to make before journal lines.

    A disk store holds SQLite's memory small (flat in the number of items) and holds
    the spend cache hits saved, and the sources checked, for one commit per group of
    items finishing together rather than one per item; at the end what is held is
    committed and the store's defaults come back (the open cache is shared by every
    store of the process). Sources shared by items are decoded once per pass, and an
    input checked on an earlier pass (the same bytes, the same limits) not again.
    """
    disk = store if isinstance(store, DiskStore) else None
    checked = _CheckedSources(store)
    token = prepared_sources.set(checked)

    def commit() -> None:
        if disk is None:
            return
        try:
            disk.commit_held(checked.learned())
        except StoreError as error:  # bookkeeping only: every result is committed
            logger.warning("batch: the cache's saved total was not updated: %s", error)

    if disk is not None:
        disk.bound_memory()
        disk.hold_saved()
    try:
        yield commit
    finally:
        prepared_sources.reset(token)
        if disk is not None:
            commit()
            with contextlib.suppress(StoreError):  # commit() said why; bookkeeping only
                disk.hold_saved(False)
            with contextlib.suppress(StoreError):  # the connection is gone: nothing held
                disk.bound_memory(None)


class _CheckedSources(SourceMemo):
    """A pass's memo of checked sources, kept in a disk store across passes too.

    Bytes sent as they are (JPEG, PNG, WebP) whose full decode passed under a pixel
    limit are noted in the store by their hash and that limit (and Pillow's version and
    bomb limit); a later pass reads them, hashes them and finds the note instead of
    decoding them again. A changed file has another hash and is decoded again; a bad
    one never gets a note (it raised), so it fails every time with its own message.
    """

    def __init__(self, store: Store, size: int = 64, *, learn: bool = True) -> None:
        super().__init__(size)
        self._store = store if isinstance(store, DiskStore) else None
        self._learn = learn
        self._learned: dict[str, str] = {}

    def get(self, key: tuple[bytes, int | None]) -> tuple[bytes | None, str] | None:
        found = super().get(key)
        if found is not None or self._store is None:
            return found
        try:
            media_type = self._store.note(_checked_note(key))
        except StoreError:
            return None
        if media_type is None:
            return None
        super().put(key, (None, media_type))
        return None, media_type

    def put(self, key: tuple[bytes, int | None], value: tuple[bytes | None, str]) -> None:
        super().put(key, value)
        if self._store is not None and self._learn and value[0] is None:
            self._learned[_checked_note(key)] = value[1]

    def learned(self) -> dict[str, str]:
        """The notes of sources checked since the last call (for the store to keep)."""
        learned, self._learned = self._learned, {}
        return learned


def _checked_note(key: tuple[bytes, int | None]) -> str:
    digest, max_pixels = key
    # Pillow's version and its own bomb limit decide too (a limit the caller lowers), and
    # the rules for what is sent (a note from before photos were sent upright is not
    # read: that photo is turned now).
    return (f"source-checked:{PREPARE_RULES}:{PIL.__version__}:{PIL.Image.MAX_IMAGE_PIXELS}:"
            f"{max_pixels}:{digest.hex()}")


def _until_error(items: Iterable[_Input], errors: list[Exception]) -> Iterator[_Input]:
    """``items`` until one cannot be read (a malformed row mid-stream): the error is kept
    in ``errors`` for the caller to raise after draining, not raised among running items."""
    try:
        yield from items
    except Exception as error:  # noqa: BLE001 - re-raised by the caller
        errors.append(error)


def batch(
    recipe: str | os.PathLike[str] | Callable[..., Graph],
    inputs: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    **options: Any,
) -> Batch:
    """Run ``recipe`` once per input; returns an ``eg.Batch`` of ``eg.BatchItem``.

    ``recipe`` is a recipe file or a callable returning a Graph; ``inputs`` a folder, a
    glob, a CSV or JSONL file, or an iterable of dicts of parameter values. ``param``
    names the parameter that receives each input image path (default: the only one
    annotated ``pathlib.Path``). ``budget`` (USD) is for the whole batch: an item starts
    only when its whole estimated cost fits in what is left, else it is ``skipped``.
    Per-item folders, ``batch.jsonl`` and ``batch.html`` go to ``out`` (default
    ``out/<recipe name>/``). ``max_inflight`` bounds provider calls at once (default
    ``concurrency``); ``rate`` bounds calls started in any rolling minute.

    ``cluster="local:N"`` runs each item as a task on a new Dask LocalCluster of N worker
    processes, ``cluster="tcp://host:8786"`` on an existing scheduler (extra ``cluster``;
    then ``cache`` must be ``s3://…``); ``max_inflight`` and ``rate`` then hold across
    all workers. See docs/scale-out.md.

    Ctrl-C drains as ``abatch`` says, in a script or a notebook; a second Ctrl-C raises
    ``KeyboardInterrupt`` naming the edits (``item/edit``) that may have been billed.
    """
    interrupt = options["interrupt"] = options.get("interrupt") or BatchInterrupt()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_main(abatch(recipe, inputs, **options))  # takes the signals itself
    # A loop runs in this thread (a notebook cell): the pass runs in a worker thread, where
    # no signal reaches it, and the notebook's interrupt arrives here as KeyboardInterrupt:
    # the first drains the pass, a second abandons it (as execute.run_draining does a run).
    return run_in_worker(abatch(recipe, inputs, **options), interrupt.interrupt_from_thread)


def _recipe(recipe: str | os.PathLike[str] | Callable[..., Graph]) -> Recipe:
    if isinstance(recipe, (str, os.PathLike)):
        return Recipe.load(recipe)
    if callable(recipe):
        return Recipe(recipe, label=getattr(recipe, "__name__", "recipe"))
    raise GraphError(f"batch: recipe must be a file or a callable, got {type(recipe).__name__}")


def _default_provider() -> Provider:
    from .providers.registry import default_provider

    chosen, _ = default_provider()
    return chosen


def _write_report_quietly(folder: Path, store: Store | None = None) -> None:
    from .report import write_batch_report  # the page is exploration; imported on use

    memo = _ReportNote(store, folder) if isinstance(store, DiskStore) else None
    try:
        write_batch_report(folder, memo=memo)
    except OSError:
        pass  # the journal is the record; the page can be written again with `report`


_REPORT_NOTE = "batch-report:"


class _ReportNote:
    """Where the report's scan of one batch folder's journal ended, kept in the cache as
    a note (``report.ScanMemo``): the next pass's report reads only the lines added
    since (the report checks that the journal still begins with the bytes it read).
    The note begins with the folder's path and a newline, so ``prune_report_notes``
    can drop the notes of folders that are gone."""

    def __init__(self, store: DiskStore, folder: Path) -> None:
        self._store = store
        self._where = os.path.realpath(folder)
        digest = hashlib.sha256(self._where.encode("utf-8", "surrogatepass")).hexdigest()
        self._name = f"{_REPORT_NOTE}{digest}"

    def get(self) -> str | None:
        try:
            text = self._store.note(self._name)
        except StoreError:
            return None
        where, _, scan = (text or "").partition("\n")
        return scan if where == self._where and scan else None

    def put(self, text: str) -> None:
        try:
            self._store.commit_held({self._name: f"{self._where}\n{text}"})
        except StoreError as error:  # bookkeeping: the next report scans from the start
            logger.warning("batch: the report's place in the journal was not kept: %s", error)


def prune_report_notes(store: Store) -> int:
    """Drop the report notes (see ``_ReportNote``) of batch folders that are gone, and
    any of an older form; the number dropped (0 for a store that keeps none)."""
    if not isinstance(store, DiskStore):
        return 0

    def stale(text: str) -> bool:
        where, newline, _ = text.partition("\n")
        return not newline or not os.path.isdir(where)

    return store.drop_notes(_REPORT_NOTE, stale)


# ---------------------------------------------------------------------------- plan


class BatchPlan(BaseModel):
    """What a batch would do: items, edits cached and to run, the estimated cost."""

    model_config = ConfigDict(frozen=True)

    items: int
    items_invalid: int
    invalid: dict[str, str]
    edits_cached: int
    edits_to_run: int
    estimated_cost: float


def plan_batch(
    recipe: str | os.PathLike[str] | Callable[..., Graph],
    inputs: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    param: str | None = None,
    settings: Mapping[str, Any] | None = None,
    provider: Provider | None = None,
    cache: CacheLocation = None,
    limit: int | None = None,
) -> BatchPlan:
    """Plan every item of a batch against the cache; calls no provider, spends nothing."""
    loaded = _recipe(recipe)
    store = open_store(cache, create=False)  # a missing folder is read as empty, not made
    chosen = provider or _default_provider()
    items = invalid_count = cached = to_run = 0
    cost = 0.0
    invalid: dict[str, str] = {}
    # A shared source is decoded once; one an earlier pass checked, not at all.
    memo = prepared_sources.set(_CheckedSources(store, learn=False))
    try:
        for entry in read_items(inputs, loaded, param):
            if limit is not None and items >= limit:
                break
            items += 1
            try:
                graph = _build(loaded, _Input(entry.id, {**dict(settings or {}), **entry.values}))
                planned = graph.plan(provider=chosen, cache_dir=store)
            except EditGraphError as exc:
                invalid_count += 1
                if len(invalid) < 20:
                    invalid[entry.id] = str(exc)
                continue
            cached += len(planned.cached)
            to_run += len(planned.to_run)
            cost += planned.estimated_cost
    finally:
        prepared_sources.reset(memo)
    return BatchPlan(items=items, items_invalid=invalid_count, invalid=invalid, edits_cached=cached, edits_to_run=to_run,
                     estimated_cost=round(cost, 6))
