"""FakeBFL over real loopback HTTP: submit, regional polling, statuses, cost, caps and faults."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image, ImageStat

from editgraph.testing import FakeBFL


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
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def fake(clock: SettableClock) -> Iterator[FakeBFL]:
    with FakeBFL(api_key="bfl-test-key", clock=clock) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0, headers={"x-key": "bfl-test-key"}) as c:
        yield c


def submit(client: httpx.Client, fake: FakeBFL, model: str = "flux-2-pro", **body: Any) -> httpx.Response:
    body.setdefault("prompt", "A red fox in fresh snow")
    return client.post(f"{fake.base_url}/v1/{model}", json=body)


def png_b64(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def ready_result(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    poll = client.get(response.json()["polling_url"]).json()
    assert poll["status"] == "Ready", poll
    result: dict[str, Any] = poll["result"]
    return result


def test_submit_answers_id_polling_url_and_cost(fake: FakeBFL, client: httpx.Client) -> None:
    """A submission answers {id, polling_url, cost, input_mp, output_mp} on the regional host."""
    response = submit(client, fake, width=1024, height=768, seed=1)
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert body["polling_url"] == f"{fake.regional_url}/v1/get_result?id={body['id']}"
    assert (body["cost"], body["input_mp"], body["output_mp"]) == (3.0, 0, 1)
    assert fake.billed[0]["cost"] == 3.0 and fake.billed[0]["model"] == "flux-2-pro"


def test_cost_follows_the_formula_with_input_megapixels(fake: FakeBFL, client: httpx.Client) -> None:
    """flex at 2 MP output with one 1 MP reference costs 5 + 1*5 + 1*5 credits."""
    response = submit(client, fake, "flux-2-flex", width=1440, height=1440,
                      input_image=png_b64((1, 2, 3)))
    assert response.json()["cost"] == 15.0
    assert response.json()["input_mp"] == 1 and response.json()["output_mp"] == 2
    klein = submit(client, fake, "flux-2-klein-4b", width=1024, height=1024,
                   input_image=png_b64((1, 2, 3)), input_image_2=png_b64((4, 5, 6)))
    assert klein.json()["cost"] == pytest.approx(1.6)


def test_ready_result_downloads_an_image_of_the_requested_size(fake: FakeBFL, client: httpx.Client) -> None:
    """Ready carries result.sample, a URL that serves the image in the requested format."""
    for output_format, pil_format in (("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")):
        result = ready_result(client, submit(client, fake, width=320, height=256,
                                             output_format=output_format, seed=3))
        image = decode(client.get(result["sample"]).content)
        assert (image.format, image.size, result["seed"]) == (pil_format, (320, 256), 3)


def test_output_is_deterministic_in_request_and_reference_bytes(fake: FakeBFL, client: httpx.Client) -> None:
    """Same prompt, seed and reference bytes give the same image; another seed another."""

    def image_for(seed: int) -> bytes:
        result = ready_result(client, submit(client, fake, seed=seed, width=256, height=256,
                                             input_image=png_b64((9, 9, 9))))
        return client.get(result["sample"]).content

    assert image_for(1) == image_for(1)
    assert image_for(1) != image_for(2)


def test_hand_built_global_polling_url_finds_no_task(fake: FakeBFL, client: httpx.Client) -> None:
    """Only the polling_url as given reaches the task; /v1/get_result says Task not found."""
    task_id = submit(client, fake).json()["id"]
    answer = client.get(f"{fake.base_url}/v1/get_result", params={"id": task_id}).json()
    assert answer["status"] == "Task not found"


def test_status_is_pending_with_progress_until_latency_passes(clock: SettableClock) -> None:
    """With latency 10 s, polls say Pending with growing progress, then Ready."""
    with FakeBFL(latency=10.0, clock=clock) as fake, httpx.Client(trust_env=False) as client:
        url = submit(client, fake).json()["polling_url"]
        clock.advance(2.5)
        first = client.get(url).json()
        clock.advance(5.0)
        second = client.get(url).json()
        clock.advance(3.0)
        third = client.get(url).json()
    assert (first["status"], first["progress"]) == ("Pending", 0.25)
    assert (second["status"], second["progress"]) == ("Pending", 0.75)
    assert third["status"] == "Ready" and third["progress"] == 1.0


def test_result_url_and_task_expire_after_url_ttl(clock: SettableClock) -> None:
    """The sample URL 404s and the task is not found once url_ttl has passed."""
    with FakeBFL(url_ttl=600.0, clock=clock) as fake, httpx.Client(trust_env=False) as client:
        response = submit(client, fake)
        sample = ready_result(client, response)["sample"]
        clock.advance(600.0)
        assert client.get(sample).status_code == 404
        assert client.get(response.json()["polling_url"]).json()["status"] == "Task not found"


def test_moderation_markers_end_in_moderated_statuses(fake: FakeBFL, client: httpx.Client) -> None:
    """[moderate-request] ends Request Moderated, [moderate-output] Content Moderated."""
    request = submit(client, fake, prompt="a cat [moderate-request]").json()
    output = submit(client, fake, prompt="a cat [moderate-output]", seed=5).json()
    assert client.get(request["polling_url"]).json()["status"] == "Request Moderated"
    assert client.get(output["polling_url"]).json()["status"] == "Content Moderated"
    fake.passing_seeds.add(6)
    other = submit(client, fake, prompt="a cat [moderate-output]", seed=6).json()
    assert client.get(other["polling_url"]).json()["status"] == "Ready"


def test_active_task_cap_answers_429_with_retry_after(clock: SettableClock) -> None:
    """Past max_active unfinished tasks a submit is a 429 until one finishes."""
    with FakeBFL(max_active=2, latency=4.0, clock=clock) as fake, httpx.Client(trust_env=False) as client:
        assert submit(client, fake).status_code == 200
        clock.advance(1.0)
        assert submit(client, fake).status_code == 200
        refused = submit(client, fake)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
        clock.advance(3.0)
        assert submit(client, fake).status_code == 200
    assert len(fake.billed) == 3 and len(fake.requests) == 4


def test_auth_uses_the_x_key_header(fake: FakeBFL) -> None:
    """No x-key is a 403, a wrong one a 401; Bearer auth is not BFL's."""
    with httpx.Client(trust_env=False) as bare:
        assert submit(bare, fake).status_code == 403
        assert bare.post(f"{fake.base_url}/v1/flux-2-pro", json={"prompt": "x"},
                         headers={"x-key": "wrong"}).status_code == 401
        assert bare.post(f"{fake.base_url}/v1/flux-2-pro", json={"prompt": "x"},
                         headers={"Authorization": "Bearer bfl-test-key"}).status_code == 403
    assert fake.billed == []


def test_validation_is_per_model(fake: FakeBFL, client: httpx.Client) -> None:
    """Fields a model does not take, too many references and bad sizes are 422s naming the field."""
    cases = [
        ("flux-2-pro", {"prompt_upsampling": False}, "prompt_upsampling"),
        ("flux-2-pro", {"steps": 20}, "steps"),
        ("flux-2-klein-4b", {f"input_image_{n}": png_b64((n, n, n)) for n in (2, 3, 4, 5)}
         | {"input_image": png_b64((0, 0, 0))}, "input_image_5"),
        ("flux-2-pro", {"width": 1000}, "width"),
        ("flux-2-flex", {"guidance": 11}, "guidance"),
        ("flux-2-pro", {"input_image": "data:image/png;base64," + png_b64((1, 1, 1))}, "input_image"),
        ("flux-2-pro", {"input_image": base64.b64encode(b"not an image").decode()}, "input_image"),
    ]
    for model, fields, bad in cases:
        response = submit(client, fake, model, **fields)
        assert response.status_code == 422, (model, fields)
        assert response.json()["detail"][0]["loc"] == ["body", bad]
    assert submit(client, fake, "flux-2-dev").status_code == 404
    assert fake.billed == []


def test_flex_takes_steps_guidance_and_upsampling(fake: FakeBFL, client: httpx.Client) -> None:
    """flex accepts steps, guidance and prompt_upsampling."""
    response = submit(client, fake, "flux-2-flex", steps=28, guidance=7.5, prompt_upsampling=False)
    assert response.status_code == 200


def test_own_result_url_works_as_a_reference_while_fresh(clock: SettableClock) -> None:
    """A result URL of the fake is fetched as input_image; expired, it is a 422."""
    with FakeBFL(clock=clock) as fake, httpx.Client(trust_env=False) as client:
        sample = ready_result(client, submit(client, fake))["sample"]
        assert submit(client, fake, input_image=sample).status_code == 200
        clock.advance(601.0)
        assert submit(client, fake, input_image=sample).status_code == 422


def test_fail_next_queues_answers(fake: FakeBFL, client: httpx.Client) -> None:
    """fail_next answers the next submissions with the given status, then normal service."""
    fake.fail_next(503, times=2, retry_after=2)
    first, second, third = (submit(client, fake) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "2"
    assert len(fake.billed) == 1


def test_faults_are_reproducible_and_drop_after_is_billed() -> None:
    """The same fault_seed gives the same faults; a dropped answer after creation is billed."""

    def outcomes() -> tuple[list[str], int]:
        seen = []
        with FakeBFL(fault_rate=0.5, fault_seed=7) as fake, httpx.Client(trust_env=False) as client:
            for _ in range(20):
                try:
                    seen.append(str(submit(client, fake).status_code))
                except httpx.TransportError:
                    seen.append("dropped")
            return seen, len(fake.billed)

    first, billed = outcomes()
    assert outcomes() == (first, billed)
    assert "dropped" in first and {"500", "503", "429"} & set(first)
    assert billed > first.count("200")


def test_webhook_submission_answers_without_polling_url(fake: FakeBFL, client: httpx.Client) -> None:
    """With webhook_url the answer carries status and webhook_url instead of polling_url."""
    body = submit(client, fake, webhook_url="https://example.invalid/hook").json()
    assert "polling_url" not in body and body["status"] == "Pending"


def test_output_size_follows_the_first_reference_when_not_given(fake: FakeBFL, client: httpx.Client) -> None:
    """Without width and height the output takes the first input's size (multiples of 16)."""
    result = ready_result(client, submit(client, fake, input_image=png_b64((1, 2, 3), (200, 130))))
    assert decode(client.get(result["sample"]).content).size == (192, 128)


def result_image(client: httpx.Client, fake: FakeBFL, **body: Any) -> tuple[bytes, Image.Image]:
    """The bytes and decoded picture of one submission's result."""
    data = client.get(ready_result(client, submit(client, fake, **body))["sample"]).content
    return data, decode(data)


def test_jpeg_results_are_joined_whole_and_show_the_request_and_reference(
    fake: FakeBFL, client: httpx.Client
) -> None:
    """A 1024 x 768 JPEG result decodes whole and ends in EOI; its caption band differs
    per request and its bottom-left tile has the reference's average colour."""
    reference = png_b64((30, 160, 220), (256, 192))
    answers = [result_image(client, fake, seed=seed, width=1024, height=768,
                            input_image=reference) for seed in (1, 2)]
    assert all(data.endswith(b"\xff\xd9") for data, _ in answers)
    assert [(image.format, image.size) for _, image in answers] == [("JPEG", (1024, 768))] * 2
    bands = [image.crop((0, 0, 1024, 32)).tobytes() for _, image in answers]
    assert bands[0] != bands[1]  # the swatches carry the request's digest
    for _, image in answers:
        tile = ImageStat.Stat(image.convert("RGB").crop((12, 768 - 36, 52, 768 - 12))).mean
        assert all(abs(a - b) < 40 for a, b in zip(tile, (30, 160, 220))), tile


def test_every_format_and_size_shows_the_same_request_differently(
    fake: FakeBFL, client: httpx.Client
) -> None:
    """JPEG, PNG and WebP, from 64 x 64 up: the result has the asked size and format, and
    another prompt gives other pixels (the digest shows even where no caption fits)."""
    for output_format in ("jpeg", "png", "webp"):
        for width, height in ((64, 64), (128, 80), (320, 256)):
            pictures = [
                result_image(client, fake, prompt=prompt, width=width, height=height,
                             output_format=output_format, input_image=png_b64((9, 200, 9)))[1]
                for prompt in ("a red fox", "a grey wolf")
            ]
            assert [image.size for image in pictures] == [(width, height)] * 2
            assert pictures[0].format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[
                output_format]
            assert pictures[0].tobytes() != pictures[1].tobytes(), (output_format, width, height)


def test_a_result_sent_back_as_a_reference_gives_the_same_result_each_time(
    fake: FakeBFL, client: httpx.Client
) -> None:
    """Chaining: a result URL as the next input works, and twice gives the same bytes."""
    first = ready_result(client, submit(client, fake, seed=4, width=512, height=384))
    chained = [result_image(client, fake, seed=5, width=512, height=384,
                            input_image=first["sample"])[0] for _ in range(2)]
    assert chained[0] == chained[1]
    assert decode(chained[0]).size == (512, 384)
