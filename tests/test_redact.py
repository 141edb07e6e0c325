"""The redactor: keys and echoed runs of their characters masked; keys checked early."""

from __future__ import annotations

import logging

import pytest

import editgraph as eg
from editgraph.redact import MASK, check_api_key, redact, register_secret

KEY = "tgp_v1_REDACT_9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture(autouse=True)
def _registered() -> None:
    """The test key is known to the redactor, as a provider would make it."""
    register_secret(KEY)


def test_the_whole_key_is_masked() -> None:
    """A message quoting the key shows the mask instead."""
    assert redact(f"bad key {KEY}!") == f"bad key {MASK}!"


@pytest.mark.parametrize("start, length", [(0, 6), (10, 6), (20, 12), (len(KEY) - 9, 9)])
def test_any_run_of_six_or_more_key_characters_is_masked(start: int, length: int) -> None:
    """A 401 echoing a piece of the key (start, middle, end) leaks none of it."""
    piece = KEY[start : start + length]
    cleaned = redact(f"Invalid API key: '{piece}...'")
    assert piece not in cleaned and MASK in cleaned


def test_pieces_of_the_key_quoted_apart_are_each_masked() -> None:
    """Two separate pieces are both masked, the text between them kept."""
    cleaned = redact(f"{KEY[:8]} and then {KEY[-8:]}")
    assert cleaned == f"{MASK} and then {MASK}"


def test_runs_shorter_than_six_and_ordinary_text_are_kept() -> None:
    """Five characters of the key, and text sharing none of its runs, are left alone."""
    text = f"prefix {KEY[:5]} - a night scene, wet asphalt"
    assert redact(text) == text


def test_a_key_too_short_to_be_real_masks_nothing() -> None:
    """Registering a 4-character test key does not blank the word everywhere."""
    register_secret("test")
    assert redact("tests test testing") == "tests test testing"


def test_log_records_on_the_editgraph_logger_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A log line that carries the key, as a format argument, reaches handlers masked."""
    with caplog.at_level(logging.INFO, logger="editgraph"):
        logging.getLogger("editgraph").info("answer was %s", f"key={KEY}")
    assert KEY not in caplog.text and MASK in caplog.text


@pytest.mark.parametrize("whitespace", [" ", "\t", "\r\n", "\n", "\u00a0 "])
def test_surrounding_whitespace_is_stripped(whitespace: str) -> None:
    """A key read from a Windows .env file (trailing CR LF) works."""
    assert check_api_key(f"{whitespace}{KEY}{whitespace}", "TOGETHER_API_KEY") == KEY


@pytest.mark.parametrize(
    "bad, position",
    [
        (KEY[:10] + " " + KEY[10:], 11),
        (KEY[:3] + "\t" + KEY[3:], 4),
        (KEY + "\u00e9", len(KEY) + 1),
        ("\u200b" + KEY, 1),
        (KEY[:5] + "\x7f" + KEY[5:], 6),
        (KEY[:7] + "\r\n" + KEY[7:], 8),
    ],
)
def test_a_key_with_a_character_outside_printable_ascii_is_refused(
    bad: str, position: int
) -> None:
    """ConfigurationError names the source and the position, never the key."""
    with pytest.raises(eg.ConfigurationError, match=rf"api_key= .* position {position} ") as caught:
        check_api_key(bad, "api_key=")
    assert KEY[:6] not in str(caught.value) and KEY[-6:] not in str(caught.value)


def test_an_empty_key_is_refused() -> None:
    """A key of whitespace only is a ConfigurationError naming the variable."""
    with pytest.raises(eg.ConfigurationError, match="TOGETHER_API_KEY is empty"):
        check_api_key(" \r\n", "TOGETHER_API_KEY")
