"""The shared pace of a provider: unlimited until a 429 or a user limit, then adaptive."""

from __future__ import annotations

import asyncio
import time

from editgraph.providers.ratelimit import RateGovernor


def test_no_limit_until_told() -> None:
    """A fresh governor paces nothing; a user limit is the pace from the start."""
    assert RateGovernor(None).pace() is None
    assert RateGovernor(120.0).pace() == 120.0


def test_a_429_with_retry_after_pauses_everyone() -> None:
    """A 429 with Retry-After pauses every task until it has passed."""
    governor = RateGovernor(None)
    governor.rate_limited_for(5.0, sent_at=time.monotonic())
    assert governor.paused_until >= time.monotonic() + 4.9
    assert governor.rate_limited == 1
    assert governor.pace() is None  # one lone 429 measures no rate: the pause must do


def test_a_429_after_a_burst_sets_a_pace_below_what_was_accepted() -> None:
    """After enough sends, a 429 sets a pace under the accepted rate, never above a user cap."""

    async def burst(governor: RateGovernor) -> None:
        governor.enter()
        try:
            for _ in range(20):
                await governor.wait_turn()
        finally:
            governor.leave()

    free = RateGovernor(None)
    asyncio.run(burst(free))
    free.rate_limited_for(None, sent_at=time.monotonic())
    pace = free.pace()
    assert pace is not None and pace > 0

    capped = RateGovernor(60.0)
    capped.adaptive_rpm = 6_000.0
    assert capped.pace() == 60.0


def test_the_pace_recovers_after_quiet_periods() -> None:
    """Without 429s the adaptive pace grows a few percent per recovery period."""
    governor = RateGovernor(None)
    governor.adaptive_rpm = 100.0
    governor._last_change = time.monotonic() - 3 * RateGovernor.RECOVERY_PERIOD
    pace = governor.pace()
    assert pace is not None and pace > 100.0 * RateGovernor.RECOVERY_FACTOR**2
