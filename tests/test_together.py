"""Tests for the Together provider, over real loopback HTTP against FakeTogether."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import io
import logging
import threading
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import stamina
import together
from aiohttp import web
from PIL import Image
from typing_extensions import Self

import editgraph as eg
from editgraph.errors import ConfigurationError, ProviderError
from editgraph.models import CATALOGUE
from editgraph.providers import DataURIHost, ImageHost, Provider, Together
from editgraph.providers.together import _retry_after
from editgraph.requests import EditRequest, GeneratedImage, Reference
from editgraph.testing import FakeTogether

T = TypeVar("T")

PLANTED_KEY = "tgp_v1_PLANTED_3b1f9c0d7e2a4b6c8d0e1f2a3b4c5d6e"
PRO = "black-forest-labs/FLUX.2-pro"
FLEX = "black-forest-labs/FLUX.2-flex"


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries, and our own attempt caps stay in force."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real key or base URL from the environment leaks into a test."""
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    monkeypatch.delenv("TOGETHER_BASE_URL", raising=False)


def run(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` on a fresh event loop, as a script or a notebook cell would."""

    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def png_bytes(
    colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)
) -> bytes:
    """A small solid-colour PNG made with Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bytes_reference(data: bytes, source: str = "car.png") -> Reference:
    """A reference held as bytes (a local file)."""
    return Reference(
        hash=hashlib.sha256(data).hexdigest(), media_type="image/png", source=source, data=data
    )


def make_request(**changes: Any) -> EditRequest:
    """An EditRequest with small defaults, overridden by ``changes``."""
    fields: dict[str, Any] = {
        "node": "night",
        "model": PRO,
        "prompt": "Make image 1 a night scene, wet asphalt",
        "width": 256,
        "height": 256,
        "seed": 7,
    }
    fields.update(changes)
    return EditRequest.model_validate(fields)


def provider(fake: FakeTogether, **options: Any) -> Together:
    """A Together provider pointed at ``fake``, with the planted key."""
    return Together(api_key=PLANTED_KEY, base_url=fake.base_url, **options)


def assert_key_absent(*texts: object) -> None:
    """The planted key is nowhere in ``texts`` (messages, reprs, logs)."""
    for text in texts:
        assert PLANTED_KEY not in str(text)
        assert PLANTED_KEY[8:20] not in str(text)


def failure_texts(error: BaseException) -> list[str]:
    """str and repr of an error and of every error chained under it."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


# --- the request body ---------------------------------------------------------------------


def test_body_matches_the_sdk_for_the_same_parameters() -> None:
    """Field names, types, order and omitted defaults equal what the official SDK sends."""
    source = png_bytes()
    data_uri = "data:image/png;base64," + base64.b64encode(source).decode()
    with FakeTogether() as fake:
        # SDK 2.x expects a base that ends in /v1, 3.x one without (docs/testing.md).
        sdk_base = fake.base_url + ("/v1" if together.__version__.startswith("2.") else "")
        sdk = together.Together(api_key="test", base_url=sdk_base, max_retries=0)
        sdk.images.generate(
            model=FLEX,
            prompt="Make image 1 blue",
            width=512,
            height=384,
            seed=11,
            steps=28,
            guidance_scale=7.5,
            output_format="png",
            reference_images=[data_uri],
            response_format="url",
            # The quickstart's name for it, sent as an extra field beside guidance_scale.
            extra_body={"prompt_upsampling": False, "guidance": 7.5},
        )
        sdk.images.generate(
            model=PRO,
            prompt="a fox",
            width=1024,
            height=768,
            seed=3,
            output_format="jpeg",
            response_format="url",
            extra_body={"prompt_upsampling": True},
        )
        ours = provider(fake)
        run(
            ours.generate(
                make_request(
                    model=FLEX,
                    prompt="Make image 1 blue",
                    width=512,
                    height=384,
                    seed=11,
                    steps=28,
                    guidance=7.5,
                    output_format="png",
                    references=(bytes_reference(source),),
                )
            )
        )
        run(
            ours.generate(
                make_request(
                    prompt="a fox",
                    width=1024,
                    height=768,
                    seed=3,
                    prompt_upsampling=True,
                )
            )
        )
        sdk_flex, sdk_pro, our_flex, our_pro = fake.requests
    assert our_flex == sdk_flex and list(our_flex) == list(sdk_flex)
    assert our_pro == sdk_pro and list(our_pro) == list(sdk_pro)
    assert "steps" not in our_pro and "guidance_scale" not in our_pro and "guidance" not in our_pro
    assert our_flex["guidance"] == our_flex["guidance_scale"] == 7.5


def test_prompt_upsampling_is_sent_false_unless_asked() -> None:
    """prompt_upsampling is always in the body, false by default."""
    with FakeTogether() as fake:
        run(provider(fake).generate(make_request()))
        assert fake.requests[0]["prompt_upsampling"] is False


def test_result_is_downloaded_decoded_and_its_url_recorded() -> None:
    """The image bytes come back decoded-checked, with the URL and its expiry."""
    with FakeTogether(api_key=PLANTED_KEY) as fake:
        before = time.time()
        result = run(
            provider(fake, result_url_ttl=120.0).generate(make_request(output_format="png"))
        )
        assert isinstance(result, GeneratedImage)
        assert result.media_type == "image/png" and result.unknown_outcomes == 0
        assert Image.open(io.BytesIO(result.data)).size == (256, 256)
        assert result.url is not None and result.url.startswith(fake.base_url)
        assert result.url_expires_at is not None
        assert before + 120.0 <= result.url_expires_at <= time.time() + 120.0
        assert hashlib.sha256(result.data).hexdigest() == fake.billed[0]["sha256"]


def test_provider_meets_the_protocol_and_is_exported() -> None:
    """Together is a Provider named "together"; DataURIHost is an ImageHost."""
    with FakeTogether() as fake:
        ours = provider(fake)
        assert isinstance(ours, Provider) and ours.name == "together"
        assert isinstance(DataURIHost(), ImageHost)


def test_key_and_base_url_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOGETHER_API_KEY and TOGETHER_BASE_URL configure Together() with no arguments."""
    with FakeTogether(api_key=PLANTED_KEY) as fake:
        monkeypatch.setenv("TOGETHER_API_KEY", PLANTED_KEY)
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        ours = Together()
        run(ours.generate(make_request()))
        assert len(fake.billed) == 1
        assert ours.base_url == fake.base_url
        assert_key_absent(repr(ours))


def test_missing_key_says_how_to_set_it() -> None:
    """Without a key anywhere, construction is a ConfigurationError naming TOGETHER_API_KEY."""
    with pytest.raises(eg.ConfigurationError, match="TOGETHER_API_KEY"):
        Together()


def test_provider_is_reused_across_event_loops() -> None:
    """One provider object serves several asyncio.run() calls, rate limit included."""
    with FakeTogether() as fake:
        ours = provider(fake, rate_limit=6000)
        for seed in range(3):
            run(ours.generate(make_request(seed=seed)))
        assert len(fake.billed) == 3


# --- references on the wire ---------------------------------------------------------------


def test_bytes_references_go_through_the_image_host() -> None:
    """A reference held as bytes is sent as a data: URI by default, via a custom host if given."""

    class CountingHost:
        def __init__(self) -> None:
            self.hosted: list[str] = []

        async def url_for(self, reference: Reference) -> str:
            self.hosted.append(reference.source)
            return await DataURIHost().url_for(reference)

    source = bytes_reference(png_bytes())
    host = CountingHost()
    with FakeTogether() as fake:
        run(provider(fake).generate(make_request(references=(source,))))
        run(provider(fake, image_host=host).generate(make_request(references=(source,))))
        first, second = fake.requests
    assert first["reference_images"][0].startswith("data:image/png;base64,")
    assert second["reference_images"] == first["reference_images"]
    assert host.hosted == ["car.png"]


def test_fresh_upstream_and_source_urls_are_sent_as_is() -> None:
    """A fresh upstream result goes as its URL, a source URL untouched."""
    with FakeTogether() as fake:
        ours = provider(fake)
        upstream = run(ours.generate(make_request(node="blue")))
        assert upstream.url is not None
        fresh = Reference(
            hash=hashlib.sha256(upstream.data).hexdigest(),
            media_type=upstream.media_type,
            source="blue",
            url=upstream.url,
            url_expires_at=upstream.url_expires_at,
            data=upstream.data,
        )
        by_url = Reference(
            hash=fresh.hash, media_type=fresh.media_type, source=upstream.url, url=upstream.url
        )
        run(ours.generate(make_request(references=(fresh, by_url))))
        assert fake.requests[-1]["reference_images"] == [upstream.url, upstream.url]


def test_locally_expired_upstream_url_is_sent_as_bytes() -> None:
    """An upstream result whose URL is past its expiry is sent through the image host."""
    with FakeTogether() as fake:
        ours = provider(fake)
        upstream = run(ours.generate(make_request(node="blue")))
        stale = Reference(
            hash=hashlib.sha256(upstream.data).hexdigest(),
            media_type=upstream.media_type,
            source="blue",
            url=upstream.url,
            url_expires_at=time.time() - 1,
            data=upstream.data,
        )
        run(ours.generate(make_request(references=(stale,))))
        assert fake.requests[-1]["reference_images"][0].startswith("data:image/jpeg;base64,")
        assert len(fake.requests) == 2


def test_upstream_url_that_expired_early_is_resent_as_bytes() -> None:
    """A 400 on reference_images for a 'fresh' upstream URL re-sends it once as a data: URI."""
    now = [0.0]
    with FakeTogether(url_ttl=60.0, clock=lambda: now[0]) as fake:
        ours = provider(fake)
        upstream = run(ours.generate(make_request(node="blue")))
        now[0] = 3600.0  # the service forgot the URL long before our ttl said it would
        fresh = Reference(
            hash=hashlib.sha256(upstream.data).hexdigest(),
            media_type=upstream.media_type,
            source="blue",
            url=upstream.url,
            url_expires_at=upstream.url_expires_at,
            data=upstream.data,
        )
        result = run(ours.generate(make_request(references=(fresh,))))
        _, refused, resent = fake.requests
    assert refused["reference_images"] == [upstream.url]
    assert resent["reference_images"][0].startswith("data:image/jpeg;base64,")
    assert result.unknown_outcomes == 0 and Image.open(io.BytesIO(result.data)).size == (256, 256)


def test_reference_refused_without_upstream_urls_fails_with_the_message() -> None:
    """Bytes that are no image are a ProviderError with the service's message, not re-sent."""
    broken = Reference(
        hash="0" * 64, media_type="image/png", source="broken.png", data=b"not an image"
    )
    with FakeTogether() as fake:
        with pytest.raises(ProviderError, match="broken.png|not a readable image") as caught:
            run(provider(fake).generate(make_request(references=(broken,))))
        assert caught.value.status == 400 and len(fake.requests) == 1


# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 409, 429 and 5xx answers are retried until the edit succeeds, billed once."""
    with FakeTogether() as fake:
        fake.fail_next(status, times=2, retry_after=0.01)
        result = run(provider(fake).generate(make_request()))
        assert len(fake.requests) == 3 and len(fake.billed) == 1
        assert result.unknown_outcomes == 0


def test_429s_spend_no_retries() -> None:
    """More 429s than max_retries are waited out, not failed: the pace adapts instead."""
    with FakeTogether() as fake:
        fake.fail_next(429, times=4, retry_after=0.01)
        run(provider(fake, max_retries=1).generate(make_request()))
        assert len(fake.requests) == 5 and len(fake.billed) == 1


def test_retries_stop_after_max_retries() -> None:
    """After max_retries the edit fails with the last status, nothing billed."""
    with FakeTogether() as fake:
        fake.fail_next(503, times=10)
        with pytest.raises(ProviderError, match="503") as caught:
            run(provider(fake, max_retries=2).generate(make_request()))
        assert caught.value.status == 503 and not caught.value.possibly_billed
        assert len(fake.requests) == 3 and fake.billed == []


def test_retry_after_is_honoured_instead_of_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """With real waiting on, a 503's Retry-After sets the wait (not the 1-2 s backoff):
    the retry is logged as waiting 0.3 s, and the call takes at least that. (An upper
    bound on the wall time, < 0.95 s, was flaky on a loaded machine: 2.5 s once.)"""
    caplog.set_level(logging.INFO, logger="editgraph")
    with FakeTogether() as fake, stamina.set_testing(False):
        fake.fail_next(503, retry_after=0.3)
        started = time.monotonic()
        run(provider(fake).generate(make_request()))
        elapsed = time.monotonic() - started
    retries = [record.getMessage() for record in caplog.records if "retrying" in record.getMessage()]
    assert len(retries) == 1 and "retrying in 0.3 s (try 2)" in retries[0], retries
    assert elapsed >= 0.3
    assert len(fake.requests) == 2


def test_retry_after_headers_are_read_like_the_sdk() -> None:
    """retry-after-ms wins over Retry-After; seconds, HTTP dates and silly values are handled."""
    assert _retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    assert _retry_after(httpx.Headers({"retry-after": "1.5"})) == 1.5
    assert _retry_after(httpx.Headers({"retry-after": "3600"})) is None
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    delay = _retry_after(httpx.Headers({"retry-after": date}))
    assert delay is not None and 25 <= delay <= 31


class ScriptedServer:
    """A loopback aiohttp server answering generation requests from a script, in order."""

    def __init__(self, answers: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.answers = answers
        self.seen = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        status, headers, body = self.answers[min(self.seen, len(self.answers) - 1)]
        self.seen += 1
        return web.json_response(body, status=status, headers=headers)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/images/generations", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def b64_answer() -> dict[str, Any]:
    """A successful answer carrying the image inline, as response_format="base64" gives."""
    encoded = base64.b64encode(png_bytes((1, 2, 3), size=(256, 256))).decode()
    return {
        "id": "x",
        "model": PRO,
        "object": "list",
        "data": [{"index": 0, "type": "b64_json", "b64_json": encoded}],
    }


def error_answer(message: str) -> dict[str, Any]:
    """An error body in the service's shape."""
    return {
        "id": "x",
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None},
    }


def test_x_should_retry_overrides_the_status() -> None:
    """x-should-retry: true retries a 400; false stops a 503 at once; b64_json answers work."""

    async def scenario() -> tuple[GeneratedImage, int, ProviderError, int]:
        retried = [
            (400, {"x-should-retry": "true"}, error_answer("try again")),
            (200, {}, b64_answer()),
        ]
        async with ScriptedServer(retried) as server:
            result = await Together(api_key=PLANTED_KEY, base_url=server.base_url).generate(
                make_request()
            )
            first_seen = server.seen
        stopped = [(503, {"x-should-retry": "false"}, error_answer("overloaded, do not retry"))]
        async with ScriptedServer(stopped) as server:
            with pytest.raises(ProviderError) as caught:
                await Together(api_key=PLANTED_KEY, base_url=server.base_url).generate(
                    make_request()
                )
            return result, first_seen, caught.value, server.seen

    result, first_seen, error, second_seen = run(scenario())
    assert first_seen == 2 and result.url is None and result.media_type == "image/png"
    assert error.status == 503 and second_seen == 1


def test_connection_refused_is_retried_then_reported() -> None:
    """A service that cannot be reached fails after the retries, not possibly billed."""
    with FakeTogether() as fake:
        base_url = fake.base_url
    with pytest.raises(ProviderError, match="could not connect") as caught:
        run(
            Together(api_key=PLANTED_KEY, base_url=base_url, max_retries=2).generate(make_request())
        )
    assert not caught.value.possibly_billed and caught.value.node == "night"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# --- unknown outcomes -----------------------------------------------------------------------


def test_read_timeout_is_retried_once_and_then_possibly_billed() -> None:
    """A read timeout is retried unknown_outcome_retries times; then 'may have been billed'."""
    with FakeTogether(latency=0.6) as fake:
        with pytest.raises(ProviderError, match="may have been billed") as caught:
            run(provider(fake, timeout=0.15, max_retries=5).generate(make_request()))
        assert caught.value.possibly_billed and caught.value.status is None
        assert len(fake.requests) == 2
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_a_resent_try_waits_longer_than_the_lost_one() -> None:
    """After a read timeout the re-sent try gets twice the timeout, so a slow answer lands."""
    with FakeTogether(latency=0.25) as fake:
        image = run(provider(fake, timeout=0.15, max_retries=5).generate(make_request()))
        assert image.unknown_outcomes == 1  # reported: the first try may be billed too
        assert len(fake.requests) == 2 and len(fake.billed) == 2


def test_no_unknown_outcome_retry_when_configured_off() -> None:
    """unknown_outcome_retries=0 never re-sends a request whose answer was lost."""
    with FakeTogether(latency=0.6) as fake:
        with pytest.raises(ProviderError, match="may have been billed"):
            run(provider(fake, timeout=0.15, unknown_outcome_retries=0).generate(make_request()))
        assert len(fake.requests) == 1


def test_injected_faults_are_absorbed_and_every_lost_answer_counted() -> None:
    """Under fault injection every billed-but-lost generation shows up as an unknown outcome."""
    with FakeTogether(fault_rate=0.35, fault_seed=4) as fake:
        ours = provider(fake, max_retries=8, unknown_outcome_retries=3)
        results: list[GeneratedImage] = []
        failures: list[ProviderError] = []
        for seed in range(24):  # one at a time: arrival order, and so the faults, are fixed
            try:
                results.append(run(ours.generate(make_request(seed=seed))))
            except ProviderError as error:
                failures.append(error)
        billed = fake.billed
    reported = sum(result.unknown_outcomes for result in results)
    lost = len(billed) - len(results)
    assert reported > 0, "this seed drops some connections; they must be counted"
    assert all(error.possibly_billed for error in failures if "may have been billed" in str(error))
    # Each billed generation whose answer never arrived was reported (a drop before
    # generating is reported too, though not billed: hence <=).
    assert lost <= reported + sum(error.possibly_billed for error in failures)
    assert len(results) + len(failures) == 24 and len(results) >= 20


# --- errors that say what to do ---------------------------------------------------------


def test_wrong_key_says_check_the_key_and_never_shows_it(caplog: pytest.LogCaptureFixture) -> None:
    """A 401 names TOGETHER_API_KEY and the node; the planted key is in no message, repr or log."""
    caplog.set_level(logging.DEBUG)
    with FakeTogether(api_key="the-right-key") as fake:
        ours = provider(fake)
        with pytest.raises(ProviderError) as caught:
            run(ours.generate(make_request()))
        assert len(fake.requests) == 1
    error = caught.value
    assert error.status == 401 and error.node == "night" and not error.possibly_billed
    assert "TOGETHER_API_KEY" in str(error) and "'night'" in str(error)
    assert_key_absent(*failure_texts(error), repr(ours), caplog.text)


def test_retried_failures_log_no_key(caplog: pytest.LogCaptureFixture) -> None:
    """Retries are logged by stamina without the key in any line."""
    caplog.set_level(logging.DEBUG)
    with FakeTogether(api_key=PLANTED_KEY) as fake:
        fake.fail_next(500, times=2, message=f"echo {PLANTED_KEY}")
        run(provider(fake).generate(make_request()))
        fake.fail_next(400, message=f"bad key {PLANTED_KEY} in body")
        with pytest.raises(ProviderError) as caught:
            run(provider(fake).generate(make_request()))
    assert caplog.records, "stamina logs each scheduled retry"
    assert_key_absent(caplog.text, *failure_texts(caught.value))


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (402, None, "add credits or raise the spend limit"),
        (403, None, "Organization Settings -> Privacy"),
        (400, "width must be a multiple of 16", "width must be a multiple of 16"),
        (422, "Unprocessable request.", "Unprocessable request"),
        (400, "Image flagged as NSFW by the safety checker", "content moderation"),
    ],
)
def test_client_errors_say_what_to_do_and_are_not_retried(
    status: int, message: str | None, expected: str
) -> None:
    """402, 403, 400 and 422 fail at once with an actionable message naming the node."""
    with FakeTogether() as fake:
        fake.fail_next(status, message=message)
        with pytest.raises(ProviderError) as caught:
            run(provider(fake).generate(make_request()))
        assert len(fake.requests) == 1
    assert caught.value.status == status and caught.value.node == "night"
    assert expected in str(caught.value) and "'night'" in str(caught.value)
    assert_key_absent(*failure_texts(caught.value))


def test_unknown_model_lists_the_known_ones() -> None:
    """A 404 for the model lists every FLUX.2 model Together serves (not BFL-only klein)."""
    with FakeTogether() as fake:
        with pytest.raises(ProviderError) as caught:
            run(provider(fake).generate(make_request(model="black-forest-labs/FLUX.2-turbo")))
        assert len(fake.requests) == 1
    assert caught.value.status == 404
    assert all(spec.id in str(caught.value) for spec in CATALOGUE if spec.on_together)
    assert "klein" not in str(caught.value)


def test_repr_hides_the_key() -> None:
    """repr(Together(...)) shows the settings, not the key."""
    ours = Together(api_key=PLANTED_KEY, base_url="http://127.0.0.1:9")
    assert "127.0.0.1:9" in repr(ours)
    assert_key_absent(repr(ours), str(ours), repr(vars(ours)))


# --- concurrency and rate limits ------------------------------------------------------------


def test_sixteen_edits_run_concurrently() -> None:
    """16 edits at 1 s latency overlap: well under the 16 s they take one by one.

    The bound (6 s) needs at least 3 at a time, so a loaded machine cannot fail it.
    """

    async def sixteen(ours: Together) -> list[GeneratedImage]:
        return await asyncio.gather(*(ours.generate(make_request(seed=seed)) for seed in range(16)))

    with FakeTogether(latency=1.0) as fake:
        started = time.monotonic()
        results = run(sixteen(provider(fake)))
        elapsed = time.monotonic() - started
        assert len(fake.billed) == 16
    assert len(results) == 16 and elapsed < 6.0


def test_user_rate_limit_is_never_exceeded() -> None:
    """rate_limit=600/min spaces requests 0.1 s apart, across calls and event loops."""

    async def burst(ours: Together, count: int) -> None:
        await asyncio.gather(*(ours.generate(make_request(seed=seed)) for seed in range(count)))

    with FakeTogether() as fake:
        ours = provider(fake, rate_limit=600)
        started = time.monotonic()
        run(burst(ours, 6))
        run(burst(ours, 2))
        elapsed = time.monotonic() - started
        assert len(fake.billed) == 8
    assert elapsed >= 0.7 * 0.99


def test_a_429_pauses_every_task_for_its_retry_after() -> None:
    """Once one call gets a 429, a call started later waits out the same Retry-After."""

    async def scenario(ours: Together) -> float:
        first = asyncio.create_task(ours.generate(make_request(seed=1)))
        while ours.rate_limited == 0:  # until the 429 has arrived
            await asyncio.sleep(0.005)
        started = time.monotonic()
        await ours.generate(make_request(seed=2))
        await first
        return time.monotonic() - started

    with FakeTogether() as fake:
        fake.fail_next(429, retry_after=0.6)
        waited = run(scenario(provider(fake)))
        assert len(fake.requests) == 3 and len(fake.billed) == 2
    assert waited >= 0.45


def test_service_rate_limit_slows_the_run_without_losing_edits() -> None:
    """Against a drained 600/min bucket, 12 edits all succeed, paced near the limit."""

    async def drain(base_url: str) -> None:
        # Unknown-model requests take a token and answer 404 at once: empty the bucket.
        async with httpx.AsyncClient() as client:
            answer = 0
            while answer != 429:
                answer = (
                    await client.post(f"{base_url}/v1/images/generations", json={"model": "drain"})
                ).status_code

    async def twelve(ours: Together, base_url: str) -> tuple[list[GeneratedImage], float]:
        # In one loop right after the drain, and timed from the 429 that showed the bucket
        # empty: a gap before the clock starts (a loaded machine) refills the bucket and
        # let the first requests through at once, which made a clock started later flaky.
        await drain(base_url)
        emptied = time.monotonic()
        results = await asyncio.gather(
            *(ours.generate(make_request(seed=seed)) for seed in range(12))
        )
        return results, time.monotonic() - emptied

    with FakeTogether(rate_limit=600) as fake:
        ours = provider(fake)
        results, elapsed = run(twelve(ours, fake.base_url))
        assert len(fake.billed) == 12
    assert len(results) == 12 and ours.rate_limited >= 1
    assert elapsed >= 1.0  # 12 tokens at 10/s from an empty bucket: 1.1 s at least


def test_a_base_url_with_userinfo_is_refused_without_showing_it() -> None:
    """A base URL with user:password@ is refused when made; the message hides the password."""
    with pytest.raises(ConfigurationError, match="user:password@") as caught:
        Together(api_key="tgp_v1_" + "k" * 30, base_url="https://user:hunter2@example.com/")
    assert "hunter2" not in str(caught.value)
    assert "https://example.com" in str(caught.value)


# --- fidelity: guidance names, base URLs, x-ratelimit-reset, data: URIs, prices ----------


@pytest.mark.parametrize("honour", ["guidance", "guidance_scale", "both"])
@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_a_flex_graph_reflects_guidance_under_every_honour_and_base_url(
    tmp_path: Any, honour: Any, suffix: str
) -> None:
    """Whichever guidance field the service reads, and with or without /v1, guidance changes the image."""
    with FakeTogether(honour=honour) as fake:
        ours = Together(api_key=PLANTED_KEY, base_url=fake.base_url + suffix)
        images = []
        for guidance in (2.5, 7.5):
            graph = eg.Graph(model="flux.2-flex", width=256, height=256, cache_dir=tmp_path / "c")
            graph.edit("A lighthouse at dusk", name="light", seed=4, steps=20, guidance=guidance)
            images.append(graph.run(provider=ours, progress=False)["light"].data)
        assert images[0] != images[1]
        assert [body["guidance"] for body in fake.requests] == [2.5, 7.5]
        assert [body["guidance_scale"] for body in fake.requests] == [2.5, 7.5]


def test_base_url_with_v1_never_posts_to_v1_v1() -> None:
    """TOGETHER_BASE_URL ending in /v1 (what SDK 1.x and 2.x expect) is the same base."""
    for given in ("https://api.together.ai/v1", "https://api.together.ai/v1/", "https://api.together.ai"):
        assert Together(api_key=PLANTED_KEY, base_url=given).base_url == "https://api.together.ai"
    assert Together(api_key=PLANTED_KEY, base_url="https://proxy.example/v1beta").base_url == (
        "https://proxy.example/v1beta"
    )


def test_x_ratelimit_reset_is_read_after_the_sdk_headers() -> None:
    """x-ratelimit-reset (seconds) is honoured when neither retry-after header is given."""
    assert _retry_after(httpx.Headers({"x-ratelimit-reset": "2.5"})) == 2.5
    assert _retry_after(httpx.Headers({"x-ratelimit-reset": "2", "retry-after": "1"})) == 1.0
    assert _retry_after(httpx.Headers({"x-ratelimit-reset": "never"})) is None
    assert _retry_after(httpx.Headers({"x-ratelimit-reset": "1800000000"})) is None


def test_a_429_with_x_ratelimit_reset_pauses_every_task() -> None:
    """A 429 carrying only x-ratelimit-reset makes a later call wait it out too."""

    async def scenario(ours: Together) -> float:
        first = asyncio.create_task(ours.generate(make_request(seed=1)))
        while ours.rate_limited == 0:  # until the 429 has arrived
            await asyncio.sleep(0.005)
        started = time.monotonic()
        await ours.generate(make_request(seed=2))
        await first
        return time.monotonic() - started

    with FakeTogether() as fake:
        fake.fail_next(429, ratelimit_reset=0.6)
        waited = run(scenario(provider(fake)))
        assert len(fake.requests) == 3 and len(fake.billed) == 2
    assert waited >= 0.45


def test_refused_data_uris_fail_with_the_image_host_message_and_are_learnt() -> None:
    """A data: URI refused on reference_images says how to configure an image host; later edits send nothing."""
    with FakeTogether(accept_data_uris=False) as fake:
        ours = provider(fake)
        request = make_request(references=(bytes_reference(png_bytes()),))
        with pytest.raises(ProviderError, match=r"image_host=") as caught:
            run(ours.generate(request))
        assert caught.value.status == 400 and not caught.value.possibly_billed
        assert "data: URI" in str(caught.value) and ours.data_uris is False
        with pytest.raises(ProviderError, match=r"nothing was sent.*image_host="):
            run(ours.generate(make_request(seed=9, references=(bytes_reference(png_bytes()),))))
        assert len(fake.requests) == 1 and fake.billed == []
        run(ours.generate(make_request(seed=10)))  # text only: still served
        assert len(fake.billed) == 1


class LoopbackImageHost:
    """An image host for tests: serves each reference it is given over loopback HTTP."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        blobs = self.blobs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = blobs.get(self.path.lstrip("/"))
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    async def url_for(self, reference: Reference) -> str:
        """'Upload' the bytes and answer their URL."""
        assert reference.data is not None
        self.blobs[reference.hash] = reference.data
        return f"http://127.0.0.1:{self.server.server_address[1]}/{reference.hash}"


def test_data_uris_false_sends_local_images_through_the_host() -> None:
    """data_uris=False with an image host: references go as the host's URLs and give the data: URI result."""
    reference = bytes_reference(png_bytes((20, 120, 220)))
    with FakeTogether() as inline:
        expected = run(provider(inline).generate(make_request(references=(reference,)))).data
        assert inline.requests[0]["reference_images"][0].startswith("data:image/png;base64,")
    with FakeTogether(accept_data_uris=False) as fake, LoopbackImageHost() as host:
        ours = provider(fake, data_uris=False, image_host=host)
        result = run(ours.generate(make_request(references=(reference,))))
        assert fake.requests[-1]["reference_images"] == [
            f"http://127.0.0.1:{host.server.server_address[1]}/{reference.hash}"
        ]
        assert "data_uris=False" in repr(ours)
    assert result.data == expected  # the fake's output depends on the bytes, not the URL


def test_a_recipe_with_local_images_fails_before_any_paid_generation(tmp_path: Any) -> None:
    """Against a service that refuses data: URIs, a graph with a local image pays nothing and says how to fix it."""
    with FakeTogether(accept_data_uris=False) as fake:
        graph = eg.Graph(width=256, height=256, cache_dir=tmp_path / "c")
        car = graph.image(png_bytes(), name="car")
        graph.edit(f"Make {car} blue", name="blue")
        graph.edit("Make @blue red", name="red")
        graph.edit(f"Frame {car}", name="frame", seed=2)
        with pytest.raises(eg.RunError) as caught:
            graph.run(provider=provider(fake, max_retries=0), progress=False, concurrency=1)
        assert fake.billed == []
        failures = caught.value.failures
        assert set(failures) == {"blue", "red", "frame"}
        assert "image_host=" in str(failures["blue"]) and "image_host=" in str(failures["frame"])
        assert len(fake.requests) == 1  # the first refusal taught the provider; nothing else sent


def test_budget_counts_megapixels() -> None:
    """A 1920x1080 pro edit is estimated at two megapixels ($0.06), so a $0.05 budget refuses it."""
    graph = eg.Graph(width=1920, height=1072)
    graph.edit("A fox", name="fox")
    assert graph.plan(provider=eg.providers.Preview()).estimated_cost == pytest.approx(0.06)
    with pytest.raises(eg.BudgetError):
        graph.run(provider=eg.providers.Preview(), budget=0.05, progress=False)


@pytest.mark.parametrize(("settings", "named"), [
    ({"max_retries": -1, "unknown_outcome_retries": -1}, "max_retries must be an int >= 0"),
    ({"unknown_outcome_retries": float("inf")}, "unknown_outcome_retries must be an int"),
    ({"max_retries": 1.5}, "max_retries must be an int"),
    ({"max_retries": True}, "max_retries must be an int"),
    ({"timeout": 0, "result_url_ttl": -1}, "timeout must be a finite number of seconds (> 0)"),
    ({"timeout": float("inf")}, "timeout must be a finite number"),
    ({"result_url_ttl": float("nan")}, "result_url_ttl must be a finite number"),
    ({"max_download_bytes": 0}, "max_download_bytes must be an int >= 1"),
    ({"rate_limit": "60"}, "rate_limit must be requests per minute"),
])
def test_bad_settings_are_refused_one_at_a_time_by_name(
    settings: dict[str, object], named: str
) -> None:
    """Each bad setting is refused in one line naming it alone (the first, when several
    are bad), as BFL does; inf retries and a str rate limit are refused too."""
    with pytest.raises(ConfigurationError) as caught:
        eg.providers.Together(api_key="k-test", **settings)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"Together: {named}") and "\n" not in message
    assert " and " not in message
