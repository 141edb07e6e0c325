"""providers._http.with_retries: a bare first try, then stamina's loop, one verdict per
failure, the attempts cap kept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import stamina

from editgraph.providers._http import with_retries


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries, and the attempt caps stay in force."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


class Flaky:
    """Fails ``failures`` times with ValueError, then answers "done"."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.verdicts: list[str] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(f"failure {self.calls}")
        return "done"

    def on(self, exc: Exception) -> bool | float:
        self.verdicts.append(str(exc))
        return isinstance(exc, ValueError)


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_each_failure_is_judged_once_and_the_call_goes_on_until_it_succeeds(failures: int) -> None:
    """The bare first try and stamina's later ones each consult ``on`` once per failure."""
    flaky = Flaky(failures)
    assert asyncio.run(with_retries(flaky, flaky.on, attempts=None)) == "done"
    assert flaky.calls == failures + 1
    assert flaky.verdicts == [f"failure {n}" for n in range(1, failures + 1)]


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_attempts_counts_the_first_try(attempts: int) -> None:
    """attempts=N: N calls in all, then the last failure is raised."""
    flaky = Flaky(10)
    with pytest.raises(ValueError, match=f"failure {attempts}"):
        asyncio.run(with_retries(flaky, flaky.on, attempts=attempts))
    assert flaky.calls == attempts


def test_a_failure_on_refuses_is_raised_at_once() -> None:
    """A verdict of False ends it after the first try."""
    flaky = Flaky(5)
    with pytest.raises(ValueError, match="failure 1"):
        asyncio.run(with_retries(flaky, lambda exc: False, attempts=None))
    assert flaky.calls == 1


def test_no_retry_while_stamina_is_deactivated() -> None:
    """stamina.set_active(False) turns retries off here too."""
    flaky = Flaky(5)
    stamina.set_active(False)
    try:
        with pytest.raises(ValueError, match="failure 1"):
            asyncio.run(with_retries(flaky, flaky.on, attempts=None))
    finally:
        stamina.set_active(True)
    assert flaky.calls == 1
