"""Defects a hostile new user found from the outside (the QA pass): each test runs the
command or the API as a user would, over real loopback HTTP and real temp dirs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_checks import assert_bad_input, invoke, write_recipe
from edit_providers import png_bytes

import editgraph as eg
from editgraph.testing import FakeBFL, FakeTogether

pytestmark = pytest.mark.usefixtures("offline")


TINY = """\
    import editgraph as eg

    def recipe(colour: str = "blue") -> eg.Graph:
        g = eg.Graph()
        g.edit(f"Paint {g.image('red.png')} {colour}", name="paint")
        return g
"""


PHOTO = """\
    import pathlib

    import editgraph as eg

    def recipe(photo: pathlib.Path = pathlib.Path("red.png")) -> eg.Graph:
        g = eg.Graph()
        g.edit(f"Paint {g.image(photo)} blue", name="paint")
        return g
"""


@pytest.mark.parametrize("where", ["recipe", "import"])
def test_a_recipe_that_calls_sys_exit_is_bad_input(tmp_path: Path, where: str) -> None:
    """sys.exit() in a recipe (in recipe() or at import) is a one-line error, exit 2 - not a
    silent exit 0 with nothing run."""
    body = TINY.replace("        g = eg.Graph()", "        import sys; sys.exit(0)\n        g = eg.Graph()")
    if where == "import":
        body = "import sys\nsys.exit(3)\n" + textwrap.dedent(TINY)
    recipe = write_recipe(tmp_path, body)
    assert_bad_input(invoke("run", str(recipe)), "tiny.py", "SystemExit")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "batch"])
def test_a_nan_budget_is_bad_input(tmp_path: Path, command: str) -> None:
    """--budget nan is refused before anything runs (it compared false with every cost:
    run spent without a limit, batch skipped every item and exited 0)."""
    recipe = write_recipe(tmp_path, PHOTO)
    extra = ["--over", str(tmp_path / "*.png")] if command == "batch" else []
    result = invoke(command, str(recipe), *extra, "--budget", "nan")
    assert result.exit_code == 2, result.output
    assert "--budget" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_nan_or_negative_budget_is_refused_in_python(tmp_path: Path) -> None:
    """g.run(budget=nan) and eg.batch(budget=nan) raise GraphError naming the budget."""
    recipe = write_recipe(tmp_path, TINY)
    graph = eg.Graph()
    graph.edit(f"Paint {graph.image(png_bytes((1, 2, 3)), name='src')} red", name="paint")
    for budget in (math.nan, -1.0):
        with pytest.raises(eg.GraphError, match="budget"):
            graph.run(budget=budget)
        with pytest.raises(eg.GraphError, match="budget"):
            eg.batch(recipe, [{"colour": "red"}], out=tmp_path / "b", budget=budget)


def test_replay_does_not_write_the_default_graphs_history(tmp_path: Path) -> None:
    """Replaying a recipe's run leaves the history of the default graph ("__main__", a
    notebook's or script's) alone: plan there still says 'new' for a same-named node."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    assert invoke("replay", "out/manifest.json").exit_code == 0
    graph = eg.Graph()
    graph.edit(f"Make {graph.image(tmp_path / 'red.png')} green", name="paint")
    reasons = graph.plan().reasons
    assert reasons["paint"].startswith("new"), reasons


def test_together_moderation_makes_a_moderated_batch_item(tmp_path: Path) -> None:
    """A 422 whose message says the content was flagged is a ModerationError: the batch
    item is 'moderated' (kept as is by the next pass), not 'failed' (retried and paid)."""
    recipe = write_recipe(tmp_path, TINY)
    with FakeTogether() as fake:
        together = eg.providers.Together(api_key="test", base_url=fake.base_url)
        fake.fail_next(422, message="Image flagged as NSFW by safety checker")
        first = eg.batch(recipe, [{"colour": "red"}], out=tmp_path / "b", provider=together)
        assert [item.status for item in first] == ["moderated"]
        again = eg.batch(recipe, [{"colour": "red"}], out=tmp_path / "b", provider=together)
        assert [item.status for item in again] == ["moderated"]
        assert len(fake.requests) == 1 and fake.billed == []


def test_a_moderated_bfl_edit_is_not_called_billed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BFL's Content Moderated (one submit, one charge) is reported as possibly billed,
    never as 'billed twice (an answer was lost and the request re-sent)'."""
    recipe = write_recipe(tmp_path, TINY)
    with FakeBFL() as fake:
        monkeypatch.setenv("BFL_API_KEY", "bfl-test-key")
        monkeypatch.setenv("BFL_BASE_URL", fake.base_url)
        result = invoke("run", str(recipe), "--set", "colour=red [moderate-output]")
        assert len(fake.requests) == 1
    assert result.exit_code == 1, result.output
    assert "re-sent" not in result.output
    assert "possibly billed" in result.output and "paint" in result.output


def test_one_edit_summary_is_singular(tmp_path: Path) -> None:
    """The summary of a one-edit run says '1 edit' and '1 image', not '1 edits'."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("run", str(recipe))
    assert result.exit_code == 0, result.output
    assert "1 edit: 1 run" in result.output and "(1 image + manifest.json)" in result.output


def test_a_malformed_row_mid_batch_keeps_the_items_in_flight(tmp_path: Path) -> None:
    """A JSONL line that is not JSON, read while earlier items are generating: those
    items finish and are recorded in batch.jsonl (they were paid for), the command exits 2
    with one line, and no traceback reaches the terminal."""
    recipe = write_recipe(tmp_path, TINY)
    rows = [json.dumps({"colour": f"shade {index}", "id": f"i{index}"}) for index in range(40)]
    (tmp_path / "items.jsonl").write_text("\n".join([*rows, "not json"]) + "\n")
    with FakeTogether(latency=0.3) as fake:
        env = {**os.environ, "TOGETHER_API_KEY": "test", "TOGETHER_BASE_URL": fake.base_url}
        done = subprocess.run(
            [sys.executable, "-m", "editgraph", "batch", str(recipe), "--over", "items.jsonl",
             "--out", "b", "--concurrency", "8"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        billed = len(fake.billed)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "InvalidStateError" not in done.stderr, done.stderr
    assert "line 41: not JSON" in done.stderr
    lines = (tmp_path / "b" / "batch.jsonl").read_text().splitlines()
    assert 0 < billed == len(lines)
    assert {json.loads(line)["status"] for line in lines} == {"done"}


class _Hanging:
    """A user's provider whose generation never ends (the run is cancelled meanwhile)."""

    name = "hanging"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("never reached")


def test_cancelling_a_run_raises_cancelled_error(tmp_path: Path) -> None:
    """Cancelling ``g.arun()`` (asyncio.wait_for, a notebook's interrupt) while an edit
    with a dependent is generating raises CancelledError, not InvalidStateError."""

    async def cancel_mid_run() -> None:
        graph = eg.Graph(cache_dir=tmp_path / "cache")
        first = graph.edit(f"Paint {graph.image(png_bytes((1, 2, 3)), name='src')} red",
                           name="first")
        graph.edit(f"Paint {first} blue", name="second")
        provider = _Hanging()
        task = asyncio.ensure_future(graph.arun(provider=provider))
        await provider.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_run())


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_rate_limit_that_is_not_a_finite_number_is_refused(tmp_path: Path, value: float) -> None:
    """rate_limit=inf made every edit fail ('float division by zero'), nan was no limit:
    both are refused when the provider is made, and --rate / eg.batch(rate=) likewise."""
    with pytest.raises(eg.ConfigurationError, match="rate_limit"):
        eg.providers.Together(api_key="test", rate_limit=value)
    with pytest.raises(eg.EditGraphError, match="rate_limit"):
        eg.providers.BFL(api_key="test", rate_limit=value)
    recipe = write_recipe(tmp_path, TINY)
    with pytest.raises(eg.GraphError, match="rate"):
        eg.batch(recipe, [{"colour": "red"}], out=tmp_path / "b", rate=value)
    result = invoke("batch", str(recipe), "--over", str(tmp_path / "*.png"), "--param",
                    "colour", "--rate", str(value))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "rate must be" in result.output, result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("base", ["x", "ftp://127.0.0.1:1", "http://", "http://127.0.0.1:99999"])
def test_a_base_url_that_is_no_http_url_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str
) -> None:
    """A TOGETHER_BASE_URL / BFL_BASE_URL that is not an http(s) URL with a host and a
    valid port is a ConfigurationError when the provider is made (exit 2, naming the
    setting) - Together's failed every edit at run time ('UnsupportedProtocol', exit 1)."""
    with pytest.raises(eg.ConfigurationError, match="base URL"):
        eg.providers.Together(api_key="test", base_url=base)
    with pytest.raises(eg.ConfigurationError, match="base URL"):
        eg.providers.BFL(api_key="test", base_url=base)
    recipe = write_recipe(tmp_path, TINY)
    monkeypatch.setenv("TOGETHER_API_KEY", "test")
    monkeypatch.setenv("TOGETHER_BASE_URL", base)
    assert_bad_input(invoke("run", str(recipe)), "TOGETHER_BASE_URL")


def test_replay_of_an_image_without_a_record_says_replay_once(tmp_path: Path) -> None:
    """The one-line error for an image with no editgraph record says 'replay' once."""
    (tmp_path / "plain.png").write_bytes(png_bytes((9, 9, 9)))
    result = invoke("replay", "plain.png")
    assert_bad_input(result, "plain.png", "without an editgraph record")
    assert result.stderr.count("replay") == 1, result.stderr


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(),
                    reason="needs a POSIX FIFO and /dev/zero")
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_source_that_is_no_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A pipe named .png hung g.image() forever, and a link to /dev/zero read until memory
    ran out: both are a one-line GraphError naming the source, at once."""
    path = tmp_path / "photo.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    graph = eg.Graph()
    with pytest.raises(eg.GraphError, match="source 'photo'.*not a regular file"):
        graph.image(path)


# Found, not fixed here (they live in files other helpers are changing); strict xfails
# that flip once fixed.


@pytest.mark.parametrize(("provider", "setting"), [
    (eg.providers.Together, name)
    for name in ("timeout", "result_url_ttl", "max_retries", "unknown_outcome_retries")
] + [
    (eg.providers.BFL, name)
    for name in ("timeout", "poll_interval", "result_ttl", "moderation_retries")
])
def test_a_provider_refuses_nan_settings(provider: Any, setting: str) -> None:
    """A nan timeout, lifetime, poll interval or retry count is refused, naming it, when
    the provider is made (nan compares false with every bound)."""
    with pytest.raises(eg.EditGraphError, match=setting):
        provider(api_key="test", **{setting: math.nan})


def test_a_base_url_with_userinfo_is_refused_when_made() -> None:
    """TOGETHER_BASE_URL=http://user:pass@host is refused when the provider is made (under
    the aiohttp transport every edit failed at run time), without showing the password."""
    with pytest.raises(eg.ConfigurationError, match="user:password@") as caught:
        eg.providers.Together(api_key="test", base_url="http://gateway:hunter2@127.0.0.1:9")
    assert "hunter2" not in str(caught.value)


def test_a_glob_that_matches_nothing_is_bad_input(tmp_path: Path) -> None:
    """--over with a pattern that matches no image is a one-line error naming it, exit 2,
    not '0 items' and exit 0 (a typo more often than an empty catalogue)."""
    recipe = write_recipe(tmp_path, PHOTO)
    pattern = str(tmp_path / "photos" / "*.jpg")
    result = invoke("batch", str(recipe), "--over", pattern, "--out", str(tmp_path / "b"))
    assert_bad_input(result, "--over", pattern, "matches no")
    assert not (tmp_path / "b").exists()
    matched = invoke("plan", str(recipe), "--over", str(tmp_path / "*.png"))
    assert matched.exit_code == 0, matched.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_float_parameter_refuses_nan_and_infinity(tmp_path: Path, value: str) -> None:
    """--set ratio=nan (or inf) is a one-line error naming the parameter, exit 2; a finite
    number is taken."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        def recipe(ratio: float = 1.0) -> eg.Graph:
            g = eg.Graph()
            g.edit(f"Scale {g.image('red.png')} by {ratio}", name="scale")
            return g
    """)
    assert_bad_input(invoke("plan", str(recipe), "--set", f"ratio={value}"), "ratio")
    assert invoke("plan", str(recipe), "--set", "ratio=0.5").exit_code == 0


def test_a_setting_given_twice_with_two_values_is_bad_input(tmp_path: Path) -> None:
    """--set colour=red --set colour=green is refused naming colour (the last one won,
    silently); the same value twice is taken."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("plan", str(recipe), "--set", "colour=red", "--set",
                            "colour=green"), "--set colour", "twice")
    assert invoke("plan", str(recipe), "--set", "colour=red", "--set",
                  "colour=red").exit_code == 0
