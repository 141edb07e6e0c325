"""Together: FLUX.2 on Together AI over httpx, with retries, a shared rate limit and image hosts.

One ``generate()`` is one ``POST {base}/v1/images/generations`` (plus the download of the
result). The body has the fields, types and omitted defaults the official ``together``
SDK sends for the same parameters, plus ``prompt_upsampling``, which the SDK can only
send as an extra field.

Retry policy (stamina), per try:

- the request never left (connect error/timeout, pool timeout, write error): retried;
- 408, 409, 429 and 5xx answers: retried, waiting ``retry-after-ms`` / ``Retry-After``
  / ``x-ratelimit-reset`` (the one Together documents) when the service gives one (up to
  60 s, as the SDK does), else exponential backoff with
  jitter; ``x-should-retry: true`` / ``false`` overrides the status either way. A 429
  also slows every task of the provider (see ``RateGovernor``) and spends none of
  ``max_retries``: it is retried for up to 10 minutes;
- unknown outcome (read timeout, connection dropped after the body was sent): the
  service may have generated, and billed, the image. Together takes no idempotency key,
  so such a try is retried at most ``unknown_outcome_retries`` times, each with twice
  the previous timeout, and every one is counted in ``GeneratedImage.unknown_outcomes``;
- anything else (400, 401, 402, 403, 404, 422, ...) fails at once with a
  ``ProviderError`` that says what to do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from .._version import USER_AGENT
from ..downloads import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    Answer,
    BodyTooLarge,
    DownloadError,
    StreamedAnswer,
    UnreadableEncoding,
)
from ..errors import ConfigurationError, GraphError, ModerationError, ProviderError
from ..models import CATALOGUE, ModelSpec
from ..redact import check_api_key, redact, register_secret
from ..requests import EditRequest, GeneratedImage, Reference
from ._checks import check_count, check_rate_limit, check_seconds
from ._http import CallState as _CallState
from ._http import Clients as _Clients
from ._http import DownloadTimedOut as _DownloadTimedOut
from ._http import RetryableFailure as _RetryableFailure
from ._http import RetryableStatus as _RetryableStatus
from ._http import UnknownOutcome as _UnknownOutcome
from ._http import billable_retry_policy as _billable_retry_policy
from ._http import classified as _classified
from ._http import direct_transport as _direct_transport
from ._http import download_result as _download_result
from ._http import internal_base as _internal_base
from ._http import make_error as _make_error
from ._http import retry_after as _retry_after
from ._http import with_retries as _with_retries
from ._http import within as _within
from ._http import without_userinfo as _without_userinfo
from ._results import UnusableResult as _UnusableResult
from ._results import verified_media_type as _verified_media_type
from .base import base_url_problem
from .ratelimit import RateGovernor
from .registry import register

__all__ = ["DataURIHost", "ImageHost", "Together"]

DEFAULT_BASE_URL = "https://api.together.ai"
_GENERATIONS_PATH = "/v1/images/generations"

#: Answers that redirect (with a Location), which httpx follows for the POST.
_REDIRECTS = frozenset((301, 302, 303, 307, 308))

#: An upstream result URL counts as fresh only while it has at least this many seconds
#: left: the service fetches references some time after the request leaves.
_URL_SAFETY_MARGIN = 30.0

#: How long (seconds) one edit keeps retrying 429 answers, which spend no max_retries.
_RATE_LIMIT_PATIENCE = 600.0

#: How much of an error answer is read (its message is all that is used).
_ERROR_BODY_BYTES = 64 * 1024

_MODERATION_WORDS = ("moderat", "nsfw", "safety", "unsafe", "content policy", "flagged")



_IMAGE_HOST_HELP = (
    "configure an image host that gives local images URLs the service can fetch: "
    "eg.providers.Together(image_host=eg.hosts.S3ImageHost(\"s3://bucket/prefix\")), or "
    "--image-host s3://bucket/prefix on the command line (any object with an async "
    "url_for(reference) -> str method will do as image_host=)"
)


#: Retries are told on the ``editgraph`` logger (``editgraph --verbose`` shows them).
logger = logging.getLogger("editgraph")
# stamina logs every retry as a bare "stamina.retry_scheduled" warning; with no handler
# configured anywhere, Python's last-resort handler prints it raw on stderr. A
# NullHandler stops that; records still reach any handler the application configures.
logging.getLogger("stamina").addHandler(logging.NullHandler())


def _without_api_version(base_url: str) -> str:
    """``base_url`` without a trailing ``/`` or ``/v1``: SDK 1.x and 2.x expect a base that
    ends in ``/v1``, 3.x one without; either way editgraph posts to ``{base}/v1/...``."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")].rstrip("/")
    return base


@runtime_checkable
class ImageHost(Protocol):
    """Turns a reference held as bytes into a URL the service can fetch.

    Pass one as ``Together(image_host=...)`` to upload references to your own storage
    (an S3 bucket with presigned URLs, say) instead of sending them inline.
    """

    async def url_for(self, reference: Reference) -> str:
        """A URL (or ``data:`` URI) at which the service can read ``reference.data``."""
        ...


class DataURIHost:
    """The default image host: sends a reference inline as ``data:<type>;base64,...``.

    Together documents reference images as URLs only; data URIs work in practice but are
    undocumented, so this is a default you can replace, not a promise.
    """

    async def url_for(self, reference: Reference) -> str:
        """The reference's bytes as a base64 ``data:`` URI."""
        if reference.data is None:
            raise ValueError(f"reference {reference.source!r} carries no bytes to send")
        encoded = base64.b64encode(reference.data).decode("ascii")
        return f"data:{reference.media_type};base64,{encoded}"

    def __repr__(self) -> str:
        return "DataURIHost()"


class _ReferencesRejected(Exception):
    """The service could not fetch a reference (400, param ``reference_images``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class _WiredReferences:
    """The ``reference_images`` of one try, and how they were made."""

    urls: list[str]
    sent_upstream: bool  # some are upstream result URLs (which may expire early)
    inline: int  # how many went as data: URIs through DataURIHost


# --- the provider -------------------------------------------------------------------------


class Together:
    """FLUX.2 on Together AI.

    ``api_key`` and ``base_url`` fall back to ``TOGETHER_API_KEY`` and
    ``TOGETHER_BASE_URL`` (default ``https://api.together.ai``), as the official SDK does.
    The key is held as a ``SecretStr`` and appears in no repr, message or log line.

    Deliberate departure from the API default: ``prompt_upsampling`` is always sent, and
    is ``false`` unless the request asks for it. The service's upsampler rewrites edit
    prompts, including their "image N" wording, and makes runs non-reproducible.

    Parameters:
        max_retries: retries of a try that failed before reaching the service or got a
            408/409/429/5xx answer.
        unknown_outcome_retries: retries of a try whose outcome is unknown (sent, answer
            lost); each may be billed, and each is counted in ``unknown_outcomes``.
        timeout: seconds to wait for one generation's answer (FLUX.2 can be slow; a read
            timeout is an unknown outcome, so keep it generous).
        result_url_ttl: how long a result URL is trusted to stay fetchable. Together does
            not document it; 600 s is the BFL figure.
        rate_limit: requests per minute never to exceed (default: none until a 429).
        image_host: how references held as bytes (local files, expired results) are sent:
            an ``ImageHost`` that gives them URLs the service fetches. Default: none, they
            go inline as ``data:`` URIs (``DataURIHost``).
        data_uris: whether the service takes references inline as ``data:`` URIs.
            Together documents reference images as URLs only (docs/testing.md), yet data
            URIs are the only way to send local images without storage of your own, so
            the default is ``True``. With ``False`` and no ``image_host``, an edit that
            must send local bytes fails before anything is sent (nothing is paid), with a
            message naming ``image_host=``. The provider also switches to ``False`` by
            itself the first time the service refuses an edit whose references were all
            ``data:`` URIs (a 400 on ``reference_images``: such a request is not billed).
        max_download_bytes: the largest result (and answer) read, counted after
            decompression; a larger one fails the edit (it may have been billed).

    A result download is held to ``timeout`` in total (redirects and retries included),
    follows at most 5 redirects, over http(s) only, and refuses a loopback, private or
    link-local address unless ``base_url`` itself is on one (tests, private gateways).

    Raises ``ConfigurationError`` when no key is given or found in the environment, or
    when the key holds a character outside printable ASCII once surrounding whitespace is
    stripped (the message names ``api_key=`` or ``TOGETHER_API_KEY`` and the position,
    never the key), or when a setting is invalid.
    """

    name = "together"

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 5,
        unknown_outcome_retries: int = 1,
        timeout: float = 180.0,
        result_url_ttl: float = 600.0,
        rate_limit: float | None = None,
        image_host: ImageHost | None = None,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        data_uris: bool = True,
    ) -> None:
        source = "api_key="
        if api_key is None:
            api_key, source = os.environ.get("TOGETHER_API_KEY") or None, "TOGETHER_API_KEY"
        if api_key is None:
            raise ConfigurationError(
                "Together needs an API key: set TOGETHER_API_KEY or pass api_key=...; "
                "or use eg.providers.Preview() to run offline"
            )
        if isinstance(api_key, SecretStr):
            api_key = api_key.get_secret_value()
        # Checked before anything else, so no message below can quote a malformed key.
        key = check_api_key(api_key, source)
        register_secret(key)
        self._api_key = SecretStr(key)
        setting = "base_url="
        if base_url is None:
            setting = "TOGETHER_BASE_URL"
            base_url = os.environ.get("TOGETHER_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = _without_api_version(base_url)
        # What messages and the repr show: no user:password@ from the URL.
        self._shown_base_url = _without_userinfo(self.base_url)
        problem = base_url_problem(self.base_url)
        if problem is not None:
            raise ConfigurationError(
                f"Together: the base URL ({setting}) {self._shown_base_url!r} cannot be "
                f"used: {problem}; e.g. {DEFAULT_BASE_URL}"
            )
        # One setting at a time, each named, as BFL reports them.
        check_count("Together", "max_retries", max_retries, 0)
        check_count("Together", "unknown_outcome_retries", unknown_outcome_retries, 0)
        check_count("Together", "max_download_bytes", max_download_bytes, 1)
        check_seconds("Together", "timeout", timeout, positive=True)
        check_seconds("Together", "result_url_ttl", result_url_ttl, positive=False)
        check_rate_limit("Together", rate_limit)
        self.max_retries = max_retries
        self.unknown_outcome_retries = unknown_outcome_retries
        self.timeout = float(timeout)
        self.result_url_ttl = float(result_url_ttl)
        self.rate_limit = rate_limit
        self.max_download_bytes = max_download_bytes
        self._base_is_internal: bool | None = None  # found on the first download
        self.image_host: ImageHost = image_host if image_host is not None else DataURIHost()
        self.data_uris = data_uris
        self._governor = RateGovernor(rate_limit)
        self._direct_headers: dict[str, str] | None = None  # built on first use
        self._clients = _Clients(
            f"together_session_{id(self)}", self.timeout, follow_redirects=True
        )

    def __repr__(self) -> str:
        return (
            f"Together(base_url={self._shown_base_url!r}, max_retries={self.max_retries}, "
            f"unknown_outcome_retries={self.unknown_outcome_retries}, timeout={self.timeout}, "
            f"result_url_ttl={self.result_url_ttl}, rate_limit={self.rate_limit!r}, "
            f"max_download_bytes={self.max_download_bytes}, image_host={self.image_host!r}, "
            f"data_uris={self.data_uris})"
        )

    def check_edit(self, node: str, model: ModelSpec, parameters: Mapping[str, Any]) -> None:
        """Refuse what Together does not serve: BFL-only models (klein) and WebP output."""
        if not model.on_together:
            hosted = ", ".join(spec.aliases[0] for spec in CATALOGUE if spec.on_together)
            raise GraphError(
                f"node {node!r}: model: {model.label} is served by BFL only, not by Together; "
                f"run it with --provider bfl (BFL_API_KEY) or use one of {hosted}"
            )
        if parameters.get("output_format") == "webp":
            raise GraphError(
                f"node {node!r}: output_format: Together makes jpeg or png, got 'webp'; "
                "use output_format='png' or --provider bfl"
            )

    @property
    def rate_limited(self) -> int:
        """How many 429 answers this provider object has seen (all runs)."""
        return self._governor.rate_limited

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Generate the image ``request`` describes and download it.

        Raises ``ProviderError`` (with ``node``, ``status`` and ``possibly_billed``) when the
        edit fails for good; transport errors are its ``__cause__``.
        """
        state = _CallState()
        self._governor.enter()
        try:
            async with self._clients.client() as client:
                wired = await self._wire_references(request, use_host=False)
                try:
                    payload = await self._generate_with_retries(client, request, wired.urls, state)
                except _ReferencesRejected as exc:
                    if not wired.sent_upstream:
                        raise self._references_refused(request, exc, wired, state) from exc
                    # An upstream URL expired early: send those references as bytes, once.
                    wired = await self._wire_references(request, use_host=True)
                    try:
                        payload = await self._generate_with_retries(
                            client, request, wired.urls, state
                        )
                    except _ReferencesRejected as again:
                        raise self._references_refused(request, again, wired, state) from again
                return await self._result(client, request, payload, state)
        finally:
            self._governor.leave()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Share one HTTP client (and its connections) among the calls of one run.

        The engine enters it around a run; a ``generate()`` outside any session uses a
        client of its own. Nothing outlives the session, so the provider object stays
        free of event-loop-bound state between runs.
        """
        async with self._clients.session():
            yield

    # --- building the request ---------------------------------------------------------

    async def _wire_references(self, request: EditRequest, *, use_host: bool) -> _WiredReferences:
        """The ``reference_images`` strings, and how each was made.

        Raises ``ProviderError`` before anything is sent when a reference must go inline
        as a ``data:`` URI and the service does not take them.
        """
        now = time.time()
        urls: list[str] = []
        sent_upstream = False
        inline = 0
        for reference in request.references:
            url, expires_at = reference.url, reference.url_expires_at
            if url is not None and expires_at is None:
                urls.append(url)  # a source URL the user gave: as is
                continue
            fresh = (
                url is not None and expires_at is not None and expires_at - _URL_SAFETY_MARGIN > now
            )
            if url is not None and fresh and not (use_host and reference.data is not None):
                urls.append(url)  # an upstream result, still fetchable
                sent_upstream = True
                continue
            if reference.data is None:
                raise self._error(
                    request,
                    f"reference {reference.source!r}: its URL has expired and its bytes are "
                    "not at hand; run the edit that makes it again",
                    None,
                )
            if isinstance(self.image_host, DataURIHost):
                if not self.data_uris:
                    raise self._error(
                        request,
                        f"reference {reference.source!r} is a local image, and this Together "
                        "provider does not send data: URIs (data_uris=False, or the service "
                        f"refused them earlier); nothing was sent; {_IMAGE_HOST_HELP}",
                        None,
                    )
                inline += 1
            try:
                urls.append(await self.image_host.url_for(reference))
            except Exception as exc:  # a user's host may fail in any way: name it, keep the cause
                raise self._error(
                    request,
                    f"image host {self.image_host!r} could not host reference {reference.source!r}: {exc}",
                    None,
                ) from exc
        return _WiredReferences(urls, sent_upstream, inline)

    def _references_refused(
        self,
        request: EditRequest,
        refused: _ReferencesRejected,
        wired: _WiredReferences,
        state: _CallState,
    ) -> ProviderError:
        """The error for a 400 on ``reference_images``; learns when data: URIs are refused."""
        if not wired.inline:
            return self._error(
                request, f"Together could not use a reference: {refused.message}", 400, state
            )
        if wired.inline == len(wired.urls):
            # Every reference was a data: URI, so they are what the service refused: later
            # edits fail before sending (and paying) anything.
            self.data_uris = False
        return self._error(
            request,
            f"Together refused a local image sent inline as a data: URI (400: "
            f"{refused.message}); nothing was billed. Together documents reference images as "
            f"URLs only: {_IMAGE_HOST_HELP}",
            400,
            state,
        )

    def _body(self, request: EditRequest, references: list[str]) -> dict[str, Any]:
        """The JSON body, keyed and ordered as the SDK sends it; None fields omitted."""
        fields: dict[str, Any] = {"model": request.model, "prompt": request.prompt}
        if request.guidance is not None:
            fields["guidance_scale"] = request.guidance
        fields["height"] = request.height
        fields["output_format"] = request.output_format
        if references:
            fields["reference_images"] = references
        fields["response_format"] = "url"
        fields["seed"] = request.seed
        if request.steps is not None:
            fields["steps"] = request.steps
        fields["width"] = request.width
        # Always sent, false by default: see the class docstring.
        fields["prompt_upsampling"] = request.prompt_upsampling
        if request.guidance is not None:
            # The spec and SDK name it guidance_scale, the FLUX.2 quickstart guidance; which
            # one the service reads is undocumented, so both go out with the same value.
            fields["guidance"] = request.guidance
        return fields

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    # --- sending with retries ---------------------------------------------------------

    async def _generate_with_retries(
        self,
        client: httpx.AsyncClient,
        request: EditRequest,
        references: list[str],
        state: _CallState,
    ) -> dict[str, Any]:
        content = json.dumps(
            self._body(request, references),
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()

        # A 429 is "wait", not "broken": the shared pace adapts, so it spends no retry of
        # max_retries; only time bounds it.
        should_retry = _billable_retry_policy(
            state, request.node, max_retries=self.max_retries,
            unknown_outcome_retries=self.unknown_outcome_retries,
            patience=_RATE_LIMIT_PATIENCE, waits=lambda exc: exc.status == 429,
            shown=self._redact,
        )

        try:
            # The hook above keeps each budget; stamina supplies backoff, jitter and waits.
            return await _with_retries(
                lambda: self._try_once(client, request, content, state), should_retry,
                attempts=None,
            )
        except _UnknownOutcome as exc:
            raise self._error(
                request,
                f"Together gave no answer ({exc.description}) after {state.tries} tries; the "
                f"generation may have been billed ({state.unknown_outcomes} unknown outcome(s)) "
                "- check your usage before running it again",
                None,
                state,
            ) from exc.__cause__
        except _RetryableFailure as exc:
            raise self._error(
                request, f"{exc.description}; gave up after {state.tries} tries", exc.status, state
            ) from (exc.__cause__ or exc)

    async def _try_once(
        self, client: httpx.AsyncClient, request: EditRequest, content: bytes, state: _CallState
    ) -> dict[str, Any]:
        sent_at = await self._governor.wait_turn()
        state.tries += 1
        url = f"{self.base_url}{_GENERATIONS_PATH}"
        # A try re-sent after an unknown outcome waits twice as long: if the first answer
        # was lost because the generation is slow, a second short wait would pay again.
        read_timeout = self.timeout * 2**state.unknown_outcomes
        timeout = _try_timeout(read_timeout, min(10.0, self.timeout))
        try:
            # One deadline for the whole answer, not a per-read timeout that a trickling
            # server can stretch forever.
            with _classified(state, self._shown_base_url, read_timeout):
                response = await _within(
                    self._post(client, url, content, timeout),
                    read_timeout + min(10.0, self.timeout),
                )
        except BodyTooLarge as exc:
            raise self._error(
                request,
                f"Together's answer is larger than {exc.limit} bytes (2 x max_download_bytes); "
                "the generation may have been billed",
                200, state, billed=True,
            ) from None
        except UnreadableEncoding as exc:
            raise self._error(
                request, f"Together's answer is unreadable ({exc}); it may have been billed",
                200, state, billed=True,
            ) from None
        except asyncio.TimeoutError as exc:
            state.unknown_outcomes += 1
            raise _UnknownOutcome(f"no whole answer within {read_timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise self._error(
                request,
                f"request to {self._shown_base_url} failed: {type(exc).__name__}: {exc}",
                None,
                state,
            ) from exc
        if response.status_code == 429:
            self._governor.rate_limited_for(_retry_after(response.headers), sent_at)
        return self._judge(request, response, state)

    async def _post(
        self, client: httpx.AsyncClient, url: str, content: bytes, timeout: httpx.Timeout
    ) -> _Reply:
        """POST the request and read the answer, held to a size cap."""
        direct = _direct_transport(client)
        if direct is not None:
            async with direct.open("POST", url, headers=self._post_headers(), content=content,
                                   timeout=timeout) as answer:
                redirected = (answer.status_code in _REDIRECTS
                              and "location" in answer.headers)
                if not redirected:
                    body = await self._read_answer(answer)
            if not redirected:
                return _Reply(answer.status_code, answer, body, answer.reason_phrase)
            # A redirect (the request was not acted on): sent again through httpx,
            # which follows it as the client is set to.
        async with client.stream(
            "POST", url, content=content, headers=self._headers(), timeout=timeout
        ) as streamed:
            body = await self._read_answer(StreamedAnswer(streamed))
        return _Reply(streamed.status_code, streamed, body, streamed.reason_phrase)

    async def _read_answer(self, answer: Answer) -> bytes:
        """A success's body within 2 x max_download_bytes; an error's, of which only the
        message is used, within 64 KB (b"" when longer or unreadable)."""
        if 200 <= answer.status_code < 300:
            return await answer.read(2 * self.max_download_bytes)
        try:
            return await answer.read(_ERROR_BODY_BYTES)
        except (BodyTooLarge, UnreadableEncoding):
            return b""

    def _post_headers(self) -> dict[str, str]:
        """Every header of a generation sent straight through the transport: what the
        httpx client would add (User-Agent, the encodings ``CappedBody`` bounds) and ours."""
        headers = self._direct_headers
        if headers is None:
            headers = self._direct_headers = {
                "User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING, **self._headers()
            }
        return headers

    def _judge(
        self, request: EditRequest, reply: _Reply, state: _CallState
    ) -> dict[str, Any]:
        """The parsed answer of a 2xx; else raise the signal or error the status calls for."""
        status = reply.status_code
        if 200 <= status < 300:
            # The service answered success: whatever is wrong now, it may have billed.
            payload = reply.json_object()
            if payload is None:
                raise self._error(
                    request, "Together answered with a body that is not a JSON object (not "
                    "JSON, or unexpected)", status, state, billed=True,
                )
            return payload
        response = reply.response()
        error = _error_fields(response)
        message = self._redact(error.get("message") or response.reason_phrase or "no message")
        should = response.headers.get("x-should-retry")
        retryable = status in (408, 409, 429) or status >= 500
        if should == "true" or (should != "false" and retryable):
            raise _RetryableStatus(
                f"Together answered {status}: {message}",
                status=status,
                delay=_retry_after(response.headers),
            )
        if status == 400 and error.get("param") == "reference_images":
            raise _ReferencesRejected(message)
        explained = self._explain(request, status, error, message)
        if status in (400, 422) and any(word in message.lower() for word in _MODERATION_WORDS):
            # A moderation refusal: a batch keeps the item as `moderated`, not retried.
            raise _make_error(ModerationError, request, explained, status, state, billed=False,
                              shown=self._redact)
        raise self._error(request, explained, status, state)

    def _explain(
        self, request: EditRequest, status: int, error: Mapping[str, Any], message: str
    ) -> str:
        """A message for a final error status that tells the user what to do."""
        if status == 401:
            return (
                f"Together rejected the API key (401: {message}); check TOGETHER_API_KEY "
                "or the api_key you passed"
            )
        if status == 402:
            return (
                f"Together refused for billing (402: {message}); add credits or raise the "
                "spend limit in your Together account's billing settings"
            )
        codes = {str(error.get("code") or ""), str(error.get("type") or "")}
        if status == 403 and (
            "third_party_data_sharing_blocked" in codes or "third-party" in message.lower()
        ):
            return (
                f"Together blocked {request.model} (403 third_party_data_sharing_blocked: "
                f"{message}); FLUX.2 is partner-hosted: enable it under Organization Settings "
                "-> Privacy -> allow third-party (passthrough) models, then run again"
            )
        if status == 403:
            return f"Together denied access (403: {message}); check the key's organization and permissions"
        if status == 404:
            known = ", ".join(spec.id for spec in CATALOGUE if spec.on_together)
            return (
                f"Together does not know model {request.model!r} (404: {message}); use one "
                f"of {known} (and check TOGETHER_BASE_URL, now {self._shown_base_url})"
            )
        if status in (400, 422):
            lowered = message.lower()
            if any(word in lowered for word in _MODERATION_WORDS):
                return (
                    f"Together's content moderation refused this edit ({status}: {message}); "
                    "change the prompt or the references"
                )
            param = error.get("param")
            where = f" (field {param!r})" if param else ""
            return (
                f"Together refused the request{where} ({status}: {message}); fix it and run again"
            )
        return f"Together answered {status}: {message}"

    # --- the result -------------------------------------------------------------------

    async def _result(
        self,
        client: httpx.AsyncClient,
        request: EditRequest,
        payload: dict[str, Any],
        state: _CallState,
    ) -> GeneratedImage:
        items = payload.get("data")
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise self._error(
                request, "Together's answer holds no image (it may have been billed)", 200, state,
                billed=True,
            )
        item: dict[str, Any] = items[0]
        url: str | None = None
        if isinstance(item.get("b64_json"), str):
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self._error(
                    request, "Together's base64 image does not decode", 200, state, billed=True
                ) from exc
        elif isinstance(item.get("url"), str):
            url = item["url"]
            data = await self._download(client, request, url, state)
        else:
            raise self._error(
                request, "Together's answer has neither url nor b64_json (it may have been billed)",
                200, state, billed=True,
            )
        try:
            media_type = await _verified_media_type(data, request.width, request.height)
        except _UnusableResult as exc:
            raise self._error(
                request, f"Together's {exc} (it may have been billed)", 200, state, billed=True,
            ) from exc
        return GeneratedImage(
            data=data,
            media_type=media_type,
            url=url,
            url_expires_at=time.time() + self.result_url_ttl if url is not None else None,
            unknown_outcomes=state.unknown_outcomes,
        )

    async def _download(
        self, client: httpx.AsyncClient, request: EditRequest, url: str, state: _CallState
    ) -> bytes:
        """Fetch a result at once, within one deadline (the provider's ``timeout``).

        Every failure here comes after the service answered 200, so the image was
        generated: each is a ``ProviderError`` with ``possibly_billed`` set.
        """
        if self._base_is_internal is None:
            self._base_is_internal = await _internal_base(self.base_url)
        try:
            return await _download_result(
                client, url, limit=self.max_download_bytes, timeout=self.timeout,
                internal_ok=self._base_is_internal, node=request.node,
            )
        except _DownloadTimedOut as exc:
            raise self._error(
                request,
                f"the result was generated (and billed) but its download did not finish "
                f"within {self.timeout:g} s (the provider's timeout)",
                None, state, billed=True,
            ) from exc
        except DownloadError as exc:
            if exc.retryable:
                message = f"could not be downloaded: {exc.reason}"
            elif exc.status is not None:
                message = f"its download answered {exc.status}"
            else:
                message = f"its download was refused: {exc.reason}"
            raise self._error(
                request, f"the result was generated (and billed) but {message}",
                exc.status if exc.status is not None else 200, state, billed=True,
            ) from (exc.__cause__ or exc)

    # --- errors -----------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """``text`` without the base URL's user:password and with the key masked."""
        return redact(text.replace(self.base_url, self._shown_base_url))

    def _error(
        self,
        request: EditRequest,
        message: str,
        status: int | None,
        state: _CallState | None = None,
        *,
        billed: bool = False,
    ) -> ProviderError:
        return _make_error(ProviderError, request, message, status, state, billed=billed,
                           shown=self._redact)


@functools.lru_cache(maxsize=64)
def _try_timeout(read: float, connect: float) -> httpx.Timeout:
    """httpx's timeouts of one try (made once per value: immutable, ~5 us to build)."""
    return httpx.Timeout(read, connect=connect)


class _Reply:
    """A generation's answer, its body read whole (decoded, within its cap). A success
    is parsed from the bytes as they are; an error answer becomes an httpx ``Response``
    (``response()``) for its message, as before."""

    __slots__ = ("_answer", "content", "reason_phrase", "status_code")

    def __init__(self, status_code: int, answer: Answer | httpx.Response, content: bytes,
                 reason_phrase: str) -> None:
        self.status_code = status_code
        self._answer = answer  # whose headers are read when needed (429s, errors)
        self.content = content
        self.reason_phrase = reason_phrase

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers."""
        return self._answer.headers

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object (as ``httpx.Response.json`` reads it); None when it
        is not one."""
        try:
            payload = json.loads(self.content)
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def response(self) -> httpx.Response:
        """The answer as an httpx ``Response`` (its text decoded as httpx decodes it)."""
        return httpx.Response(
            self.status_code, headers=_plain_headers(self.headers), content=self.content,
            extensions={"reason_phrase": self.reason_phrase.encode("latin-1", "replace")},
        )


def _plain_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """``headers`` of an answer whose body is handed on decoded and whole: without the
    ones that describe the body as sent."""
    return [
        (name, value)
        for name, value in headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]


def _error_fields(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Together error body (empty when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:500]} if response.text else {}
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error}
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return {"message": body[key]}
    return {}


register("together", Together, key_variable="TOGETHER_API_KEY")
