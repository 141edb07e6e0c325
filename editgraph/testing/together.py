"""FakeTogether: a loopback HTTP server that behaves like Together AI's FLUX.2 image API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote_to_bytes, urlsplit

try:
    import aiohttp  # the fake fetches URL references with it (the `testing` extra)
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"FakeTogether needs the testing extra ({exc}): pip install 'editgraph[testing]'",
        name=exc.name,
    ) from exc

from . import _faults, _pictures
from ._server import LoopbackServer, Request, Response, Router, json_response, text_response

__all__ = ["FakeTogether"]

_GENERATIONS_PATH: Final = "/v1/images/generations"
_FILES_PREFIX: Final = "/files/"

# The service's own view of FLUX.2, kept apart from editgraph's catalogue on purpose:
# the fake plays the service, so a mistake in editgraph's limits must show up as a 400
# here rather than being copied.
_MAX_REFERENCES: Final[dict[str, int]] = {
    "black-forest-labs/FLUX.2-pro": 8,
    "black-forest-labs/FLUX.2-max": 8,
    "black-forest-labs/FLUX.2-flex": 8,
    "black-forest-labs/FLUX.2-dev": 6,
}
# Together documents `image_url` for FLUX.2 [pro] and [flex] only.
_IMAGE_URL_MODELS: Final = frozenset({"black-forest-labs/FLUX.2-pro", "black-forest-labs/FLUX.2-flex"})

_MIN_SIZE: Final = 256
_MAX_SIZE: Final = 1920
_SIZE_MULTIPLE: Final = 16
_DEFAULT_WIDTH: Final = 1024
_DEFAULT_HEIGHT: Final = 768
_MAX_STEPS: Final = 50
# BFL's flex API page (the service passes FLUX.2 through to BFL): guidance 1.5-10.
_GUIDANCE_RANGES: Final[dict[str, tuple[float, float]]] = {
    "black-forest-labs/FLUX.2-flex": (1.5, 10.0),
}
_MAX_IMAGES: Final = 4
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_FETCH_TIMEOUT_SECONDS: Final = 10.0

_MEDIA_TYPES: Final[dict[str, str]] = {"jpeg": "image/jpeg", "png": "image/png"}
_EXTENSIONS: Final[dict[str, str]] = {"jpeg": "jpg", "png": "png"}

Honour = Literal["guidance", "guidance_scale", "both"]
_HONOURED_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "guidance": ("guidance",),
    "guidance_scale": ("guidance_scale",),
    "both": ("guidance_scale", "guidance"),  # guidance_scale wins when both differ
}
# Encoded results kept for repeated requests, and references' tiles by content hash.
_RENDER_CACHE_BYTES: Final = 64 * 1024**2
_TILE_CACHE_ENTRIES: Final = 256

# (type, code, message) of the service's error body for each status it answers.
_ERROR_DEFAULTS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        (
            "Invalid API key provided. You can find your API key at "
            "https://api.together.ai/settings/api-keys."
        ),
    ),
    402: (
        "invalid_request_error",
        "credit_limit_exceeded",
        "Your organization is out of credits or has reached its spend limit.",
    ),
    403: (
        "invalid_request_error",
        "third_party_data_sharing_blocked",
        "This model requires third-party data sharing to be enabled for your organization",
    ),
    404: ("invalid_request_error", None, "Not found."),
    408: ("server_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: (
        "dynamic_request_limited",
        "dynamic_request_limited",
        "You are sending requests too fast; slow down and retry.",
    ),
    500: ("server_error", None, "Internal server error."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


class _ApiError(Exception):
    """One error answer of the service: status, body fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status,
            ("server_error" if status >= 500 else "invalid_request_error", None, "Request failed."),
        )
        super().__init__(message or default_message)
        self.status = status
        self.message = message or default_message
        self.error_type = default_type
        self.param = param
        self.code = code if code is not None else default_code
        self.headers = headers or {}

    def to_response(self) -> Response:
        """The error as the service writes it: `{"id", "error": {...}}`."""
        body = {
            "id": _new_id(),
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            },
        }
        return json_response(body, status=self.status, headers=self.headers)


class _Digest:
    """The sha256 of a result's bytes, computed when first asked for and then kept.

    Most results are never asked for theirs (a 40 KB result hashes in about 58 us, a
    tenth of a call): only a result sent back as a reference, or ``billed`` read."""

    __slots__ = ("_data", "_hex")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._hex: str | None = None

    @property
    def hex(self) -> str:
        """The hex sha256 (computed on the first call; any thread may ask)."""
        if self._hex is None:
            self._hex = hashlib.sha256(self._data).hexdigest()
        return self._hex


@dataclass(frozen=True)
class _Made:
    """A result the fake rendered: its bytes, their digest (lazy), and what its tile is
    when it comes back as a reference (``_pictures.result_tile`` of these)."""

    data: bytes
    digest: _Digest
    width: int
    height: int
    key: str


@dataclass(frozen=True)
class _StoredFile:
    """A result image the fake hosts at one of its URLs."""

    made: _Made
    media_type: str
    created_at: float

    @property
    def data(self) -> bytes:
        """The image's bytes."""
        return self.made.data


@dataclass(frozen=True)
class _Generation:
    """A validated generation request: everything that decides the output."""

    model: str
    prompt: str
    width: int
    height: int
    seed: int | None
    steps: int | None
    guidance: float | None  # the value of the key the service honours
    output_format: str
    response_format: str
    n: int
    references: tuple[tuple[str, str], ...]  # (request field, URL) in "image N" order


def _new_id() -> str:
    """A fresh response id in the service's dashed style."""
    raw = os.urandom(16).hex()  # as random as uuid4's, a fifth of its CPU
    return f"{raw[:7]}-{raw[7:13]}-{raw[13:29]}-FAKE"


class FakeTogether(LoopbackServer):
    """A real HTTP server on 127.0.0.1 that answers like Together AI's FLUX.2 image API.

    It runs a lean HTTP/1.1 server on an ephemeral port in a background thread, so
    synchronous and asynchronous clients alike talk to it over real loopback HTTP. It
    serves:

    - ``POST /v1/images/generations`` — validates like the service, fetches each
      reference (its own result URLs, ``data:`` URIs and http(s) URLs on 127.0.0.1, such
      as an image host's or a local S3 server's; it contacts no other host)
      and answers with real JPEG or PNG bytes of the requested size, deterministic in the
      model, prompt, seed, size, steps, honoured guidance, output format and the *bytes*
      of the references, as ``url`` (default) or ``b64_json``
      (``response_format="base64"``), each ``data[]`` item with ``timings`` (seconds of
      ``inference``) as the service may add. Unlike the service, it draws no random seed
      when ``seed`` is omitted: the same request always gives the same bytes. Each
      distinct picture is drawn and encoded once and kept (up to 64 MB), so a repeated
      request costs no rendering.
    - ``GET /files/<id>.<ext>`` — its result URLs; 404 once older than ``url_ttl``
      seconds, 403 to a blank User-Agent (as Together's CDN does).

    Base URL: ``fake.base_url`` is ``http://127.0.0.1:<port>`` with no path, the same
    convention as ``https://api.together.ai``. Use it for ``TOGETHER_BASE_URL``,
    ``editgraph.providers.Together(base_url=...)`` (which POSTs to
    ``{base}/v1/images/generations`` and also accepts the base with ``/v1``) and SDK
    3.x, ``together.Together(base_url=fake.base_url, api_key=...)``. SDK 1.x and 2.x
    append only ``/images/generations``: give them ``fake.base_url + "/v1"``, exactly as
    the real service needs ``https://api.together.ai/v1`` for them. Like the service, the
    fake answers 404 on any other path.

    Parameters:
        api_key: ``None`` accepts any request; a string answers 401 with the service's
            error body to any other bearer key or a missing ``Authorization`` header.
        latency: seconds each generation takes (awaited, so requests overlap).
        url_ttl: seconds a result URL stays fetchable, also as a reference.
        rate_limit: requests per minute, as a token bucket holding ``rate_limit``
            requests (at least one) and refilling at ``rate_limit / 60`` per second, the
            same shape as an ``aiolimiter.AsyncLimiter`` at that rate; a request beyond
            it is a 429 with ``Retry-After`` (seconds, may be fractional) and
            ``retry-after-ms``.
        fault_rate: the fraction of valid generations that fail: 500, 503 or 429, or a
            dropped connection (the request is read, no answer is written) either before
            generating (not billed) or after generating (billed). Which ones is drawn
            from ``random.Random(fault_seed)`` in arrival order, so it is reproducible
            for a given order of arrival.
        fault_seed: seed of that draw.
        honour: which guidance field the service reads: ``"guidance"`` (the FLUX.2
            quickstart), ``"guidance_scale"`` (the OpenAPI spec and SDK) or ``"both"``
            (default; ``guidance_scale`` wins when both are sent and differ). Only the
            honoured value changes the picture, and only it is range-checked (flex:
            1.5 to 10), so a client sending the other name is silently ignored, as it
            would be by a service that reads only one.
        accept_data_uris: ``False`` makes a ``data:`` URI in ``reference_images`` or
            ``image_url`` a 400 on that field, as the service would answer if it took
            only fetchable URLs (it documents URLs only).
        exif_orientation: how a reference's EXIF orientation tag is read, which Together
            does not document: ``"ignore"`` (default; the stored pixels as they are) or
            ``"honour"`` (turned as a viewer shows it). A result shows each reference as
            it was read.
        animated_references: how an animated reference is read, also undocumented:
            ``"first_frame"`` (default) or ``"refuse"`` (a 400 on its field).
        port: the port to listen on, 0 (default) for any free one.
        clock: seconds, monotonic; decides URL expiry and the rate limit. Tests pass a
            settable clock to expire URLs without waiting.

    A request passes these steps in order, and the first that fails answers: logged in
    ``requests`` (when its body is a JSON object); the API key; the ``fail_next``
    queue; the rate limit; validation (404 unknown model, 400 otherwise, with
    ``param``); fetching references (400, ``param`` ``reference_images`` or
    ``image_url``); injected faults; ``latency``; generation (billed).

    Example (the official SDK works the same way with ``base_url=fake.base_url``):

    >>> import httpx
    >>> with FakeTogether(api_key="test-key") as fake:
    ...     response = httpx.post(
    ...         fake.base_url + "/v1/images/generations",
    ...         json={"model": "black-forest-labs/FLUX.2-pro", "prompt": "a fox", "seed": 1},
    ...         headers={"Authorization": "Bearer test-key"},
    ...         trust_env=False,
    ...     )
    ...     image = httpx.get(response.json()["data"][0]["url"], trust_env=False)
    ...     (response.status_code, image.headers["content-type"], len(fake.billed))
    (200, 'image/jpeg', 1)
    """

    def __init__(
        self,
        api_key: str | None = None,
        latency: float = 0.0,
        url_ttl: float = 600.0,
        rate_limit: float | None = None,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        *,
        honour: Honour = "both",
        accept_data_uris: bool = True,
        exif_orientation: _pictures.Orientation = "ignore",
        animated_references: _pictures.Animated = "first_frame",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _faults.check_settings(latency=latency, url_ttl=url_ttl, fault_rate=fault_rate)
        _pictures.check_reading(exif_orientation, animated_references)
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 requests per minute or None, got {rate_limit!r}")
        super().__init__(port)
        if honour not in _HONOURED_KEYS:
            raise ValueError(
                f"honour must be one of {', '.join(map(repr, _HONOURED_KEYS))}, got {honour!r}"
            )
        self.api_key = api_key
        self.latency = latency
        self.url_ttl = url_ttl
        self.rate_limit = rate_limit
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        self.honour: Honour = honour
        self.accept_data_uris = accept_data_uris
        self._clock = clock

        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._billed: list[dict[str, Any]] = []
        self._scheduled = _faults.FailureQueue()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._arrivals: list[float] = []

        # Touched only on the server's event loop thread.
        self._fault_draws = _faults.FaultDraws[_faults.FaultKind](fault_seed, _faults.FAULT_KINDS)
        self._files: OrderedDict[str, _StoredFile] = OrderedDict()
        self._bucket_tokens: float | None = None
        self._bucket_updated = 0.0
        self._renders: OrderedDict[str, _Made] = OrderedDict()
        self._render_bytes = 0
        self._tiles = _pictures.ReferenceTiles(
            _TILE_CACHE_ENTRIES, exif_orientation=exif_orientation,
            animated_references=animated_references,
        )
        # Results rendered whose tiles ``_tiles`` does not know yet: a result that comes
        # back as a reference is known by its tile without decoding it, but remembering
        # each by its hash when made would hash every result (most never come back).
        self._unremembered: OrderedDict[int, _Made] = OrderedDict()
        self._billed_digests = 0  # billed records up to here have their sha256 as text
        self._session: aiohttp.ClientSession | None = None


    # -- public state ----------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every generation request that arrived, in order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def billed(self) -> list[dict[str, Any]]:
        """One record per image generated (and so charged for), answered or not (a snapshot).

        Each record holds ``id`` (the response id), ``index``, ``model``, ``prompt``,
        ``seed``, ``width``, ``height``, ``output_format``, ``sha256`` (of the image
        bytes) and ``request`` (the JSON body).
        """
        with self._lock:
            records = self._billed
            for record in records[self._billed_digests:]:  # hashed when first asked for
                digest = record["sha256"]
                if isinstance(digest, _Digest):
                    record["sha256"] = digest.hex
            self._billed_digests = len(records)
            return list(records)

    @property
    def in_flight(self) -> int:
        """Generation requests being answered right now."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most generation requests ever answered at once (seen from the server)."""
        with self._lock:
            return self._peak_in_flight

    @property
    def arrivals(self) -> list[float]:
        """When each generation request arrived (the fake's clock, ``time.monotonic`` by
        default), in order (a snapshot)."""
        with self._lock:
            return list(self._arrivals)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
        *,
        ratelimit_reset: float | None = None,
    ) -> None:
        """Answer the next ``times`` generation requests with ``status`` instead of generating.

        ``retry_after`` (seconds) is sent as ``Retry-After``; ``ratelimit_reset``
        (seconds) as ``x-ratelimit-reset``, the header Together documents; ``message``
        replaces the default message of the error body. Calls queue in order.
        """
        failure = _faults.ScheduledFailure(status, retry_after, message, ratelimit_reset)
        self._scheduled.add(failure, times)

    # -- server thread ---------------------------------------------------------------

    def _add_routes(self, router: Router) -> None:
        # Eager (no task unless one waits): a reference on another server is fetched in a
        # task of its own (``_fetch_loopback``).
        router.add("POST", _GENERATIONS_PATH, self._handle_generation, eager=True)
        router.add("GET", _FILES_PREFIX + "{name}", self._handle_file, eager=True)

    async def _opened(self) -> None:
        # For references on other loopback servers; proxies from the environment ignored.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_SECONDS), trust_env=False
        )

    async def _closing(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- handlers --------------------------------------------------------------------

    async def _handle_generation(self, request: Request) -> Response:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._arrivals.append(self._clock())
        try:
            return await self._answer_generation(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer_generation(self, request: Request) -> Response:
        raw = request.body
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            with self._lock:
                self._requests.append(body)
        try:
            self._check_api_key(request)
            if not isinstance(body, dict):
                raise _ApiError(400, "The request body must be a JSON object.")
            self._take_scheduled_failure()
            self._take_rate_limit_token()
            generation = _validate(body, self.honour)
            fetched = [
                await self._fetch_reference(url, field, position)
                for position, (field, url) in enumerate(generation.references, start=1)
            ]
            references = [data for data, _ in fetched]
            reference_hashes = [digest or hashlib.sha256(data).hexdigest()
                                for data, digest in fetched]
            if self._unremembered and any(not self._tiles.knows(digest)
                                          for digest in reference_hashes):
                self._remember_results()  # one of ours sent back as bytes, perhaps
            tiles = await self._tiles_of(references, reference_hashes, generation.references)
            fault = self._fault_draws.draw(self.fault_rate)
            if fault == "drop_before":
                return _faults.drop_connection(request)
            if fault in ("500", "503", "429"):
                raise _ApiError(int(fault))
            if self.latency:
                await asyncio.sleep(self.latency)
            started = time.perf_counter()
            images = await self._images(generation, reference_hashes, tiles)
            inference = self.latency + (time.perf_counter() - started)
        except _ApiError as err:
            return err.to_response()
        response_id = _new_id()
        self._bill(response_id, generation, body, images)
        if fault == "drop_after":
            return _faults.drop_connection(request)
        return json_response(
            {
                "id": response_id,
                "model": generation.model,
                "object": "list",
                "data": [
                    self._result_entry(index, made, generation, inference)
                    for index, made in enumerate(images)
                ],
            }
        )

    async def _tiles_of(
        self,
        references: Sequence[bytes],
        hashes: Sequence[str],
        fields: Sequence[tuple[str, str]],
    ) -> list[_pictures.Tile]:
        """Each reference decoded once per content hash (a 400 naming it if it is no image),
        as the tile a result shows."""
        try:
            return [tile for tile, _ in await self._tiles.of(references, hashes)]
        except _pictures.UnreadableImage as exc:
            field, url = fields[exc.index]
            raise _ApiError(
                400,
                f"Reference image {exc.index + 1} ({_shorten(url)}) is not a readable image: "
                f"{exc}",
                param=field,
            ) from exc

    async def _images(
        self,
        generation: _Generation,
        reference_hashes: Sequence[str],
        tiles: Sequence[_pictures.Tile],
    ) -> list[_Made]:
        """The ``n`` encoded images of a generation, each drawn once per distinct request
        (their sha256 computed only when asked for)."""
        keys = [_render_key(generation, reference_hashes, index) for index in range(generation.n)]
        missing = [index for index, key in enumerate(keys) if key not in self._renders]
        if missing:
            width, height, output_format = (generation.width, generation.height,
                                            generation.output_format)

            def draw() -> list[bytes]:
                return [_pictures.render(width, height, output_format, generation.prompt,
                                         keys[index], tiles) for index in missing]

            # A JPEG joined from blocks already encoded takes about 0.05 ms: done here, as a
            # thread hop would cost more; anything that draws or encodes in a worker thread.
            quick = all(_pictures.is_quick(width, height, output_format, keys[index], tiles)
                        for index in missing)
            drawn = draw() if quick else await asyncio.to_thread(draw)
            for index, image in zip(missing, drawn):
                if keys[index] not in self._renders:
                    made = _Made(image, _Digest(image), width, height, keys[index])
                    self._renders[keys[index]] = made
                    self._render_bytes += len(image)
                    # A later request will likely send this result back as a reference:
                    # its tile is its base's, known without decoding it (remembered by its
                    # hash once one is asked for: ``_remember_results``).
                    self._unremembered[id(made)] = made
                    while len(self._unremembered) > _TILE_CACHE_ENTRIES:
                        self._unremembered.popitem(last=False)
        images = []
        for key in keys:
            self._renders.move_to_end(key)
            images.append(self._renders[key])
        while self._render_bytes > _RENDER_CACHE_BYTES and len(self._renders) > len(keys):
            _, dropped = self._renders.popitem(last=False)
            self._render_bytes -= len(dropped.data)
        return images

    def _remember(self, made: _Made) -> str:
        """``made``'s tile known to ``_tiles`` by its hash (computed now if need be); the hash."""
        digest = made.digest.hex
        self._unremembered.pop(id(made), None)
        if not self._tiles.knows(digest):
            self._tiles.remember(digest, _pictures.result_tile(made.width, made.height, made.key),
                                 (made.width, made.height))
        return digest

    def _remember_results(self) -> None:
        """Every recent result's tile known by its hash (each hashed once): a reference sent
        as bytes (a ``data:`` URI, an image host) may be one of them."""
        for made in list(self._unremembered.values()):
            self._remember(made)

    async def _handle_file(self, request: Request) -> Response:
        if not request.header("User-Agent").strip():
            return text_response("Forbidden: a User-Agent header is required.", 403)
        stored = self._fresh_file(request.match)
        if stored is None:
            return text_response("Not Found", 404)
        return Response(200, stored.data, stored.media_type)

    # -- steps of a generation -------------------------------------------------------

    def _check_api_key(self, request: Request) -> None:
        scheme, _, token = request.header("Authorization").partition(" ")
        refusal = _faults.key_refusal(self.api_key, token if scheme == "Bearer" else "")
        if refusal is not None:
            raise _ApiError(refusal)

    def _take_scheduled_failure(self) -> None:
        failure = self._scheduled.take()
        if failure is not None:
            raise _ApiError(failure.status, failure.message, headers=failure.headers())

    def _take_rate_limit_token(self) -> None:
        if self.rate_limit is None:
            return
        now = self._clock()
        per_second = self.rate_limit / 60.0
        capacity = max(1.0, float(self.rate_limit))
        if self._bucket_tokens is None:
            tokens = capacity
        else:
            elapsed = max(0.0, now - self._bucket_updated)
            tokens = min(capacity, self._bucket_tokens + elapsed * per_second)
        self._bucket_updated = now
        if tokens >= 1.0:
            self._bucket_tokens = tokens - 1.0
            return
        self._bucket_tokens = tokens
        wait_ms = max(1, math.ceil((1.0 - tokens) / per_second * 1000))
        raise _ApiError(
            429,
            f"Rate limit of {self.rate_limit:g} requests per minute exceeded; retry in {wait_ms} ms.",
            headers={
                "Retry-After": _faults.format_seconds(wait_ms / 1000),
                "retry-after-ms": str(wait_ms),
                "x-ratelimit-reset": _faults.format_seconds(wait_ms / 1000),
            },
        )

    async def _fetch_reference(
        self, url: str, field: str, position: int
    ) -> tuple[bytes, str | None]:
        """The bytes behind one reference, fetched as the service would, or a 400; and
        their sha256 when already known (one of its own results)."""
        if url.startswith("data:"):
            if not self.accept_data_uris:
                raise _ApiError(
                    400,
                    f"Reference image {position} is a data: URI; this service accepts only "
                    "image URLs it can fetch (http or https).",
                    param=field,
                )
            return _decode_data_uri(url, field, position), None
        # Its own result URLs, as it writes them, without parsing (the common case: a chain).
        own_prefix = f"http://127.0.0.1:{self._port}{_FILES_PREFIX}"
        name = url[len(own_prefix) :] if url.startswith(own_prefix) else ""
        if not name or any(char in name for char in "/?#%"):
            parts = urlsplit(url)
            loopback = parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK_HOSTS
            if not loopback:
                raise _ApiError(
                    400,
                    f"Could not fetch reference image {position} ({_shorten(url)}): "
                    "FakeTogether fetches only data: URIs and http(s) URLs on 127.0.0.1.",
                    param=field,
                )
            ours = (
                parts.scheme == "http"
                and parts.port == self._port
                and parts.path.startswith(_FILES_PREFIX)
            )
            if not ours:
                return await self._fetch_loopback(url, field, position), None
            name = parts.path[len(_FILES_PREFIX) :]
        stored = self._fresh_file(name)
        if stored is None:
            raise _ApiError(
                400,
                f"Could not fetch reference image {position} ({_shorten(url)}): "
                "404 Not Found (the URL has expired or never existed).",
                param=field,
            )
        return stored.data, self._remember(stored.made)

    async def _fetch_loopback(self, url: str, field: str, position: int) -> bytes:
        """GET a reference from another server on this machine (an image host, a local S3),
        in a task (aiohttp's timeouts need one; the handler runs eagerly, outside any)."""
        if asyncio.current_task() is None:
            return await asyncio.get_running_loop().create_task(
                self._fetch_loopback(url, field, position))
        assert self._session is not None
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    raise _ApiError(
                        400,
                        f"Could not fetch reference image {position} ({_shorten(url)}): "
                        f"HTTP {response.status}.",
                        param=field,
                    )
                return await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _ApiError(
                400,
                f"Could not fetch reference image {position} ({_shorten(url)}): "
                f"{type(exc).__name__}.",
                param=field,
            ) from exc

    def _bill(
        self,
        response_id: str,
        generation: _Generation,
        body: dict[str, Any],
        images: Sequence[_Made],
    ) -> None:
        records = [
            {
                "id": response_id,
                "index": index,
                "model": generation.model,
                "prompt": generation.prompt,
                "seed": generation.seed,
                "width": generation.width,
                "height": generation.height,
                "output_format": generation.output_format,
                "sha256": made.digest,  # its text when ``billed`` is read
                "request": body,
            }
            for index, made in enumerate(images)
        ]
        with self._lock:
            self._billed.extend(records)

    def _result_entry(
        self, index: int, made: _Made, generation: _Generation, inference: float
    ) -> dict[str, Any]:
        # The service may add `timings` to each item (Together's skills repository shows
        # {"inference": 0.799}).
        timings = {"inference": round(inference, 3)}
        if generation.response_format == "base64":
            return {
                "index": index,
                "type": "b64_json",
                "b64_json": base64.b64encode(made.data).decode("ascii"),
                "timings": timings,
            }
        name = f"{os.urandom(16).hex()}.{_EXTENSIONS[generation.output_format]}"
        self._store_file(name, made, _MEDIA_TYPES[generation.output_format])
        return {
            "index": index,
            "type": "url",
            "url": f"{self.base_url}{_FILES_PREFIX}{name}",
            "timings": timings,
        }

    # -- hosted files ----------------------------------------------------------------

    def _store_file(self, name: str, made: _Made, media_type: str) -> None:
        now = self._clock()
        while self._files:
            oldest = next(iter(self._files.values()))
            if now - oldest.created_at < self.url_ttl:
                break
            self._files.popitem(last=False)
        self._files[name] = _StoredFile(made=made, media_type=media_type, created_at=now)

    def _fresh_file(self, name: str) -> _StoredFile | None:
        stored = self._files.get(name)
        if stored is None:
            return None
        if self._clock() - stored.created_at >= self.url_ttl:
            del self._files[name]
            return None
        return stored


# -- validation ------------------------------------------------------------------------


def _validate(body: dict[str, Any], honour: Honour = "both") -> _Generation:
    """Check a request body as the service does; 404 for an unknown model, else 400s.

    ``honour`` names the guidance field(s) the service reads; the others are ignored.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _ApiError(400, "model is required and must be a string.", param="model")
    if model not in _MAX_REFERENCES:
        raise _ApiError(
            404,
            f"Unable to access model {model}. Please visit https://api.together.ai/models "
            "to view the list of supported models.",
            code="model_not_available",
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _ApiError(400, "prompt is required and must be a non-empty string.", param="prompt")
    if body.get("negative_prompt"):
        raise _ApiError(
            400,
            "FLUX.2 models do not support negative prompts; describe what you want instead.",
            param="negative_prompt",
        )
    if body.get("image_loras"):
        raise _ApiError(400, "FLUX.2 models do not support image_loras.", param="image_loras")

    width = _size_field(body, "width", _DEFAULT_WIDTH)
    height = _size_field(body, "height", _DEFAULT_HEIGHT)
    seed = _optional_int(body, "seed")
    steps = _optional_int(body, "steps")
    if steps is not None and not 1 <= steps <= _MAX_STEPS:
        raise _ApiError(400, f"steps must be between 1 and {_MAX_STEPS}, got {steps}.", param="steps")
    n = _optional_int(body, "n")
    if n is None:
        n = 1
    if not 1 <= n <= _MAX_IMAGES:
        raise _ApiError(400, f"n must be between 1 and {_MAX_IMAGES}, got {n}.", param="n")
    output_format = body.get("output_format", "jpeg")
    if output_format not in _MEDIA_TYPES:
        raise _ApiError(
            400, f"output_format must be 'jpeg' or 'png', got {output_format!r}.", param="output_format"
        )
    response_format = body.get("response_format", "url")
    if response_format not in ("url", "base64"):
        raise _ApiError(
            400,
            f"response_format must be 'url' or 'base64', got {response_format!r}.",
            param="response_format",
        )
    upsampling = body.get("prompt_upsampling")
    if upsampling is not None and not isinstance(upsampling, bool):
        raise _ApiError(400, "prompt_upsampling must be a boolean.", param="prompt_upsampling")

    guidance: float | None = None
    for key in _HONOURED_KEYS[honour]:
        value = _optional_number(body, key)
        if value is None:
            continue
        bounds = _GUIDANCE_RANGES.get(model)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise _ApiError(
                400,
                f"{key} must be between {bounds[0]:g} and {bounds[1]:g} for {model}, got {value:g}.",
                param=key,
            )
        if guidance is None:
            guidance = value

    references = _reference_fields(body, model)
    return _Generation(
        model=model,
        prompt=prompt,
        width=width,
        height=height,
        seed=seed,
        steps=steps,
        guidance=guidance,
        output_format=str(output_format),
        response_format=str(response_format),
        n=n,
        references=references,
    )


def _reference_fields(body: dict[str, Any], model: str) -> tuple[tuple[str, str], ...]:
    references: list[tuple[str, str]] = []
    image_url = body.get("image_url")
    if image_url is not None:
        if model not in _IMAGE_URL_MODELS:
            raise _ApiError(
                400,
                "Unsupported use of 'image_url' parameter. "
                "This parameter is not supported for the selected model.",
            )
        if not isinstance(image_url, str) or not image_url:
            raise _ApiError(400, "image_url must be a URL string.", param="image_url")
        references.append(("image_url", image_url))
    urls = body.get("reference_images")
    if urls is not None:
        if not isinstance(urls, list) or not all(isinstance(url, str) and url for url in urls):
            raise _ApiError(400, "reference_images must be an array of URL strings.", param="reference_images")
        references.extend(("reference_images", url) for url in urls)
    limit = _MAX_REFERENCES[model]
    if len(references) > limit:
        raise _ApiError(
            400,
            f"{model} accepts at most {limit} reference images, got {len(references)}.",
            param="reference_images",
        )
    return tuple(references)


def _size_field(body: dict[str, Any], name: str, default: int) -> int:
    value = _optional_int(body, name)
    if value is None:
        return default
    if not _MIN_SIZE <= value <= _MAX_SIZE or value % _SIZE_MULTIPLE:
        raise _ApiError(
            400,
            f"{name} must be a multiple of {_SIZE_MULTIPLE} between {_MIN_SIZE} and {_MAX_SIZE}, "
            f"got {value}.",
            param=name,
        )
    return value


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ApiError(400, f"{name} must be an integer, got {value!r}.", param=name)
    return value


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ApiError(400, f"{name} must be a number, got {value!r}.", param=name)
    return float(value)


# -- references ------------------------------------------------------------------------


def _decode_data_uri(uri: str, field: str, position: int) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise _ApiError(400, f"Reference image {position} is a malformed data: URI.", param=field)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _ApiError(
                400, f"Reference image {position} is a data: URI with invalid base64: {exc}.", param=field
            ) from exc
    return unquote_to_bytes(payload)


def _shorten(url: str, limit: int = 60) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."


# -- rendering -------------------------------------------------------------------------


def _render_key(generation: _Generation, reference_hashes: Sequence[str], index: int) -> str:
    """Hex digest of everything that decides image ``index`` of a generation."""
    return _pictures.render_key({
        "model": generation.model,
        "prompt": generation.prompt,
        "width": generation.width,
        "height": generation.height,
        "seed": generation.seed,
        "steps": generation.steps,
        "guidance": generation.guidance,
        "output_format": generation.output_format,
        "references": list(reference_hashes),
        "index": index,
    })
