"""The async scheduler: each edit starts as soon as its inputs are ready.

Cache hits are served at once (no concurrency slot, no rate limiter); misses run under a
concurrency bound, one generation per key across the run and across processes (leases
in the store). Local operations (op nodes) run in a worker thread as soon as their
inputs are ready, outside the concurrency bound and the rate limiter: they are free. A
failed edit fails only its descendants; every finished result is in the store before the
run moves on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import io
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from PIL import Image, UnidentifiedImageError

from .errors import BudgetError, InputFailedError, OperationError, ProviderError, StoreError
from .keys import content_hash, request_key
from .nodes import EditNode, OpNode, SourceNode
from .pixels import inspect_image
from .providers.base import Provider, journal_for, progress_to
from .records import EditRecord
from .redact import redact
from .requests import (
    EditRequest,
    GeneratedImage,
    OpRequest,
    Reference,
    Submission,
    media_type_of,
)
from .runs import NodeResult, Run
from .store import DEFAULT_GRAPH, LEASE_SECONDS, JournalEntry, Store
from .stores.writer import Writes, stage_blob

__all__ = [
    "OP_PROVIDER", "Drain", "Progress", "ResumeOutcome", "execute", "resume_journal",
    "run_draining", "run_sync",
]

logger = logging.getLogger("editgraph")

T = TypeVar("T")

#: What an op's record names as its provider: ops run locally, whatever provider the
#: run uses (their keys do not depend on it).
OP_PROVIDER = "local"

_Node = EditNode | OpNode
_Request = EditRequest | OpRequest
#: A node's key as the graph memoises it: (node, provider, input hashes, key, seed,
#: estimated cost).
_Keyed = tuple[_Node, str, tuple[str, ...], str, int, float]

#: At most this many bytes, and as many results as the run has slots, of results made
#: in a run are held for the edits that take them (beyond, the oldest are read back
#: from the store): what a wide graph waiting for slots holds stays bounded, whatever
#: its width.
FRESH_BYTES = 32 * 1024 * 1024

#: Interrupt notices; the command shows them, a script sees them on stderr.
_interrupt_log = logging.getLogger("editgraph.interrupt")
_DRAIN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raw_signal_functions() -> tuple[Callable[[int], Any], Callable[[int, Any], Any]]:
    """``signal.getsignal`` and ``signal.signal`` without their enum conversion of the
    handler: a handler that is no enum costs a failed enum lookup whose message holds
    the handler's repr, and asyncio.run's SIGINT handler holds its main task (whose repr
    walks the task's coroutine): 13 us a call inside a run, 0.1 us without."""
    try:
        raw: Any = importlib.import_module("_signal")
        return raw.getsignal, raw.signal
    except (ImportError, AttributeError):  # not CPython
        return signal.getsignal, signal.signal


_getsignal, _setsignal = _raw_signal_functions()


class Progress(Protocol):
    """Told as each edit finishes; ``editgraph`` passes a progress bar."""

    def advance(self, name: str, cached: bool) -> None:
        """One more edit finished (or failed)."""
        ...


class Drain:
    """A caller's handle on one run's interrupt, for a caller that takes SIGINT/SIGTERM
    itself (a batch passes one to each item's run): ``start`` drains the run as a first
    Ctrl-C would (no new edit starts; those being generated finish and are cached),
    whether it comes before or during the run; ``calling`` names the edits being
    generated now (possibly billed, should the caller abandon the run)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._engine: _Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work: asyncio.Future[None] | None = None

    def start(self, signal_number: int) -> None:
        """Drain the run (at most once); the caller announces it."""
        if self.signal_number is None:
            self.signal_number = signal_number
            if self._engine is not None:
                self._engine.drain(signal_number, announce=False)

    @property
    def calling(self) -> list[str]:
        """The edits being generated now, in graph order."""
        engine = self._engine
        if engine is None:
            return []
        return [node.name for node in engine.edits if node.name in engine.calling]

    def _attach(self, engine: _Engine) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        if self.signal_number is not None:
            engine.drain(self.signal_number, announce=False)

    def _interrupt_from_thread(self) -> None:
        """A Ctrl-C seen by another thread (a notebook's): the first drains the run and
        says so, as the run's own handler would; a second abandons it."""
        loop = self._loop
        if loop is None:  # the run has not started: it starts drained
            self.signal_number = signal.SIGINT
            return
        loop.call_soon_threadsafe(self._interrupt)

    def _interrupt(self) -> None:
        engine, work = self._engine, self._work
        if engine is None or work is None:
            return
        if engine.interrupted is None:
            self.signal_number = signal.SIGINT
            engine.drain(signal.SIGINT)
        else:
            _abandon(engine, work)


class _StoreJournal:
    """One edit's view of the submission journal in the store (see ``SubmissionJournal``)."""

    def __init__(self, engine: _Engine, key: str, request: EditRequest) -> None:
        self._engine = engine
        self._key = key
        self._request = request
        self.may_submit = not engine.journaled_only

    def find(self) -> Submission | None:
        entry = self._engine.store.get_journal(self._key)
        if entry is None or entry.provider != self._engine.provider.name:
            return None
        self._engine.journaled.add(self._key)
        self._engine.resumed.add(self._request.node)
        return entry.submission

    async def record(self, submission: Submission) -> None:
        self._engine.journaled.add(self._key)
        entry = JournalEntry(
            key=self._key, provider=self._engine.provider.name, submission=submission,
            request=self._request.model_dump(mode="json"),
        )
        # In the writer thread's next commit, off the loop; awaited, so the task is
        # journaled before its first poll.
        store = self._engine.store
        await self._engine.writes.submit(functools.partial(store.put_journal, entry))

    def abandon(self, submission: Submission, reason: str) -> None:
        logger.warning("node %r: BFL task %s was billed but not delivered (%s)",
                       submission.node, submission.task_id, reason)
        self._engine.billed_not_delivered.append(submission)
        self._engine.store.delete_journal(self._key)

    def discard(self) -> None:
        self._engine.store.delete_journal(self._key)


class _NotStarted(Exception):
    """An edit not started because the run is draining after an interrupt."""


@dataclass
class _Engine:
    edits: Sequence[_Node]
    sources: Mapping[str, SourceNode]
    provider: Provider
    store: Store
    concurrency: int
    cache_only: bool
    budget: float | None
    progress: Progress | None
    graph: str
    #: The graph's memo of keys: node name -> (node, provider, input hashes, key, seed,
    #: estimated cost); an entry counts only for the very node object and inputs.
    keys: dict[str, _Keyed] = field(default_factory=dict)
    done: dict[str, NodeResult] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    inflight: dict[str, tuple[str, asyncio.Future[NodeResult]]] = field(default_factory=dict)
    ran: dict[str, NodeResult] = field(default_factory=dict)  # history to write
    #: Edits whose history went into the commit of their result (not written again).
    history_kept: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    journaled_only: bool = False
    resumed: set[str] = field(default_factory=set)
    journaled: set[str] = field(default_factory=set)  # keys with a journal entry to clear
    billed_not_delivered: list[Submission] = field(default_factory=list)
    uncached: dict[str, str] = field(default_factory=dict)
    #: Results made in this run (node -> hash, bytes), handed to the edits that take
    #: them as references instead of being read back and hashed again from the store;
    #: dropped once the last of those edits has taken them or been decided otherwise
    #: (``consumers`` counts them down), and the oldest first past ``FRESH_BYTES``.
    fresh: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    fresh_bytes: int = 0
    consumers: dict[str, int] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)
    committed: float = 0.0
    saved: float = 0.0
    # Interrupts: the signal that asked to drain; the edits being generated (paid for)
    # now and when it came; the edits that were not started because of it.
    interrupted: int | None = None
    calling: set[str] = field(default_factory=set)
    in_flight: list[str] = field(default_factory=list)
    not_run: set[str] = field(default_factory=set)
    abandoned: bool = False
    # Leases taken ahead (with an input's commit): the futures of their acquisition by
    # key; those acquired and not used yet; the edits that take each node as an input.
    leased_ahead: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    unused_leases: set[str] = field(default_factory=set)
    dependents: dict[str, list[_Node]] | None = None
    #: Results made and queued for their commit, not through it yet: node -> hash.
    finishing: dict[str, str] = field(default_factory=dict)
    #: Edits whose inputs just became known, resolved together (``_resolve_soon``).
    to_resolve: list[tuple[_Node, asyncio.Future[tuple[_Request, str] | None]]] = field(
        default_factory=list)

    def drain(self, signal_number: int, *, announce: bool = True) -> None:
        """Start no new edit; let the ones being generated finish and be cached."""
        self.interrupted = signal_number
        self.in_flight = [node.name for node in self.edits if node.name in self.calling]
        if announce:
            _interrupt_log.warning(
                "interrupted: finishing %d edit(s) in flight (%s); no new edit starts. "
                "Press Ctrl-C again to abandon them (they may still be billed).",
                len(self.in_flight), ", ".join(self.in_flight) or "none",
            )

    def _check_draining(self, node: EditNode) -> None:
        if self.interrupted is not None:
            raise _NotStarted(node.name)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(self.concurrency)
        # Every store write goes through the store's writer thread, off this loop.
        self.writes = Writes(self.store)
        self.load = self.store.get_blob  # one bound method for every result
        self.by_name = {node.name: node for node in self.edits}
        consumers = self.consumers
        for node in self.edits:
            for name in node.references:
                if name in self.by_name:
                    consumers[name] = consumers.get(name, 0) + 1
        heartbeat: asyncio.Future[None] | None = None  # only while edits are generated
        tasks = []
        try:
            # Layer by layer, every edit whose inputs are all known is looked up in one
            # batch: a cache hit (or an input failure) resolves now, without a task, a
            # slot or the rate limiter. The others become tasks, started in the graph's
            # order once every layer is decided.
            started: dict[str, tuple[_Request, str] | None] = {}
            pending = self.pending
            for layer in self._layers():
                ready = []
                for node in layer:
                    for name in node.references:
                        if name in pending:  # an input not known yet: a task waits
                            pending[node.name] = loop.create_future()
                            started[node.name] = None
                            break
                    else:
                        ready.append(node)
                for node, prepared in self._resolve_many(ready):
                    self.pending[node.name] = loop.create_future()
                    started[node.name] = prepared
            self._lease_first(started)
            for node in self.edits:
                if node.name in started:
                    tasks.append(asyncio.ensure_future(self._run_edit(node, started[node.name])))
            # Queued with the first edits' leases, so it shares their commit; not at all
            # when every source is kept already (a cached re-run commits once).
            if not all(self.store.has_blob(node.hash) for node in self.sources.values()):
                self.writes.submit_staged(
                    self._keep_sources, stage=self._stage_sources,
                ).add_done_callback(_sources_not_kept)
            if tasks:
                # That commit goes to the writer now: its thread takes the leases while
                # this loop starts the tasks, rather than after their first steps.
                self.writes.hand_over()
                heartbeat = asyncio.ensure_future(self._renew_leases())
                await asyncio.gather(*tasks)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            # Bookkeeping for `plan` is written once, off the critical path (a generated
            # edit's history went in with its result). When the store cannot take it
            # (disk full), the results still stand: say so, go on.
            try:
                self._compare_history()
            except StoreError as error:  # then the history of cached edits stays as it was
                logger.warning("plan's history of this run was not compared: %s", error)
            ran = [(name, result) for name, result in self.ran.items()
                   if name not in self.history_kept]
            saved = self.saved
            if self.leased_ahead or self.unused_leases:
                self.writes.submit(self._release_unused_leases).add_done_callback(_quietly)
            if saved and not ran and self.store_holds_saved:
                # A batch holds the saved total for its own commit: added here, no
                # hand-off to the writer and no transaction for a fully cached item.
                self.store.add_saved(saved)
                saved = 0.0
            if ran or saved:  # one commit, none when nothing changed
                self.writes.submit(lambda: self._keep_history(ran, saved)).add_done_callback(
                    _history_not_kept)
            # Every exit (an error, a cancel, an abandon) returns only once everything
            # queued is committed and the writer thread is given back.
            try:
                await self.writes.close()
            finally:
                for ahead in self.leased_ahead.values():  # leases no edit took: heard
                    if ahead.done():
                        _quietly(ahead)

    def finish_from_cache(self) -> bool:
        """A batch item whose every edit is a verified hit, finished here: no task, no
        writer, no lease. Only when nothing would be written: the store holds the saved
        total (a batch pass), every source is kept and every edit's history names its
        key already. Otherwise False, and nothing of the run has changed (the full run
        then looks everything up again)."""
        if not self.store_holds_saved or self.interrupted is not None:
            return False
        try:
            found = self._verified_hits()
        except StoreError:
            return False  # the full run meets it again and says what it says
        if found is None:
            return False
        self.load = self.store.get_blob
        for node, result, saved in found.values():
            self._finish(node, result, saved=saved)
        if self.saved:
            self.store.add_saved(self.saved)  # held in memory: no write
        return True

    def _verified_hits(self) -> dict[str, tuple[_Node, NodeResult, float]] | None:
        """Every edit's verified hit (node, result, saved spend), when all of them are
        hits, every source is kept and every history names its key; else None."""
        store, sources = self.store, self.sources
        found: dict[str, tuple[_Node, NodeResult, float]] = {}
        load = store.get_blob
        # A disk store reads the first layer's records, the sources' rows and every
        # edit's history in one statement; any other store, one read of each.
        lookup_with = getattr(store, "lookup_with", None)
        history: dict[str, str] | None = None
        for layer in self._layers():
            keyed = []
            for node in layer:
                inputs: list[NodeResult | SourceNode] = []
                for name in node.references:
                    given = sources.get(name) or found[name][1]
                    inputs.append(given)
                keyed.append((node, inputs, self._keyed(node, _hashes(inputs))))
            keys = [known[3] for _, _, known in keyed]
            if history is None and lookup_with is not None:
                hits, kept, history = lookup_with(
                    keys, blobs=[source.hash for source in sources.values()],
                    history=[node.name for node in self.edits], graph=self.graph)
                if not kept:
                    return None
            else:
                hits = store.lookup(keys)
            for node, inputs, known in keyed:
                facts = hits.get(known[3])
                if facts is None:
                    return None
                found[node.name] = (node, NodeResult(facts, node=node, inputs=inputs,
                                                     cached=True, load=load), known[5])
        if history is None:
            if not all(store.has_blob(source.hash) for source in sources.values()):
                return None
            history = store.history_keys(list(found), self.graph)
        if any(history.get(name) != result.key for name, (_, result, _) in found.items()):
            return None
        return found

    @property
    def store_holds_saved(self) -> bool:
        """Whether the store keeps ``add_saved`` in memory for now (a batch pass holds
        it, see ``DiskStore.hold_saved``): then adding is no write."""
        return bool(getattr(self.store, "holds_saved", False))

    def _keep_history(self, ran: list[tuple[str, NodeResult]], saved: float) -> None:
        """In the writer thread: each result's record (built here, off the loop) as its
        node's history, and the spend cache hits saved."""
        for name, result in ran:
            self.store.put_history(name, result.record, self.graph)
        if saved:
            self.store.add_saved(saved)

    def _layers(self) -> list[list[_Node]]:
        """The edits by depth (an edit one deeper than its deepest input edit), each
        layer in the graph's order."""
        depth: dict[str, int] = {}
        layers: list[list[_Node]] = []
        for node in self.edits:
            level = 0
            for name in node.references:
                above = depth.get(name)
                if above is not None and above >= level:
                    level = above + 1
            depth[node.name] = level
            if level == len(layers):
                layers.append([])
            layers[level].append(node)
        return layers

    def _compare_history(self) -> None:
        """Queue for ``plan``'s history each cached edit whose history (in this graph)
        names another key; edits this run made are queued already."""
        cached = [name for name, result in self.done.items()
                  if result.cached and name not in self.ran]
        if not cached:
            return
        previous = self.store.history_keys(cached, self.graph)
        for name in cached:
            result = self.done[name]
            if previous.get(name) != result.key:
                self.ran[name] = result

    # ------------------------------------------------------------------ resolution

    def _inputs(self, node: _Node) -> list[NodeResult | SourceNode]:
        """The sources and finished results ``node`` takes, in order."""
        return [self.sources.get(name) or self.done[name] for name in node.references]

    def _input_hashes(self, node: _Node) -> tuple[str, ...]:
        """The content hashes of ``node``'s inputs, in order."""
        return _hashes(self._inputs(node))

    def _references(self, node: _Node) -> list[Reference]:
        references = []
        for name in node.references:
            source = self.sources.get(name)
            if source is not None:
                references.append(source.reference())
                continue
            upstream = self.done[name]
            references.append(Reference(
                hash=upstream.output_hash, media_type=upstream.media_type, source=name,
                url=upstream.url, url_expires_at=upstream.url_expires_at,
                # An upstream result the store could not keep is only in memory.
                data=upstream.data if upstream.name in self.uncached else None,
            ))
        return references

    def _bytes_of(self, reference: Reference) -> bytes:
        """A reference's bytes: attached, made in this run (hashed as they arrived), or
        read from the store (verified there)."""
        if reference.data is not None:
            return reference.data
        kept = self.fresh.get(reference.source or "")
        if kept is not None and kept[0] == reference.hash:
            return kept[1]
        return self.store.get_blob(reference.hash)

    def _decided(self, node: _Node) -> None:
        """``node`` has its inputs' bytes, or will never need them: let go of those no
        other edit of the run still waits for (once per node)."""
        if node.name in self.decided:
            return
        self.decided.add(node.name)
        for name in node.references:
            left = self.consumers.get(name)
            if left is None:
                continue
            if left <= 1:
                del self.consumers[name]
                self._drop_fresh(name)
            else:
                self.consumers[name] = left - 1

    def _hand_on(self, node: _Node, output_hash: str, data: bytes) -> None:
        """Keep a result just made for the edits of this run that take it, within
        ``FRESH_BYTES`` and one per slot (the oldest go first: those are read from the
        store)."""
        if not self.consumers.get(node.name):
            return
        self.fresh[node.name] = (output_hash, data)
        self.fresh_bytes += len(data)
        while self.fresh_bytes > FRESH_BYTES or len(self.fresh) > self.concurrency:
            self._drop_fresh(next(iter(self.fresh)))

    def _drop_fresh(self, name: str) -> None:
        kept = self.fresh.pop(name, None)
        if kept is not None:
            self.fresh_bytes -= len(kept[1])

    def _failed_input(self, node: _Node) -> str | None:
        return next((name for name in node.references if name in self.failed), None)

    def _keyed(self, node: _Node, hashes: tuple[str, ...]) -> _Keyed:
        """``node``'s key, seed and estimated cost given its inputs' hashes, from the
        graph's memo when neither the node nor its inputs changed."""
        provider = self.provider.name
        known = self.keys.get(node.name)
        if known is not None and known[0] is node and known[1] == provider and (
            known[2] == hashes
        ):
            return known
        if isinstance(node, OpNode):
            key, seed = node.key(list(hashes)), 0
        else:
            key, seed = request_key(node, hashes, provider)
        known = (node, provider, hashes, key, seed, node.estimate_cost(provider))
        self.keys[node.name] = known
        return known

    def _resolve_many(self, nodes: Sequence[_Node]) -> list[tuple[_Node, tuple[_Request, str]]]:
        """Finish from the cache (in one lookup) the ``nodes`` whose inputs are all
        known, or fail them for a failed input; return the others with their request
        and key, to be generated."""
        keyed: list[tuple[_Node, list[NodeResult | SourceNode], _Keyed]] = []
        sources, done = self.sources, self.done
        for node in nodes:
            if self.failed:
                failed_input = self._failed_input(node)
                if failed_input is not None:
                    self._fail(node, InputFailedError(node.name, failed_input))
                    self._decided(node)
                    continue
            inputs: list[NodeResult | SourceNode] = []
            hashes = []
            for name in node.references:  # _inputs and _hashes, inline: the hot path
                source = sources.get(name)
                if source is None:
                    upstream = done[name]
                    inputs.append(upstream)
                    hashes.append(upstream.output_hash)
                else:
                    inputs.append(source)
                    hashes.append(source.hash)
            keyed.append((node, inputs, self._keyed(node, tuple(hashes))))
        if not keyed:
            return []
        # Verified: a damaged entry is a miss (removed by the store), never a result.
        hits = self.store.lookup([known[3] for _, _, known in keyed])
        misses = []
        load = self.load
        for node, inputs, known in keyed:
            facts = hits.get(known[3])
            if facts is None:
                references = self._references(node)
                request = (node.request(references) if isinstance(node, OpNode)
                           else node.request(references, known[4]))
                misses.append((node, (request, known[3])))
            else:
                self._finish(node, NodeResult(facts, node=node, inputs=inputs, cached=True,
                                              load=load), saved=known[5])
                self._decided(node)
        return misses

    def _resolve_now(self, node: _Node) -> tuple[_Request, str] | None:
        """Finish ``node`` from the cache (or fail it for a failed input) and return
        None; or return its request and key when it must be generated."""
        for _, prepared in self._resolve_many([node]):
            return prepared
        return None

    def _resolve_soon(self, node: _Node) -> asyncio.Future[tuple[_Request, str] | None]:
        """``_resolve_now`` for ``node``, together with every other edit whose inputs
        became known in this turn of the loop (the dependents of a group of results
        committed together): one lookup for all, and the first of them no longer waits
        for the others' lookups to reach its provider call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[_Request, str] | None] = loop.create_future()
        if not self.to_resolve:
            loop.call_soon(self._resolve_batch)
        self.to_resolve.append((node, future))
        return future

    def _resolve_batch(self) -> None:
        batch, self.to_resolve = self.to_resolve, []
        batch = [(node, future) for node, future in batch if not future.done()]
        try:
            prepared = {node.name: ready
                        for node, ready in self._resolve_many([node for node, _ in batch])}
        except Exception:  # noqa: BLE001 - then each edit alone, so each fails alone
            for node, future in batch:
                if future.done():
                    continue
                if node.name in self.done or node.name in self.failed:
                    future.set_result(None)  # decided before the error
                    continue
                try:
                    future.set_result(self._resolve_now(node))
                except Exception as error:  # noqa: BLE001 - that edit's own failure
                    future.set_exception(error)
            return
        for node, future in batch:
            if not future.done():
                future.set_result(prepared.get(node.name))

    def _result(self, request: _Request, record: EditRecord, *, cached: bool) -> NodeResult:
        node = self.by_name.get(request.node)
        if node is None:  # not an edit of this run's graph: keep the request itself
            return NodeResult(record, request=request, cached=cached, load=self.store.get_blob)
        # The record's seed is kept: the provider may have changed it (a moderation retry).
        return NodeResult(record, node=node, inputs=self._inputs(node), cached=cached,
                          load=self.load)

    def _finish(self, node: _Node, result: NodeResult, *, saved: float | None = None) -> None:
        """``node`` is done (``saved``: a cache hit's estimated cost, when known)."""
        self.done[node.name] = result
        if result.cached:
            if saved is None:
                known = self.keys.get(node.name)
                saved = (known[5] if known is not None and known[0] is node
                         else node.estimate_cost(self.provider.name))
            self.saved += saved
        else:  # a cached one is compared with its history at the end
            self.ran[node.name] = result
        if self.progress is not None:
            self.progress.advance(node.name, result.cached)

    def _fail(self, node: _Node, error: BaseException) -> None:
        self.failed[node.name] = error
        if self.progress is not None:
            self.progress.advance(node.name, False)

    # ------------------------------------------------------------------ running

    async def _run_edit(self, node: _Node, prepared: tuple[_Request, str] | None) -> None:
        try:
            for name in node.references:
                if name in self.pending:
                    await self.pending[name]
            if any(name in self.not_run for name in node.references):
                raise _NotStarted(node.name)
            if prepared is None:
                prepared = await self._resolve_soon(node)
            if prepared is None:
                pass
            elif isinstance(node, OpNode):
                request, key = prepared
                assert isinstance(request, OpRequest)
                self._finish(node, await self._apply_op(node, request, key))
            else:
                request, key = prepared
                assert isinstance(request, EditRequest)
                self._finish(node, await self._generate_once(node, request, key))
        except _NotStarted:
            self.not_run.add(node.name)
        except Exception as error:  # noqa: BLE001 - a node's failure is recorded, not raised
            self._fail(node, error)
        finally:
            self._decided(node)  # ended without taking its inputs' bytes (or did)
            done = self.pending[node.name]
            if not done.done():  # cancelled when a dependent awaiting it was (run cancelled)
                done.set_result(None)

    async def _apply_op(self, node: OpNode, request: OpRequest, key: str) -> NodeResult:
        """Run a local operation in a worker thread and keep its PNG output.

        No slot, lease or rate limiter: an op is free and deterministic, so two
        processes racing on one key at worst compute the same bytes twice.
        """
        inputs = [self._bytes_of(reference) for reference in request.references]
        self._decided(node)
        started = time.perf_counter()

        def render() -> tuple[bytes, str, int, int]:
            data = node.operation.render(inputs, node.parameters)
            with Image.open(io.BytesIO(data)) as decoded:
                width, height = decoded.size
            return data, content_hash(data), width, height  # hashed in the worker too

        try:
            data, output_hash, width, height = await asyncio.to_thread(render)
        except OperationError as error:
            raise OperationError(f"node {node.name!r}: {error}", node=node.name) from error
        elapsed = time.perf_counter() - started
        record = EditRecord.of(
            request, key=key, provider=OP_PROVIDER, output_hash=output_hash,
            media_type="image/png", width=width, height=height, size_bytes=len(data),
            elapsed=elapsed, cost=0.0, created_at=time.time(),
        )
        await self.writes.submit(lambda: self._keep_output(record, data),
                                 stage=lambda: stage_blob(self.store, record.output_hash, data))
        self._hand_on(node, output_hash, data)
        return self._result(request, record, cached=False)

    def _keep_output(self, record: EditRecord, data: bytes) -> EditRecord:
        """Store an op's image and its record (write-once: a lost race is fine)."""
        self.store.put_blob(record.output_hash, data)
        self.store.put_record(record)
        return record

    async def _generate_once(self, node: EditNode, request: EditRequest, key: str) -> NodeResult:
        if self.cache_only:
            raise StoreError(
                f"node {node.name!r}: not in the cache, and the run is cache-only "
                "(drop --cache-only to generate it)"
            )
        if self.journaled_only and self.store.get_journal(key) is None:
            raise StoreError(
                f"node {node.name!r}: not started: resume only finishes journaled tasks "
                "(run the recipe to start it)"
            )
        # Two edits with the same key in one run (identical requests) generate once.
        shared = self.inflight.get(key)
        if shared is not None:
            owner, generation = shared
            try:
                first = await asyncio.shield(generation)
            except ProviderError as error:
                # Fail under this node's own name; the possible double bill is the owner's.
                raise ProviderError(
                    f"node {node.name!r}: same request as {owner!r}, which failed: {error}",
                    node=node.name, status=error.status,
                ) from error
            return self._result(request, first.record, cached=True)
        future: asyncio.Future[NodeResult] = asyncio.get_running_loop().create_future()
        self.inflight[key] = (node.name, future)
        try:
            result = await self._generate(node, request, key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters see it, nobody logs it as lost
            raise
        future.set_result(result)
        return result

    async def _generate(self, node: EditNode, request: EditRequest, key: str) -> NodeResult:
        self._check_draining(node)
        async with self.slots:
            self._check_draining(node)
            record = await self._take_lease(key)
            if record is not None:  # another process made it while we waited
                return self._result(request, record, cached=True)
            try:
                self._check_draining(node)
                sent = self._with_bytes(request)
                self._decided(node)
                known = self.keys.get(node.name)  # estimated with the key, as a rule
                cost = (known[5] if known is not None and known[0] is node
                        and known[1] == self.provider.name
                        else node.estimate_cost(self.provider.name))
                if self.budget is not None and self.committed + cost > self.budget + 1e-9:
                    raise BudgetError(
                        f"node {node.name!r}: not run: its estimated ${cost:.4f} would take "
                        f"the run past its budget of ${self.budget:.2f} "
                        f"(${self.committed:.4f} already committed)"
                    )
                self.committed += cost
                started = time.perf_counter()
                self.calling.add(node.name)
                try:
                    with journal_for(_StoreJournal(self, key, request)):
                        image = await self._call_provider(node.name, sent)
                finally:
                    self.calling.discard(node.name)
                elapsed = time.perf_counter() - started
                # Hashing and the header check of a large result run off the loop.
                examined = await self.writes.off_loop(
                    functools.partial(self._examine, node.name, image), size=len(image.data))
                record = self._record(node.name, request, key, image, elapsed, cost, examined)
                # The image, the record that points at it and the lease's release, in one
                # commit: a crash leaves either nothing or a complete, usable result. The
                # blob file is written by the writer thread before that transaction.
                # The node's history for ``plan`` joins it: nothing is left to write
                # for it at the end of the run.
                kept = self.writes.submit(
                    lambda: self._keep(record, image.data, history=node.name),
                    stage=lambda: stage_blob(self.store, record.output_hash, image.data),
                )
                # The leases of the edits this result completes join the same commit: a
                # chain pays one commit per link, not two.
                self.finishing[node.name] = record.output_hash
                self._lease_ahead(node)
                try:
                    await kept
                except StoreError as error:
                    # Paid for but not kept (disk full, say): the result is still this
                    # run's, served from memory, and the summary says it was not cached.
                    self.uncached[node.name] = str(error)
                    result = self._result(request, record, cached=False)
                    result.keep_in_memory(image.data)
                    return result
                self.history_kept.add(node.name)
                self._hand_on(node, record.output_hash, image.data)
                return self._result(request, record, cached=False)
            finally:
                self.finishing.pop(node.name, None)
                if key in self.held:
                    self.held.discard(key)
                    released = self.writes.submit(lambda: self.store.release_lease(key))
                    # Unheard if it fails: the lease then expires on its own.
                    released.add_done_callback(_quietly)

    async def _call_provider(self, name: str, request: EditRequest) -> GeneratedImage:
        try:
            image = await self.provider.generate(request)
        except ProviderError as error:
            if error.node is None:
                error.node = name
            raise
        except Exception as error:
            raise ProviderError(
                redact(f"node {name!r}: provider {self.provider.name!r} failed: {error}"),
                node=name,
            ) from error
        if not isinstance(image, GeneratedImage):
            raise ProviderError(
                f"node {name!r}: provider {self.provider.name!r} returned "
                f"{type(image).__name__}, not an eg.GeneratedImage", node=name,
            )
        return image

    def _with_bytes(self, request: EditRequest) -> EditRequest:
        """The request with every reference's bytes attached, for the provider to send."""
        references = []
        attached = False
        for reference in request.references:
            if reference.data is None:
                reference = reference.model_copy(update={"data": self._bytes_of(reference)})
                attached = True
            references.append(reference)
        if not attached:
            return request
        return request.model_copy(update={"references": tuple(references)})

    def _record(
        self, name: str, request: EditRequest, key: str, image: GeneratedImage,
        elapsed: float, cost: float, examined: tuple[str, int, int, str] | None = None,
    ) -> EditRecord:
        """The record of a generated image (``examined``: what ``_examine`` found, else
        it is examined here, in this thread)."""
        output_hash, width, height, media_type = examined or self._examine(name, image)
        if image.seed is not None:  # the provider had to change it (a moderation retry)
            request = request.model_copy(update={"seed": image.seed})
        return EditRecord.of(
            request, key=key, provider=self.provider.name,
            output_hash=output_hash, media_type=media_type, width=width,
            height=height, size_bytes=len(image.data), elapsed=elapsed,
            cost=image.cost if image.cost is not None else cost,
            charged=image.cost is not None,
            url=image.url, url_expires_at=image.url_expires_at,
            unknown_outcomes=image.unknown_outcomes, created_at=time.time(),
        )

    def _examine(self, name: str, image: GeneratedImage) -> tuple[str, int, int, str]:
        """A result's hash, pixel size and media type; ProviderError when its bytes are
        not an image. Touches nothing shared: a worker thread may run it.

        A PNG, JPEG or WebP whose header declares its size, within Pillow's bound on
        pixels, and that ends with its format's end marker is read from those bytes
        (microseconds); anything else is opened by Pillow (its header only, as before:
        about 0.2 ms a result), which warns of or refuses a pixel bomb."""
        facts = inspect_image(image.data)
        bound = Image.MAX_IMAGE_PIXELS
        if facts is not None and facts.complete and (
            bound is None or facts.width * facts.height <= bound
        ):
            return content_hash(image.data), facts.width, facts.height, facts.media_type
        try:
            with Image.open(io.BytesIO(image.data)) as decoded:
                width, height = decoded.size
                media_type = media_type_of(decoded.format) or image.media_type
        except (UnidentifiedImageError, OSError) as error:
            raise ProviderError(
                f"node {name!r}: provider {self.provider.name!r} returned bytes that "
                "are not an image", node=name,
            ) from error
        return content_hash(image.data), width, height, media_type

    def _keep(self, record: EditRecord, data: bytes, *, history: str | None = None) -> EditRecord:
        """Store an image and its record (and, given a node name, the node's history),
        then let go of the key's lease."""
        self.store.put_blob(record.output_hash, data)
        self.store.put_record(record)
        if history is not None:
            self.store.put_history(history, record, self.graph)
        if record.key in self.journaled:  # delivered: nothing left to resume
            self.store.delete_journal(record.key)
            self.journaled.discard(record.key)
        self.store.release_lease(record.key)
        self.held.discard(record.key)
        return record

    def _stage_sources(self) -> list[SourceNode]:
        """In the writer thread, before the transaction: the sources the store lacks,
        their blob files written ahead."""
        missing = [node for node in self.sources.values() if not self.store.has_blob(node.hash)]
        for node in missing:
            stage_blob(self.store, node.hash, node.data)
        return missing

    def _keep_sources(self, missing: list[SourceNode]) -> None:
        """Keep every source's bytes too, so a saved run can be replayed from the cache."""
        for node in missing:
            self.store.put_blob(node.hash, node.data)

    def _lease_ahead(self, node: EditNode) -> None:
        """Queue, with ``node``'s result, the leases of the edits whose inputs are all
        made now (their keys are known): ``node`` is their last input, or their others
        are being kept too (results that finish together). Taken in the same commit,
        before anything downstream can spend; a lease not used in the end is given back
        with the run's last writes."""
        if self.interrupted is not None or self.cache_only or self.journaled_only:
            return
        if self.dependents is None:
            self.dependents = {}
            for edit in self.edits:
                for name in dict.fromkeys(edit.references):
                    self.dependents.setdefault(name, []).append(edit)
        waiting = self.dependents.get(node.name, ())
        if not waiting:
            return
        for dependent in waiting:
            if not isinstance(dependent, EditNode):
                continue
            hashes = self._made_hashes(dependent)
            if hashes is None:
                continue
            try:
                key = self._keyed(dependent, hashes)[3]
            except Exception:  # noqa: BLE001, S112 - the edit itself will say what is wrong
                continue
            if key not in self.leased_ahead:
                # Heard when its edit takes it (``_take_lease``), or at the run's end.
                self.leased_ahead[key] = self.writes.submit(
                    functools.partial(self._acquire_ahead, key))

    def _lease_first(self, started: Mapping[str, tuple[_Request, str] | None]) -> None:
        """Queue the leases of the first edits to generate (as many as run at once), in
        the run's first commit; each edit's task then waits for its lease there. The
        lookup that missed came before the lease: the record is looked for again once
        the lease is held (``_acquire_first``)."""
        if self.interrupted is not None or self.cache_only or self.journaled_only:
            return
        queued = 0
        for node in self.edits:
            prepared = started.get(node.name)
            if prepared is None or not isinstance(node, EditNode):
                continue
            key = prepared[1]
            if key in self.leased_ahead:
                continue
            # Heard when its edit takes it (``_take_lease``), or at the run's end.
            self.leased_ahead[key] = self.writes.submit(
                functools.partial(self._acquire_first, key))
            queued += 1
            if queued >= self.concurrency:
                return

    def _acquire_first(self, key: str) -> bool:
        """In the writer thread: take a lease for an edit whose lookup missed; False
        when it is held elsewhere, or when the record is there now (made in between by
        another process: the lease is given back, and the edit finds the record)."""
        acquired, record = self._acquire_and_check(key)
        if not acquired or record is not None:
            return False
        self.unused_leases.add(key)
        return True

    def _made_hashes(self, node: _Node) -> tuple[str, ...] | None:
        """The hashes of ``node``'s inputs when every one is made (a source, a finished
        result, or one being kept now); else None."""
        hashes = []
        for name in node.references:
            source = self.sources.get(name)
            if source is not None:
                hashes.append(source.hash)
                continue
            done = self.done.get(name)
            made = done.output_hash if done is not None else self.finishing.get(name)
            if made is None:
                return None
            hashes.append(made)
        return tuple(hashes)

    def _acquire_ahead(self, key: str) -> bool:
        """In the writer thread: take a lease ahead; remember it until it is used."""
        acquired = self.store.acquire_lease(key)
        if acquired:
            self.unused_leases.add(key)
        return acquired

    def _release_unused_leases(self) -> None:
        """In the writer thread, after every lease taken ahead: give back the unused."""
        for key in list(self.unused_leases):
            self.unused_leases.discard(key)
            self.store.release_lease(key)

    async def _take_lease(self, key: str) -> EditRecord | None:
        """Hold the key's lease (one generation per key across processes); or return
        the record another process made while we waited for its lease."""
        ahead = self.leased_ahead.pop(key, None)
        if ahead is not None:
            try:
                acquired = await ahead
            except StoreError:
                acquired = False
            if acquired:
                # Taken with the input's commit, before this edit's lookup missed.
                self.unused_leases.discard(key)
                self.held.add(key)
                return None
        delay = 0.02
        while True:
            acquired, record = await self.writes.submit(
                functools.partial(self._acquire_and_check, key))
            if acquired:
                break
            if self.interrupted is not None:
                raise _NotStarted(key)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            record = self.store.get_verified_record(key)
            if record is not None:
                return record
        if record is None:
            self.held.add(key)
        return record

    def _acquire_and_check(self, key: str) -> tuple[bool, EditRecord | None]:
        """In the writer thread: take the key's lease and look again for its record
        (made in the moment between our miss and the lease: then the lease is given
        back at once). Whether the lease was free, and that record."""
        if not self.store.acquire_lease(key):
            return False, None
        try:
            record = self.store.get_verified_record(key)
        except BaseException:
            self.store.release_lease(key)
            raise
        if record is not None:
            self.store.release_lease(key)
        return True, record

    async def _renew_leases(self) -> None:
        """Keep every lease this run holds alive while its generation takes time."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            for key in list(self.held | self.unused_leases):
                renewed = self.writes.submit(functools.partial(self.store.renew_lease, key))
                renewed.add_done_callback(_quietly)


async def execute(
    edits: Sequence[EditNode | OpNode],
    sources: Mapping[str, SourceNode],
    *,
    provider: Provider,
    store: Store,
    concurrency: int = 8,
    cache_only: bool = False,
    budget: float | None = None,
    progress: Progress | None = None,
    notice: str | None = None,
    journaled_only: bool = False,
    graph: str = DEFAULT_GRAPH,
    keys: dict[str, Any] | None = None,
    drain: Drain | None = None,
) -> Run:
    """Run ``edits`` (in topological order) of the graph named ``graph``; the run's
    ``failures`` maps each edit that failed to its error.

    ``journaled_only`` (``editgraph resume``) finishes the tasks the submission journal
    holds and starts no new generation. ``keys`` is the graph's memo of its nodes' keys
    (kept by the caller from run to run; an entry is used only for the same node object
    with the same inputs). ``drain``: the caller's handle on interrupting this run (it
    then takes the signals itself).
    """
    engine = _Engine(
        edits=edits, sources=sources, provider=provider, store=store,
        concurrency=concurrency, cache_only=cache_only, budget=budget, progress=progress,
        journaled_only=journaled_only, graph=graph, keys={} if keys is None else keys,
    )
    if drain is not None:
        drain._attach(engine)
    repaired_before = store.repaired
    session = getattr(provider, "session", None)
    listener = getattr(progress, "update", None)
    if journaled_only or not engine.finish_from_cache():
        with progress_to(listener if callable(listener) else None):
            async with session() if callable(session) else contextlib.nullcontext():
                work = asyncio.ensure_future(engine.run())
                if drain is not None:
                    drain._work = work
                # A caller holding a drain takes the signals itself.
                with (_drain_on_signals(engine, work) if drain is None
                      else contextlib.nullcontext()):
                    try:
                        await work
                    except asyncio.CancelledError:
                        if not engine.abandoned:
                            raise  # cancelled from outside: not ours to handle
    results = {node.name: engine.done[node.name] for node in edits if node.name in engine.done}
    failures = {node.name: engine.failed[node.name] for node in edits if node.name in engine.failed}
    run = Run(results, provider=provider.name, failures=failures, notice=notice,
              billed_not_delivered=engine.billed_not_delivered, resumed=engine.resumed)
    run.repaired = store.repaired - repaired_before
    run.uncached = dict(engine.uncached)
    run.nodes = [node.name for node in edits]
    if engine.interrupted is not None:
        run.interrupted = engine.interrupted
        run.abandoned = engine.abandoned
        run.in_flight = list(engine.in_flight)
        run.not_run = [node.name for node in edits
                       if node.name not in results and node.name not in failures]
    return run

@dataclass(frozen=True)
class ResumeOutcome:
    """What ``resume_journal`` did: edits delivered, failed, and billed but not delivered."""

    delivered: list[str]
    failures: dict[str, BaseException]
    billed_not_delivered: list[Submission]
    skipped: list[str]


async def resume_journal(provider: Provider, store: Store) -> ResumeOutcome:
    """Finish every task the store's journal holds for ``provider``, starting none.

    Each delivered image is stored under its key, as a run would store it; running the
    recipe afterwards finds it in the cache.
    """
    engine = _Engine(edits=(), sources={}, provider=provider, store=store, concurrency=1,
                     cache_only=False, budget=None, progress=None, journaled_only=True,
                     graph=DEFAULT_GRAPH)
    delivered: list[str] = []
    failures: dict[str, BaseException] = {}
    skipped: list[str] = []
    session = getattr(provider, "session", None)
    async with session() if callable(session) else contextlib.nullcontext():
        for entry in list(store.journal_entries()):
            if entry.provider != provider.name:
                skipped.append(entry.submission.node)
                continue
            request = EditRequest.model_validate(entry.request)
            node = entry.submission.node
            try:
                if store.get_record(entry.key) is not None:
                    store.delete_journal(entry.key)
                    delivered.append(node)
                    continue
                sent = engine._with_bytes(request)
                started = time.perf_counter()
                with journal_for(_StoreJournal(engine, entry.key, request)):
                    image = await engine._call_provider(node, sent)
                record = engine._record(node, request, entry.key, image,
                                             time.perf_counter() - started,
                                             entry.submission.estimated_cost)
                with store.batch():
                    engine._keep(record, image.data)
                delivered.append(node)
            except Exception as error:  # noqa: BLE001 - one task's failure is reported, not raised
                failures[node] = error
    return ResumeOutcome(delivered=delivered, failures=failures,
                         billed_not_delivered=engine.billed_not_delivered, skipped=skipped)


class _DrainHandler:
    """A SIGINT/SIGTERM handler that hands the signal to the run's loop.

    Installed with ``signal.signal`` rather than ``loop.add_signal_handler``: the latter
    checks the signal against ``signal.valid_signals()`` each time, which builds a set
    of every signal as an enum (0.1-0.2 ms, twice per signal per run). The loop is woken
    through ``call_soon_threadsafe`` (its self-pipe), as asyncio's own handler does.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, act: Callable[[int], None]) -> None:
        self.loop = loop
        self.act = act

    def __call__(self, number: int, frame: object) -> None:
        self.loop.call_soon_threadsafe(self.act, number)


def _handled_by_a_loop(handler: object) -> bool:
    """Whether ``handler`` hands signals to an event loop (asyncio's, or a run's)."""
    return isinstance(handler, _DrainHandler) or (
        getattr(handler, "__module__", None) == "asyncio.unix_events"
    )


@contextlib.contextmanager
def _drain_on_signals(engine: _Engine, work: asyncio.Future[None]) -> Iterator[None]:
    """While a run works in the main thread: the first SIGINT or SIGTERM drains it, a
    second SIGINT abandons it (cancels ``work``). Earlier handlers come back after; a
    signal the caller already handles on this loop (``loop.add_signal_handler``, or an
    enclosing run) is left to the caller."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only (a notebook runs us in a worker)
        return
    loop = asyncio.get_running_loop()

    def on_signal(signal_number: int) -> None:
        if engine.interrupted is None:
            engine.drain(signal_number)
        elif signal_number == signal.SIGINT:
            _abandon(engine, work)

    handler = _DrainHandler(loop, on_signal)
    previous = {number: _getsignal(number) for number in _DRAIN_SIGNALS}
    installed = []
    try:
        for number in _DRAIN_SIGNALS:
            if _handled_by_a_loop(previous[number]):
                continue  # the caller's loop handles it (a batch drains its own items)
            try:
                _setsignal(number, handler)
            except (OSError, RuntimeError, ValueError):
                continue  # no signal handling here
            installed.append(number)
        yield
    finally:
        for number in installed:
            _setsignal(number, previous[number])


def _abandon(engine: _Engine, work: asyncio.Future[None]) -> None:
    """A second Ctrl-C: stop the run at once, naming the edits that may be billed."""
    if engine.abandoned:
        return
    engine.in_flight = [node.name for node in engine.edits if node.name in engine.calling]
    _interrupt_log.warning(
        "abandoned: %s may have been billed without a result",
        ", ".join(engine.in_flight) or "no edit",
    )
    engine.abandoned = True
    work.cancel()


def _hashes(inputs: Sequence[NodeResult | SourceNode]) -> tuple[str, ...]:
    """The content hashes of these sources and results, in order."""
    return tuple(given.hash if isinstance(given, SourceNode) else given.output_hash
                 for given in inputs)


def _history_not_kept(future: asyncio.Future[Any]) -> None:
    """Warn when the store could not take the run's bookkeeping (the results stand)."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("plan's history of this run was not kept: %s", future.exception())


def _sources_not_kept(future: asyncio.Future[Any]) -> None:
    """Warn when the store could not keep the graph's sources (the results stand; a
    replay from the cache needs them). Heard here, on the loop: an unheard failure was
    logged by whichever thread collected its future."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("the graph's sources were not kept in the cache: %s", future.exception())


def _quietly(future: asyncio.Future[Any]) -> None:
    """Mark a write's failure as heard (it needs no caller)."""
    if not future.cancelled():
        future.exception()


def run_draining(run: Callable[[Drain | None], Coroutine[Any, Any, T]]) -> T:
    """``run_sync`` of a run (``run(drain)`` makes its coroutine) that Ctrl-C drains in a
    notebook too.

    Inside a running loop (a notebook cell) the run works in a worker thread, where no
    signal reaches it; the notebook's interrupt arrives here as a KeyboardInterrupt. The
    first then drains the run as Ctrl-C does in a script (no new edit starts, those in
    flight finish and are cached, then ``RunInterrupted``), a second abandons it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_main(run(None))  # the run takes the signals itself
    drain = Drain()
    return run_in_worker(run(drain), drain._interrupt_from_thread)


class _Outcome:
    """A main task's result, held where its repr does not show it (see ``run_main``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


async def _held(coroutine: Coroutine[Any, Any, T]) -> _Outcome:
    return _Outcome(await coroutine)


def run_main(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``, its result held in a box on the way out: asyncio.run's
    last step, ``signal.getsignal(SIGINT)``, writes the repr of its handler, which holds
    the main task, whose repr holds its result: a finished Run's repr walks every edit
    (2 % of a cached re-run of 1,000 edits)."""
    value: T = asyncio.run(_held(coroutine)).value
    return value


def run_in_worker(coroutine: Coroutine[Any, Any, T], interrupt: Callable[[], None]) -> T:
    """``coroutine`` run to its end on a loop of its own in a worker thread, while a loop
    runs in this one (a notebook cell); each KeyboardInterrupt that reaches this thread
    meanwhile is handed on with ``interrupt()`` (the first drains, a second abandons)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, coroutine)
        while True:
            try:
                return future.result()
            except KeyboardInterrupt:
                if future.done():
                    raise
                interrupt()


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # A loop is running in this thread (a notebook cell): run ours in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()

