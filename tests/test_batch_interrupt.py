"""Tests for a batch's interrupts: Ctrl-C drains at the edit level inside every item."""

from __future__ import annotations

import collections
import json
import signal
import sys
from pathlib import Path

import pytest
from test_batch import image_folder, journal, write_recipe
from test_reliability import NEVER, TEST_KEY, Command, child_env, editgraph_here, wait_until

from editgraph.testing import FakeTogether

ITEMS = {f"p{index}": (index * 25, 90, 30) for index in range(6)}


def start_batch(tmp_path: Path, fake: FakeTogether) -> tuple[Command, tuple[str, ...]]:
    """`editgraph batch` of six two-edit items, two edits at a time, against ``fake``;
    returns once two cut-outs are being generated (the window allows no third)."""
    inputs = image_folder(tmp_path / "in", ITEMS)
    recipe = write_recipe(tmp_path)
    args = ("batch", str(recipe), "--over", str(inputs), "--out", str(tmp_path / "out"),
            "--concurrency", "2", "--cache", str(tmp_path / "cache"))
    command = Command([sys.executable, "-m", "editgraph", *args], env=child_env(fake))
    wait_until(lambda: len(fake.requests) == 2 or command.process.poll() is not None,
               "two edits in flight")
    return command, args


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_drains_inside_items_and_the_rerun_pays_only_the_rest(
    tmp_path: Path, signal_number: int, code: int
) -> None:
    """First SIGINT/SIGTERM: the two cut-outs in flight finish and are cached, no edit
    starts after it (no lifestyle shot, no new item); folders say what did not run;
    the journal holds no unfinished item; a re-run pays for the other ten edits only."""
    with FakeTogether(api_key=TEST_KEY, latency=2.0) as fake:
        command, args = start_batch(tmp_path, fake)
        in_flight = {entry["prompt"] for entry in fake.requests}
        command.process.send_signal(signal_number)
        assert command.finish() == code, command.output
        assert len(fake.requests) == 2, "an edit started after the interrupt"
        assert {entry["prompt"] for entry in fake.billed} == in_flight
        out = tmp_path / "out"
        assert not (out / "batch.jsonl").read_text().strip(), "an unfinished item was journaled"
        stopped = sorted(path.parent.name for path in out.glob("*/manifest.json"))
        assert stopped == ["p0", "p1"], command.output
        for item in stopped:
            manifest = json.loads((out / item / "manifest.json").read_text())
            statuses = {entry["node"]: entry["status"] for entry in manifest["edits"]}
            assert statuses == {"cutout": "done", "lifestyle": "not run"}, manifest
            assert (out / item / "cutout.jpg").is_file() or list((out / item).glob("cutout.*"))
        assert "interrupted: no new item or edit starts" in command.output
        assert "p0/cutout" in command.output and "p1/cutout" in command.output
        assert "0 items finished" in command.output
        assert "2 stopped between edits" in command.output
        assert "4 did not start" in command.output and "run again" in command.output
        assert (out / "batch.html").is_file()
        again = editgraph_here(*args, env=child_env(fake))
        assert again.returncode == 0, again.stdout
        billed = collections.Counter(entry["prompt"] for entry in fake.billed)
    # Six items of two edits each, every one paid exactly once over both passes.
    assert len(fake.billed) == 12 and set(billed.values()) == {6}, billed
    assert sorted(str(line["id"]) for line in journal(tmp_path / "out")) == sorted(ITEMS)


def test_a_second_ctrl_c_abandons_the_batch_at_once_naming_what_may_be_billed(
    tmp_path: Path,
) -> None:
    """Second SIGINT: exit 130 without waiting for the in-flight answers (they would take
    twice the test's deadline), naming those edits."""
    with FakeTogether(api_key=TEST_KEY, latency=NEVER) as fake:
        command, _ = start_batch(tmp_path, fake)
        command.process.send_signal(signal.SIGINT)
        command.wait_for_line("interrupted: no new item or edit starts")
        command.process.send_signal(signal.SIGINT)
        assert command.finish() == 130, command.output  # within DEADLINE, < NEVER
        assert not fake.billed, "the in-flight edits had already finished"
        assert len(fake.requests) == 2
    abandoned = next(line for line in command.lines if line.startswith("abandoned: "))
    assert "may have been billed" in abandoned
    assert "Traceback" not in command.output, command.output
    assert "p0/cutout" in abandoned and "p1/cutout" in abandoned, abandoned


BATCH_SCRIPT = """
import asyncio, sys
import editgraph as eg
from editgraph.batch import abatch
result = CALL(sys.argv[1], sys.argv[2], out=sys.argv[3], cache=sys.argv[4], concurrency=2)
s = result.summary
print("summary", s.interrupted, s.items, s.in_flight, s.unfinished, s.not_started, flush=True)
"""


#: How a script runs a batch: eg.batch, or abatch under asyncio.run.
CALLS = {"eg.batch": "eg.batch", "abatch": "(lambda *a, **k: asyncio.run(abatch(*a, **k)))"}


def start_script(tmp_path: Path, fake: FakeTogether, call: str = "eg.batch") -> Command:
    """BATCH_SCRIPT (the batch run by ``call``) over the six items against ``fake``;
    returns once two cut-outs are being generated."""
    inputs = image_folder(tmp_path / "in", ITEMS)
    recipe = write_recipe(tmp_path)
    script = BATCH_SCRIPT.replace("CALL", CALLS[call])
    command = Command([sys.executable, "-c", script, str(recipe), str(inputs),
                       str(tmp_path / "out"), str(tmp_path / "cache")], env=child_env(fake))
    wait_until(lambda: len(fake.requests) == 2 or command.process.poll() is not None,
               "two edits in flight")
    return command


def test_eg_batch_in_a_script_drains_inside_items_too(tmp_path: Path) -> None:
    """eg.batch() in a script's main thread takes SIGINT itself: the two cut-outs in
    flight finish, nothing starts after, and the summary counts 2 stopped, 4 not started."""
    with FakeTogether(api_key=TEST_KEY, latency=2.0) as fake:
        command = start_script(tmp_path, fake)
        command.process.send_signal(signal.SIGINT)
        assert command.finish() == 0, command.output
        assert len(fake.requests) == 2 and len(fake.billed) == 2
    assert "summary True 0 2 2 4" in command.output, command.output


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_second_ctrl_c_in_eg_batch_ends_as_a_keyboard_interrupt_naming_the_edits(
    tmp_path: Path, call: str
) -> None:
    """eg.batch() (or abatch under asyncio.run) in a script, second SIGINT: it ends at
    once by KeyboardInterrupt whose message names each item/edit that may be billed; no
    CancelledError is shown."""
    with FakeTogether(api_key=TEST_KEY, latency=NEVER) as fake:
        command = start_script(tmp_path, fake, call)
        command.process.send_signal(signal.SIGINT)
        command.wait_for_line("interrupted: no new item or edit starts")
        command.process.send_signal(signal.SIGINT)
        code = command.finish()  # within DEADLINE, < NEVER: it did not wait for answers
        assert not fake.billed, "the in-flight edits had already finished"
    assert code in (-signal.SIGINT, 130), command.output
    assert "CancelledError" not in command.output, command.output
    assert command.output.count("Traceback") == 1, command.output  # the KeyboardInterrupt's
    assert "summary" not in command.output, "eg.batch returned after an abandon"
    ended = command.lines[-1]
    assert ended.startswith("KeyboardInterrupt: batch abandoned: "), command.output
    assert "p0/cutout" in ended and "p1/cutout" in ended and "may have been billed" in ended
