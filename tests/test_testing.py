"""FakeTogether over real loopback HTTP: shapes, validation, URLs, faults and load."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image, ImageStat

from editgraph.testing import FakeTogether

PRO = "black-forest-labs/FLUX.2-pro"
DEV = "black-forest-labs/FLUX.2-dev"
FLEX = "black-forest-labs/FLUX.2-flex"
MAX = "black-forest-labs/FLUX.2-max"
GENERATIONS = "/v1/images/generations"


class SettableClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeTogether]:
    with FakeTogether() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0, headers={"Authorization": "Bearer test-key"}) as c:
        yield c


def post(client: httpx.Client, fake: FakeTogether, **body: Any) -> httpx.Response:
    body.setdefault("model", PRO)
    body.setdefault("prompt", "A red fox in fresh snow")
    return client.post(fake.base_url + GENERATIONS, json=body)


def result_bytes(client: httpx.Client, response: httpx.Response, index: int = 0) -> bytes:
    assert response.status_code == 200, response.text
    entry = response.json()["data"][index]
    if entry["type"] == "b64_json":
        return base64.b64decode(entry["b64_json"])
    download = client.get(entry["url"])
    assert download.status_code == 200
    return download.content


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"id", "error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.005)


# -- shapes ----------------------------------------------------------------------------


def test_text_to_image_answers_a_url_in_the_sdk_shape(fake: FakeTogether, client: httpx.Client) -> None:
    """A plain generation answers {id, model, object, data[url]} and the URL serves a JPEG."""
    response = post(client, fake)
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"id", "model", "object", "data"}
    assert body["model"] == PRO and body["object"] == "list" and body["id"]
    entry = body["data"][0]
    assert len(body["data"]) == 1 and set(entry) == {"index", "type", "url", "timings"}
    assert (entry["index"], entry["type"]) == (0, "url")
    assert isinstance(entry["timings"]["inference"], float)
    assert body["data"][0]["url"].startswith(fake.base_url + "/files/")
    download = client.get(body["data"][0]["url"])
    assert download.headers["content-type"] == "image/jpeg"
    image = decode(download.content)
    assert (image.format, image.size) == ("JPEG", (1024, 768))


def test_png_output_has_the_requested_size(fake: FakeTogether, client: httpx.Client) -> None:
    """output_format png with width and height gives a PNG of exactly that size."""
    image = decode(result_bytes(client, post(client, fake, output_format="png", width=512, height=256)))
    assert (image.format, image.size) == ("PNG", (512, 256))


def test_base64_response_format_answers_b64_json(fake: FakeTogether, client: httpx.Client) -> None:
    """response_format base64 answers b64_json entries holding the image bytes."""
    response = post(client, fake, response_format="base64", width=256, height=256)
    entry = response.json()["data"][0]
    assert set(entry) == {"index", "type", "b64_json", "timings"} and entry["type"] == "b64_json"
    assert decode(base64.b64decode(entry["b64_json"])).size == (256, 256)


def test_n_gives_that_many_distinct_images(fake: FakeTogether, client: httpx.Client) -> None:
    """n=3 answers three indexed images that differ from one another."""
    response = post(client, fake, n=3, width=256, height=256)
    assert [entry["index"] for entry in response.json()["data"]] == [0, 1, 2]
    assert len({result_bytes(client, response, i) for i in range(3)}) == 3


def test_largest_size_is_served(fake: FakeTogether, client: httpx.Client) -> None:
    """1920 x 1920, the largest size, is generated at full size."""
    assert decode(result_bytes(client, post(client, fake, width=1920, height=1920))).size == (1920, 1920)


# -- determinism -----------------------------------------------------------------------


def test_same_request_gives_the_same_bytes(fake: FakeTogether, client: httpx.Client) -> None:
    """Sending one request twice returns identical bytes, under different URLs."""
    first = post(client, fake, seed=7)
    second = post(client, fake, seed=7)
    assert first.json()["data"][0]["url"] != second.json()["data"][0]["url"]
    assert result_bytes(client, first) == result_bytes(client, second)


@pytest.mark.parametrize(
    "change",
    [{"seed": 8}, {"prompt": "A grey wolf"}, {"width": 1008}, {"output_format": "png"}, {"model": FLEX}],
)
def test_changing_the_request_changes_the_bytes(
    fake: FakeTogether, client: httpx.Client, change: dict[str, Any]
) -> None:
    """A different seed, prompt, size, format or model gives different bytes."""
    base = result_bytes(client, post(client, fake, seed=7))
    assert result_bytes(client, post(client, fake, **{"seed": 7, **change})) != base


def test_output_depends_on_reference_bytes_not_urls(fake: FakeTogether, client: httpx.Client) -> None:
    """The same reference bytes via a result URL or a data: URI give the same output."""
    source = post(client, fake, seed=1, width=256, height=256)
    source_bytes = result_bytes(client, source)
    by_url = post(client, fake, prompt="Make image 1 blue", reference_images=[source.json()["data"][0]["url"]])
    by_data = post(client, fake, prompt="Make image 1 blue", reference_images=[data_uri(source_bytes, "image/jpeg")])
    other = post(client, fake, prompt="Make image 1 blue", reference_images=[data_uri(png_bytes((0, 0, 255)))])
    assert result_bytes(client, by_url) == result_bytes(client, by_data)
    assert result_bytes(client, other) != result_bytes(client, by_url)


def test_a_result_sent_back_as_bytes_first_shows_as_by_url(
    fake: FakeTogether, client: httpx.Client
) -> None:
    """A result sent back as a data: URI before its URL ever is, among results made
    since, gives what another fake gives for its URL (its hash is computed late)."""

    def chained(server: FakeTogether, as_bytes: bool) -> bytes:
        source = post(client, server, seed=3, width=256, height=256)
        source_bytes = result_bytes(client, source)
        for seed in range(4, 8):  # later results, none of them hashed yet
            result_bytes(client, post(client, server, seed=seed, width=256, height=256))
        reference = (data_uri(source_bytes, "image/jpeg") if as_bytes
                     else source.json()["data"][0]["url"])
        return result_bytes(client, post(client, server, prompt="Make image 1 green",
                                         reference_images=[reference]))

    with FakeTogether() as other:
        assert chained(fake, as_bytes=True) == chained(other, as_bytes=False)


def test_billed_hashes_are_those_of_the_bytes_whenever_read(
    fake: FakeTogether, client: httpx.Client
) -> None:
    """Every billed record's sha256 is its image's, read after one call or after many."""
    first = result_bytes(client, post(client, fake, seed=1, width=256, height=256))
    assert fake.billed[0]["sha256"] == hashlib.sha256(first).hexdigest()
    more = [result_bytes(client, post(client, fake, seed=seed, width=256, height=256))
            for seed in range(2, 6)]
    assert [record["sha256"] for record in fake.billed] == [
        hashlib.sha256(data).hexdigest() for data in [first, *more]]
    assert all(isinstance(record["sha256"], str) for record in fake.billed)


# -- validation ------------------------------------------------------------------------


def test_unknown_model_is_a_404(fake: FakeTogether, client: httpx.Client) -> None:
    """An unknown model answers 404 with the service's error body."""
    response = post(client, fake, model="black-forest-labs/FLUX.2-mega")
    assert response.status_code == 404
    error = error_of(response)
    assert "FLUX.2-mega" in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"width": 1000}, "width"),
        ({"width": 240}, "width"),
        ({"height": 1936}, "height"),
        ({"height": "768"}, "height"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"negative_prompt": "blurry"}, "negative_prompt"),
        ({"image_loras": [{"path": "x", "scale": 1.0}]}, "image_loras"),
        ({"output_format": "webp"}, "output_format"),
        ({"response_format": "file"}, "response_format"),
        ({"steps": 0}, "steps"),
        ({"n": 5}, "n"),
        ({"model": None}, "model"),
        ({"reference_images": "not-a-list"}, "reference_images"),
    ],
)
def test_invalid_fields_are_400s_naming_the_param(
    fake: FakeTogether, client: httpx.Client, change: dict[str, Any], param: str
) -> None:
    """Each invalid field answers 400 invalid_request_error with that field as param."""
    response = post(client, fake, **change)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert fake.billed == []


@pytest.mark.parametrize(("model", "limit"), [(PRO, 8), (FLEX, 8), (MAX, 8), (DEV, 6)])
def test_reference_count_is_limited_per_model(
    fake: FakeTogether, client: httpx.Client, model: str, limit: int
) -> None:
    """Each model takes up to its limit of references; one more is a 400."""
    uri = data_uri(png_bytes((10, 20, 30)))
    assert post(client, fake, model=model, reference_images=[uri] * limit).status_code == 200
    too_many = post(client, fake, model=model, reference_images=[uri] * (limit + 1))
    assert too_many.status_code == 400
    assert error_of(too_many)["param"] == "reference_images"


def test_image_url_is_accepted_by_pro_and_refused_by_dev(fake: FakeTogether, client: httpx.Client) -> None:
    """image_url works on pro; on dev it is the service's 'Unsupported use' 400."""
    uri = data_uri(png_bytes((200, 0, 0)))
    assert post(client, fake, model=PRO, image_url=uri).status_code == 200
    refused = post(client, fake, model=DEV, image_url=uri)
    assert refused.status_code == 400
    assert error_of(refused)["message"].startswith("Unsupported use of 'image_url' parameter")


def test_body_that_is_not_json_is_a_400(fake: FakeTogether, client: httpx.Client) -> None:
    """A body that is not a JSON object answers 400 with the error body."""
    response = client.post(fake.base_url + GENERATIONS, content=b"prompt=fox")
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


# -- references ------------------------------------------------------------------------


def test_data_uri_references_are_accepted(fake: FakeTogether, client: httpx.Client) -> None:
    """PNG and JPEG data: URIs work as references."""
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 128, 0)).save(jpeg, format="JPEG")
    response = post(
        client,
        fake,
        prompt="The cat from image 1 sits on the mat from image 2",
        reference_images=[data_uri(png_bytes((255, 255, 0))), data_uri(jpeg.getvalue(), "image/jpeg")],
    )
    assert decode(result_bytes(client, response)).size == (1024, 768)


@pytest.mark.parametrize(
    "reference",
    [
        data_uri(b"this is not an image", "image/png"),
        data_uri(png_bytes((1, 2, 3))[:60]),
        "data:image/png;base64,@@@not-base64@@@",
        "https://images.pexels.com/photos/3729464/pexels-photo-3729464.jpeg",
        "ftp://127.0.0.1/files/x.jpg",
    ],
    ids=["not-an-image", "truncated", "bad-base64", "other-host", "other-scheme"],
)
def test_unusable_references_are_400s_on_reference_images(
    fake: FakeTogether, client: httpx.Client, reference: str
) -> None:
    """Non-images, truncated images, bad base64 and other hosts answer 400 reference_images."""
    response = post(client, fake, reference_images=[data_uri(png_bytes((9, 9, 9))), reference])
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "reference_images" and "2" in error["message"]
    assert fake.billed == []


def test_own_url_that_never_existed_is_a_400(fake: FakeTogether, client: httpx.Client) -> None:
    """A made-up URL on the fake's own host is a 400 on reference_images."""
    response = post(client, fake, reference_images=[fake.base_url + "/files/nothing.jpg"])
    assert error_of(response)["param"] == "reference_images"


def test_result_urls_expire_after_url_ttl() -> None:
    """After url_ttl a result URL answers 404, and using it as a reference is a 400."""
    clock = SettableClock()
    with (
        FakeTogether(url_ttl=600.0, clock=clock) as fake,
        httpx.Client(trust_env=False, headers={"Authorization": "Bearer k"}) as client,
    ):
        url = post(client, fake, width=256, height=256).json()["data"][0]["url"]
        clock.advance(599.0)
        assert client.get(url).status_code == 200
        assert post(client, fake, reference_images=[url]).status_code == 200
        clock.advance(1.0)
        assert client.get(url).status_code == 404
        response = post(client, fake, prompt="Make image 1 darker", reference_images=[url])
        assert response.status_code == 400
        assert error_of(response)["param"] == "reference_images"
        assert fake.requests[-1]["reference_images"] == [url]


def test_result_urls_refuse_a_blank_user_agent(fake: FakeTogether, client: httpx.Client) -> None:
    """Like Together's CDN, a download with an empty User-Agent is refused."""
    url = post(client, fake, width=256, height=256).json()["data"][0]["url"]
    assert client.get(url, headers={"User-Agent": ""}).status_code == 403
    assert client.get(url).status_code == 200


# -- request log, api key, fail_next ---------------------------------------------------


def test_requests_logs_every_body_in_order_including_errors(fake: FakeTogether, client: httpx.Client) -> None:
    """fake.requests holds each JSON body, errors included; billed only the generated ones."""
    post(client, fake, prompt="one")
    post(client, fake, prompt="two", width=17)
    post(client, fake, prompt="three", model="nope")
    assert [body["prompt"] for body in fake.requests] == ["one", "two", "three"]
    assert fake.requests[1] == {"model": PRO, "prompt": "two", "width": 17}
    assert [record["prompt"] for record in fake.billed] == ["one"]


def test_api_key_refuses_other_keys_with_401() -> None:
    """With api_key set, a wrong or missing key is a 401 with the error body; the right one works."""
    with FakeTogether(api_key="sk-right") as fake, httpx.Client(trust_env=False) as client:
        url = fake.base_url + GENERATIONS
        body = {"model": PRO, "prompt": "fox"}
        wrong = client.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"})
        missing = client.post(url, json=body)
        right = client.post(url, json=body, headers={"Authorization": "Bearer sk-right"})
        assert (wrong.status_code, missing.status_code, right.status_code) == (401, 401, 200)
        assert error_of(wrong)["code"] == "invalid_api_key"
        assert "sk-wrong" not in wrong.text
        assert len(fake.requests) == 3 and len(fake.billed) == 1


def test_no_api_key_accepts_any_bearer(fake: FakeTogether, client: httpx.Client) -> None:
    """With api_key None any bearer key is accepted."""
    response = client.post(
        fake.base_url + GENERATIONS,
        json={"model": PRO, "prompt": "fox"},
        headers={"Authorization": "Bearer anything-at-all"},
    )
    assert response.status_code == 200


def test_fail_next_queues_failures_in_order(fake: FakeTogether, client: httpx.Client) -> None:
    """Queued failures answer in order with Retry-After and message, then generation resumes."""
    fake.fail_next(503, times=2, retry_after=1.5)
    fake.fail_next(429, retry_after=2, message="slow down please")
    fake.fail_next(500)
    responses = [post(client, fake, prompt=f"try {i}") for i in range(5)]
    assert [r.status_code for r in responses] == [503, 503, 429, 500, 200]
    assert [r.headers.get("retry-after") for r in responses[:4]] == ["1.5", "1.5", "2", None]
    assert error_of(responses[2])["message"] == "slow down please"
    assert error_of(responses[0])["type"] == "server_error"
    assert len(fake.requests) == 5
    assert [record["prompt"] for record in fake.billed] == ["try 4"]


def test_fail_next_refuses_non_error_statuses(fake: FakeTogether) -> None:
    """fail_next takes only HTTP error statuses and a positive count."""
    with pytest.raises(ValueError, match="status"):
        fake.fail_next(200)
    with pytest.raises(ValueError, match="times"):
        fake.fail_next(503, times=0)


# -- rate limit, faults, billing -------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after() -> None:
    """Beyond rate_limit per minute a 429 carries Retry-After and retry-after-ms; time refills it."""
    clock = SettableClock()
    with (
        FakeTogether(rate_limit=2, clock=clock) as fake,
        httpx.Client(trust_env=False, headers={"Authorization": "Bearer k"}) as client,
    ):
        statuses = [post(client, fake, width=256, height=256).status_code for _ in range(2)]
        limited = post(client, fake, width=256, height=256)
        assert statuses == [200, 200]
        assert limited.status_code == 429
        assert (limited.headers["retry-after"], limited.headers["retry-after-ms"]) == ("30", "30000")
        clock.advance(12.5)
        again = post(client, fake, width=256, height=256)
        assert (again.headers["retry-after"], again.headers["retry-after-ms"]) == ("17.5", "17500")
        clock.advance(17.5)
        assert post(client, fake, width=256, height=256).status_code == 200
        assert len(fake.requests) == 5 and len(fake.billed) == 3


def run_faulty(seed: int, count: int) -> tuple[list[int | str], FakeTogether]:
    """Send `count` requests one by one; return each status (or "dropped") and the fake."""
    outcomes: list[int | str] = []
    with (
        FakeTogether(fault_rate=0.6, fault_seed=seed) as fake,
        httpx.Client(trust_env=False, headers={"Authorization": "Bearer k"}) as client,
    ):
        for i in range(count):
            try:
                outcomes.append(post(client, fake, prompt=f"p{i}", width=256, height=256).status_code)
            except httpx.RemoteProtocolError:
                outcomes.append("dropped")
    return outcomes, fake


def test_fault_rate_is_reproducible_and_mixes_fault_kinds() -> None:
    """The same fault_seed picks the same requests and kinds; another seed differs."""
    first, _ = run_faulty(seed=3, count=40)
    second, _ = run_faulty(seed=3, count=40)
    other, _ = run_faulty(seed=4, count=40)
    assert first == second
    assert first != other
    assert {200, 429, 500, 503, "dropped"} <= set(first)


def test_billed_counts_generations_whether_or_not_they_were_delivered() -> None:
    """Drops after generating are billed, drops before are not; requests counts all arrivals."""
    outcomes, fake = run_faulty(seed=3, count=40)
    delivered = outcomes.count(200)
    dropped = outcomes.count("dropped")
    billed = fake.billed
    assert len(fake.requests) == 40
    assert delivered < len(billed) < delivered + dropped
    assert {record["prompt"] for record in billed} >= {
        f"p{i}" for i, outcome in enumerate(outcomes) if outcome == 200
    }
    assert all(record["request"]["prompt"] == record["prompt"] for record in billed)


def test_billed_records_the_hash_of_the_delivered_bytes(fake: FakeTogether, client: httpx.Client) -> None:
    """A billed record names model, prompt, seed, size and the sha256 of the image sent."""
    data = result_bytes(client, post(client, fake, seed=5, width=512, height=512))
    (record,) = fake.billed
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert (record["model"], record["seed"], record["width"], record["height"]) == (PRO, 5, 512, 512)
    assert record["output_format"] == "jpeg" and record["index"] == 0


# -- concurrency and lifecycle ---------------------------------------------------------


def test_serves_many_requests_at_once() -> None:
    """64 requests with 1 s latency each overlap: all finish far below the 64 s of one by one.

    The bound (16 s) needs at least 4 requests at a time, so a loaded machine cannot fail it.
    """

    async def burst(base_url: str) -> list[int]:
        async with httpx.AsyncClient(
            trust_env=False,
            timeout=10.0,
            limits=httpx.Limits(max_connections=64),
            headers={"Authorization": "Bearer k"},
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        base_url + GENERATIONS,
                        json={"model": PRO, "prompt": f"fox {i}", "width": 256, "height": 256},
                    )
                    for i in range(64)
                )
            )
        return [response.status_code for response in responses]

    with FakeTogether(latency=1.0) as fake:
        started = time.perf_counter()
        statuses = asyncio.run(burst(fake.base_url))
        elapsed = time.perf_counter() - started
        assert statuses == [200] * 64
        assert elapsed < 16.0
        assert len(fake.billed) == 64


def test_stop_cuts_in_flight_requests_short_and_is_idempotent() -> None:
    """stop() returns promptly with a request in flight, and again when already stopped."""
    fake = FakeTogether(latency=30.0)
    fake.start()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with httpx.Client(trust_env=False, timeout=10.0) as client:
                client.post(fake.base_url + GENERATIONS, json={"model": PRO, "prompt": "slow"})
        except httpx.TransportError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: len(fake.requests) == 1)
    started = time.perf_counter()
    fake.stop()
    assert time.perf_counter() - started < 5.0
    sender.join(timeout=10.0)
    assert not sender.is_alive() and len(errors) == 1
    fake.stop()
    assert fake.billed == []


def test_base_url_needs_a_running_server_and_restart_gives_a_new_port() -> None:
    """base_url raises before start and after stop; the fake can be started again."""
    fake = FakeTogether()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url
    with fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url
    with fake, httpx.Client(trust_env=False) as client:
        assert post(client, fake).status_code == 200


def test_constructor_refuses_nonsense_settings() -> None:
    """Negative latency, a fault_rate above 1 and a zero rate_limit are refused."""
    with pytest.raises(ValueError, match="latency"):
        FakeTogether(latency=-1)
    with pytest.raises(ValueError, match="fault_rate"):
        FakeTogether(fault_rate=1.5)
    with pytest.raises(ValueError, match="rate_limit"):
        FakeTogether(rate_limit=0)
    with pytest.raises(ValueError, match="honour"):
        FakeTogether(honour="cfg")  # type: ignore[arg-type]


# -- fidelity to the service's open questions ------------------------------------------


@pytest.mark.parametrize(
    ("honour", "read", "ignored"),
    [
        ("guidance", "guidance", "guidance_scale"),
        ("guidance_scale", "guidance_scale", "guidance"),
        ("both", "guidance", None),
        ("both", "guidance_scale", None),
    ],
)
def test_only_the_honoured_guidance_field_changes_the_image(
    client: httpx.Client, honour: Any, read: str, ignored: str | None
) -> None:
    """Under each honour setting the honoured field's value changes the pixels; the other is ignored."""
    with FakeTogether(honour=honour) as fake:

        def pixels(**guidance: float) -> bytes:
            body = {"model": FLEX, "seed": 3, "width": 256, "height": 256, "output_format": "png"}
            return decode(result_bytes(client, post(client, fake, **body, **guidance))).tobytes()

        assert pixels(**{read: 2.5}) != pixels(**{read: 7.5})
        if ignored is not None:
            assert pixels(**{ignored: 2.5}) == pixels(**{ignored: 7.5}) == pixels()


def test_both_names_sent_with_one_value_are_read_under_every_setting(client: httpx.Client) -> None:
    """editgraph's body (guidance and guidance_scale equal) gives one image per value, whatever is honoured."""
    images = {}
    for honour in ("guidance", "guidance_scale", "both"):
        with FakeTogether(honour=honour) as fake:  # type: ignore[arg-type]
            body = {"model": FLEX, "seed": 3, "width": 256, "height": 256, "output_format": "png"}
            images[honour] = {
                value: result_bytes(
                    client, post(client, fake, **body, guidance=value, guidance_scale=value)
                )
                for value in (2.5, 7.5)
            }
    for by_value in images.values():
        assert by_value[2.5] != by_value[7.5]
    assert images["guidance"] == images["guidance_scale"] == images["both"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": FLEX, "guidance": 1.4}, "guidance"),
        ({"model": FLEX, "guidance_scale": 10.5}, "guidance_scale"),
        ({"model": FLEX, "steps": 51}, "steps"),
        ({"model": DEV, "steps": 51}, "steps"),
    ],
)
def test_flex_ranges_are_checked_like_the_sources(
    fake: FakeTogether, client: httpx.Client, change: dict[str, Any], param: str
) -> None:
    """flex takes steps 1-50 and guidance 1.5-10; beyond is a 400 naming the field."""
    response = post(client, fake, **change)
    assert response.status_code == 400 and error_of(response)["param"] == param
    assert post(client, fake, model=FLEX, steps=50, guidance=10, guidance_scale=1.5).status_code == 200


def test_data_uris_can_be_refused(client: httpx.Client) -> None:
    """accept_data_uris=False: a data: reference is a 400 on reference_images; the fake's URLs still work."""
    with FakeTogether(accept_data_uris=False) as fake:
        refused = post(client, fake, reference_images=[data_uri(png_bytes((1, 2, 3)))])
        assert refused.status_code == 400
        error = error_of(refused)
        assert error["param"] == "reference_images" and "data: URI" in error["message"]
        source = post(client, fake, width=256, height=256).json()["data"][0]["url"]
        assert post(client, fake, reference_images=[source]).status_code == 200
        assert len(fake.billed) == 2


def test_fail_next_and_rate_limit_send_x_ratelimit_reset() -> None:
    """fail_next(ratelimit_reset=...) sends x-ratelimit-reset alone; the rate limit sends it too."""
    clock = SettableClock()
    with (
        FakeTogether(rate_limit=1, clock=clock) as fake,
        httpx.Client(trust_env=False, headers={"Authorization": "Bearer k"}) as client,
    ):
        fake.fail_next(429, ratelimit_reset=0.25)
        scheduled = post(client, fake, width=256, height=256)
        assert scheduled.status_code == 429 and scheduled.headers["x-ratelimit-reset"] == "0.25"
        assert "retry-after" not in scheduled.headers
        assert post(client, fake, width=256, height=256).status_code == 200
        limited = post(client, fake, width=256, height=256)
        assert limited.status_code == 429 and limited.headers["x-ratelimit-reset"] == "60"


def test_the_v1_path_is_the_only_one_served(fake: FakeTogether, client: httpx.Client) -> None:
    """Like the service, POST /images/generations without /v1 is a 404 (SDK 2.x needs a /v1 base)."""
    assert client.post(fake.base_url + "/images/generations", json={"model": PRO, "prompt": "x"}).status_code == 404
    assert client.post(fake.base_url + "/v1/v1/images/generations", json={"model": PRO, "prompt": "x"}).status_code == 404


def test_a_repeated_request_is_served_from_the_render_cache(fake: FakeTogether, client: httpx.Client) -> None:
    """The second identical request answers the same bytes without drawing again (cheaper)."""
    body = {"seed": 5, "width": 1024, "height": 768, "response_format": "base64"}
    first = post(client, fake, **body)
    second = post(client, fake, **body)
    assert result_bytes(client, first) == result_bytes(client, second)
    assert len(fake._renders) == 1 and len(fake.billed) == 2


def test_jpeg_answers_are_whole_images_whose_bands_show_the_request(
    fake: FakeTogether, client: httpx.Client
) -> None:
    """A spliced JPEG decodes fully at its size, ends in EOI, and its caption band differs per request."""
    source = result_bytes(client, post(client, fake, seed=1, width=512, height=256))
    answers = [
        result_bytes(client, post(client, fake, model=FLEX, seed=1, guidance=guidance,
                                  reference_images=[data_uri(source, "image/jpeg")]))
        for guidance in (2.5, 7.5)
    ]
    images = [decode(answer) for answer in answers]
    assert all(answer.endswith(b"\xff\xd9") for answer in answers)
    assert [(image.format, image.size) for image in images] == [("JPEG", (1024, 768))] * 2
    bands = [image.crop((0, 0, 1024, 32)).tobytes() for image in images]
    assert bands[0] != bands[1]  # the swatches carry the request's digest
    # The reference's thumbnail (56 x 28 here) sits at the bottom left: its inside has the
    # reference's average colour.
    expected = ImageStat.Stat(decode(source).convert("RGB")).mean
    for image in images:
        tile = ImageStat.Stat(image.convert("RGB").crop((12, 768 - 28, 52, 768 - 8))).mean
        assert all(abs(a - b) < 40 for a, b in zip(tile, expected)), (tile, expected)


def test_references_on_other_loopback_servers_are_fetched(fake: FakeTogether, client: httpx.Client) -> None:
    """An http URL on 127.0.0.1 (an image host, a local S3) is fetched; its 404 is a 400."""
    with FakeTogether() as other:
        answer = post(client, other, seed=2, width=256, height=256)
        source = answer.json()["data"][0]["url"]
        source_bytes = result_bytes(client, answer)
        by_url = post(client, fake, prompt="Make image 1 blue", reference_images=[source])
        by_data = post(client, fake, prompt="Make image 1 blue",
                       reference_images=[data_uri(source_bytes, "image/jpeg")])
        assert result_bytes(client, by_url) == result_bytes(client, by_data)
        missing = post(client, fake, reference_images=[source.rsplit("/", 1)[0] + "/nothing.jpg"])
        assert missing.status_code == 400 and "HTTP 404" in error_of(missing)["message"]


# -- the fakes' HTTP server (editgraph/testing/_server.py), spoken to over raw sockets ----


def raw_exchange(fake: FakeTogether, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes it."""
    import socket

    port = int(fake.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_server_keeps_a_connection_alive_and_closes_it_when_asked(fake: FakeTogether) -> None:
    """Two requests on one connection get two answers; Connection: close ends it after the second."""
    body = b'{"model": "black-forest-labs/FLUX.2-pro", "prompt": "a fox", "width": 256, "height": 256}'
    request = (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n" % len(body))
    answer = raw_exchange(fake, request + b"\r\n" + body + request + b"Connection: close\r\n\r\n" + body)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2 and b"Connection: close\r\n" in answer
    assert len(fake.billed) == 2


def test_server_reads_chunked_bodies_and_answers_expect_continue(fake: FakeTogether) -> None:
    """Expect: 100-continue gets its interim answer before the body; a chunked body is reassembled."""
    import socket

    body = b'{"model": "black-forest-labs/FLUX.2-pro", "prompt": "a fox", "width": 256, "height": 256}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:20], body[20:]))
    port = int(fake.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(chunks + b"0\r\n\r\n")
        answer = b""
        while received := sock.recv(65536):
            answer += received
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert fake.requests[-1]["prompt"] == "a fox"


def test_server_answers_a_client_that_closed_its_sending_side(fake: FakeTogether) -> None:
    """A request followed by a half-close (shutdown of writing) still gets its whole answer."""
    import socket

    body = b'{"model": "black-forest-labs/FLUX.2-pro", "prompt": "a fox", "width": 256, "height": 256}'
    port = int(fake.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while received := sock.recv(65536):
            answer += received
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and len(rest) == length
    assert b'"url"' in rest and len(fake.billed) == 1


def test_server_answers_head_405_and_bad_requests(fake: FakeTogether, client: httpx.Client) -> None:
    """HEAD on a result URL has its headers and no body; a wrong method is a 405; garbage a 400."""
    url = post(client, fake, width=256, height=256).json()["data"][0]["url"]
    full = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["content-type"] == "image/jpeg"
    wrong = client.get(fake.base_url + GENERATIONS)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert raw_exchange(fake, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert raw_exchange(fake, b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").startswith(
        b"HTTP/1.1 400 Bad Request\r\n"
    )
