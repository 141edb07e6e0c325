"""BFL: FLUX.2 on Black Forest Labs' own API — submit, poll the regional URL, download.

One ``generate()`` is a submission (``POST {base}/v1/<model>``, header ``x-key``), polls
of the ``polling_url`` the service returned (used verbatim: it names a regional host),
and the download of the result URL, which lives ten minutes, at once.

Retry policy (stamina), per step:

- submit: a try that never left (connect error, pool timeout, write error) and a 429
  (BFL's cap of 24 active tasks per account) wait and go again without counting as a
  failure, bounded by ``timeout``; 408/409 count against ``max_retries``. An unknown
  outcome — a 5xx, a read timeout or a connection dropped after the body was sent — may
  have created a paid task (BFL takes no idempotency key): it is retried at most
  ``unknown_outcome_retries`` times, each counted in ``GeneratedImage.unknown_outcomes``.
  Anything else (401, 402, 403, 404, 422) fails at once with a message saying what to do.
- polls and the download are idempotent GETs: retried freely until ``timeout``.

A submission is handed to the run's submission journal (when the engine gives one)
before the first poll, so a run that dies while polling can pick the paid task up again
instead of paying for it twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from ..downloads import DEFAULT_MAX_DOWNLOAD_BYTES, DownloadError
from ..errors import ConfigurationError, GraphError, ModerationError, ProviderError
from ..models import CATALOGUE, ModelSpec, resolve_model
from ..pixels import declared_size
from ..redact import check_api_key, redact, register_secret
from ..requests import EditRequest, GeneratedImage, Submission, pixel_size
from ._checks import check_count, check_rate_limit, check_seconds
from ._http import (
    CallState,
    Clients,
    DownloadTimedOut,
    NotSent,
    RetryableFailure,
    RetryableStatus,
    UnknownOutcome,
    billable_retry_policy,
    classified,
    download_result,
    internal_base,
    json_object,
    make_error,
    retry_after,
    retrying,
    with_retries,
    without_userinfo,
)
from ._results import UnusableResult, verified_media_type
from .base import base_url_problem, current_journal, report_progress
from .ratelimit import RateGovernor
from .registry import register

__all__ = ["BFL"]

logger = logging.getLogger("editgraph")

DEFAULT_BASE_URL = "https://api.bfl.ai"

#: An upstream result URL is sent as a URL only while it has this many seconds left.
_URL_SAFETY_MARGIN = 30.0
#: The shortest wait for a submission's answer (seconds), whatever ``timeout`` says: a
#: submit that times out is an unknown outcome, possibly billed, so never rush it.
_MIN_SUBMIT_TIMEOUT = 30.0
#: Result URLs answering these have expired: the task is billed, not delivered.
_GONE = frozenset({403, 404, 410})
#: Statuses that mean "not finished yet" (one integrator reports the last two).
_WAITING = frozenset({"Pending", "Queued", "Reasoning", "Generating"})
_REQUEST_MODERATED = "Request Moderated"
_CONTENT_MODERATED = "Content Moderated"


def _key_from(value: str | SecretStr | None, source: str) -> SecretStr:
    """The API key, stripped and checked (printable ASCII only) and registered with the
    redactor, so no message, log line or report can show it."""
    if value is None:
        raise ConfigurationError(
            "BFL needs an API key: set BFL_API_KEY or pass api_key=...; "
            "or use eg.providers.Preview() to run offline"
        )
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    key = check_api_key(text, source)
    register_secret(key)
    return SecretStr(key)


def _varied_seed(seed: int, attempt: int) -> int:
    """A new seed for the ``attempt``-th retry after an output-side moderation block:
    derived from the first, so a rerun tries the same seeds."""
    digest = hashlib.sha256(f"{seed}:moderation:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class _ContentModerated(Exception):
    """The service withheld the generated image (``Content Moderated``)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


class _TaskGone(Exception):
    """The paid task or its result can no longer be had (Task not found, an expired URL)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _ReferencesRejected(Exception):
    """The service could not read a reference sent as a URL (a 422 on an input field)."""


class BFL:
    """FLUX.2 on Black Forest Labs' API: pro, max, flex and klein (4B, 9B).

    ``api_key`` and ``base_url`` fall back to ``BFL_API_KEY`` and ``BFL_BASE_URL``
    (default ``https://api.bfl.ai``). The key travels in the ``x-key`` header only, is
    held as a ``SecretStr`` and appears in no repr, message or log line.

    References go out as ``input_image``, ``input_image_2``, ... in "image N" order: an
    upstream result while its URL is fresh, a URL the user gave as is, anything else as
    raw base64 (no image host needed). ``prompt_upsampling`` is sent to flex only (the
    only model that takes it), ``false`` unless the edit asks: the upsampler rewrites
    "image N" wording and makes runs non-reproducible.

    Parameters:
        safety_tolerance: 0 (strict) to 5, sent with every request.
        poll_interval: seconds between polls of a pending task.
        timeout: seconds one edit may take from submission to download; also the read
            timeout of one submit, at least 30 s (a read timeout is an unknown outcome).
        max_retries: retries of a submit answered 408/409.
        unknown_outcome_retries: retries of a submit whose outcome is unknown; each may
            be billed, and each is counted in ``unknown_outcomes``.
        rate_limit: submissions per minute never to exceed (default: none until a 429).
        max_active: tasks this provider keeps submitted and unfinished at once (BFL's
            account cap is 24); the next edit waits for one to finish.
        result_ttl: seconds a result URL (and a journaled task) is trusted to live.
        moderation_retries: new seeds to try when the *output* is moderated (each retry
            is logged and may be billed); a moderated *request* is never retried.

    Raises ``ConfigurationError`` for a missing or malformed key or base URL, and for an
    invalid setting (named in its one-line message), as ``Together`` does.
    """

    name = "bfl"

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        *,
        safety_tolerance: int = 2,
        poll_interval: float = 1.0,
        timeout: float = 600.0,
        max_retries: int = 5,
        unknown_outcome_retries: int = 1,
        rate_limit: float | None = None,
        max_active: int = 24,
        result_ttl: float = 600.0,
        moderation_retries: int = 0,
    ) -> None:
        source = "api_key="
        if api_key is None:
            api_key, source = os.environ.get("BFL_API_KEY") or None, "BFL_API_KEY"
        self._api_key = _key_from(api_key, source)
        setting = "base_url="
        if base_url is None:
            setting = "BFL_BASE_URL"
            base_url = os.environ.get("BFL_BASE_URL") or DEFAULT_BASE_URL
        base_url = base_url.strip().rstrip("/")
        base_url = base_url.removesuffix("/v1")
        problem = base_url_problem(base_url)
        if problem is not None:
            raise ConfigurationError(
                f"BFL: the base URL ({setting}) {without_userinfo(base_url)!r} cannot be used: "
                f"{problem}; e.g. {DEFAULT_BASE_URL}"
            )
        self.base_url = base_url
        self._shown_base_url = without_userinfo(base_url)
        for setting, value, low in (("safety_tolerance", safety_tolerance, 0),
                                    ("max_retries", max_retries, 0),
                                    ("unknown_outcome_retries", unknown_outcome_retries, 0),
                                    ("moderation_retries", moderation_retries, 0),
                                    ("max_active", max_active, 1)):
            check_count("BFL", setting, value, low)
        if safety_tolerance > 6:
            raise ConfigurationError(
                f"BFL: safety_tolerance must be 0 to 6, got {safety_tolerance!r}"
            )
        check_seconds("BFL", "timeout", timeout, positive=True)
        check_seconds("BFL", "poll_interval", poll_interval, positive=False)
        check_seconds("BFL", "result_ttl", result_ttl, positive=False)
        check_rate_limit("BFL", rate_limit)
        self.safety_tolerance = safety_tolerance
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.unknown_outcome_retries = unknown_outcome_retries
        self.rate_limit = rate_limit
        self.max_active = max_active
        self.result_ttl = float(result_ttl)
        self.moderation_retries = moderation_retries
        self._governor = RateGovernor(rate_limit)
        # Tasks submitted and not finished, per event loop (a semaphore binds to one).
        self._active: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._active_users: dict[asyncio.AbstractEventLoop, int] = {}
        self._clients = Clients(f"bfl_session_{id(self)}", self.timeout, follow_redirects=False)
        self._base_is_internal: bool | None = None  # found on the first download

    def __repr__(self) -> str:
        return (
            f"BFL(base_url={self._shown_base_url!r}, safety_tolerance={self.safety_tolerance}, "
            f"poll_interval={self.poll_interval}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, "
            f"unknown_outcome_retries={self.unknown_outcome_retries}, "
            f"rate_limit={self.rate_limit!r}, max_active={self.max_active}, "
            f"result_ttl={self.result_ttl}, moderation_retries={self.moderation_retries})"
        )

    # --- what BFL serves --------------------------------------------------------------

    def check_edit(self, node: str, model: ModelSpec, parameters: Mapping[str, Any]) -> None:
        """Refuse what BFL's API does not serve (FLUX.2 [dev]) and parameters it lacks."""
        if model.bfl_endpoint is None:
            hosted = ", ".join(spec.aliases[0] for spec in CATALOGUE if spec.bfl_endpoint)
            raise GraphError(
                f"node {node!r}: model: BFL hosts no endpoint for {model.label} (open weights "
                f"only); use one of {hosted}, or --provider together"
            )
        if parameters.get("prompt_upsampling") and "steps" not in model.params:
            raise GraphError(
                f"node {node!r}: prompt_upsampling: BFL offers it for FLUX.2 [flex] only, "
                f"not {model.label}; drop it or use model='flux.2-flex'"
            )

    @property
    def rate_limited(self) -> int:
        """How many 429 answers this provider object has seen (all runs)."""
        return self._governor.rate_limited

    # --- one edit ---------------------------------------------------------------------

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Submit, poll and download the image ``request`` describes.

        When the run keeps a submission journal and it holds this edit's task, that task
        is polled instead of submitting again. Raises ``ModerationError`` when BFL's
        moderation blocks the request or (after ``moderation_retries`` new seeds) the
        result, ``ProviderError`` for any other failure.
        """
        spec = resolve_model(request.model, node=request.node)
        self.check_edit(request.node, spec, request.model_dump(include={"prompt_upsampling"}))
        assert spec.bfl_endpoint is not None  # check_edit refused the others
        state = CallState()
        journal = current_journal()
        cost = 0.0
        seed = request.seed
        previous = journal.find() if journal is not None else None
        if journal is not None and previous is not None and (
            time.time() - previous.submitted_at >= self.result_ttl
        ):
            journal.abandon(previous, f"journaled {time.time() - previous.submitted_at:.0f} s "
                                      f"ago, past result_ttl ({self.result_ttl:g} s)")
            previous = None
        if journal is not None and previous is None and not journal.may_submit:
            raise self._error(request, "no journaled BFL task to collect, and resume starts "
                                       "none", None)
        async with self._clients.client() as client, self._active_slot():
            moderated = 0
            while True:
                resumed = previous is not None
                if previous is not None:
                    logger.info("node %r: polling journaled BFL task %s instead of submitting",
                                request.node, previous.task_id)
                    submission, previous = previous, None
                else:
                    submission = await self._submit(client, request, spec, seed, state)
                    if journal is not None:
                        await journal.record(submission)
                # A task whose answer gave no usable cost is counted at its estimate: 0
                # would let a budget spend past its limit.
                cost += submission.cost if submission.cost is not None else (
                    submission.estimated_cost)
                try:
                    return await self._collect(client, request, submission, state, cost)
                except _TaskGone as gone:
                    if journal is not None:
                        journal.abandon(submission, gone.reason)
                    if resumed and (journal is None or journal.may_submit):
                        continue  # the run may spend: submit again
                    raise self._error(
                        request, f"BFL task {submission.task_id}: {gone.reason}: billed, not "
                                 "delivered", gone.status, state, billed=True,
                    ) from None
                except ModerationError:
                    if journal is not None:
                        journal.discard()
                    raise
                except _ContentModerated as blocked:
                    if journal is not None:
                        journal.discard()
                    if moderated >= self.moderation_retries or (
                        journal is not None and not journal.may_submit
                    ):
                        raise self._moderation_error(
                            request, state,
                            f"BFL's moderation withheld the generated image (Content "
                            f"Moderated: {blocked.details})"
                            + (f" after {moderated + 1} seeds" if moderated else "")
                            + "; change the prompt or references, or allow new seeds with "
                            "moderation_retries=N",
                        ) from None
                    moderated += 1
                    seed = _varied_seed(request.seed, moderated)
                    logger.warning(
                        "node %r: BFL moderated the output (seed %d); retrying with seed %d "
                        "(%d of %d, billed again)", request.node, submission.seed, seed,
                        moderated, self.moderation_retries,
                    )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Share one HTTP client among the calls of one run (entered by the engine)."""
        async with self._clients.session():
            yield

    @contextlib.asynccontextmanager
    async def _active_slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_active`` task slots from submission to download."""
        loop = asyncio.get_running_loop()
        semaphore = self._active.get(loop)
        if semaphore is None:
            semaphore = self._active[loop] = asyncio.Semaphore(self.max_active)
        self._active_users[loop] = self._active_users.get(loop, 0) + 1
        try:
            async with semaphore:
                yield
        finally:
            self._active_users[loop] -= 1
            if not self._active_users[loop]:
                # The last call on this loop drops the loop-bound semaphore.
                del self._active_users[loop], self._active[loop]

    # --- submitting -------------------------------------------------------------------

    def _body(self, request: EditRequest, spec: ModelSpec, seed: int,
              references: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": seed,
            "width": request.width,
            "height": request.height,
            "output_format": request.output_format,
            "safety_tolerance": self.safety_tolerance,
        }
        for position, value in enumerate(references, start=1):
            fields["input_image" if position == 1 else f"input_image_{position}"] = value
        if "steps" in spec.params:  # flex: the only BFL model with these knobs
            if request.steps is not None:
                fields["steps"] = request.steps
            if request.guidance is not None:
                fields["guidance"] = request.guidance
            # Always sent, false by default: see the class docstring.
            fields["prompt_upsampling"] = request.prompt_upsampling
        return fields

    def _wire_references(self, request: EditRequest, *, as_bytes: bool) -> tuple[list[str], bool]:
        """Each reference as a URL or raw base64, and whether any upstream URL was used."""
        now = time.time()
        wired: list[str] = []
        sent_url = False
        for reference in request.references:
            url, expires_at = reference.url, reference.url_expires_at
            fresh = url is not None and (
                expires_at is None or expires_at - _URL_SAFETY_MARGIN > now
            )
            if url is not None and fresh and not (as_bytes and reference.data is not None):
                wired.append(url)
                sent_url = True
                continue
            if reference.data is None:
                raise self._error(
                    request,
                    f"reference {reference.source!r}: its URL has expired and its bytes are "
                    "not at hand; run the edit that makes it again",
                    None,
                )
            # Raw base64, as BFL's SDK sends it (no data: prefix).
            wired.append(base64.b64encode(reference.data).decode("ascii"))
        return wired, sent_url

    async def _submit(
        self, client: httpx.AsyncClient, request: EditRequest, spec: ModelSpec, seed: int,
        state: CallState,
    ) -> Submission:
        references, sent_url = self._wire_references(request, as_bytes=False)
        try:
            return await self._submit_with_retries(client, request, spec, seed, references, state)
        except _ReferencesRejected as rejected:
            if not sent_url:
                raise self._error(request, f"BFL could not use a reference: {rejected}", 422,
                                  state) from rejected
            # A URL went stale before BFL fetched it: send those references as bytes, once.
            references, _ = self._wire_references(request, as_bytes=True)
            try:
                return await self._submit_with_retries(client, request, spec, seed, references,
                                                       state)
            except _ReferencesRejected as again:
                raise self._error(request, f"BFL could not use a reference: {again}", 422,
                                  state) from again

    async def _submit_with_retries(
        self, client: httpx.AsyncClient, request: EditRequest, spec: ModelSpec, seed: int,
        references: list[str], state: CallState,
    ) -> Submission:
        content = json.dumps(self._body(request, spec, seed, references), ensure_ascii=False,
                             separators=(",", ":"), allow_nan=False).encode()

        # The active-task cap (429) or a connection that never opened is "wait", not
        # "broken": it spends no retry; only time bounds it.
        should_retry = billable_retry_policy(
            state, request.node, max_retries=self.max_retries,
            unknown_outcome_retries=self.unknown_outcome_retries, patience=self.timeout,
            waits=lambda exc: exc.status == 429 or isinstance(exc, NotSent), shown=self._redact,
        )

        try:
            return await with_retries(
                lambda: self._submit_once(client, request, spec, seed, content, state),
                should_retry, attempts=None,
            )
        except UnknownOutcome as exc:
            raise self._error(
                request,
                f"BFL gave no answer to the submission ({exc.description}) after {state.tries} "
                f"tries; a task may have been created and billed ({state.unknown_outcomes} "
                "unknown outcome(s)) - check your BFL dashboard before running it again",
                exc.status, state,
            ) from exc.__cause__
        except RetryableFailure as exc:
            raise self._error(request, f"{exc.description}; gave up after {state.tries} tries",
                              exc.status, state) from (exc.__cause__ or exc)

    async def _submit_once(
        self, client: httpx.AsyncClient, request: EditRequest, spec: ModelSpec, seed: int,
        content: bytes, state: CallState,
    ) -> Submission:
        sent_at = await self._governor.wait_turn()
        state.tries += 1
        url = f"{self.base_url}/v1/{spec.bfl_endpoint}"
        # A try re-sent after an unknown outcome waits twice as long (as Together's does).
        read_timeout = max(self.timeout, _MIN_SUBMIT_TIMEOUT) * 2**state.unknown_outcomes
        try:
            with classified(state, self._shown_base_url, read_timeout):
                response = await client.post(
                    url, content=content,
                    headers=self._headers({"Content-Type": "application/json"}),
                    timeout=httpx.Timeout(read_timeout, connect=min(10.0, read_timeout)),
                )
        except httpx.HTTPError as exc:
            raise self._error(request, f"submission to {self._shown_base_url} failed: "
                                       f"{type(exc).__name__}", None, state) from exc
        status = response.status_code
        if status == 429:
            self._governor.rate_limited_for(retry_after(response.headers), sent_at)
            raise RetryableStatus(
                f"BFL answered 429 ({_detail(response)})", status=429,
                delay=retry_after(response.headers),
            )
        if status >= 500:
            # BFL takes no idempotency key: a 5xx may come after the task was created.
            state.unknown_outcomes += 1
            raise UnknownOutcome(f"BFL answered {status} ({_detail(response)})", status=status,
                                 delay=retry_after(response.headers))
        if status in (408, 409):
            raise RetryableStatus(f"BFL answered {status} ({_detail(response)})", status=status,
                                  delay=retry_after(response.headers))
        if status != 200:
            self._refuse(request, response, state)
        payload = self._json(request, response, state)
        task_id, polling_url = payload.get("id"), payload.get("polling_url")
        if not isinstance(task_id, str) or not isinstance(polling_url, str):
            raise self._error(request, "BFL's answer to the submission has no id and "
                                       "polling_url (a webhook answer?)", status, state,
                              billed=True)
        cost = payload.get("cost")
        return Submission(
            node=request.node, model=request.model, task_id=task_id, polling_url=polling_url,
            seed=seed, estimated_cost=spec.estimate_cost(
                request.width, request.height, provider=self.name,
                inputs=[size for size in map(_input_size, (r.data for r in request.references))
                        if size is not None],
            ),
            cost=_credits_in_usd(cost, request.node),
            submitted_at=time.time(),
        )

    def _refuse(self, request: EditRequest, response: httpx.Response, state: CallState) -> None:
        """Raise the final error of a 4xx answer, with what to do about it."""
        status = response.status_code
        detail = _detail(response)
        if status == 422:
            fields = _invalid_fields(response)
            if any(field.startswith("input_image") for field in fields) and any(
                word in detail.lower() for word in ("download", "fetch", "url")
            ):
                raise _ReferencesRejected(detail)
            where = f" (field {fields[0]!r})" if fields else ""
            message = f"BFL refused the request{where} (422: {detail}); fix it and run again"
        elif status in (401, 403):
            message = (f"BFL rejected the API key ({status}: {detail}); check BFL_API_KEY or "
                       "the api_key you passed")
        elif status == 402:
            message = (f"BFL refused for billing (402: {detail}); add credits at "
                       "https://dashboard.bfl.ai")
        elif status == 404:
            message = (f"BFL has no endpoint for {request.model!r} (404: {detail}); check "
                       f"BFL_BASE_URL, now {self._shown_base_url}")
        else:
            message = f"BFL answered {status}: {detail}"
        raise self._error(request, message, status, state)

    # --- polling and downloading ------------------------------------------------------

    async def _collect(
        self, client: httpx.AsyncClient, request: EditRequest, submission: Submission,
        state: CallState, cost: float,
    ) -> GeneratedImage:
        """Poll the task until it ends; download a ready result at once."""
        self._check_polling_url(request, submission, state)
        deadline = time.monotonic() + self.timeout
        last_status = "Pending"  # what a task is right after its submission
        while True:
            answer = await self._poll(client, request, submission, state, deadline, last_status)
            status = answer.get("status")
            if isinstance(status, str):
                last_status = status
            if status == "Ready":
                result = answer.get("result")
                sample = result.get("sample") if isinstance(result, dict) else None
                if not isinstance(sample, str):
                    raise self._error(request, "BFL said Ready but gave no result.sample", 200,
                                      state, billed=True)
                report_progress(request.node, 1.0)
                data = await self._download(client, request, sample, state)
                try:
                    media_type = await verified_media_type(data, request.width, request.height)
                except UnusableResult as exc:
                    raise self._error(request, f"BFL's {exc}", 200, state,
                                      billed=True) from exc
                return GeneratedImage(
                    data=data, media_type=media_type, url=sample,
                    url_expires_at=time.time() + self.result_ttl,
                    unknown_outcomes=state.unknown_outcomes, cost=round(cost, 6),
                    seed=submission.seed if submission.seed != request.seed else None,
                )
            if status in _WAITING:
                progress = answer.get("progress")
                if isinstance(progress, (int, float)):
                    report_progress(request.node, float(progress))
                if time.monotonic() >= deadline:
                    raise self._error(
                        request,
                        f"BFL task {submission.task_id} still {status} after {self.timeout:g} s; "
                        "it is paid for and journaled: run again (or `editgraph resume`) to "
                        "collect it",
                        None, state, billed=True,
                    )
                await asyncio.sleep(self.poll_interval)
                continue
            details = _short(answer.get("details"))
            if status == _CONTENT_MODERATED:
                raise _ContentModerated(details or "no details")
            if status == _REQUEST_MODERATED:
                raise self._moderation_error(
                    request, state,
                    f"BFL's moderation refused the request (Request Moderated: "
                    f"{details or 'no details'}); the prompt or an input image was flagged - "
                    "change them (not retried)",
                )
            if status == "Task not found":
                raise _TaskGone("BFL no longer knows the task (Task not found)")
            # The task ended (an "Error" or a status this client does not know): nothing
            # is left to collect, so its journal entry goes, or every later run would
            # poll the dead task again instead of submitting anew.
            journal = current_journal()
            if journal is not None:
                journal.discard()
            raise self._error(
                request, f"BFL task {submission.task_id} ended with status {status!r}"
                         + (f": {details}" if details else ""),
                None, state, billed=True,
            )

    def _check_polling_url(
        self, request: EditRequest, submission: Submission, state: CallState
    ) -> None:
        """The key goes only to a polling URL on the service's own domain."""
        if not _same_service(submission.polling_url, self.base_url):
            raise self._error(
                request,
                f"BFL returned a polling URL on another host ({_host(submission.polling_url)}); "
                "not sending the API key there",
                200, state, billed=True,
            )

    async def _poll(
        self, client: httpx.AsyncClient, request: EditRequest, submission: Submission,
        state: CallState, deadline: float, last_status: str,
    ) -> dict[str, Any]:
        def should_retry(exc: Exception) -> bool | float:
            if not isinstance(exc, RetryableFailure) or time.monotonic() >= deadline:
                return False
            return exc.delay if exc.delay is not None else True

        try:
            async for attempt in retrying(should_retry, attempts=None):
                with attempt:
                    try:
                        # Verbatim: the URL names the regional host that holds the task.
                        response = await client.get(submission.polling_url,
                                                    headers=self._headers())
                    except httpx.TransportError as exc:
                        raise RetryableFailure(f"poll failed ({type(exc).__name__})") from exc
                    if response.status_code == 429 or response.status_code >= 500:
                        raise RetryableFailure(
                            f"poll answered {response.status_code}",
                            status=response.status_code, delay=retry_after(response.headers),
                        )
                    if response.status_code == 404:
                        return {"status": "Task not found", "details": _detail(response)}
                    if response.status_code != 200:
                        raise self._error(
                            request, f"polling BFL task {submission.task_id} answered "
                                     f"{response.status_code}: {_detail(response)}",
                            response.status_code, state, billed=True,
                        )
                    return self._json(request, response, state)
        except RetryableFailure as exc:
            # Past the deadline, the task is simply not done in time (a poll that failed
            # on the way is a detail); before it, polling itself kept failing.
            what = (f"still {last_status} after {self.timeout:g} s (its last poll: "
                    f"{exc.description})" if time.monotonic() >= deadline
                    else f"could not be polled ({exc.description})")
            raise self._error(
                request,
                f"BFL task {submission.task_id} {what}; it is paid for and journaled: run "
                "again (or `editgraph resume`) to collect it",
                exc.status, state, billed=True,
            ) from (exc.__cause__ or exc)
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    async def _download(
        self, client: httpx.AsyncClient, request: EditRequest, url: str, state: CallState
    ) -> bytes:
        """Fetch a result at once (its URL lives ten minutes), no key sent, as Together's:
        within one deadline of ``timeout`` seconds (redirects and retries included), at
        most 5 checked redirects over http(s), ``DEFAULT_MAX_DOWNLOAD_BYTES`` at most, no
        loopback, private or link-local target unless the service is on one."""
        if self._base_is_internal is None:
            self._base_is_internal = await internal_base(self.base_url)
        try:
            return await download_result(
                client, url, limit=DEFAULT_MAX_DOWNLOAD_BYTES, timeout=self.timeout,
                internal_ok=self._base_is_internal, node=request.node,
            )
        except DownloadTimedOut as exc:
            raise self._error(
                request, f"the result was generated (and billed) but its download did not "
                         f"finish within {self.timeout:g} s (the provider's timeout)",
                None, state, billed=True,
            ) from exc
        except DownloadError as exc:
            if exc.status in _GONE and not exc.retryable:
                raise _TaskGone(f"its result URL answered {exc.status} (expired)",
                                exc.status) from None
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

    # --- plumbing ---------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"x-key": self._api_key.get_secret_value(), "Accept": "application/json"}
        headers.update(extra or {})
        return headers

    def _json(self, request: EditRequest, response: httpx.Response,
              state: CallState) -> dict[str, Any]:
        payload = json_object(response)
        if payload is None:
            raise self._error(request, "BFL answered with a body that is not a JSON object "
                              "(not JSON, or unexpected)", response.status_code, state,
                              billed=True)
        return payload

    def _redact(self, text: str) -> str:
        return redact(text.replace(self.base_url, self._shown_base_url))

    def _error(
        self, request: EditRequest, message: str, status: int | None,
        state: CallState | None = None, *, billed: bool = False,
    ) -> ProviderError:
        return self._make_error(ProviderError, request, message, status, state, billed)

    def _moderation_error(self, request: EditRequest, state: CallState,
                          message: str) -> ModerationError:
        error = self._make_error(ModerationError, request, message, 200, state, True)
        assert isinstance(error, ModerationError)
        return error

    def _make_error(
        self, kind: type[ProviderError], request: EditRequest, message: str,
        status: int | None, state: CallState | None, billed: bool,
    ) -> ProviderError:
        return make_error(kind, request, message, status, state, billed=billed,
                          shown=self._redact)


def _credits_in_usd(cost: object, node: str) -> float | None:
    """The ``cost`` a submit answer gave (credits) in USD; None (the estimate stands)
    when it is not a finite number >= 0: JSON's NaN, Infinity or a negative cost would
    make the run's spend, its budget and the manifest meaningless."""
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not (
        0 <= cost < math.inf
    ):
        logger.warning("node %r: BFL answered cost %s, not a number of credits; using the "
                       "estimate", node, _short(cost))
        return None
    return float(cost) / 100


def _detail(response: httpx.Response) -> str:
    """The message of a BFL error body: ``detail`` (a string or FastAPI's list), else text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body.get("error")))
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(str(part) for part in item.get('loc', [])[1:])}: {item.get('msg')}"
                if isinstance(item, dict) else str(item)
                for item in detail
            )[:500]
        if detail is not None:
            return str(detail)[:500]
    return str(body)[:300]


def _invalid_fields(response: httpx.Response) -> list[str]:
    """The body fields a FastAPI-style 422 names."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return []
    if not isinstance(detail, list):
        return []
    fields = []
    for item in detail:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(loc, list) and loc:
            fields.append(str(loc[-1]))
    return fields


def _input_size(data: bytes | None) -> tuple[int, int] | None:
    """A reference's pixel size from its header; Pillow only for an unusual one."""
    if data is None:
        return None
    return declared_size(data) or pixel_size(data)


def _short(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:300]


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or "?"


def _same_service(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the base URL's host or a sibling of it (api.eu2.bfl.ai for
    api.bfl.ai), over the same or a safer scheme."""
    target, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base_url)
    if target.scheme not in ("https", base.scheme):
        return False
    target_host, base_host = target.hostname or "", base.hostname or ""
    if target_host == base_host:
        return True
    domain = base_host.split(".", 1)[1] if base_host.count(".") >= 2 else base_host
    try:
        ipaddress.ip_address(base_host)
        return False  # an address has no siblings
    except ValueError:
        return target_host.endswith("." + domain)


register("bfl", BFL, key_variable="BFL_API_KEY")
