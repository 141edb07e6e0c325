"""FakeBFL: a loopback HTTP server that behaves like Black Forest Labs' asynchronous FLUX.2 API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from . import _faults, _pictures
from ._server import LoopbackServer, Request, Response, Router, json_response, text_response

__all__ = ["FakeBFL"]

#: Polling URLs live under this path: the "regional" host of the real service
#: (``https://api.eu2.bfl.ai/v1/get_result?id=...``). A hand-built global
#: ``/v1/get_result`` finds no task, as the service's does not.
_REGION_PREFIX: Final = "/eu2"
_RESULT_PATH: Final = "/v1/get_result"
_DELIVERY_PREFIX: Final = "/delivery/"


@dataclass(frozen=True)
class _Endpoint:
    """One model's submit endpoint, as BFL's API reference describes it."""

    max_references: int
    first_mp_cents: float
    extra_mp_cents: float
    extra_fields: frozenset[str] = frozenset()


_FLEX_FIELDS: Final = frozenset({"steps", "guidance", "prompt_upsampling"})

# The service's own view, kept apart from editgraph's catalogue on purpose: the fake plays
# the service, so a mistake in editgraph's limits or prices shows up here, not copied.
_ENDPOINTS: Final[dict[str, _Endpoint]] = {
    "flux-2-pro": _Endpoint(8, 3.0, 1.5),
    "flux-2-pro-preview": _Endpoint(8, 3.0, 1.5),
    "flux-2-max": _Endpoint(8, 7.0, 3.0),
    "flux-2-flex": _Endpoint(8, 5.0, 5.0, _FLEX_FIELDS),
    "flux-2-klein-4b": _Endpoint(4, 1.4, 0.1),
    "flux-2-klein-9b": _Endpoint(4, 1.5, 0.2),
    "flux-2-klein-9b-preview": _Endpoint(4, 1.5, 0.2),
}

_COMMON_FIELDS: Final = frozenset(
    {"prompt", "seed", "width", "height", "safety_tolerance", "output_format",
     "webhook_url", "webhook_secret"}
)
_MIN_SIDE: Final = 64
_SIZE_MULTIPLE: Final = 16
_MAX_PIXELS: Final = 4 * 1024 * 1024
_DEFAULT_WIDTH: Final = 1024
_DEFAULT_HEIGHT: Final = 768
_MAX_SAFETY_TOLERANCE: Final = 6

_MEDIA_TYPES: Final[dict[str, str]] = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_EXTENSIONS: Final[dict[str, str]] = {"jpeg": "jpg", "png": "png", "webp": "webp"}

_MODERATE_OUTPUT: Final = "[moderate-output]"
_MODERATE_REQUEST: Final = "[moderate-request]"

_PollFault = Literal["500", "503", "drop"]
_POLL_FAULTS: Final[tuple[_PollFault, ...]] = ("500", "503", "drop")

_STATUS_DETAILS: Final[dict[int, str]] = {
    400: "Bad request.",
    401: "Not authenticated: invalid API key.",
    402: "Insufficient credits. Add credits at https://dashboard.bfl.ai.",
    403: "Not authenticated",
    404: "Not Found",
    422: "Unprocessable entity.",
    429: "You have exceeded the number of active tasks. Wait for a task to finish.",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service temporarily unavailable.",
    504: "Gateway Timeout",
}


class _ApiError(Exception):
    """One error answer: FastAPI style ``{"detail": ...}`` with optional headers."""

    def __init__(
        self, status: int, detail: str | list[dict[str, Any]] | None = None,
        *, headers: dict[str, str] | None = None,
    ) -> None:
        detail = detail if detail is not None else _STATUS_DETAILS.get(status, "Request failed.")
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def to_response(self) -> Response:
        return json_response({"detail": self.detail}, status=self.status, headers=self.headers)


def _invalid(field: str, message: str, kind: str = "value_error") -> _ApiError:
    """A 422 naming one body field, as FastAPI's validation writes it."""
    return _ApiError(422, [{"loc": ["body", field], "msg": message, "type": kind}])


@dataclass(frozen=True)
class _StoredFile:
    data: bytes
    media_type: str
    created_at: float


@dataclass(frozen=True)
class _Submission:
    """A validated submit: everything that decides the output and the price."""

    model: str
    prompt: str
    width: int
    height: int
    seed: int | None
    steps: int | None
    guidance: float | None
    output_format: str
    references: tuple[tuple[str, str], ...]  # (field, value) in "image N" order


@dataclass
class _Task:
    """One submitted task: its status follows the clock."""

    id: str
    submission: _Submission
    submitted_at: float
    ready_at: float
    image: bytes
    moderation: str | None
    sample_url: str | None = None
    delivered_at: float | None = None
    polls: int = field(default=0)


def _megapixels(width: int, height: int) -> int:
    """Billed megapixels of one image: started megapixels (1024 x 1024 px each)."""
    return max(1, math.ceil(width * height / 1024**2))


class FakeBFL(LoopbackServer):
    """A real HTTP server on 127.0.0.1 that answers like BFL's FLUX.2 API (https://docs.bfl.ai).

    It runs a lean HTTP/1.1 server on an ephemeral port in a background thread. It serves:

    - ``POST /v1/<model>`` for ``flux-2-pro``, ``-pro-preview``, ``-max``, ``-flex``,
      ``-klein-4b``, ``-klein-9b`` and ``-klein-9b-preview`` (``x-key`` auth): validates
      the body as the published schema does (422 ``{"detail": [{"loc", "msg", "type"}]}``;
      a field the model does not take, such as ``prompt_upsampling`` on pro, is refused
      — stricter than the service, so a client that sends it shows up), reads each
      reference (``input_image``, ``input_image_2``, ...: raw base64, or one of its own
      fresh result URLs; it contacts no other host) and answers ``{"id", "polling_url",
      "cost", "input_mp", "output_mp"}``. ``cost`` is in credits (1 credit = $0.01) by
      BFL's formula ``first MP + (output MP - 1) * MP price + input MP * MP price``,
      megapixels counted per image and rounded up. Every accepted submission is billed,
      whether or not its answer reaches the client, and whatever its outcome.
    - ``GET <polling_url>`` on the regional path ``/eu2/v1/get_result?id=...``:
      ``{"id", "status", "result", "progress", "details", "preview"}``, ``Pending`` with
      a growing ``progress`` for ``latency`` seconds after submission, then ``Ready`` with
      ``result.sample`` (a URL valid ``url_ttl`` seconds, after which the task too is
      gone: ``Task not found``). The global ``/v1/get_result`` answers ``Task not found``
      for every id.
    - ``GET /delivery/<id>.<ext>``: the results, real JPEG, PNG or WebP bytes of the
      requested size, deterministic in the model, prompt, seed, size, steps, guidance,
      format and the *bytes* of the references. Unlike the service, it draws no random
      seed when ``seed`` is omitted.

    A prompt containing ``[moderate-request]`` ends as ``Request Moderated`` (at once), one
    containing ``[moderate-output]`` as ``Content Moderated`` (after ``latency``) — unless
    the seed is listed in ``passing_seeds``, a test's way to let a new seed through.

    Parameters:
        api_key: ``None`` accepts any request; a string answers 403 to a missing
            ``x-key`` and 401 to any other key.
        latency: seconds from submission to ``Ready`` (the clock decides, not a sleep).
        url_ttl: seconds a result URL (and its task) stays available once ready.
        max_active: submitted tasks not yet finished allowed at once; the next submit is
            a 429 with ``Retry-After`` (seconds until the earliest one finishes).
        fault_rate: fraction of valid submissions answered 500, 503 or 429, or whose
            connection is dropped before (not billed) or after (billed) the task is
            created; and fraction of polls answered 500 or 503 or dropped. Drawn from
            ``random.Random(fault_seed)`` in arrival order (polls from a second stream).
        fault_seed: seed of those draws.
        exif_orientation: how a reference's EXIF orientation tag is read, which BFL does
            not document: ``"ignore"`` (default; the stored pixels as they are) or
            ``"honour"`` (turned as a viewer shows it, its size too). A result shows
            each reference as it was read.
        animated_references: how an animated reference is read, also undocumented:
            ``"first_frame"`` (default) or ``"refuse"`` (a 422 on its field).
        port: the port to listen on, 0 (default) for any free one.
        clock: seconds, monotonic; decides status, expiry and the active-task count.

    A submission passes these steps in order, and the first that fails answers: logged in
    ``requests`` (a JSON object body); the endpoint (404); the key; the ``fail_next``
    queue; validation (422); reading references (422); the active-task cap (429);
    injected faults; creation (billed).
    """

    def __init__(
        self,
        api_key: str | None = None,
        latency: float = 0.0,
        url_ttl: float = 600.0,
        max_active: int = 24,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        *,
        exif_orientation: _pictures.Orientation = "ignore",
        animated_references: _pictures.Animated = "first_frame",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _faults.check_settings(latency=latency, url_ttl=url_ttl, fault_rate=fault_rate)
        _pictures.check_reading(exif_orientation, animated_references)
        super().__init__(port)
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active!r}")
        self.api_key = api_key
        self.latency = latency
        self.url_ttl = url_ttl
        self.max_active = max_active
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        #: Seeds for which ``[moderate-output]`` does not block (tests of new-seed retries).
        self.passing_seeds: set[int] = set()
        self._clock = clock

        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._billed: list[dict[str, Any]] = []
        self._polls: list[str] = []
        self._scheduled = _faults.FailureQueue()
        self._tasks: dict[str, _Task] = {}

        # Touched only on the server's event loop thread.
        self._fault_draws = _faults.FaultDraws[_faults.FaultKind](fault_seed, _faults.FAULT_KINDS)
        self._poll_faults = _faults.FaultDraws[_PollFault](f"poll-{fault_seed}", _POLL_FAULTS)
        self._files: dict[str, _StoredFile] = {}
        self._tiles = _pictures.ReferenceTiles(
            exif_orientation=exif_orientation, animated_references=animated_references
        )


    # -- public state ----------------------------------------------------------------

    @property
    def regional_url(self) -> str:
        """The base of the polling URLs it hands out (the service's regional host)."""
        return self.base_url + _REGION_PREFIX

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every submission that arrived, in order (a snapshot).

        The model is in the path, not the body: ``billed`` records it.
        """
        with self._lock:
            return list(self._requests)

    @property
    def billed(self) -> list[dict[str, Any]]:
        """One record per task created (and so charged for), answered or not (a snapshot).

        Each holds ``id``, ``model`` (the endpoint, e.g. ``flux-2-pro``), ``prompt``,
        ``seed``, ``width``, ``height``, ``output_format``, ``cost`` (credits),
        ``input_mp``, ``output_mp``, ``sha256`` (of the image it makes) and ``request``.
        """
        with self._lock:
            return list(self._billed)

    @property
    def polls(self) -> list[str]:
        """The task id of every poll that reached a polling URL, in order (a snapshot)."""
        with self._lock:
            return list(self._polls)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` submissions with ``status`` instead of creating a task.

        ``retry_after`` (seconds) is sent as ``Retry-After``; ``message`` replaces the
        default ``detail``. Calls queue in order.
        """
        self._scheduled.add(_faults.ScheduledFailure(status, retry_after, message), times)

    # -- server thread ---------------------------------------------------------------

    def _add_routes(self, router: Router) -> None:
        # Eager (no task unless one waits): none of these needs a current task.
        router.add("GET", _REGION_PREFIX + _RESULT_PATH, self._handle_poll, eager=True)
        router.add("GET", _RESULT_PATH, self._handle_global_poll, eager=True)
        router.add("GET", _DELIVERY_PREFIX + "{name}", self._handle_file, eager=True)
        router.add("POST", "/v1/{endpoint}", self._handle_submit, eager=True)

    # -- handlers --------------------------------------------------------------------

    async def _handle_submit(self, request: Request) -> Response:
        raw = request.body
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            with self._lock:
                self._requests.append(body)
        model = request.match
        try:
            endpoint = _ENDPOINTS.get(model)
            if endpoint is None:
                raise _ApiError(404)
            self._check_api_key(request)
            if not isinstance(body, dict):
                raise _ApiError(422, [{"loc": ["body"], "msg": "Input should be a valid dictionary",
                                       "type": "dict_type"}])
            self._take_scheduled_failure()
            submission = _validate(model, endpoint, body)
            references = [self._reference_bytes(field_name, value)
                          for field_name, value in submission.references]
            reference_hashes = [hashlib.sha256(data).hexdigest() for data in references]
            tiles, sizes = await self._tiles_of(references, reference_hashes, submission)
            submission = _sized(submission, sizes)
            self._check_capacity()
            fault = self._fault_draws.draw(self.fault_rate)
            if fault == "drop_before":
                return _faults.drop_connection(request)
            if fault in ("500", "503", "429"):
                raise _ApiError(int(fault), headers={"Retry-After": "1"} if fault == "429" else None)
            image = await self._render(submission, reference_hashes, tiles)
        except _ApiError as err:
            return err.to_response()
        input_mp = sum(_megapixels(*size) for size in sizes)
        output_mp = _megapixels(submission.width, submission.height)
        cost = round(endpoint.first_mp_cents + (output_mp - 1) * endpoint.extra_mp_cents
                     + input_mp * endpoint.extra_mp_cents, 4)
        task = self._create_task(submission, image, body)
        with self._lock:
            self._billed.append({
                "id": task.id, "model": model, "prompt": submission.prompt,
                "seed": submission.seed, "width": submission.width, "height": submission.height,
                "output_format": submission.output_format, "cost": cost, "input_mp": input_mp,
                "output_mp": output_mp, "sha256": hashlib.sha256(image).hexdigest(),
                "request": body,
            })
        if fault == "drop_after":
            return _faults.drop_connection(request)
        answer: dict[str, Any] = {"id": task.id, "cost": cost, "input_mp": input_mp,
                                  "output_mp": output_mp}
        if body.get("webhook_url"):
            # The service calls the webhook instead of being polled; the fake never calls
            # out, but answers in that shape (BFL's published OpenAPI schema).
            answer.update(status="Pending", webhook_url=body["webhook_url"])
        else:
            answer["polling_url"] = f"{self.regional_url}{_RESULT_PATH}?id={task.id}"
        return json_response(answer)

    async def _handle_poll(self, request: Request) -> Response:
        try:
            self._check_api_key(request)
        except _ApiError as err:
            return err.to_response()
        task_id = request.query.get("id", "")
        with self._lock:
            self._polls.append(task_id)
        fault = self._poll_faults.draw(self.fault_rate)
        if fault == "drop":
            return _faults.drop_connection(request)
        if fault is not None:
            return _ApiError(int(fault)).to_response()
        return json_response(self._task_status(task_id))

    async def _handle_global_poll(self, request: Request) -> Response:
        try:
            self._check_api_key(request)
        except _ApiError as err:
            return err.to_response()
        task_id = request.query.get("id", "")
        return json_response(_status_body(task_id, "Task not found"))

    async def _handle_file(self, request: Request) -> Response:
        stored = self._files.get(request.match)
        if stored is None or self._clock() - stored.created_at >= self.url_ttl:
            return text_response("Not Found", 404)
        return Response(200, stored.data, stored.media_type)

    # -- steps -----------------------------------------------------------------------

    async def _tiles_of(
        self, references: Sequence[bytes], hashes: Sequence[str], submission: _Submission
    ) -> tuple[list[_pictures.Tile], list[tuple[int, int]]]:
        """Each reference decoded once per content hash (a 422 naming its field if it is no
        image): the tiles a result shows, and the references' pixel sizes."""
        try:
            known = await self._tiles.of(references, hashes)
        except _pictures.UnreadableImage as exc:
            raise _invalid(submission.references[exc.index][0],
                           f"Could not read the image: {exc}") from exc
        return [tile for tile, _ in known], [size for _, size in known]

    async def _render(
        self, submission: _Submission, reference_hashes: Sequence[str],
        tiles: Sequence[_pictures.Tile],
    ) -> bytes:
        """The result's bytes, deterministic in the submission and its references' bytes:
        joined from encoded blocks here when it can be, else drawn in a worker thread."""
        key = _pictures.render_key({
            "model": submission.model, "prompt": submission.prompt, "width": submission.width,
            "height": submission.height, "seed": submission.seed, "steps": submission.steps,
            "guidance": submission.guidance, "output_format": submission.output_format,
            "references": list(reference_hashes),
        })
        width, height = submission.width, submission.height
        output_format = submission.output_format
        draw = functools.partial(_pictures.render, width, height, output_format,
                                 submission.prompt, key, tiles)
        quick = _pictures.is_quick(width, height, output_format, key, tiles)
        image = draw() if quick else await asyncio.to_thread(draw)
        # The result will likely come back as a reference: its tile is known already.
        self._tiles.remember(hashlib.sha256(image).hexdigest(),
                             _pictures.result_tile(width, height, key), (width, height))
        return image

    def _check_api_key(self, request: Request) -> None:
        refusal = _faults.key_refusal(self.api_key, request.header("x-key"), missing_status=403)
        if refusal is not None:
            raise _ApiError(refusal)

    def _take_scheduled_failure(self) -> None:
        failure = self._scheduled.take()
        if failure is not None:
            raise _ApiError(failure.status, failure.message, headers=failure.headers())

    def _reference_bytes(self, field_name: str, value: str) -> bytes:
        """The bytes of one reference: raw base64, or one of the fake's fresh result URLs."""
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            ours = (parts.hostname in ("127.0.0.1", "localhost") and parts.port == self._port
                    and parts.path.startswith(_DELIVERY_PREFIX))
            stored = self._files.get(parts.path[len(_DELIVERY_PREFIX):]) if ours else None
            if stored is None or self._clock() - stored.created_at >= self.url_ttl:
                raise _invalid(field_name, f"Could not download the image at {_shorten(value)} "
                                           "(FakeBFL fetches only its own fresh result URLs).")
            return stored.data
        if value.startswith("data:"):
            raise _invalid(field_name, "Expected a URL or raw base64, got a data: URI.")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid(field_name, f"Invalid base64 image: {exc}.") from exc

    def _active_finish_times(self, now: float) -> list[float]:
        with self._lock:
            return [task.ready_at for task in self._tasks.values() if task.ready_at > now]

    def _check_capacity(self) -> None:
        now = self._clock()
        finishing = self._active_finish_times(now)
        if len(finishing) < self.max_active:
            return
        wait = max(0.001, min(finishing) - now)
        raise _ApiError(
            429,
            f"You have exceeded the number of active tasks ({self.max_active}). "
            "Wait for a task to finish before submitting another.",
            headers={"Retry-After": _faults.format_seconds(round(wait, 3))},
        )

    def _create_task(self, submission: _Submission, image: bytes, body: dict[str, Any]) -> _Task:
        now = self._clock()
        moderation: str | None = None
        if _MODERATE_REQUEST in submission.prompt:
            moderation = "Request Moderated"
        elif _MODERATE_OUTPUT in submission.prompt and submission.seed not in self.passing_seeds:
            moderation = "Content Moderated"
        ready_at = now if moderation == "Request Moderated" else now + self.latency
        task = _Task(id=str(uuid.uuid4()), submission=submission, submitted_at=now,
                     ready_at=ready_at, image=image, moderation=moderation)
        with self._lock:
            self._tasks[task.id] = task
        return task

    def _task_status(self, task_id: str) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or now - task.ready_at >= self.url_ttl:
            return _status_body(task_id, "Task not found")
        task.polls += 1
        if now < task.ready_at:
            progress = (now - task.submitted_at) / self.latency if self.latency else 0.0
            return _status_body(task_id, "Pending", progress=round(min(0.99, progress), 3))
        if task.moderation is not None:
            reason = ("the input was flagged" if task.moderation == "Request Moderated"
                      else "the generated image was flagged")
            return _status_body(task_id, task.moderation,
                                details={"moderation_reasons": [reason]})
        if task.sample_url is None:
            submission = task.submission
            name = f"{task.id}.{_EXTENSIONS[submission.output_format]}"
            # The URL lives from the moment the task was ready, not from the first poll.
            self._files[name] = _StoredFile(task.image, _MEDIA_TYPES[submission.output_format],
                                            task.ready_at)
            task.sample_url = f"{self.base_url}{_DELIVERY_PREFIX}{name}"
        submission = task.submission
        result = {"sample": task.sample_url, "seed": submission.seed, "prompt": submission.prompt,
                  "start_time": task.submitted_at, "end_time": task.ready_at,
                  "duration": task.ready_at - task.submitted_at}
        return _status_body(task_id, "Ready", progress=1.0, result=result)


def _status_body(
    task_id: str, status: str, *, progress: float | None = None,
    result: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"id": task_id, "status": status, "result": result, "progress": progress,
            "details": details, "preview": None}


# -- validation ------------------------------------------------------------------------


def _reference_field_names(count: int) -> list[str]:
    return ["input_image", *(f"input_image_{n}" for n in range(2, count + 1))]


def _validate(model: str, endpoint: _Endpoint, body: dict[str, Any]) -> _Submission:
    """Check a body as the published schema does; a 422 naming the first bad field."""
    all_slots = _reference_field_names(10)
    allowed_slots = set(all_slots[: endpoint.max_references])
    allowed = _COMMON_FIELDS | endpoint.extra_fields | allowed_slots
    for name in body:
        if name not in allowed:
            raise _invalid(name, "Extra inputs are not permitted", "extra_forbidden")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("prompt", "Field required" if prompt is None else "Prompt must be a non-empty string",
                       "missing" if prompt is None else "string_type")
    references: list[tuple[str, str]] = []
    gap = False
    for slot in all_slots[: endpoint.max_references]:
        value = body.get(slot)
        if value is None:
            gap = True
            continue
        if gap:
            raise _invalid(slot, f"{slot} is set but an earlier input_image slot is empty")
        if not isinstance(value, str) or not value:
            raise _invalid(slot, "Input should be a valid string", "string_type")
        references.append((slot, value))
    width = _optional_int(body, "width")
    height = _optional_int(body, "height")
    for name, value in (("width", width), ("height", height)):
        if value is not None and value != 0 and (value < _MIN_SIDE or value % _SIZE_MULTIPLE):
            raise _invalid(name, f"{name} must be at least {_MIN_SIDE} and a multiple of "
                                 f"{_SIZE_MULTIPLE}, got {value}")
    if width and height and width * height > _MAX_PIXELS:
        raise _invalid("width", f"width x height must be at most 4 megapixels, got {width}x{height}")
    seed = _optional_int(body, "seed")
    tolerance = _optional_int(body, "safety_tolerance")
    if tolerance is not None and not 0 <= tolerance <= _MAX_SAFETY_TOLERANCE:
        raise _invalid("safety_tolerance",
                       f"safety_tolerance must be between 0 and {_MAX_SAFETY_TOLERANCE}")
    output_format = body.get("output_format") or "jpeg"
    if output_format not in _MEDIA_TYPES:
        raise _invalid("output_format", "Input should be 'jpeg', 'png' or 'webp'", "enum")
    steps = _optional_int(body, "steps")
    if steps is not None and not 1 <= steps <= 50:
        raise _invalid("steps", f"steps must be between 1 and 50, got {steps}")
    guidance = _optional_number(body, "guidance")
    if guidance is not None and not 1.5 <= guidance <= 10:
        raise _invalid("guidance", f"guidance must be between 1.5 and 10, got {guidance}")
    upsampling = body.get("prompt_upsampling")
    if upsampling is not None and not isinstance(upsampling, bool):
        raise _invalid("prompt_upsampling", "Input should be a valid boolean", "bool_type")
    return _Submission(model=model, prompt=prompt, width=width or 0, height=height or 0,
                       seed=seed, steps=steps, guidance=guidance, output_format=output_format,
                       references=tuple(references))


def _sized(submission: _Submission, sizes: Sequence[tuple[int, int]]) -> _Submission:
    """The submission with its output size settled: as asked, else the first input's, else
    1024 x 768 (rounded down to multiples of 16 and at most 4 MP)."""
    if submission.width and submission.height:
        return submission
    if sizes:
        width, height = sizes[0]
        scale = min(1.0, math.sqrt(_MAX_PIXELS / (width * height)))
        width = max(_MIN_SIDE, int(width * scale) // _SIZE_MULTIPLE * _SIZE_MULTIPLE)
        height = max(_MIN_SIDE, int(height * scale) // _SIZE_MULTIPLE * _SIZE_MULTIPLE)
    else:
        width, height = _DEFAULT_WIDTH, _DEFAULT_HEIGHT
    return dataclasses.replace(submission, width=submission.width or width,
                               height=submission.height or height)


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, "Input should be a valid integer", "int_type")
    return value


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(name, "Input should be a valid number", "float_type")
    return float(value)


def _shorten(url: str, limit: int = 60) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."
