"""Tests for the BFL provider, over real loopback HTTP against FakeBFL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import stamina
from PIL import Image

import editgraph as eg
from editgraph.errors import ConfigurationError, GraphError, ModerationError, ProviderError
from editgraph.models import resolve_model
from editgraph.providers import BFL, Together
from editgraph.providers.base import progress_to
from editgraph.providers.bfl import _same_service, _varied_seed
from editgraph.requests import EditRequest, Reference
from editgraph.testing import FakeBFL

T = TypeVar("T")

KEY = "bfl_PLANTED_5c1e7d9a3b2f4e6d8c0a1b2c3d4e"
PRO = "black-forest-labs/FLUX.2-pro"
FLEX = "black-forest-labs/FLUX.2-flex"
KLEIN = "black-forest-labs/FLUX.2-klein-4b"


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries, and our own attempt caps stay in force."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic never goes through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeBFL]:
    with FakeBFL(api_key=KEY) as server:
        yield server


def provider_for(fake: FakeBFL, **settings: Any) -> BFL:
    settings.setdefault("poll_interval", 0.0)
    return BFL(api_key=KEY, base_url=fake.base_url, **settings)


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bytes_reference(data: bytes, source: str = "car.png") -> Reference:
    return Reference(hash=hashlib.sha256(data).hexdigest(), media_type="image/png", source=source,
                     data=data)


def make_request(**changes: Any) -> EditRequest:
    fields: dict[str, Any] = {"node": "night", "model": PRO, "prompt": "Make image 1 a night scene",
                              "width": 256, "height": 256, "seed": 7}
    fields.update(changes)
    return EditRequest(**fields)


# -- configuration ---------------------------------------------------------------------


def test_key_and_base_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, fake: FakeBFL) -> None:
    """BFL_API_KEY and BFL_BASE_URL configure the provider; the repr shows neither key nor userinfo."""
    monkeypatch.setenv("BFL_API_KEY", f"  {KEY}\n")
    monkeypatch.setenv("BFL_BASE_URL", fake.base_url + "/v1/")
    provider = BFL(poll_interval=0)
    assert provider.base_url == fake.base_url
    assert KEY not in repr(provider)
    image = run(provider.generate(make_request()))
    assert image.media_type == "image/jpeg"


def test_missing_or_malformed_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, or a key with a non-ASCII character, is refused naming the source, not the key."""
    with pytest.raises(ConfigurationError, match="BFL_API_KEY"):
        BFL()
    monkeypatch.setenv("BFL_API_KEY", "abc\u00e9def")
    with pytest.raises(ConfigurationError, match="BFL_API_KEY.*position 4") as caught:
        BFL()
    assert "abc" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="api_key="):
        BFL(api_key="abc def")


@pytest.mark.parametrize(("provider", "setting", "value"), [
    (eg.providers.BFL, "safety_tolerance", 7), (eg.providers.BFL, "max_retries", -1),
    (eg.providers.BFL, "unknown_outcome_retries", -1), (eg.providers.BFL, "max_active", 0),
    (eg.providers.BFL, "moderation_retries", -1), (eg.providers.BFL, "timeout", 0),
    (eg.providers.BFL, "poll_interval", -1.0), (eg.providers.BFL, "result_ttl", -1.0),
    (eg.providers.BFL, "rate_limit", 0), (eg.providers.Together, "timeout", 0),
    (eg.providers.Together, "max_retries", -1), (eg.providers.Together, "rate_limit", 0),
    (eg.providers.Together, "result_url_ttl", -1.0),
])
def test_both_providers_refuse_a_bad_setting_as_a_configuration_error(
    provider: Any, setting: str, value: object
) -> None:
    """A bad constructor setting is the same error from BFL as from Together: a
    ConfigurationError (not a GraphError, which is for graphs), one line naming it."""
    with pytest.raises(ConfigurationError) as caught:
        provider(api_key="k", **{setting: value})
    message = str(caught.value)
    assert not isinstance(caught.value, GraphError)
    assert message.startswith(f"{provider.__name__}: ") and setting in message
    assert len(message.splitlines()) == 1


def test_default_base_url_is_bfl() -> None:
    """Without BFL_BASE_URL the provider talks to https://api.bfl.ai."""
    assert BFL(api_key=KEY).base_url == "https://api.bfl.ai"


# -- the request on the wire -----------------------------------------------------------


def test_pro_body_has_the_documented_fields_only(fake: FakeBFL) -> None:
    """pro gets prompt, seed, size, format and safety_tolerance: no prompt_upsampling, no steps."""
    run(provider_for(fake, safety_tolerance=4).generate(make_request()))
    assert fake.requests == [{"prompt": "Make image 1 a night scene", "seed": 7, "width": 256,
                              "height": 256, "output_format": "jpeg", "safety_tolerance": 4}]
    assert fake.billed[0]["model"] == "flux-2-pro"


def test_references_go_as_raw_base64_slots_in_order(fake: FakeBFL) -> None:
    """Local references are input_image, input_image_2, ... as raw base64 (no data: prefix)."""
    first, second = png_bytes((1, 2, 3)), png_bytes((4, 5, 6))
    run(provider_for(fake).generate(make_request(
        references=(bytes_reference(first, "a.png"), bytes_reference(second, "b.png")))))
    body = fake.requests[0]
    assert base64.b64decode(body["input_image"]) == first
    assert base64.b64decode(body["input_image_2"]) == second


def test_a_fresh_upstream_url_is_sent_as_is(fake: FakeBFL) -> None:
    """An upstream result still fresh goes as its URL; the fake fetches it."""
    provider = provider_for(fake)
    first = run(provider.generate(make_request()))
    assert first.url is not None and first.url_expires_at is not None
    upstream = Reference(hash=hashlib.sha256(first.data).hexdigest(), media_type="image/jpeg",
                         source="night", url=first.url, url_expires_at=first.url_expires_at,
                         data=first.data)
    run(provider.generate(make_request(node="later", references=(upstream,))))
    assert fake.requests[1]["input_image"] == first.url


def test_flex_sends_steps_guidance_and_upsampling_off(fake: FakeBFL) -> None:
    """flex takes steps and guidance; prompt_upsampling goes out false unless asked."""
    run(provider_for(fake).generate(make_request(model=FLEX, steps=28, guidance=7.5)))
    body = fake.requests[0]
    assert (body["steps"], body["guidance"], body["prompt_upsampling"]) == (28, 7.5, False)
    assert fake.billed[0]["model"] == "flux-2-flex"


def test_klein_uses_its_endpoint_and_webp(fake: FakeBFL) -> None:
    """klein 4B is served from /v1/flux-2-klein-4b; webp output comes back as WebP."""
    refs = tuple(bytes_reference(png_bytes((n, n, n)), f"{n}.png") for n in range(4))
    image = run(provider_for(fake).generate(make_request(model=KLEIN, output_format="webp",
                                                          references=refs)))
    assert image.media_type == "image/webp"
    assert fake.billed[0]["model"] == "flux-2-klein-4b"
    assert "input_image_4" in fake.requests[0]


def test_the_cost_bfl_returns_is_the_images_cost(fake: FakeBFL) -> None:
    """GeneratedImage.cost is the credits of the submit answer, in dollars."""
    ref = bytes_reference(png_bytes(size=(1024, 1024)))
    image = run(provider_for(fake).generate(make_request(model=FLEX, width=1440, height=1440,
                                                          references=(ref,))))
    assert fake.billed[0]["cost"] == 15.0
    assert image.cost == pytest.approx(0.15)


def test_submission_journals_the_estimate_by_bfls_formula(fake: FakeBFL) -> None:
    """The journaled estimate counts the first MP, further output MP and every input MP."""
    from editgraph.providers.base import journal_for

    class Notes:
        may_submit = True
        recorded: list[Any] = []

        def find(self) -> None:
            return None

        async def record(self, submission: Any) -> None:
            self.recorded.append(submission)

        def abandon(self, submission: Any, reason: str) -> None:
            raise AssertionError(reason)

        def discard(self) -> None:
            raise AssertionError("discarded")

    notes = Notes()
    ref = bytes_reference(png_bytes(size=(1024, 1024)))

    async def main() -> None:
        with journal_for(notes):
            await provider_for(fake).generate(make_request(model=FLEX, width=1440, height=1440,
                                                           references=(ref,)))

    asyncio.run(main())
    assert notes.recorded[0].estimated_cost == pytest.approx(0.15)
    assert notes.recorded[0].cost == pytest.approx(0.15)


def test_plan_and_budget_use_bfls_formula(tmp_path: Path) -> None:
    """With BFL, plan counts input megapixels (sources and upstream edits alike)."""
    graph = eg.Graph(model="flux.2-max", width=1024, height=1024, cache_dir=tmp_path)
    car = graph.image(png_bytes(size=(1024, 1024)), name="car")
    blue = graph.edit(f"Make {car} blue", name="blue")
    graph.edit(f"Make {blue} a night scene", name="night")
    plan = graph.plan(provider=BFL(api_key=KEY))
    assert plan.estimated_cost == pytest.approx(0.20)  # (7 + 3) cents each
    assert graph.plan(provider=eg.providers.Preview()).estimated_cost == pytest.approx(0.14)
    with pytest.raises(eg.BudgetError, match=r"\$0\.2000"):
        graph.run(provider=BFL(api_key=KEY), budget=0.15)


# -- polling -----------------------------------------------------------------------------


def test_polls_the_returned_url_verbatim_and_reports_progress() -> None:
    """Pending answers are polled at the regional URL until Ready; progress reaches a listener."""
    seen: list[tuple[str, float]] = []
    with FakeBFL(latency=0.15) as fake:
        provider = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.02)

        async def main() -> None:
            with progress_to(lambda node, fraction: seen.append((node, fraction))):
                await provider.generate(make_request())

        asyncio.run(main())
        polls = fake.polls
    assert len(polls) >= 2 and len(set(polls)) == 1
    assert seen[-1] == ("night", 1.0)
    assert any(0 < fraction < 1 for _, fraction in seen)


def test_a_task_still_pending_at_the_timeout_fails_as_billed() -> None:
    """A task that is not ready within timeout fails, possibly billed, saying how to collect it."""
    with FakeBFL(latency=60.0) as fake:
        provider = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.01, timeout=0.05)
        with pytest.raises(ProviderError, match="still Pending") as caught:
            run(provider.generate(make_request()))
    assert caught.value.possibly_billed


def test_polling_url_on_a_foreign_host_gets_no_key() -> None:
    """The key is sent only to the base URL's host or its regional siblings."""
    assert _same_service("https://api.eu2.bfl.ai/v1/get_result?id=1", "https://api.bfl.ai")
    assert not _same_service("https://evil.example/v1/get_result", "https://api.bfl.ai")
    assert not _same_service("http://api.eu2.bfl.ai/x", "https://api.bfl.ai")
    assert _same_service("http://127.0.0.1:5/eu2/v1/get_result", "http://127.0.0.1:5")
    assert not _same_service("http://127.0.0.2:5/x", "http://127.0.0.1:5")


# -- retries -----------------------------------------------------------------------------


def test_429_waits_without_spending_retries(fake: FakeBFL) -> None:
    """The active-task cap (429) is waited out even with max_retries=0."""
    fake.fail_next(429, times=3, retry_after=0.01)
    image = run(provider_for(fake, max_retries=0).generate(make_request()))
    assert image.unknown_outcomes == 0 and len(fake.requests) == 4 and len(fake.billed) == 1


def test_client_side_cap_keeps_tasks_under_max_active() -> None:
    """With max_active=2, six edits at once never meet the service's 429."""
    with FakeBFL(api_key=KEY, latency=0.05, max_active=2) as fake:
        provider = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.01, max_active=2)

        async def main() -> None:
            await asyncio.gather(*(provider.generate(make_request(node=f"n{i}", seed=i))
                                   for i in range(6)))

        asyncio.run(main())
    assert len(fake.requests) == 6 and len(fake.billed) == 6


def test_a_5xx_submit_is_an_unknown_outcome_retried_once(fake: FakeBFL) -> None:
    """A 500 on submit may have created a task: retried once, and counted."""
    fake.fail_next(500)
    image = run(provider_for(fake).generate(make_request()))
    assert image.unknown_outcomes == 1


def test_unknown_outcomes_past_the_budget_fail_as_possibly_billed(fake: FakeBFL) -> None:
    """Two 503s with unknown_outcome_retries=1 fail the edit, saying it may be billed."""
    fake.fail_next(503, times=2)
    with pytest.raises(ProviderError, match="may have been created and billed") as caught:
        run(provider_for(fake).generate(make_request()))
    assert caught.value.possibly_billed and len(fake.requests) == 2


def test_faulty_service_still_delivers_every_edit() -> None:
    """With faults on submits and polls, every edit ends delivered; polls retry freely."""
    with FakeBFL(api_key=KEY, fault_rate=0.3, fault_seed=3) as fake:
        provider = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.0,
                       unknown_outcome_retries=20, max_retries=20)

        async def main() -> list[int]:
            images = await asyncio.gather(*(provider.generate(make_request(node=f"n{i}", seed=i))
                                            for i in range(8)))
            return [image.unknown_outcomes for image in images]

        unknown = asyncio.run(main())
        billed = len(fake.billed)
    assert billed >= 8 and sum(unknown) >= billed - 8


def test_bad_key_is_refused_without_showing_it() -> None:
    """A 401 says to check BFL_API_KEY and never shows the key."""
    with FakeBFL(api_key="the-right-key") as fake, pytest.raises(
        ProviderError, match="BFL_API_KEY"
    ) as caught:
        run(provider_for(fake).generate(make_request()))
    assert KEY not in str(caught.value) and caught.value.status == 401


def test_validation_error_names_the_field(fake: FakeBFL) -> None:
    """A 422 is final and names the field the service refused."""
    with pytest.raises(ProviderError, match="'width'"):
        run(provider_for(fake).generate(make_request(width=1000)))
    assert fake.billed == []


# -- moderation --------------------------------------------------------------------------


def test_request_moderated_is_never_retried(fake: FakeBFL) -> None:
    """Request Moderated fails with ModerationError after one submission, whatever the setting."""
    with pytest.raises(ModerationError, match="Request Moderated"):
        run(provider_for(fake, moderation_retries=3).generate(
            make_request(prompt="a cat [moderate-request]")))
    assert len(fake.billed) == 1


def test_content_moderated_fails_without_retries(fake: FakeBFL) -> None:
    """Content Moderated is a ModerationError (a ProviderError) and not retried by default."""
    with pytest.raises(ModerationError, match="Content Moderated") as caught:
        run(provider_for(fake).generate(make_request(prompt="a cat [moderate-output]")))
    assert isinstance(caught.value, ProviderError) and len(fake.billed) == 1


def test_moderation_retries_try_new_seeds_and_report_each(
    fake: FakeBFL, caplog: pytest.LogCaptureFixture
) -> None:
    """moderation_retries=2 tries new seeds, logs each retry, and sums the costs paid."""
    fake.passing_seeds.add(_varied_seed(7, 2))
    with caplog.at_level(logging.WARNING, logger="editgraph"):
        image = run(provider_for(fake, moderation_retries=2).generate(
            make_request(prompt="a cat [moderate-output]")))
    retries = [r for r in caplog.records if "moderated the output" in r.getMessage()]
    assert len(retries) == 2 and len(fake.billed) == 3
    assert image.seed == _varied_seed(7, 2)
    assert image.cost == pytest.approx(0.09)


# -- graphs ------------------------------------------------------------------------------


def test_dev_is_refused_when_declared_for_a_bfl_graph() -> None:
    """Declaring a dev edit in a graph whose provider is BFL is a GraphError naming alternatives."""
    graph = eg.Graph(model="flux.2-dev", provider=BFL(api_key=KEY))
    with pytest.raises(GraphError, match="node 'x': model: BFL hosts no endpoint.*flux.2-pro"):
        graph.edit("a fox", name="x")


def test_together_refuses_klein_naming_the_alternatives() -> None:
    """klein is BFL-only: Together refuses it before any call, naming what it serves."""
    graph = eg.Graph(model="flux.2-klein-4b")
    graph.edit("a fox", name="x")
    with pytest.raises(GraphError, match="node 'x': model: .*BFL only.*flux.2-pro, flux.2-max"):
        graph.run(provider=Together(api_key="k"))


def test_a_graph_run_records_what_bfl_charged(fake: FakeBFL, tmp_path: Path) -> None:
    """Run results and the manifest carry the cost BFL returned; a rerun is cached and free."""
    graph = eg.Graph(model="flux.2-pro", width=256, height=256, cache_dir=tmp_path / "cache")
    car = graph.image(png_bytes(size=(1024, 1024)), name="car")
    blue = graph.edit(f"Make {car} blue", name="blue")
    graph.edit(f"Make {blue} a night scene", name="night", model="flux.2-klein-9b")
    provider = provider_for(fake)
    result = graph.run(provider=provider)
    charged = sum(entry["cost"] for entry in fake.billed) / 100
    assert result.cost == pytest.approx(charged)
    assert [entry["model"] for entry in fake.billed] == ["flux-2-pro", "flux-2-klein-9b"]
    assert result["blue"].cost == pytest.approx(0.045)
    manifest = result.manifest
    assert manifest.estimated_cost == pytest.approx(charged)
    assert [entry.record.cost for entry in manifest.edits] == [e["cost"] / 100 for e in fake.billed]
    assert all(entry.record.charged for entry in manifest.edits)
    result.save(tmp_path / "out")
    again = graph.run(provider=provider)
    assert again["night"].cached and len(fake.billed) == 2


# -- the submission journal --------------------------------------------------------------


class SettableClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def two_edit_graph(cache: Path) -> eg.Graph:
    graph = eg.Graph(model="flux.2-pro", width=256, height=256, cache_dir=cache)
    car = graph.image(png_bytes(), name="car")
    blue = graph.edit(f"Make {car} blue", name="blue")
    graph.edit(f"Make {blue} a night scene", name="night")
    return graph


def test_a_journaled_task_is_polled_on_the_next_run_not_resubmitted(tmp_path: Path) -> None:
    """A run that gives up while polling leaves the task journaled; the next run collects it."""
    clock = SettableClock()
    store_dir = tmp_path / "cache"
    with FakeBFL(api_key=KEY, latency=30.0, clock=clock) as fake:
        graph = two_edit_graph(store_dir)
        impatient = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.01, timeout=0.05)
        with pytest.raises(eg.RunError) as caught:
            graph.run(provider=impatient)
        assert "journaled" in str(caught.value.failures["blue"])
        entries = list(eg.store.DiskStore(store_dir).journal_entries())
        assert [entry.submission.node for entry in entries] == ["blue"]
        clock.now += 30.0
        fake.latency = 0.0
        result = graph.run(provider=provider_for(fake))
        billed = fake.billed
    assert [entry["prompt"] for entry in billed] == ["Make image 1 blue",
                                                     "Make image 1 a night scene"]
    assert result.resumed == {"blue"} and result["blue"].cost == pytest.approx(0.045)
    assert list(eg.store.DiskStore(store_dir).journal_entries()) == []


class WatchedStore(eg.store.DiskStore):
    """A DiskStore that notes, for each journal write, its thread and what FakeBFL had
    been asked by then (the seam a test store exercises, as diskcache's tests do)."""

    def __init__(self, directory: Path, fake: FakeBFL) -> None:
        super().__init__(directory)
        self.fake = fake
        self.journaled: list[tuple[str, str, bool]] = []

    def put_journal(self, entry: Any) -> None:
        super().put_journal(entry)
        polled = entry.submission.task_id in self.fake.polls
        self.journaled.append((entry.submission.node, threading.current_thread().name, polled))


def test_a_submission_is_journaled_off_the_event_loop_before_its_first_poll(
    tmp_path: Path,
) -> None:
    """The journal write runs in the store's writer thread, not the loop's, and is
    committed before the task's first poll."""
    with FakeBFL(api_key=KEY) as fake:
        store = WatchedStore(tmp_path / "cache", fake)
        graph = two_edit_graph(tmp_path / "unused")
        graph.run(provider=provider_for(fake), cache_dir=store)
    loop_thread = threading.current_thread().name
    assert [node for node, _, _ in store.journaled] == ["blue", "night"]
    assert all(thread != loop_thread for _, thread, _ in store.journaled), store.journaled
    assert not any(polled for _, _, polled in store.journaled), "polled before journaled"
    assert list(store.journal_entries()) == []


def test_a_journaled_task_past_result_ttl_is_billed_not_delivered(tmp_path: Path) -> None:
    """An entry older than result_ttl is reported billed-not-delivered and submitted again."""
    clock = SettableClock()
    with FakeBFL(api_key=KEY, latency=30.0, clock=clock) as fake:
        graph = two_edit_graph(tmp_path / "cache")
        with pytest.raises(eg.RunError):
            graph.run(provider=BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.01,
                                   timeout=0.05))
        clock.now += 30.0
        fake.latency = 0.0
        result = graph.run(provider=provider_for(fake, result_ttl=0.0))
        billed = fake.billed
    assert len(billed) == 3  # blue twice (the first expired), night once
    assert [s.node for s in result.billed_not_delivered] == ["blue"]
    manifest = result.manifest
    assert [s.task_id for s in manifest.billed_not_delivered] == [billed[0]["id"]]


def impatient(fake: FakeBFL) -> BFL:
    """A provider that gives up polling at once (the fake's clock stands still meanwhile)."""
    return BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.01, timeout=0.05)


def test_a_task_the_service_forgot_is_billed_not_delivered(tmp_path: Path) -> None:
    """A journaled task the service no longer knows is reported and submitted again."""
    clock = SettableClock()
    with FakeBFL(api_key=KEY, latency=30.0, url_ttl=60.0, clock=clock) as fake:
        graph = two_edit_graph(tmp_path / "cache")
        with pytest.raises(eg.RunError):
            graph.run(provider=impatient(fake))
        clock.now += 100.0  # ready at +30, forgotten at +90
        with pytest.raises(eg.RunError) as caught:  # the new task is pending at the timeout
            graph.run(provider=impatient(fake))
        second = caught.value.run
        clock.now += 30.0
        fake.latency = 0.0
        result = graph.run(provider=provider_for(fake))
        billed = fake.billed
    assert isinstance(second, eg.Run)
    assert [s.task_id for s in second.billed_not_delivered] == [billed[0]["id"]]
    assert [entry["prompt"] for entry in billed].count("Make image 1 blue") == 2
    assert len(billed) == 3 and result.resumed == {"blue"}


RESUME_RECIPE = """\
import editgraph as eg

def recipe(colour: str = 'blue') -> eg.Graph:
    g = eg.Graph(model='flux.2-pro', width=256, height=256)
    car = g.image('car.png')
    a = g.edit(f'Make {car} {colour}', name='a')
    g.edit(f'Make {car} green', name='b')
    g.edit(f'Frame {a}', name='c')
    return g
"""


@pytest.fixture
def interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeBFL, SettableClock]]:
    """A recipe whose first run left edits a and b journaled (still pending) and c not run."""
    from editgraph.recipe import build_recipe

    clock = SettableClock()
    recipe = tmp_path / "two.py"
    (tmp_path / "car.png").write_bytes(png_bytes())
    recipe.write_text(RESUME_RECIPE)
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with FakeBFL(api_key=KEY, latency=30.0, clock=clock) as fake:
        monkeypatch.setenv("BFL_API_KEY", KEY)
        monkeypatch.setenv("BFL_BASE_URL", fake.base_url)
        with pytest.raises(eg.RunError):
            build_recipe(recipe).run(provider=impatient(fake))
        assert len(fake.billed) == 2
        yield recipe, fake, clock


def test_resume_with_a_recipe_collects_journaled_tasks_and_starts_nothing(
    interrupted: tuple[Path, FakeBFL, SettableClock], tmp_path: Path
) -> None:
    """`editgraph resume RECIPE` polls the journaled a and b, writes them, and submits nothing."""
    from click.testing import CliRunner

    from editgraph.cli import main

    recipe, fake, clock = interrupted
    clock.now += 30.0
    result = CliRunner().invoke(main, ["resume", str(recipe), "--out", "resumed"])
    assert result.exit_code == 0, result.output
    assert "2 delivered (a, b)" in result.stdout
    assert len(fake.billed) == 2
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["a.jpg", "b.jpg",
                                                                        "manifest.json"]


def test_resume_without_a_recipe_fills_the_cache(
    interrupted: tuple[Path, FakeBFL, SettableClock]
) -> None:
    """`editgraph resume` finishes every journaled task; the next run finds them cached."""
    from click.testing import CliRunner

    from editgraph.cli import main

    recipe, fake, clock = interrupted
    clock.now += 30.0
    resumed = CliRunner().invoke(main, ["resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "2 journaled tasks: 2 delivered" in resumed.stdout
    assert len(fake.billed) == 2
    fake.latency = 0.0
    run = CliRunner().invoke(main, ["run", str(recipe), "--out", "out"])
    assert run.exit_code == 0, run.output
    assert "3 edits: 1 run, 2 cached" in run.stdout and len(fake.billed) == 3


def test_resume_exits_1_when_a_journaled_task_was_not_delivered(
    interrupted: tuple[Path, FakeBFL, SettableClock]
) -> None:
    """A journaled task past its lifetime is reported billed-not-delivered; exit 1, nothing sent."""
    from click.testing import CliRunner

    from editgraph.cli import main

    recipe, fake, clock = interrupted
    clock.now += 30.0 + 600.0
    result = CliRunner().invoke(main, ["resume", str(recipe), "--out", "resumed"])
    assert result.exit_code == 1, result.output
    assert "billed, not delivered: a" in result.stdout
    assert len(fake.billed) == 2


KILL_RECIPE = """\
import editgraph as eg

def recipe(colour: str = 'blue') -> eg.Graph:
    g = eg.Graph(model='flux.2-pro', width=256, height=256)
    car = g.image('car.png')
    a = g.edit(f'Make {car} {colour}', name='a')
    g.edit(f'Make {car} green', name='b')
    g.edit(f'Make {car} red', name='c')
    g.edit(f'Frame {a}', name='d')
    return g
"""


def test_kill_9_while_polling_then_rerun_pays_each_edit_once(tmp_path: Path) -> None:
    """A run killed with SIGKILL while polling leaves its tasks journaled; the next run
    collects them: the fake's ledger shows one submission per edit, and the manifest's
    costs are what the fake charged."""
    import os
    import subprocess
    import sys
    import time

    (tmp_path / "car.png").write_bytes(png_bytes())
    recipe = tmp_path / "kill.py"
    recipe.write_text(KILL_RECIPE)
    clock = SettableClock()
    with FakeBFL(api_key=KEY, latency=30.0, clock=clock) as fake:
        env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
        env.update(BFL_API_KEY=KEY, BFL_BASE_URL=fake.base_url,
                   EDITGRAPH_CACHE_DIR=str(tmp_path / "cache"))
        command = [sys.executable, "-m", "editgraph", "run", str(recipe), "--out", "out"]
        child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            # Each task is journaled before its first poll: three polled tasks, three entries.
            while len(set(fake.polls)) < 3:
                assert child.poll() is None, "the run ended before it was killed"
                assert time.monotonic() < deadline, "the run never polled its three tasks"
                time.sleep(0.02)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -9
        assert len(fake.billed) == 3
        clock.now += 30.0
        fake.latency = 0.0
        again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                               check=False,
                               timeout=120)
        billed = fake.billed
    assert again.returncode == 0, again.stderr
    prompts = sorted(entry["prompt"] for entry in billed)
    assert prompts == sorted(["Make image 1 blue", "Make image 1 green", "Make image 1 red",
                              "Frame image 1"])
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.estimated_cost == pytest.approx(sum(entry["cost"] for entry in billed) / 100)
    assert manifest.billed_not_delivered == []


def test_a_batch_on_bfl_marks_moderated_items(fake: FakeBFL, tmp_path: Path) -> None:
    """In a batch, both of BFL's moderation statuses make the item 'moderated', not 'failed',
    and nothing is retried behind the user's back."""
    recipe = tmp_path / "items.py"
    recipe.write_text(
        "from pathlib import Path\n"
        "import editgraph as eg\n\n"
        "def recipe(photo: Path, colour: str = 'blue') -> eg.Graph:\n"
        "    g = eg.Graph(model='flux.2-pro', width=256, height=256)\n"
        "    product = g.image(photo, name='product')\n"
        "    g.edit(f'Paint {product} {colour}', name='painted')\n"
        "    return g\n"
    )
    photo = tmp_path / "p.png"
    photo.write_bytes(png_bytes())
    rows = [{"photo": photo, "colour": "blue", "id": "fine"},
            {"photo": photo, "colour": "red [moderate-output]", "id": "output"},
            {"photo": photo, "colour": "green [moderate-request]", "id": "request"}]
    result = eg.batch(recipe, rows, out=tmp_path / "out", provider=provider_for(fake),
                      cache=tmp_path / "cache")
    assert {item.id: item.status for item in result} == {
        "fine": "done", "output": "moderated", "request": "moderated"}
    assert len(fake.billed) == 3
