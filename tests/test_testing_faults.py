"""The fakes' shared fault injection, over real loopback: fail_next, seeded faults, keys."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from editgraph.testing import FakeBFL, FakeTogether

Fake = FakeTogether | FakeBFL


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def send(client: httpx.Client, fake: Fake, prompt: str = "A red fox", key: str = "k") -> httpx.Response:
    """One generation (Together) or submission (BFL) with ``key``, at 256 x 256."""
    body = {"prompt": prompt, "width": 256, "height": 256}
    if isinstance(fake, FakeTogether):
        return client.post(
            fake.base_url + "/v1/images/generations",
            json={"model": "black-forest-labs/FLUX.2-pro", **body},
            headers={"Authorization": f"Bearer {key}"},
        )
    return client.post(fake.base_url + "/v1/flux-2-pro", json=body, headers={"x-key": key})


def outcomes(make: Callable[[], Fake], count: int) -> list[str]:
    """Each of ``count`` requests' status, "dropped" for a closed connection, one by one."""
    seen = []
    with make() as fake, httpx.Client(trust_env=False, timeout=10.0) as client:
        for index in range(count):
            try:
                seen.append(str(send(client, fake, prompt=f"p{index}").status_code))
            except httpx.TransportError:
                seen.append("dropped")
    return seen


def test_both_fakes_fault_the_same_requests_for_a_seed() -> None:
    """Given the same fault_rate and fault_seed, both fakes fault the same arrivals the same way."""
    together = outcomes(lambda: FakeTogether(fault_rate=0.5, fault_seed=11), 24)
    bfl = outcomes(lambda: FakeBFL(fault_rate=0.5, fault_seed=11), 24)
    assert together == bfl
    assert {"200", "dropped"} <= set(together) and {"500", "503", "429"} & set(together)


@pytest.mark.parametrize("make", [FakeTogether, FakeBFL], ids=["together", "bfl"])
def test_fail_next_is_checked_queued_and_answered_alike(make: Callable[[], Fake]) -> None:
    """Both fakes refuse a non-error status or count, then answer queued failures in order."""
    with make() as fake, httpx.Client(trust_env=False, timeout=10.0) as client:
        with pytest.raises(ValueError, match="400-599"):
            fake.fail_next(200)
        with pytest.raises(ValueError, match="times"):
            fake.fail_next(503, times=0)
        fake.fail_next(429, retry_after=0.25, message="slow down please")
        fake.fail_next(503, times=2)
        answers = [send(client, fake) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [429, 503, 503, 200]
        assert answers[0].headers["Retry-After"] == "0.25"
        assert "slow down please" in answers[0].text
        assert "retry-after" not in answers[1].headers
        assert len(fake.billed) == 1


@pytest.mark.parametrize("make", [FakeTogether, FakeBFL], ids=["together", "bfl"])
def test_fault_rate_outside_zero_to_one_is_refused(make: Callable[..., Fake]) -> None:
    """A fault_rate above 1 or below 0 is a ValueError naming it, from either fake."""
    for rate in (1.5, -0.1):
        with pytest.raises(ValueError, match="fault_rate"):
            make(fault_rate=rate)


def test_keys_are_checked_before_the_queue_in_both_fakes() -> None:
    """A wrong key is a 401 and leaves the fail_next queue untouched, in both fakes."""
    for fake in (FakeTogether(api_key="right"), FakeBFL(api_key="right")):
        with fake, httpx.Client(trust_env=False, timeout=10.0) as client:
            fake.fail_next(500)
            assert send(client, fake, key="wrong").status_code == 401
            assert send(client, fake, key="right").status_code == 500
            assert send(client, fake, key="right").status_code == 200
