"""The official `together` SDK runs Together's FLUX.2 quickstart examples against FakeTogether.

The examples are as Together's FLUX.2 quickstart and image docs write them, with three
changes only: the client gets the fake's base URL and an explicit key, knobs the SDK has
no keyword for (``guidance``, ``prompt_upsampling``) go through ``extra_body``, and
reference URLs are images the fake itself made (or ``data:`` URIs), because it fetches
no other host — which is what a user chaining edits does anyway.

The base URL is what the installed SDK expects of the real service: ``fake.base_url``
for SDK 3.x, ``fake.base_url + "/v1"`` for 2.x (as ``https://api.together.ai/v1``). The
suite runs under each ``honour`` setting of the fake, and passes with together 2.42.0
and 3.1.1 (see docs/testing.md for how it was run).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
import together
from PIL import Image
from together import AsyncTogether, Together
from together.types import ImageDataB64, ImageDataURL, ImageFile

from editgraph.testing import FakeTogether

API_KEY = "test-key"
SDK_MAJOR = int(together.__version__.split(".")[0])


def sdk_base_url(fake: FakeTogether) -> str:
    """The base the installed SDK expects: 2.x appends only ``/images/generations``."""
    return fake.base_url if SDK_MAJOR >= 3 else fake.base_url + "/v1"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy and no TOGETHER_* setting from the environment reaches the SDK."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "TOGETHER_API_KEY",
        "TOGETHER_BASE_URL",
        "TOGETHER_CUSTOM_HEADERS",
        "TOGETHER_PROJECT_ID",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["both", "guidance", "guidance_scale"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeTogether]:
    """The fake under each reading of the guidance field."""
    with FakeTogether(api_key=API_KEY, honour=request.param) as server:
        yield server


@pytest.fixture
def client(fake: FakeTogether) -> Iterator[Together]:
    with Together(api_key=API_KEY, base_url=sdk_base_url(fake), max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def downloader() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as http:
        yield http


def url_of(response: ImageFile) -> str:
    """The URL of the first result (the quickstart's ``response.data[0].url``)."""
    entry = response.data[0]
    assert isinstance(entry, ImageDataURL)
    return entry.url


def fetch_image(downloader: httpx.Client, url: str) -> Image.Image:
    response = downloader.get(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def make_source(client: Together, prompt: str) -> str:
    """Generate an image to use as a reference, as a user would, and return its URL."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro", prompt=prompt, width=512, height=512
    )
    return url_of(response)


def test_generate_with_pro(client: Together, downloader: httpx.Client) -> None:
    """Quickstart 'Generating an image' on FLUX.2 [pro] returns a URL to a 1024x768 image."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="A mountain landscape at sunset with golden light reflecting on a calm lake",
        width=1024,
        height=768,
    )
    assert response.object == "list" and response.model == "black-forest-labs/FLUX.2-pro"
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_generate_with_dev_steps(client: Together, downloader: httpx.Client, fake: FakeTogether) -> None:
    """Quickstart 'Using FLUX.2 [dev]' with steps=20 works and sends steps."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-dev",
        prompt="A modern workspace with a laptop, coffee cup, and plants, natural lighting",
        width=1024,
        height=768,
        steps=20,
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)
    assert fake.requests[-1]["steps"] == 20


def test_generate_with_flex_steps_and_guidance(
    client: Together, downloader: httpx.Client, fake: FakeTogether
) -> None:
    """Quickstart 'Using FLUX.2 [flex]': steps and guidance (via extra_body) reach the service."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-flex",
        prompt='A vintage travel poster for Tokyo with the headline "TOKYO NIGHTS" in bold letters',
        width=1024,
        height=768,
        steps=28,
        extra_body={"guidance": 7.5},
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)
    assert (fake.requests[-1]["steps"], fake.requests[-1]["guidance"]) == (28, 7.5)


def test_guidance_reaches_the_picture_only_under_the_honoured_name(
    client: Together, downloader: httpx.Client, fake: FakeTogether
) -> None:
    """The SDK's guidance_scale and the quickstart's guidance each count only if honoured; both always do."""

    def picture(**options: object) -> bytes:
        response = client.images.generate(
            model="black-forest-labs/FLUX.2-flex", prompt="A poster", width=256, height=256,
            seed=3, output_format="png", **options,  # type: ignore[arg-type]
        )
        return downloader.get(url_of(response)).content

    by_scale = picture(guidance_scale=2.5) != picture(guidance_scale=7.5)
    by_name = picture(extra_body={"guidance": 2.5}) != picture(extra_body={"guidance": 7.5})
    expected = {"both": (True, True), "guidance": (False, True), "guidance_scale": (True, False)}
    assert (by_scale, by_name) == expected[fake.honour]
    assert picture(guidance_scale=2.5, extra_body={"guidance": 2.5}) != picture(
        guidance_scale=7.5, extra_body={"guidance": 7.5}
    )


def test_single_reference_image(client: Together, downloader: httpx.Client) -> None:
    """The one-reference edit ('Replace the color of the car to blue') works on a result URL."""
    car = make_source(client, "A red sports car parked on a city street")
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        width=1024,
        height=768,
        prompt="Replace the color of the car to blue",
        reference_images=[car],
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_image_url_on_pro(client: Together, downloader: httpx.Client) -> None:
    """FLUX.2 [pro] accepts image_url for a single-image edit."""
    photo = make_source(client, "A cat sitting on a windowsill")
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        width=1024,
        height=768,
        prompt="Transform this into a watercolor painting",
        image_url=photo,
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_three_references_with_image_indexing(client: Together, downloader: httpx.Client) -> None:
    """Multi-reference with explicit indexing ('image 1', 'image 2', 'image 3') works."""
    person = make_source(client, "A portrait of a smiling person")
    cat = make_source(client, "A fluffy orange cat")
    bird = make_source(client, "A small blue bird")
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="The person from image 1 is petting the cat from image 2, the bird from image 3 is next to them",
        width=1024,
        height=768,
        reference_images=[person, cat, bird],
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_four_references_in_natural_language(client: Together, downloader: httpx.Client) -> None:
    """Four references described in natural language work on FLUX.2 [flex]."""
    references = [
        make_source(client, prompt)
        for prompt in ("A man in a grey coat", "A woman in a red dress", "A canvas tote bag", "Black leather boots")
    ]
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-flex",
        prompt=(
            "The man is leaning against the wall. The woman is walking past him, "
            "carrying the tote bag and wearing the black boots."
        ),
        width=1024,
        height=768,
        reference_images=references,
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_colour_swatch_reference(client: Together, downloader: httpx.Client) -> None:
    """Recolour from a swatch: a result URL as image 1 and a data: URI swatch as image 2."""
    gloves = make_source(client, "A pair of leather gloves on a wooden table")
    swatch = io.BytesIO()
    Image.new("RGB", (256, 256), (46, 64, 87)).save(swatch, format="PNG")
    swatch_uri = "data:image/png;base64," + base64.b64encode(swatch.getvalue()).decode("ascii")
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="Change the color of the gloves to the color of image 2",
        width=1024,
        height=768,
        reference_images=[gloves, swatch_uri],
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_json_structured_prompt(client: Together, downloader: httpx.Client, fake: FakeTogether) -> None:
    """A JSON structured prompt sent as json.dumps text works and arrives verbatim."""
    prompt = {
        "scene": "Professional studio product photography setup with polished concrete surface",
        "subjects": [
            {
                "description": "Minimalist ceramic coffee mug with steam rising from hot coffee inside",
                "pose": "Stationary on surface",
                "position": "Center foreground on polished concrete surface",
                "color_palette": ["matte black ceramic"],
            }
        ],
        "style": "Ultra-realistic product photography with commercial quality",
        "color_palette": ["matte black", "concrete gray", "soft white highlights"],
        "lighting": "Three-point softbox setup creating soft, diffused highlights with no harsh shadows",
        "mood": "Clean, professional, minimalist",
        "background": "Polished concrete surface with studio backdrop",
        "composition": "rule of thirds",
        "camera": {"angle": "high angle", "distance": "medium shot", "focus": "sharp on subject", "lens": "85mm"},
        "effects": ["subtle steam", "soft reflections"],
    }
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt=json.dumps(prompt),
        width=1024,
        height=768,
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)
    assert json.loads(fake.requests[-1]["prompt"]) == prompt


def test_hex_colour_prompt(client: Together, downloader: httpx.Client) -> None:
    """A prompt with hex colour codes works."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="A modern living room with a sofa in color #2E4057 and walls in #F5F5DC, warm afternoon light",
        width=1024,
        height=768,
    )
    assert fetch_image(downloader, url_of(response)).size == (1024, 768)


def test_prompt_upsampling_via_extra_body(client: Together, fake: FakeTogether) -> None:
    """prompt_upsampling has no SDK keyword; extra_body sends it as a JSON boolean."""
    client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="A lighthouse on a cliff",
        extra_body={"prompt_upsampling": False},
    )
    assert fake.requests[-1]["prompt_upsampling"] is False


def test_base64_response_and_png(client: Together) -> None:
    """response_format='base64' with output_format='png' parses as ImageDataB64 holding a PNG."""
    response = client.images.generate(
        model="black-forest-labs/FLUX.2-pro",
        prompt="A paper crane",
        width=512,
        height=384,
        output_format="png",
        response_format="base64",
    )
    entry = response.data[0]
    assert isinstance(entry, ImageDataB64) and entry.type == "b64_json"
    image = Image.open(io.BytesIO(base64.b64decode(entry.b64_json)))
    assert (image.format, image.size) == ("PNG", (512, 384))


def test_sdk_raises_its_typed_errors(client: Together, fake: FakeTogether) -> None:
    """The SDK maps the fake's answers to BadRequestError, NotFoundError and RateLimitError."""
    with pytest.raises(together.BadRequestError) as bad:
        client.images.generate(model="black-forest-labs/FLUX.2-pro", prompt="x", negative_prompt="blur")
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["param"] == "negative_prompt"
    with pytest.raises(together.NotFoundError):
        client.images.generate(model="black-forest-labs/FLUX.2-giga", prompt="x")
    with pytest.raises(together.BadRequestError, match="image_url"):
        client.images.generate(model="black-forest-labs/FLUX.2-dev", prompt="x", image_url=make_source(client, "y"))
    fake.fail_next(429)
    with pytest.raises(together.RateLimitError):
        client.images.generate(model="black-forest-labs/FLUX.2-pro", prompt="x")


def test_sdk_refused_with_wrong_key(fake: FakeTogether) -> None:
    """A wrong key is an AuthenticationError from the SDK."""
    with (
        Together(api_key="wrong", base_url=sdk_base_url(fake), max_retries=0) as sdk,
        pytest.raises(together.AuthenticationError),
    ):
        sdk.images.generate(model="black-forest-labs/FLUX.2-pro", prompt="x")


def test_sdk_retries_honour_retry_after(fake: FakeTogether) -> None:
    """With retries on, the SDK waits out a fractional Retry-After and succeeds."""
    fake.fail_next(503, times=2, retry_after=0.01)
    with Together(api_key=API_KEY, base_url=sdk_base_url(fake), max_retries=2) as sdk:
        response = sdk.images.generate(model="black-forest-labs/FLUX.2-pro", prompt="x")
    assert url_of(response).startswith(fake.base_url)
    assert len(fake.requests) == 3 and len(fake.billed) == 1


def test_dropped_connection_is_an_api_connection_error() -> None:
    """A dropped connection reaches the SDK as APIConnectionError (an unknown outcome)."""
    with (
        FakeTogether(fault_rate=1.0, fault_seed=0) as fake,
        Together(api_key=API_KEY, base_url=sdk_base_url(fake), max_retries=0) as sdk,
    ):
        outcomes: list[str] = []
        for _ in range(12):
            try:
                sdk.images.generate(model="black-forest-labs/FLUX.2-pro", prompt="x", width=256, height=256)
            except together.APIConnectionError:
                outcomes.append("dropped")
            except together.APIStatusError as exc:
                outcomes.append(str(exc.status_code))
        assert "dropped" in outcomes
        assert {"429", "500", "503"} & set(outcomes)


def test_async_client(fake: FakeTogether) -> None:
    """AsyncTogether runs concurrent generations against the fake."""

    async def main() -> list[str]:
        async with AsyncTogether(api_key=API_KEY, base_url=sdk_base_url(fake), max_retries=0) as sdk:
            responses = await asyncio.gather(
                *(
                    sdk.images.generate(model="black-forest-labs/FLUX.2-dev", prompt=f"fox {i}", steps=20)
                    for i in range(4)
                )
            )
        return [url_of(response) for response in responses]

    urls = asyncio.run(main())
    assert len(set(urls)) == 4 and all(urls)
