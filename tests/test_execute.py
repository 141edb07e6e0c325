"""Tests for execute.py: scheduling, concurrency, failures, caching across runs, sync facade."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from edit_providers import CountingProvider, GatedProvider, colour_of, png_bytes

import editgraph as eg
from editgraph.execute import execute
from editgraph.store import DiskStore

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))

#: A safety net for awaits on events: a broken scheduler fails the test instead of hanging.
TIMEOUT = 10.0


def chain_graph(cache: Path, prompts: list[str]) -> eg.Graph:
    """car -> e1 -> e2 -> … with the given prompts."""
    graph = eg.Graph(cache_dir=cache)
    previous = graph.image(RED, name="car")
    for index, prompt in enumerate(prompts, 1):
        handle = graph.edit(f"{prompt} {previous}", name=f"e{index}")
        assert isinstance(handle, eg.Handle)
        previous = handle
    return graph


class Recorder:
    """A Progress that records finished edits and sets an event per name."""

    def __init__(self, names: list[str]) -> None:
        self.finished: list[tuple[str, bool]] = []
        self.events = {name: asyncio.Event() for name in names}

    def advance(self, name: str, cached: bool) -> None:
        """Record one finished edit."""
        self.finished.append((name, cached))
        if name in self.events:
            self.events[name].set()


def test_run_generates_each_edit_once_and_caches(tmp_path: Path) -> None:
    """A first run generates every edit; a second run generates nothing."""
    graph = chain_graph(tmp_path / "cache", ["Paint", "Darken", "Frame"])
    provider = CountingProvider()
    first = graph.run(provider=provider)
    assert provider.nodes == ["e1", "e2", "e3"]
    assert not any(result.cached for result in first.values())
    second = graph.run(provider=provider)
    assert provider.nodes == ["e1", "e2", "e3"]
    assert all(result.cached for result in second.values())
    assert [second[name].data for name in second] == [first[name].data for name in first]


def test_references_reach_the_provider_with_bytes(tmp_path: Path) -> None:
    """The provider gets the rewritten prompt and each reference's bytes and hash."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    swatch = graph.image(BLUE, name="swatch")
    blue = graph.edit(f"Colour {car} like {swatch}", name="blue")
    graph.edit(f"Night scene of {blue}", name="night")
    provider = CountingProvider()
    run = graph.run(provider=provider)
    first, second = provider.calls
    assert first.prompt == "Colour image 1 like image 2"
    assert [reference.data for reference in first.references] == [RED, BLUE]
    assert second.references[0].data == run["blue"].data
    assert second.references[0].hash == run["blue"].output_hash
    assert second.references[0].source == "blue"


def test_seed_is_pinned_from_the_key(tmp_path: Path) -> None:
    """An edit without a seed gets one derived from its key, the same on every run."""
    graph = chain_graph(tmp_path / "cache", ["Paint"])
    first = CountingProvider()
    graph.run(provider=first)
    other = chain_graph(tmp_path / "other-cache", ["Paint"])
    second = CountingProvider()
    other.run(provider=second)
    assert first.calls[0].seed == second.calls[0].seed
    assert isinstance(first.calls[0].seed, int)


def test_wide_graph_reaches_but_never_exceeds_concurrency(tmp_path: Path) -> None:
    """Ten independent edits under concurrency=3: three in flight at once, never four."""

    async def scenario() -> None:
        graph = eg.Graph(cache_dir=tmp_path / "cache")
        car = graph.image(RED, name="car")
        names = [f"w{i}" for i in range(10)]
        for name in names:
            graph.edit(f"Variant {name} of {car}", name=name)
        release = asyncio.Event()
        provider = GatedProvider({name: release for name in names})
        running = asyncio.ensure_future(graph.arun(provider=provider, concurrency=3))
        await asyncio.wait_for(
            asyncio.gather(*(provider.started[name].wait() for name in names[:3])), TIMEOUT
        )
        assert provider.in_flight == 3
        release.set()
        run = await asyncio.wait_for(running, TIMEOUT)
        assert provider.max_in_flight == 3
        assert sorted(provider.nodes) == names
        assert len(run) == 10

    asyncio.run(scenario())


def test_node_starts_as_soon_as_its_inputs_are_ready(tmp_path: Path) -> None:
    """A fast branch runs to its end while a slow branch is still blocked."""

    async def scenario() -> None:
        graph = eg.Graph(cache_dir=tmp_path / "cache")
        car = graph.image(RED, name="car")
        graph.edit(f"Slow edit of {car}", name="slow")
        fast = graph.edit(f"Fast edit of {car}", name="fast")
        graph.edit(f"Then {fast}", name="after_fast")
        slow_gate = asyncio.Event()
        provider = GatedProvider({"slow": slow_gate}, watch=["after_fast"])
        running = asyncio.ensure_future(graph.arun(provider=provider, concurrency=4))
        await asyncio.wait_for(provider.started["after_fast"].wait(), TIMEOUT)
        assert provider.started["slow"].is_set() and not slow_gate.is_set()
        assert "slow" not in provider.finished
        slow_gate.set()
        run = await asyncio.wait_for(running, TIMEOUT)
        assert provider.finished.index("after_fast") < provider.finished.index("slow")
        assert set(run) == {"slow", "fast", "after_fast"}

    asyncio.run(scenario())


def test_failed_node_fails_only_its_descendants(tmp_path: Path) -> None:
    """A failure fails its descendants; other branches finish; RunError lists every failure."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    bad = graph.edit(f"Break {car}", name="bad")
    child = graph.edit(f"Continue {bad}", name="child")
    graph.edit(f"Continue {child}", name="grandchild")
    good = graph.edit(f"Fine {car}", name="good")
    graph.edit(f"Also fine {good}", name="good_child")
    graph.edit(f"Mix {good} and {bad}", name="mixed")
    provider = CountingProvider(fail={"bad"})
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=provider)
    error = caught.value
    assert set(error.failures) == {"bad", "child", "grandchild", "mixed"}
    assert isinstance(error.failures["bad"], eg.ProviderError)
    assert isinstance(error.failures["bad"].__cause__, RuntimeError)
    assert "the test provider refuses bad" in str(error.failures["bad"])
    for name, failed_input in [("child", "bad"), ("grandchild", "child"), ("mixed", "bad")]:
        failure = error.failures[name]
        assert isinstance(failure, eg.InputFailedError)
        assert failure.failed_input == failed_input
    lines = str(error).splitlines()
    assert len(lines) == 4  # one line per failed node, as DESIGN says
    for name in error.failures:
        assert any(line.startswith(f"{name}: ") for line in lines)
    assert sorted(provider.nodes) == ["bad", "good", "good_child"]
    partial = error.run
    assert isinstance(partial, eg.Run)
    assert set(partial) == {"good", "good_child"}

    # Finished results stayed in the cache: a working provider generates only the failed.
    fixed = CountingProvider()
    run = graph.run(provider=fixed)
    assert sorted(fixed.nodes) == ["bad", "child", "grandchild", "mixed"]
    assert run["good"].cached and run["good_child"].cached


def test_provider_error_keeps_its_node(tmp_path: Path) -> None:
    """A ProviderError raised by a provider is kept, with its node filled in."""

    class Refusing:
        name = "refusing"

        async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
            raise eg.ProviderError("moderation said no", status=422)

    graph = chain_graph(tmp_path / "cache", ["Paint"])
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=Refusing())
    failure = caught.value.failures["e1"]
    assert isinstance(failure, eg.ProviderError)
    assert failure.node == "e1" and failure.status == 422


def test_provider_returning_non_image_bytes_fails_the_node(tmp_path: Path) -> None:
    """Bytes that do not decode are a ProviderError, and nothing is cached for them."""
    graph = chain_graph(tmp_path / "cache", ["Paint"])
    broken = CountingProvider(image_for=lambda request: b"not an image")
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=broken)
    assert isinstance(caught.value.failures["e1"], eg.ProviderError)
    assert "not an image" in str(caught.value.failures["e1"])
    working = CountingProvider()
    graph.run(provider=working)
    assert working.nodes == ["e1"]


def test_provider_returning_the_wrong_type_fails_the_node(tmp_path: Path) -> None:
    """A provider returning raw bytes instead of a GeneratedImage is a ProviderError."""

    class Careless:
        name = "careless"

        async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
            return png_bytes((1, 2, 3))  # type: ignore[return-value]

    graph = chain_graph(tmp_path / "cache", ["Paint"])
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=Careless())
    failure = caught.value.failures["e1"]
    assert isinstance(failure, eg.ProviderError)
    assert "returned bytes, not an eg.GeneratedImage" in str(failure)


def test_cache_hit_never_waits_for_a_concurrency_slot(tmp_path: Path) -> None:
    """With the only slot held by a blocked generation, a cache hit still finishes."""
    store_dir = tmp_path / "cache"

    def node_only(request: eg.EditRequest) -> bytes:
        # "up" gives the same bytes whatever its prompt, so "hit" stays cached after it.
        return png_bytes(colour_of(request.node))

    first = eg.Graph(cache_dir=store_dir)
    car = first.image(RED, name="car")
    up = first.edit(f"Version one of {car}", name="up")
    first.edit(f"Downstream of {up}", name="hit")
    first.run(provider=CountingProvider(image_for=node_only))

    async def scenario() -> None:
        graph = eg.Graph(cache_dir=store_dir)
        car = graph.image(RED, name="car")
        up = graph.edit(f"Version two of {car}", name="up")  # runs again, same bytes
        graph.edit(f"Blocked edit of {car}", name="blocked")
        graph.edit(f"Downstream of {up}", name="hit")
        gate = asyncio.Event()
        provider = GatedProvider({"blocked": gate}, image_for=node_only)
        recorder = Recorder(["hit"])
        store = DiskStore(store_dir)
        running = asyncio.ensure_future(execute(
            list(graph.edits.values()), graph.sources, provider=provider, store=store,
            concurrency=1, progress=recorder,
        ))
        # "up" generated first and freed the slot; "blocked" now holds it.
        await asyncio.wait_for(provider.started["blocked"].wait(), TIMEOUT)
        await asyncio.wait_for(recorder.events["hit"].wait(), TIMEOUT)
        assert provider.in_flight == 1 and not gate.is_set()
        assert ("hit", True) in recorder.finished
        gate.set()
        run = await asyncio.wait_for(running, TIMEOUT)
        failures = run.failures
        store.close()
        assert failures == {}
        assert run["hit"].cached and not run["up"].cached
        assert provider.nodes == ["up", "blocked"]

    asyncio.run(scenario())


def test_upstream_rerun_with_same_bytes_keeps_downstream_cached(tmp_path: Path) -> None:
    """Keys come from reference bytes: an upstream re-run giving the same bytes changes nothing below."""

    def node_only(request: eg.EditRequest) -> bytes:
        return png_bytes(colour_of(request.node))

    cache = tmp_path / "cache"
    chain_graph(cache, ["Paint", "Darken", "Frame"]).run(
        provider=CountingProvider(image_for=node_only)
    )
    provider = CountingProvider(image_for=node_only)
    run = chain_graph(cache, ["Repaint", "Darken", "Frame"]).run(provider=provider)
    assert provider.nodes == ["e1"]
    assert not run["e1"].cached and run["e2"].cached and run["e3"].cached


def test_changing_a_middle_prompt_reruns_it_and_its_descendants(tmp_path: Path) -> None:
    """Changing e3 of five re-runs e3, e4 and e5 only."""
    cache = tmp_path / "cache"
    prompts = ["Paint", "Darken", "Frame", "Crop", "Sign"]
    first = CountingProvider()
    chain_graph(cache, prompts).run(provider=first)
    assert len(first.calls) == 5
    prompts[2] = "Reframe"
    second = CountingProvider()
    run = chain_graph(cache, prompts).run(provider=second)
    assert second.nodes == ["e3", "e4", "e5"]
    assert [run[name].cached for name in run] == [True, True, False, False, False]


def test_run_inside_a_running_event_loop(tmp_path: Path) -> None:
    """g.run() works when called from a coroutine (a notebook cell); so does await g.arun()."""
    graph = chain_graph(tmp_path / "cache", ["Paint", "Darken"])
    provider = CountingProvider()

    async def cell() -> None:
        run = graph.run(provider=provider)
        assert set(run) == {"e1", "e2"}
        again = await graph.arun(provider=provider)
        assert all(result.cached for result in again.values())

    asyncio.run(cell())
    assert provider.nodes == ["e1", "e2"]


def test_arun_in_async_code(tmp_path: Path) -> None:
    """await g.arun() generates in the caller's loop."""
    graph = chain_graph(tmp_path / "cache", ["Paint"])
    provider = CountingProvider()

    async def main() -> eg.Run:
        return await graph.arun(provider=provider)

    run = asyncio.run(main())
    assert provider.nodes == ["e1"] and not run["e1"].cached


def test_one_provider_object_serves_several_event_loops(tmp_path: Path) -> None:
    """The same provider object works across runs, graphs, event loops and threads."""
    provider = eg.providers.Preview()
    first = chain_graph(tmp_path / "one", ["Paint"])
    second = chain_graph(tmp_path / "two", ["Paint"])
    first.run(provider=provider)
    asyncio.run(second.arun(provider=provider))
    results: list[eg.Run] = []
    worker = threading.Thread(
        target=lambda: results.append(chain_graph(tmp_path / "three", ["Paint"]).run(
            provider=provider
        ))
    )
    worker.start()
    worker.join()
    assert not results[0]["e1"].cached
    assert results[0]["e1"].data == first.run(provider=provider)["e1"].data


def test_budget_below_estimate_spends_nothing(tmp_path: Path) -> None:
    """A budget below the estimate raises BudgetError before any provider call."""
    graph = chain_graph(tmp_path / "cache", ["Paint", "Darken", "Frame"])
    provider = CountingProvider()
    with pytest.raises(eg.BudgetError, match=r"estimated at \$0\.09.*budget of \$0\.05"):
        graph.run(provider=provider, budget=0.05)
    assert provider.calls == []
    graph.run(provider=provider, budget=0.09)
    assert len(provider.calls) == 3


def test_budget_counts_only_what_will_run(tmp_path: Path) -> None:
    """Cached edits cost nothing against the budget."""
    cache = tmp_path / "cache"
    chain_graph(cache, ["Paint", "Darken", "Frame"]).run(provider=CountingProvider())
    provider = CountingProvider()
    run = chain_graph(cache, ["Paint", "Darken", "Reframe"]).run(provider=provider, budget=0.03)
    assert provider.nodes == ["e3"]
    assert run.cost == pytest.approx(0.03)


def test_cache_only_miss_is_an_error_without_provider_calls(tmp_path: Path) -> None:
    """cache_only=True serves hits and fails each miss without calling the provider."""
    cache = tmp_path / "cache"
    chain_graph(cache, ["Paint"]).run(provider=CountingProvider())
    graph = chain_graph(cache, ["Paint", "Darken"])
    provider = CountingProvider()
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=provider, cache_only=True)
    assert set(caught.value.failures) == {"e2"}
    assert isinstance(caught.value.failures["e2"], eg.StoreError)
    assert "cache-only" in str(caught.value.failures["e2"])
    assert provider.calls == []


def test_identical_requests_generate_once(tmp_path: Path) -> None:
    """Two nodes with identical requests make one provider call and share the image."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car} blue", name="one", seed=3)
    graph.edit(f"Paint {car} blue", name="two", seed=3)
    provider = CountingProvider()
    run = graph.run(provider=provider)
    assert len(provider.calls) == 1
    assert run["one"].key == run["two"].key
    assert run["one"].data == run["two"].data
    assert [run["one"].cached, run["two"].cached].count(False) == 1


def test_identical_requests_share_a_failure(tmp_path: Path) -> None:
    """When the shared generation fails, both nodes fail, each under its own name."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car} blue", name="one", seed=3)
    graph.edit(f"Paint {car} blue", name="two", seed=3)
    provider = CountingProvider(fail={"one"})
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=provider)
    assert len(provider.calls) == 1
    assert set(caught.value.failures) == {"one", "two"}
    assert "'two'" in str(caught.value.failures["two"])


def test_provider_name_is_part_of_the_key(tmp_path: Path) -> None:
    """Results of different providers never mix: another name generates again."""
    graph = chain_graph(tmp_path / "cache", ["Paint"])
    graph.run(provider=CountingProvider(name="alpha"))
    beta = CountingProvider(name="beta")
    run = graph.run(provider=beta)
    assert beta.nodes == ["e1"] and not run["e1"].cached


def test_graph_default_provider_and_cache_dir(tmp_path: Path) -> None:
    """Graph(provider=, cache_dir=) are the defaults run() uses."""
    provider = CountingProvider()
    graph = eg.Graph(provider=provider, cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car}", name="blue")
    graph.run()
    assert provider.nodes == ["blue"]
    assert graph.run(cache_dir=tmp_path / "cache")["blue"].cached
    assert not graph.run(cache_dir=tmp_path / "elsewhere")["blue"].cached


def test_progress_bar_can_be_forced_on(tmp_path: Path) -> None:
    """progress=True runs with a bar without changing the results."""
    graph = chain_graph(tmp_path / "cache", ["Paint", "Darken"])
    run = graph.run(provider=CountingProvider(), progress=True)
    assert set(run) == {"e1", "e2"}


def test_two_concurrent_runs_of_one_graph_generate_each_edit_once(tmp_path: Path) -> None:
    """Two runs of the same graph at once (one store) pay once; the other is served cached."""

    async def both() -> tuple[eg.Run, eg.Run]:
        gate = asyncio.Event()
        provider = GatedProvider({"blue": gate})
        graph = eg.Graph(cache_dir=tmp_path / "cache", provider=provider)
        graph.edit(f"Paint {graph.image(RED, name='red')} blue", name="blue")
        first = asyncio.ensure_future(graph.arun(progress=False))
        second = asyncio.ensure_future(graph.arun(progress=False))
        await provider.started["blue"].wait()  # one generation is in flight, holding the lease
        gate.set()
        runs = await first, await second
        assert provider.nodes == ["blue"]
        return runs

    runs = asyncio.run(both())
    assert sorted(run["blue"].cached for run in runs) == [False, True]


# --------------------------------------------------------------------------- the cached path


def test_a_rerun_reuses_keys_only_while_node_and_inputs_are_unchanged(tmp_path: Path) -> None:
    """The graph's memo of keys never serves a stale key: a new input hash or another
    provider gives the key a fresh request would have."""
    graph = chain_graph(tmp_path / "cache", ["Make image 1 blue", "Make image 1 a night scene"])
    first = graph.run(provider=CountingProvider(), progress=False)
    again = graph.run(provider=CountingProvider(), progress=False)
    assert [r.key for r in again.values()] == [r.key for r in first.values()]
    assert all(r.cached for r in again.values())
    # Another provider: other keys, generated again.
    other = CountingProvider("other")
    moved = graph.run(provider=other, progress=False)
    assert other.nodes == ["e1", "e2"] and moved["e1"].key != first["e1"].key
    # e1's cached output disappears and comes back as other bytes: e2's key follows it.
    store = DiskStore(tmp_path / "cache")
    with store.batch():
        store._cache.delete(f"record:{first['e1'].key}")
    changed = CountingProvider(image_for=lambda request: BLUE)
    rerun = graph.run(provider=changed, progress=False)
    assert rerun["e1"].output_hash != first["e1"].output_hash
    assert rerun["e2"].key != first["e2"].key and changed.nodes == ["e1", "e2"]
    store.close()


def test_results_build_the_exact_request_on_demand(tmp_path: Path) -> None:
    """A result's request (generated or cached) is the one the provider was sent (but
    for the bytes the engine attaches to its references when sending)."""
    graph = chain_graph(tmp_path / "cache", ["Make image 1 blue", "Make image 1 a night scene"])
    provider = CountingProvider()
    made = graph.run(provider=provider, progress=False)
    cached = graph.run(provider=provider, progress=False)
    sent = {request.node: request for request in provider.calls}
    for run in (made, cached):
        for name, result in run.items():
            assert result.request.model_dump() == sent[name].model_dump()
            assert result.request.references[0].url == sent[name].references[0].url
    assert cached["e2"].record == made["e2"].record.model_copy(
        update={"created_at": cached["e2"].created_at})


def test_a_finished_run_holds_under_3_kb_per_edit(tmp_path: Path) -> None:
    """A Run of 300 edits holds < 3 KB per edit (its results build requests on demand)."""
    import gc
    import tracemalloc

    graph = eg.Graph(cache_dir=tmp_path / "cache")
    source = graph.image(RED, name="car")
    previous = source
    for index in range(300):
        previous = graph.edit(f"Make image 1 tone {index} {source if index % 10 == 0 else previous}",
                              name=f"n{index}")
    provider = CountingProvider()
    tracemalloc.start()
    try:
        for _ in ("generated", "cached"):
            run = graph.run(provider=provider, progress=False)
            gc.collect()
            with_run = tracemalloc.get_traced_memory()[0]
            del run
            gc.collect()
            assert (with_run - tracemalloc.get_traced_memory()[0]) / 300 < 3000
    finally:
        tracemalloc.stop()


class _Watched:
    """A result whose repr is counted: asyncio.run's way out must not write it."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "<watched>"


def test_run_main_returns_the_result_without_writing_its_repr() -> None:
    """run_main gives back the coroutine's own result, and asyncio.run's last step (the
    SIGINT handler's repr, which holds the main task) never reprs it."""
    from editgraph.execute import run_main

    async def make() -> _Watched:
        return _Watched()

    result = run_main(make())
    assert isinstance(result, _Watched) and result.reprs == 0

    async def fail() -> None:
        raise ValueError("as raised")

    with pytest.raises(ValueError, match="as raised"):
        run_main(fail())
