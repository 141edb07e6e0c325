"""Batches on a Dask distributed cluster (extra ``cluster``): the glue only.

Each batch item is one Dask task. The task carries the recipe's source text, the item's
parameter values, where the shared cache is and how to make the provider, as one JSON
document (never pickled objects of ours); the worker builds the item's graph, runs it
against the shared store (opened once per worker process) and returns the item's
outcome, also as JSON: its status, error, cost and the run's manifest (node → key,
output hash, cost), never image bytes. The client writes the item's folder from the
shared store.

Across all workers, provider calls are bounded through the scheduler: at most
``max_inflight`` at once (a ``distributed.Semaphore`` held for the call) and at most
``rate`` arriving at the service in any rolling 60 s window (a second semaphore of
``rate`` leases, each taken before a call and held until 60 s after the call ends: a
window in which ``rate + 1`` requests arrived would need ``rate + 1`` leases at once). The store's leases make every key paid once across the
cluster; a worker that dies mid-item has its item rescheduled by Dask, and the edits it
finished are cache hits for the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import ConfigurationError, GraphError
from .providers.base import Provider
from .recipe import Recipe
from .requests import EditRequest, GeneratedImage
from .runs import Manifest
from .store import Store
from .stores.base import CacheLocation, is_s3, open_store

__all__ = [
    "LOCAL_CLUSTER_CONFIG",
    "RATE_PERIOD",
    "ClusterPool",
    "ItemOutcome",
    "ItemTask",
    "Limits",
    "ProviderSpec",
    "cache_location",
    "open_pool",
    "parse_cluster",
    "provider_spec",
    "run_item_task",
    "save_outcome",
]

#: The rolling window ``rate`` is counted over, in seconds (``--rate`` is per minute).
RATE_PERIOD = 60.0

#: Dask settings for the clusters editgraph starts. The worker's statistical profiler
#: deadlocked a worker in about one run in four (Python 3.11.7, distributed 2026.8).
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False}


def parse_cluster(address: str) -> tuple[Literal["local"], int] | tuple[Literal["remote"], str]:
    """``local`` / ``local:N`` → ("local", N) (N defaults to the CPU count);
    ``tcp://host:port`` (or any Dask scheduler address) → ("remote", address)."""
    text = address.strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if not count:
            return "local", max(1, os.cpu_count() or 1)
        if not count.isdigit() or int(count) < 1:
            raise ConfigurationError(
                f"batch: --cluster {address}: expected local:N with N >= 1 workers, e.g. local:2"
            )
        return "local", int(count)
    if "://" not in text:
        raise ConfigurationError(
            f"batch: --cluster {address}: expected a scheduler address such as "
            "tcp://host:8786, or local:N"
        )
    return "remote", text


# ---------------------------------------------------------------------------- what travels


class ProviderSpec(BaseModel):
    """How a worker makes the batch's provider: its registered name and its non-secret
    settings. API keys are read from the worker's environment (a LocalCluster's workers
    inherit the client's), so they never travel through the scheduler."""

    model_config = ConfigDict(frozen=True)

    name: str
    base_url: str | None = None
    image_host: str | None = None
    image_host_expires: float | None = None


def provider_spec(provider: Provider) -> ProviderSpec:
    """The spec a worker rebuilds ``provider`` from; ConfigurationError when it cannot."""
    from .hosts import S3ImageHost
    from .providers import registry

    name = getattr(provider, "inner", provider).name  # a batch's bounded wrapper, or itself
    inner = getattr(provider, "inner", provider)
    if name not in registry.names():
        raise ConfigurationError(
            f"batch: provider {name!r} cannot be sent to a cluster: workers make providers "
            f"by registered name ({', '.join(registry.names())})"
        )
    host = getattr(inner, "image_host", None)
    base_url = getattr(inner, "base_url", None)
    if isinstance(host, S3ImageHost):
        return ProviderSpec(name=name, base_url=base_url, image_host=str(host.location),
                            image_host_expires=host.expires)
    return ProviderSpec(name=name, base_url=base_url)


class Limits(BaseModel):
    """Provider-call limits shared by every worker of one batch, through the scheduler."""

    model_config = ConfigDict(frozen=True)

    #: Unique per batch pass: names the scheduler's semaphores.
    name: str
    max_inflight: int
    #: Calls started per ``period`` seconds at most (rounded down); None: no limit.
    rate: float | None = None
    period: float = RATE_PERIOD


class ItemTask(BaseModel):
    """One batch item as it travels to a worker."""

    model_config = ConfigDict(frozen=True)

    recipe_source: str
    recipe_label: str
    recipe_root: str | None
    id: str
    values: dict[str, Any]
    cache: str
    provider: ProviderSpec
    limits: Limits
    concurrency: int


class ItemOutcome(BaseModel):
    """What a worker returns for one item: never image bytes."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: Literal["done", "failed", "moderated"]
    error: str | None = None
    cost: float = 0.0
    cached: bool = False
    #: The item's run manifest (JSON text: node → key, output hash, cost), when it ran.
    manifest: str | None = None


# ---------------------------------------------------------------------------- the worker

# Opened once per worker process and reused by every item it runs.
_recipes: dict[str, Recipe] = {}
_stores: dict[str, Store] = {}
_providers: dict[tuple[ProviderSpec, Limits], _GatedProvider] = {}


class _GatedProvider:
    """A provider whose calls take the batch's cluster-wide leases first."""

    def __init__(self, inner: Provider, limits: Limits) -> None:
        from distributed import Semaphore

        self.inner = inner
        self.name = inner.name
        self._limits = limits
        self._in_flight = Semaphore(max_leases=limits.max_inflight,  # type: ignore[no-untyped-call]
                                    name=f"editgraph-inflight-{limits.name}")
        self._rate: Any = None
        if limits.rate is not None:
            self._rate = Semaphore(max_leases=max(1, int(limits.rate)),  # type: ignore[no-untyped-call]
                                   name=f"editgraph-rate-{limits.name}")
        self._releases: set[asyncio.Task[None]] = set()

    async def generate(self, request: EditRequest) -> GeneratedImage:
        async with self._in_flight:
            if self._rate is None:
                return await self.inner.generate(request)
            await self._rate.acquire()
            try:
                return await self.inner.generate(request)
            finally:
                # The slot is held a whole period after the call ends: the service saw the
                # request arrive before the answer left, so later calls arrive a period on.
                release = asyncio.ensure_future(self._release_later(self._rate))
                self._releases.add(release)
                release.add_done_callback(self._releases.discard)

    async def _release_later(self, semaphore: Any) -> None:
        await asyncio.sleep(self._limits.period)
        await semaphore.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _recipe(task: ItemTask) -> Recipe:
    digest = hashlib.sha256(
        f"{task.recipe_label}\0{task.recipe_root}\0{task.recipe_source}".encode()
    ).hexdigest()
    loaded = _recipes.get(digest)
    if loaded is None:
        root = Path(task.recipe_root) if task.recipe_root is not None else None
        loaded = _recipes[digest] = Recipe.from_source(
            task.recipe_source, label=task.recipe_label, root=root)
    return loaded


def _store(location: str) -> Store:
    store = _stores.get(location)
    if store is None:
        store = _stores[location] = open_store(location)
    return store


def _provider(spec: ProviderSpec, limits: Limits) -> _GatedProvider:
    gated = _providers.get((spec, limits))
    if gated is None:
        from .hosts import S3ImageHost
        from .providers import registry

        settings: dict[str, Any] = {}
        if spec.base_url is not None:
            settings["base_url"] = spec.base_url
        if spec.image_host is not None:
            settings["image_host"] = S3ImageHost(spec.image_host,
                                                 expires=spec.image_host_expires or 3600)
        gated = _providers[(spec, limits)] = _GatedProvider(
            registry.by_name(spec.name, **settings), limits)
    return gated


async def run_item_task(task_json: str) -> str:
    """Run one batch item on a worker: ``ItemTask`` JSON in, ``ItemOutcome`` JSON out."""
    from .batch import _arun, _first_error, _moderated
    from .errors import EditGraphError

    task = ItemTask.model_validate_json(task_json)
    try:
        graph = _recipe(task).build(task.values, option="item")
        store = _store(task.cache)
        provider = _provider(task.provider, task.limits)
    except EditGraphError as exc:
        return ItemOutcome(id=task.id, status="failed", error=str(exc)).model_dump_json()
    run, failures = await _arun(graph, provider, store, task.concurrency)  # type: ignore[arg-type]
    manifest = run.manifest.model_dump_json() if run is not None else None
    cost = run.cost if run is not None else 0.0
    if failures:
        status: Literal["done", "failed", "moderated"] = (
            "moderated" if _moderated(failures) else "failed")
        return ItemOutcome(id=task.id, status=status, error=_first_error(failures), cost=cost,
                           manifest=manifest).model_dump_json()
    cached = run is not None and all(run[name].cached for name in run)
    return ItemOutcome(id=task.id, status="done", cost=cost, cached=cached,
                       manifest=manifest).model_dump_json()


# ---------------------------------------------------------------------------- the client


def save_outcome(manifest_json: str, store: Store, folder: Path) -> dict[str, str]:
    """Write an item's folder from the shared store as ``Run.save`` writes it (one image
    per edit, its record embedded, and ``manifest.json``); node name → file written."""
    from .provenance import embed_provenance
    from .saved import write_atomically  # saved runs are written by saved.py

    manifest = Manifest.model_validate_json(manifest_json)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for entry in manifest.finished_edits:
        data = store.get_blob(entry.record.output_hash)
        write_atomically(folder / entry.file, embed_provenance(data, entry.record))
        written[entry.record.node] = entry.file
    write_atomically(folder / "manifest.json", manifest.model_dump_json(indent=2).encode())
    return written


class ClusterPool:
    """A Dask client (and the LocalCluster it started, for ``local:N``) running items."""

    def __init__(self, client: Any, cluster: Any | None) -> None:
        self.client = client
        self._cluster = cluster

    async def run(self, task: ItemTask) -> ItemOutcome:
        """Run one item as a task; its outcome once a worker finished it (rescheduled by
        Dask on another worker if its worker dies)."""
        future = self.client.submit(run_item_task, task.model_dump_json(), pure=False,
                                    key=f"editgraph-item-{uuid.uuid4().hex}")
        return ItemOutcome.model_validate_json(await future)

    async def worker_pids(self) -> dict[str, int]:
        """Worker address → its process id."""
        pids: dict[str, int] = await self.client.run(os.getpid)
        return pids


@contextlib.asynccontextmanager
async def open_pool(
    address: str, cache: CacheLocation, *, items_per_worker: int = 8
) -> AsyncIterator[ClusterPool]:
    """A client of the cluster at ``address``. ``local[:N]`` starts a LocalCluster of N
    worker processes, its profiler off, each running up to ``items_per_worker`` items at
    once (a Dask worker runs as many tasks at once as it has threads, async ones too; an
    item mostly waits on the service). A remote cluster needs an ``s3://`` cache: its
    workers cannot see this machine's folders."""
    import dask
    from distributed import Client, LocalCluster

    kind, where = parse_cluster(address)
    if kind == "remote" and not _shared(cache):
        raise ConfigurationError(
            f"batch: --cluster {address} needs a cache every worker can reach: pass --cache "
            "s3://BUCKET/PREFIX (or set EDITGRAPH_CACHE_DIR); a local folder is only "
            "shared with local:N"
        )
    async with contextlib.AsyncExitStack() as stack:
        target: Any = where
        if kind == "local":
            # Nannies keep the config they were made with, for restarted workers too.
            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                target = await LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=where, threads_per_worker=items_per_worker, processes=True,
                    asynchronous=True,
                    dashboard_address=None, silence_logs=logging.CRITICAL,
                )
            stack.push_async_callback(target.close)
        client = await Client(target, asynchronous=True)  # type: ignore[no-untyped-call]
        stack.push_async_callback(client.close)
        yield ClusterPool(client, target if kind == "local" else None)


def _shared(cache: CacheLocation) -> bool:
    if cache is None:
        cache = os.environ.get("EDITGRAPH_CACHE_DIR") or None
    if isinstance(cache, str):
        return is_s3(cache)
    from .stores.s3 import S3Store

    return isinstance(cache, S3Store)


def cache_location(cache: CacheLocation) -> str:
    """The cache as text a worker can open: ``s3://…`` or a folder's absolute path."""
    if cache is None:
        cache = os.environ.get("EDITGRAPH_CACHE_DIR") or None
    if cache is None:
        from .store import default_cache_dir

        return str(default_cache_dir())
    if isinstance(cache, (str, os.PathLike)):
        text = os.fspath(cache)
        return text if is_s3(text) else str(Path(text).expanduser().resolve())
    from .store import DiskStore
    from .stores.s3 import S3Store

    if isinstance(cache, S3Store):
        return str(cache.location)
    if isinstance(cache, DiskStore):
        return str(Path(cache.directory).resolve())
    raise GraphError(f"batch: a cluster needs the cache as s3://… or a folder, got {cache!r}")

