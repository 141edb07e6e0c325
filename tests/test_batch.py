"""Tests for batch.py: one recipe over many inputs, streamed, resumable, nothing paid twice."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from edit_providers import CountingProvider, png_bytes
from test_report import _Text, browse

import editgraph as eg
from editgraph.batch import abatch, plan_batch
from editgraph.cli import main
from editgraph.testing import FakeTogether

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "recipes" / "catalogue.py"
SAMPLES = ROOT / "examples" / "catalogue"

TWO_STEPS = '''
from pathlib import Path
import editgraph as eg

def recipe(photo: Path, colour: str = "#112233") -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=256, height=256)
    product = g.image(photo, name="product")
    cut = g.edit(f"Put {product} on a backdrop in color {colour}", name="cutout")
    g.edit(f"A lifestyle shot of {cut}", name="lifestyle")
    return g
'''


def write_recipe(folder: Path, text: str = TWO_STEPS, name: str = "items.py") -> Path:
    """A recipe file in ``folder``."""
    path = folder / name
    path.write_text(text)
    return path


def image_folder(folder: Path, colours: dict[str, tuple[int, int, int]]) -> Path:
    """A folder with one small PNG per name, in the given colour."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in colours.items():
        (folder / f"{name}.png").write_bytes(png_bytes(colour, (64, 48)))
    return folder


def journal(out: Path) -> list[dict[str, object]]:
    """The lines of ``out/batch.jsonl``."""
    return [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]


def invoke(*args: str) -> Result:
    """Run the command in-process (stdout and stderr apart)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


COLOURS = {"red": (200, 30, 30), "green": (30, 160, 60), "blue": (30, 30, 200)}


# ---------------------------------------------------------------------------- inputs


def test_a_folder_gives_one_item_per_image_with_folders_and_a_journal(tmp_path: Path) -> None:
    """Each image of a folder is one item: its own folder of outputs and a journal line."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    (inputs / "notes.txt").write_text("not an image")
    provider = CountingProvider()
    result = eg.batch(write_recipe(tmp_path), inputs, out=tmp_path / "out", provider=provider,
                      cache=tmp_path / "cache")
    assert sorted(item.id for item in result) == ["blue", "green", "red"]  # as they finished
    assert {item.status for item in result} == {"done"}
    assert result.summary.done == 3 and result.summary.exit_code == 0
    for item in result:
        assert item.outputs == {"cutout": f"{item.id}/cutout.png",
                                "lifestyle": f"{item.id}/lifestyle.png"}
        assert (tmp_path / "out" / item.id / "manifest.json").is_file()
        assert (tmp_path / "out" / item.outputs["lifestyle"]).is_file()
    assert sorted(str(line["id"]) for line in journal(tmp_path / "out")) == ["blue", "green", "red"]
    assert len(provider.calls) == 6
    assert (tmp_path / "out" / "batch.html").is_file()


def test_csv_and_jsonl_rows_are_items_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    """CSV and JSONL rows set recipe parameters; image paths resolve against the file; ids kept."""
    image_folder(tmp_path / "data" / "photos", COLOURS)
    table = tmp_path / "data" / "items.csv"
    table.write_text("id,photo,colour\nsku-1,photos/red.png,#FF0000\nsku-2,photos/blue.png,#0000FF\n")
    lines = tmp_path / "data" / "items.jsonl"
    lines.write_text(json.dumps({"photo": "photos/green.png", "colour": "#00FF00"}) + "\n\n")
    recipe = write_recipe(tmp_path)
    provider = CountingProvider()
    first = eg.batch(recipe, table, out=tmp_path / "a", provider=provider, cache=tmp_path / "c")
    second = eg.batch(recipe, lines, out=tmp_path / "b", provider=provider, cache=tmp_path / "c")
    assert sorted((item.id, item.status) for item in first) == [("sku-1", "done"),
                                                                 ("sku-2", "done")]
    assert [(item.id, item.status) for item in second] == [("green", "done")]
    prompts = [request.prompt for request in provider.calls if request.node == "cutout"]
    assert any("#FF0000" in prompt for prompt in prompts)
    assert any("#00FF00" in prompt for prompt in prompts)


def test_an_iterable_of_dicts_and_a_callable_recipe(tmp_path: Path) -> None:
    """Python callers pass a function and dicts; duplicate stems get -2, -3 ids."""
    photo = image_folder(tmp_path / "in", {"shoe": (9, 9, 9)}) / "shoe.png"

    def recipe(photo: Path, caption: str = "x") -> eg.Graph:
        g = eg.Graph(width=256, height=256)
        source = g.image(photo, name="photo")
        g.edit(f"Caption {source} with the word '{caption}'", name="captioned")
        return g

    rows = [{"photo": photo, "caption": word} for word in ("one", "two", "three")]
    result = eg.batch(recipe, rows, out=tmp_path / "out", provider=CountingProvider(),
                      cache=tmp_path / "cache")
    assert {item.id: item.inputs["caption"] for item in result} == {
        "shoe": "one", "shoe-2": "two", "shoe-3": "three"}


def test_an_id_that_cannot_name_a_folder_fails_its_item_only(tmp_path: Path) -> None:
    """An id column of '../escape' or 'con' never writes outside OUT; its item fails, clearly."""
    photo = image_folder(tmp_path / "in", {"p": (1, 1, 1)}) / "p.png"
    rows = [{"photo": photo, "id": "../escape"}, {"photo": photo, "id": "con"},
            {"photo": photo, "id": "Fine"}, {"photo": photo, "id": "fine"}]
    result = eg.batch(write_recipe(tmp_path), rows, out=tmp_path / "out",
                      provider=CountingProvider(), cache=tmp_path / "cache")
    items = {item.id: item for item in result}
    assert items["Fine"].status == "done" and items["fine-2"].status == "done"
    failed = [item for item in result if item.status == "failed"]
    assert len(failed) == 2
    assert all(item.error and item.error.startswith("id ") for item in failed)
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["Fine",
                                                                                 "fine-2"]


def test_which_parameter_takes_the_input_must_be_clear(tmp_path: Path) -> None:
    """No Path parameter, or several, is a GraphError before anything runs; --param settles it."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    none = write_recipe(tmp_path, TWO_STEPS.replace("photo: Path", "photo: str"), "none.py")
    several = write_recipe(
        tmp_path, TWO_STEPS.replace("colour: str = \"#112233\"", "other: Path = Path('x')"),
        "several.py",
    )
    provider = CountingProvider()
    with pytest.raises(eg.GraphError, match="no parameter annotated pathlib.Path"):
        eg.batch(none, inputs, out=tmp_path / "o1", provider=provider, cache=tmp_path / "c")
    with pytest.raises(eg.GraphError, match=r"several pathlib.Path parameters \(photo, other\)"):
        eg.batch(several, inputs, out=tmp_path / "o2", provider=provider, cache=tmp_path / "c")
    with pytest.raises(eg.GraphError, match="--param colour2: recipe .* has no such parameter"):
        eg.batch(several, inputs, param="colour2", out=tmp_path / "o3", provider=provider,
                 cache=tmp_path / "c")
    chosen = eg.batch(none, inputs, param="photo", out=tmp_path / "o4", provider=provider,
                      cache=tmp_path / "c")
    assert chosen.summary.done == 3


def test_an_unknown_csv_column_is_refused_before_any_spend(tmp_path: Path) -> None:
    """A column that is not a recipe parameter stops the batch before any item runs."""
    image_folder(tmp_path / "photos", COLOURS)
    table = tmp_path / "items.csv"
    table.write_text("photo,colur\nphotos/red.png,#FF0000\n")
    provider = CountingProvider()
    with pytest.raises(eg.GraphError, match="column 'colur' is not a parameter"):
        eg.batch(write_recipe(tmp_path), table, out=tmp_path / "out", provider=provider,
                 cache=tmp_path / "cache")
    assert provider.calls == []


# ---------------------------------------------------------------------------- failures


def test_an_unreadable_input_is_one_failed_item_and_the_rest_finish(tmp_path: Path) -> None:
    """A file that is not an image fails its item with a clear error; the others are done."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    (inputs / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = eg.batch(write_recipe(tmp_path), inputs, out=tmp_path / "out",
                      provider=CountingProvider(), cache=tmp_path / "cache")
    statuses = {item.id: item.status for item in result}
    assert statuses == {"blue": "done", "broken": "failed", "green": "done", "red": "done"}
    broken = next(item for item in result if item.id == "broken")
    assert broken.error is not None and "broken.jpg" in broken.error
    assert "not a readable image" in broken.error
    assert result.summary.exit_code == 1


class ModeratingProvider(CountingProvider):
    """Blocks every edit whose prompt carries the [moderate] marker."""

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """Refuse marked prompts as the service's moderation would."""
        if "[moderate]" in request.prompt:
            self.calls.append(request)
            raise eg.ModerationError("the service's moderation blocked this request",
                                     node=request.node)
        return await super().generate(request)


def test_moderated_items_are_kept_unless_asked_to_retry(tmp_path: Path) -> None:
    """A moderated item is recorded as such; a re-run keeps it without a call; retry re-runs it."""
    photo = image_folder(tmp_path / "in", {"p": (1, 2, 3)}) / "p.png"
    rows = [{"photo": photo, "colour": "#111111", "id": "fine"},
            {"photo": photo, "colour": "#222222 [moderate]", "id": "blocked"}]
    recipe = write_recipe(tmp_path)
    provider = ModeratingProvider()
    first = eg.batch(recipe, rows, out=tmp_path / "out", provider=provider, cache=tmp_path / "c")
    assert {item.id: item.status for item in first} == {"fine": "done", "blocked": "moderated"}
    calls = len(provider.calls)
    again = eg.batch(recipe, rows, out=tmp_path / "out", provider=provider, cache=tmp_path / "c")
    assert {item.id: item.status for item in again} == {"fine": "done", "blocked": "moderated"}
    assert len(provider.calls) == calls  # nothing generated: fine is cached, blocked is kept
    retried = eg.batch(recipe, rows, out=tmp_path / "out", provider=provider,
                       cache=tmp_path / "c", retry_moderated=True)
    assert len(provider.calls) == calls + 1
    assert {item.id: item.status for item in retried}["blocked"] == "moderated"


# ---------------------------------------------------------------------------- money


def test_a_second_pass_pays_nothing_and_identical_inputs_are_one_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against FakeTogether: duplicates are paid once, and a re-run bills nothing at all."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    shutil.copy(inputs / "red.png", inputs / "red-copy.png")
    recipe = write_recipe(tmp_path)
    with FakeTogether() as fake:
        provider = eg.providers.Together(api_key="tg-test", base_url=fake.base_url)
        first = eg.batch(recipe, inputs, out=tmp_path / "out", provider=provider,
                         cache=tmp_path / "cache", concurrency=4)
        assert first.summary.done == 4
        assert len(fake.billed) == 6  # 3 unique photos x 2 edits; the copy costs nothing
        second = eg.batch(recipe, inputs, out=tmp_path / "out", provider=provider,
                          cache=tmp_path / "cache")
        assert len(fake.billed) == 6
    assert second.summary.cached == 4 and second.summary.cost == 0
    assert len(journal(tmp_path / "out")) == 8  # appended, never rewritten


def _seed_drawing(*kinds: str | None) -> int:
    """A fault seed whose first draws at rate 0.5 are ``kinds`` (arrival order)."""
    from editgraph.testing._faults import FAULT_KINDS, FaultDraws

    for seed in range(100_000):
        draws = FaultDraws(seed, FAULT_KINDS)
        if [draws.draw(0.5) for _ in kinds] == list(kinds):
            return seed
    raise AssertionError(f"no seed draws {kinds}")


def test_an_item_possibly_billed_twice_is_said_in_the_summary_and_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real loopback, FakeTogether drops its answer after billing cutout's first
    try: the item finishes, and the summary line, the detail line, batch.jsonl and
    batch.html say item/cutout was possibly billed twice (as its manifest does)."""
    inputs = image_folder(tmp_path / "in", {"red": COLOURS["red"]})
    recipe = write_recipe(tmp_path)
    seed = _seed_drawing("drop_after", None, None)  # cutout, cutout again, lifestyle
    with FakeTogether(fault_rate=0.5, fault_seed=seed) as fake:
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        monkeypatch.setenv("TOGETHER_API_KEY", "tg-test")
        result = invoke("batch", str(recipe), "--over", str(inputs), "--out", str(tmp_path / "out"),
                        "--cache", str(tmp_path / "cache"), "--provider", "together")
        assert len(fake.billed) == 3  # cutout twice (the first answer lost), lifestyle once
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("1 item:"))
    assert "1 done, 0 failed, 1 possibly billed twice" in summary
    assert "possibly billed twice (an answer was lost and the request re-sent): red/cutout" in lines
    [line] = journal(tmp_path / "out")
    assert line["status"] == "done" and line["possibly_billed_twice"] == ["cutout"]
    assert "possibly_billed" not in line
    manifest = json.loads((tmp_path / "out" / "red" / "manifest.json").read_text())
    assert manifest["possibly_billed_twice"] == ["cutout"]
    assert "possibly billed twice: cutout" in (tmp_path / "out" / "batch.html").read_text()
    # A second pass serves both edits from the cache (no service is up): nothing said.
    again = eg.batch(recipe, inputs, out=tmp_path / "out", cache=tmp_path / "cache",
                     provider=eg.providers.Together(api_key="tg-test",
                                                    base_url="http://127.0.0.1:9"))
    assert again.summary.cached == 1 and again.summary.possibly_billed_twice == 0
    assert "possibly_billed_twice" not in journal(tmp_path / "out")[-1]


def test_a_failed_item_possibly_billed_is_said_apart_from_billed_twice(tmp_path: Path) -> None:
    """With no retry of an unknown outcome, cutout's lost answer fails the item: it is
    counted and journaled as possibly billed (no image), not as billed twice."""
    inputs = image_folder(tmp_path / "in", {"red": COLOURS["red"]})
    with FakeTogether(fault_rate=0.5, fault_seed=_seed_drawing("drop_after")) as fake:
        provider = eg.providers.Together(api_key="tg-test", base_url=fake.base_url,
                                         unknown_outcome_retries=0)
        result = eg.batch(write_recipe(tmp_path), inputs, out=tmp_path / "out",
                          provider=provider, cache=tmp_path / "cache")
        assert len(fake.billed) == 1
    [item] = result
    assert item.status == "failed" and item.possibly_billed == ["cutout"]
    assert item.possibly_billed_twice == []
    assert result.summary.possibly_billed == 1 and result.summary.possibly_billed_twice == 0
    [line] = journal(tmp_path / "out")
    assert line["possibly_billed"] == ["cutout"] and "possibly_billed_twice" not in line


def test_the_budget_is_for_the_whole_batch_and_never_passed(tmp_path: Path) -> None:
    """An item starts only when its whole estimate fits; the rest are skipped, not paid."""
    inputs = image_folder(tmp_path / "in", {f"p{i}": (i, 10, 20) for i in range(6)})
    recipe = write_recipe(tmp_path)
    estimate = plan_batch(recipe, inputs, provider=CountingProvider(), cache=tmp_path / "c")
    per_item = estimate.estimated_cost / estimate.items
    provider = CountingProvider()
    result = eg.batch(recipe, inputs, out=tmp_path / "out", provider=provider,
                      cache=tmp_path / "c", budget=per_item * 2.5, concurrency=3)
    statuses = [item.status for item in result]
    assert statuses.count("done") == 2 and statuses.count("skipped") == 4
    assert result.summary.cost <= per_item * 2.5
    assert len(provider.calls) == 4
    skipped = next(item for item in result if item.status == "skipped")
    assert skipped.error is not None and "budget" in skipped.error


def test_edits_in_flight_are_bounded_across_items(tmp_path: Path) -> None:
    """Many items at once never have more than `concurrency` provider calls in flight."""
    inputs = image_folder(tmp_path / "in", {f"p{i}": (i, 40, 80) for i in range(12)})

    class Slow(CountingProvider):
        in_flight = 0
        peak = 0

        async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
            Slow.in_flight += 1
            Slow.peak = max(Slow.peak, Slow.in_flight)
            try:
                await asyncio.sleep(0)  # yield so that others may start
                await asyncio.sleep(0)
                return await super().generate(request)
            finally:
                Slow.in_flight -= 1

    result = eg.batch(write_recipe(tmp_path), inputs, out=tmp_path / "out", provider=Slow(),
                      cache=tmp_path / "cache", concurrency=3)
    assert result.summary.done == 12
    assert 1 < Slow.peak <= 3


def test_inputs_are_read_lazily_within_a_bounded_window(tmp_path: Path) -> None:
    """A generator of inputs is pulled only a window ahead of the items that finished."""
    photo = image_folder(tmp_path / "in", {"p": (5, 5, 5)}) / "p.png"
    provider = CountingProvider()
    ahead: list[int] = []

    def rows() -> Iterator[dict[str, object]]:
        for number in range(60):
            ahead.append(number - len(provider.calls) // 2)
            yield {"photo": photo, "colour": f"#{number:06x}"}

    result = eg.batch(write_recipe(tmp_path), rows(), out=tmp_path / "out", provider=provider,
                      cache=tmp_path / "cache", concurrency=4)
    assert result.summary.done == 60
    assert max(ahead) <= 4 + 1  # the window (concurrency) plus the one being read


# ---------------------------------------------------------------------------- command


def test_the_command_runs_the_catalogue_offline_then_for_free(tmp_path: Path, offline: Path) -> None:
    """`editgraph batch recipes/catalogue.py --over examples/catalogue/` with Preview, twice."""
    first = invoke("batch", str(CATALOGUE), "--over", str(SAMPLES), "--out", "out")
    assert first.exit_code == 0, first.output
    items = sorted(path.stem for path in SAMPLES.iterdir() if path.suffix != ".md")
    assert f"{len(items)} items: {len(items)} done, 0 failed · 0 fully cached" in first.stdout
    assert "Preview" in first.stdout  # the one-line offline notice
    second = invoke("batch", str(CATALOGUE), "--over", str(SAMPLES), "--out", "out")
    assert f"{len(items)} fully cached · estimated cost $0.00" in second.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == items
    planned = invoke("plan", str(CATALOGUE), "--over", str(SAMPLES), "--set", "backdrop=#000000")
    assert planned.exit_code == 0, planned.output
    assert f"{len(items)} items: {2 * len(items)} edits to run, 0 cached" in planned.stdout


def test_the_command_exits_1_on_a_failed_item_and_2_on_bad_arguments(
    tmp_path: Path, offline: Path
) -> None:
    """A broken input is exit 1 with its error on stderr; a bad --over is exit 2 in one line."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    (inputs / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    recipe = write_recipe(tmp_path)
    failed = invoke("batch", str(recipe), "--over", str(inputs))
    assert failed.exit_code == 1
    assert "failed zz:" in failed.stderr
    missing = invoke("batch", str(recipe), "--over", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2
    assert missing.stderr.strip().count("\n") == 0 and "no such file or folder" in missing.stderr


def test_the_batch_report_shows_inputs_beside_outputs_in_chromium(tmp_path: Path) -> None:
    """batch.html opens in headless Chromium: every item, its images, errors as text, no script."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    hostile = "<img src=x onerror=\"document.title='PWNED'\">"
    (inputs / "bad.jpg").write_bytes(b"nope")
    rows = [{"photo": path, "id": path.stem} for path in sorted(inputs.iterdir())]
    rows.append({"photo": inputs / "red.png", "colour": hostile, "id": "hostile"})
    out = tmp_path / "out"
    eg.batch(write_recipe(tmp_path), rows, out=out, provider=CountingProvider(),
             cache=tmp_path / "cache")
    dom = browse(out / "batch.html", tmp_path / "profile", "--dump-dom",
                 "--allow-file-access-from-files")
    assert "PWNED" not in dom.split("<body")[0]  # the title stayed ours
    text = _Text()
    text.feed(dom)
    seen = " ".join(text.parts)
    for item in ("red", "green", "blue", "bad", "hostile"):
        assert item in seen
    assert "not a readable image" in seen
    images = [attrs.get("src") for tag, attrs in text.tags if tag == "img"]
    assert "red/lifestyle.png" in images and "../in/red.png" in images
    assert not any(tag == "script" for tag, _ in text.tags)


@pytest.mark.slow
def test_ctrl_c_mid_batch_loses_nothing_and_a_rerun_pays_only_the_rest(tmp_path: Path) -> None:
    """SIGINT drains (exit 130); what finished is journaled and a re-run pays for the rest only."""
    inputs = image_folder(tmp_path / "in", {f"p{i}": (i * 20, 90, 30) for i in range(8)})
    recipe = write_recipe(tmp_path)
    script = Path(sys.executable).with_name("editgraph")
    with FakeTogether(latency=0.4) as fake:
        environment = {**os.environ, "TOGETHER_API_KEY": "tg-test",
                       "TOGETHER_BASE_URL": fake.base_url,
                       "EDITGRAPH_CACHE_DIR": str(tmp_path / "cache")}
        command = [str(script), "batch", str(recipe), "--over", str(inputs), "--out",
                   str(tmp_path / "out"), "--concurrency", "2"]
        process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(fake.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # polls the fake's log with a deadline: no fixed wait
        assert len(fake.requests) >= 3
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "did not start" in stdout and "run again" in stdout
        finished = journal(tmp_path / "out")
        assert finished and all(line["status"] == "done" for line in finished)
        assert len(finished) < 8
        paid_first = len(fake.billed)
        rerun = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert len(fake.billed) == 16  # 8 items x 2 edits, each paid exactly once overall
        assert paid_first >= 2 * len(finished)
