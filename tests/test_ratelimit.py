"""The shared pace of a provider: unlimited until a 429 or a user limit, then adaptive.

Every test runs on a clock it moves by hand: a wait advances it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from editgraph.providers.ratelimit import RateGovernor


class ManualClock:
    """Monotonic seconds that move only when told to, or when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Sleep by moving the clock (and let other tasks run)."""
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def governor(user_rpm: float | None, clock: ManualClock) -> RateGovernor:
    """A governor on ``clock``."""
    return RateGovernor(user_rpm, clock=clock, sleep=clock.sleep)


async def burst(paced: RateGovernor, count: int) -> None:
    """``count`` sends, one after another, as one generate() call's tries would."""
    paced.enter()
    try:
        for _ in range(count):
            await paced.wait_turn()
    finally:
        paced.leave()


def test_no_limit_until_told() -> None:
    """A fresh governor paces nothing; a user limit is the pace from the start."""
    clock = ManualClock()
    assert governor(None, clock).pace() is None
    assert governor(120.0, clock).pace() == 120.0


def test_a_429_with_retry_after_pauses_everyone() -> None:
    """A 429 with Retry-After pauses the next send until exactly that much has passed."""
    clock = ManualClock()
    paced = governor(None, clock)
    paced.rate_limited_for(5.0, sent_at=clock())
    assert paced.paused_until == clock() + 5.0
    assert paced.rate_limited == 1
    assert paced.pace() is None  # one lone 429 measures no rate: the pause must do
    started = clock()
    asyncio.run(burst(paced, 1))
    assert clock.slept == [5.0] and clock() == started + 5.0


def test_a_429_after_a_burst_sets_a_pace_below_what_was_accepted() -> None:
    """After 20 sends in 10 s a 429 sets a pace under the 120/min accepted, never above a
    user cap."""

    async def spaced(paced: RateGovernor, clock: ManualClock) -> None:
        paced.enter()
        try:
            for _ in range(20):
                await paced.wait_turn()
                clock.now += 0.5
        finally:
            paced.leave()

    clock = ManualClock()
    free = governor(None, clock)
    asyncio.run(spaced(free, clock))
    free.rate_limited_for(None, sent_at=clock())
    pace = free.pace()
    assert pace is not None and 100.0 < pace < 120.0

    capped = governor(60.0, clock)
    capped.adaptive_rpm = 6_000.0
    assert capped.pace() == 60.0


def test_the_pace_recovers_after_quiet_periods() -> None:
    """Without 429s the adaptive pace grows by RECOVERY_FACTOR per quiet recovery period."""
    clock = ManualClock()
    paced = governor(None, clock)
    asyncio.run(burst(paced, 20))
    clock.now += 1.0
    paced.rate_limited_for(None, sent_at=clock())
    slowed = paced.pace()
    assert slowed is not None
    clock.now += 3 * RateGovernor.RECOVERY_PERIOD
    recovered = paced.pace()
    assert recovered is not None
    assert recovered == pytest.approx(slowed * RateGovernor.RECOVERY_FACTOR**3)


def test_one_governor_shared_by_threads_and_loops_keeps_the_user_limit() -> None:
    """Three threads, each with its own event loop, together never exceed the user's limit.

    On the real monotonic clock (a hand-moved one is not shared safely by threads): the
    test takes about 0.7 s.
    """
    rpm = 1200.0  # one request per 50 ms
    paced = RateGovernor(rpm)
    sends: list[float] = []
    start = threading.Barrier(3)

    def worker() -> None:
        start.wait(timeout=10)

        async def five() -> list[float]:
            paced.enter()
            try:
                return [await paced.wait_turn() for _ in range(5)]
            finally:
                paced.leave()

        sends.extend(asyncio.run(five()))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(sends) == 15
    sends.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(sends)]
    # Spaced at least 60 / rpm apart: no rolling minute (or any shorter window) holds more.
    assert min(gaps) >= 60.0 / rpm, [round(gap * 1000, 1) for gap in gaps]
