"""The checks the hosted providers' constructors share: a bad setting is refused before
anything is sent, in one line naming the provider, the setting and the value."""

from __future__ import annotations

import math

from ..errors import ConfigurationError

__all__ = ["check_count", "check_rate_limit", "check_seconds"]


def check_count(provider: str, setting: str, value: object, low: int) -> None:
    """Refuse a count that is not an int >= ``low``: nan, inf, 2.5, True or "3" would each
    be a bill without bound, a cap that is not one, or a TypeError deep in a run."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{provider}: {setting} must be an int >= {low}, got {value!r}")


def check_seconds(provider: str, setting: str, value: object, *, positive: bool) -> None:
    """Refuse a time that is not a finite number of seconds, >= 0 (> 0 if ``positive``);
    nan and inf are refused too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0 <= value < math.inf and (value > 0 or not positive)
    ):
        raise ConfigurationError(
            f"{provider}: {setting} must be a finite number of seconds "
            f"({'> 0' if positive else '>= 0'}), got {value!r}"
        )


def check_rate_limit(provider: str, value: object) -> None:
    """Refuse a rate limit that is not None or a finite number of requests per minute > 0."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not 0 < value < math.inf
    ):
        raise ConfigurationError(
            f"{provider}: rate_limit must be requests per minute > 0, got {value!r}"
        )
