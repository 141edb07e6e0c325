"""The shared, adaptive pace of one provider: a pause on 429, then a gradual recovery.

aiolimiter enforces the pace; this module decides it. There is no limit until the
service answers 429 or the user sets one, and a user-set limit is never exceeded.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

__all__ = ["RateGovernor"]


class RateGovernor:
    """One provider's pace, shared by every task that calls it.

    No limit until the service answers 429 or the user sets ``rate_limit``. A 429 pauses
    every task until its Retry-After has passed, then sets a pace just under the rate the
    service was seen to accept (requests sent minus those refused with 429, over the last
    minute) and raises it by a few percent after every quiet stretch. A user's
    ``rate_limit`` caps the pace at all times.

    The pace lives here as plain numbers on ``clock`` (seconds, monotonic; waits go
    through ``sleep``): tests pass a clock they move by hand and a sleep that moves it.
    The aiolimiter that enforces the pace is created per event loop while calls are in
    flight and dropped when the last one ends, so a provider object never holds a
    limiter bound to a dead loop. Several threads or event loops may share one governor
    (one provider object): every send also claims the next free moment of one schedule
    kept under a thread lock, so together they never exceed the pace.
    """

    #: Pace after a 429, as a fraction of the accepted rate measured before it.
    BACKOFF_FRACTION = 0.95
    #: After this many seconds without a 429 the pace grows by ``RECOVERY_FACTOR``.
    RECOVERY_PERIOD = 2.0
    RECOVERY_FACTOR = 1.05
    #: Window (seconds) over which the accepted rate is measured, and its shortest span.
    MEASURE_WINDOW = 60.0
    MIN_SPAN = 0.5
    #: Requests in the window below which no rate is measured (a lone 429 sets no pace).
    MIN_SAMPLES = 8
    #: The slowest adaptive pace, requests per minute.
    MIN_RPM = 1.0

    def __init__(
        self,
        user_rpm: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.user_rpm = user_rpm
        self._clock = clock
        self._sleep = sleep
        self.adaptive_rpm: float | None = None
        self.paused_until = 0.0
        self.last_start = -math.inf
        self.rate_limited = 0
        self._sends: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._last_change = -math.inf
        self._active = 0
        self._limiter: AsyncLimiter | None = None
        self._limiter_loop: asyncio.AbstractEventLoop | None = None
        self._limiter_rpm: float | None = None
        # Guards the counters and the shared schedule against other threads' loops.
        self._lock = threading.Lock()
        self._next_slot = -math.inf

    def pace(self) -> float | None:
        """The requests-per-minute cap in force now (None: unlimited)."""
        self._recover(self._clock())
        rates = [rpm for rpm in (self.user_rpm, self.adaptive_rpm) if rpm is not None]
        return min(rates) if rates else None

    def enter(self) -> None:
        """A generate() call starts."""
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        """A generate() call ends; the last one out drops the loop-bound limiter."""
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._limiter = None
                self._limiter_loop = None
                self._limiter_rpm = None

    async def wait_turn(self) -> float:
        """Wait until this task may send one request; returns the send time."""
        while True:
            limiter = self._current_limiter()
            now = self._clock()
            if self.paused_until > now:
                await self._sleep(self.paused_until - now)
                continue
            if limiter is not None:
                await limiter.acquire()
                if self.paused_until > self._clock() or self._limiter is not limiter:
                    continue  # a 429 or a new pace arrived while waiting: queue again
                # The limiter paces this loop only; the shared schedule paces every
                # thread's and loop's sends together.
                slot = await self._take_slot()
                if slot is None:
                    continue  # a 429 arrived while waiting for the slot: its pause first
                now = slot
            else:
                now = self._clock()
            with self._lock:
                self.last_start = now
                self._sends.append(now)
                self._forget_before(now - self.MEASURE_WINDOW)
            return now

    async def _take_slot(self) -> float | None:
        """Wait until ``60 / pace`` seconds have passed since the last send of any thread,
        and claim that moment (returned); None when a 429 pause began meanwhile."""
        while True:
            rpm = self.pace()
            with self._lock:
                now = self._clock()
                if self.paused_until > now:
                    return None
                if rpm is None or now >= self._next_slot:
                    if rpm is not None:
                        self._next_slot = now + 60.0 / rpm
                    return now
                wait = self._next_slot - now
            await self._sleep(wait)

    def rate_limited_for(self, delay: float | None, sent_at: float) -> None:
        """The request sent at ``sent_at`` got a 429: pause everyone ``delay`` s, slow down.

        Without a Retry-After (``delay`` None) there is nothing to wait out together; each
        task's own backoff applies and only the pace changes.
        """
        with self._lock:
            self._rate_limited_for(delay, sent_at)

    def _rate_limited_for(self, delay: float | None, sent_at: float) -> None:
        now = self._clock()
        self.rate_limited += 1
        self._refusals.append(sent_at)
        if delay is not None:
            self.paused_until = max(self.paused_until, now + delay)
        if sent_at < self._last_change:
            return  # sent before the last slow-down: that one already accounts for it
        self._forget_before(now - self.MEASURE_WINDOW)
        if len(self._sends) < self.MIN_SAMPLES:
            return  # too few requests to measure a rate: the pause alone must do
        span = max(now - self._sends[0], self.MIN_SPAN)
        accepted_rpm = (len(self._sends) - len(self._refusals)) / span * 60.0
        if delay is not None:
            # "Retry after d" says one more request will do after d: early on, before the
            # window holds a meaningful rate, that is the better measure.
            accepted_rpm = max(accepted_rpm, 60.0 / delay)
        target = accepted_rpm * self.BACKOFF_FRACTION
        if self.adaptive_rpm is not None and target >= self.adaptive_rpm:
            # Already pacing below what was measured and still refused: the measure is
            # inflated (by an early burst, say), so step down from the pace instead.
            target = self.adaptive_rpm * self.BACKOFF_FRACTION
        self.adaptive_rpm = max(self.MIN_RPM, target)
        self._last_change = now

    def _forget_before(self, horizon: float) -> None:
        for events in (self._sends, self._refusals):
            while events and events[0] < horizon:
                events.popleft()

    def _recover(self, now: float) -> None:
        if self.adaptive_rpm is None:
            return
        since = max(self._last_change, self.paused_until)
        periods = int((now - since) // self.RECOVERY_PERIOD)
        if periods > 0:
            self.adaptive_rpm *= self.RECOVERY_FACTOR**periods
            self._last_change = since + periods * self.RECOVERY_PERIOD

    def _current_limiter(self) -> AsyncLimiter | None:
        rpm = self.pace()
        if rpm is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._limiter_for(loop, rpm)

    def _limiter_for(self, loop: asyncio.AbstractEventLoop, rpm: float) -> AsyncLimiter:
        if self._limiter is None or self._limiter_loop is not loop or self._limiter_rpm != rpm:
            if self._limiter is None:
                # A fresh limiter lets its first request through at once; keep the gap
                # since the last request of an earlier call, run or loop.
                self.paused_until = max(self.paused_until, self.last_start + 60.0 / rpm)
            # Capacity 1: requests are spaced evenly, so no rolling minute exceeds the pace.
            self._limiter = AsyncLimiter(1, 60.0 / rpm)
            self._limiter_loop = loop
            self._limiter_rpm = rpm
        return self._limiter
