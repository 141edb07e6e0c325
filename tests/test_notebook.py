"""The example notebook, executed top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def html_of(cell: Any) -> str:
    """The HTML a code cell displayed (its rich outputs), joined."""
    return "".join(
        output.get("data", {}).get("text/html", "")
        for output in cell.outputs
        if output.output_type in ("execute_result", "display_data")
    )


def text_of(cell: Any) -> str:
    """What a code cell printed to stdout."""
    return "".join(
        output.text for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """explore.ipynb run in a fresh folder (its assets linked in) with a private cache."""
    folder = tmp_path_factory.mktemp("notebook")
    shutil.copy(EXAMPLES / "explore.ipynb", folder)
    (folder / "assets").symlink_to(EXAMPLES / "assets", target_is_directory=True)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("EDITGRAPH_CACHE_DIR", str(folder / "cache"))
        environment.delenv("TOGETHER_API_KEY", raising=False)
        notebook = nbformat.read(folder / "explore.ipynb", as_version=4)
        client = nbclient.NotebookClient(
            notebook, kernel_name="python3", timeout=180,
            resources={"metadata": {"path": str(folder)}},
        )
        client.execute()
    return notebook, folder


def code_cells(notebook: Any) -> list[Any]:
    """The notebook's code cells, in order."""
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_cell_runs_without_error(executed: tuple[Any, Path]) -> None:
    """Top to bottom, no cell raises."""
    notebook, _ = executed
    errors = [output for cell in code_cells(notebook) for output in cell.outputs
              if output.output_type == "error"]
    assert errors == []


def test_the_graph_and_results_show_as_pictures(executed: tuple[Any, Path]) -> None:
    """The graph cell shows an SVG; the run cell thumbnails; a result its image."""
    cells = code_cells(executed[0])
    assert "<svg" in html_of(cells[1]) and "image 1" in html_of(cells[1])
    assert html_of(cells[2]).count("data:image/jpeg;base64,") == 3
    assert "data:image/jpeg;base64," in html_of(cells[3])


def test_a_changed_step_reruns_alone(executed: tuple[Any, Path]) -> None:
    """After changing the mood, blue is cached and the two steps after it run again."""
    cells = code_cells(executed[0])
    assert "2 to run, 1 cached" in text_of(cells[4])
    assert html_of(cells[4]).count("✓ cached") == 1  # the drawing, before the run
    assert "cached: ['blue']" in text_of(cells[5])
    assert "2 run, 1 cached" in html_of(cells[5])


def test_sweep_shows_variants_then_their_images(executed: tuple[Any, Path]) -> None:
    """The sweep lists three variants before its run and shows three images after."""
    cells = code_cells(executed[0])
    assert html_of(cells[6]).count("not run yet") == 3
    assert html_of(cells[7]).count("data:image/jpeg;base64,") == 3
    assert "data:image/jpeg;base64," in html_of(cells[8])


def test_report_provenance_and_replay(executed: tuple[Any, Path]) -> None:
    """The report is written, the provenance read back, and the replay verified."""
    notebook, folder = executed
    cells = code_cells(notebook)
    assert (folder / "out" / "explore" / "report.html").is_file()
    assert "final-1 seed" in text_of(cells[10])
    replayed = "".join(output.get("data", {}).get("text/plain", "")
                       for output in cells[11].outputs)
    assert "cached=['final-1']" in replayed and "mismatches={}" in replayed


# -- interrupts in a kernel ------------------------------------------------------------

SIX_EDITS = """
import editgraph as eg
g = eg.Graph(width=256, height=256, concurrency=2)
car = g.image("car.png")
for index in range(6):
    g.edit(f"Paint {car} in shade {index}", name=f"shade{index}")
try:
    run = CALL
except eg.RunInterrupted as exc:
    print("stopped", exc.run.abandoned, sorted(exc.run), exc.run.not_run, flush=True)
    raise
"""


BATCH_CELL = """
from pathlib import Path
import editgraph as eg

def recipe(photo: Path) -> eg.Graph:
    g = eg.Graph(width=256, height=256)
    cut = g.edit(f"Cut out {g.image(photo)}", name="cutout")
    g.edit(f"A lifestyle shot of {cut}", name="lifestyle")
    return g

result = eg.batch(recipe, "in", out="out", concurrency=2)
s = result.summary
print("summary", s.interrupted, s.items, s.in_flight, s.unfinished, s.not_started, flush=True)
"""


def interrupted_cell(tmp_path: Path, call: str, interrupts: int) -> tuple[dict[str, Any], str, int]:
    """Run six two-at-a-time edits by ``call`` (or, for ``"eg.batch"``, a batch of six
    two-edit items, two at a time) in a real kernel against FakeTogether; once two are in
    flight, interrupt the kernel ``interrupts`` times (the second after the first's
    notice). Returns the cell's reply, everything it printed, and the fake's generation
    requests."""
    import os
    import queue
    import time

    from jupyter_client.manager import start_new_kernel
    from PIL import Image

    from editgraph.testing import FakeTogether

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "car.png")
    (tmp_path / "in").mkdir()
    for index in range(6):
        Image.new("RGB", (64, 48), (index * 40, 90, 30)).save(tmp_path / "in" / f"p{index}.png")
    code = BATCH_CELL if call == "eg.batch" else SIX_EDITS.replace("CALL", call)
    # Each generation takes 8 s: the interrupts (and the notice read between them) must
    # land while the first two are in flight; 3 s was flaky on a loaded machine, where a
    # late interrupt found them finished and two more started.
    with FakeTogether(api_key="nb-key", latency=8.0) as fake:
        env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
        env.update(TOGETHER_API_KEY="nb-key", TOGETHER_BASE_URL=fake.base_url,
                   EDITGRAPH_CACHE_DIR=str(tmp_path / "cache"))
        manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
        printed: list[str] = []

        def read_until(done: Any, seconds: float = 60.0) -> None:
            end = time.monotonic() + seconds
            while not done():
                assert time.monotonic() < end, f"timed out; printed: {printed}"
                try:
                    message = client.get_iopub_msg(timeout=0.05)
                except queue.Empty:
                    continue
                if message["msg_type"] == "stream":
                    printed.append(message["content"]["text"])

        try:
            # stop_on_error=False: the kernel would otherwise abort requests that reach
            # it before its "stop aborting" message (a race), the next cell among them.
            cell = client.execute(code, stop_on_error=False)
            read_until(lambda: len(fake.requests) >= 2)
            manager.interrupt_kernel()
            if interrupts > 1:
                read_until(lambda: "interrupted:" in "".join(printed))
                manager.interrupt_kernel()
            reply = client.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != cell:
                reply = client.get_shell_msg(timeout=60)
            client.execute("print('end of output', flush=True)")
            read_until(lambda: "end of output" in "".join(printed))
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
        return reply["content"], "".join(printed), len(fake.requests)


@pytest.mark.parametrize("call", ["g.run()", "await g.arun()"])
def test_a_notebook_interrupt_drains_the_run(tmp_path: Path, call: str) -> None:
    """Interrupting the kernel during g.run() (a worker thread) or await g.arun() (the
    kernel's loop): the two edits in flight finish and are kept, none starts after, and
    the cell ends with RunInterrupted."""
    reply, printed, requests = interrupted_cell(tmp_path, call, interrupts=1)
    assert reply["status"] == "error" and reply["ename"] == "RunInterrupted", reply
    assert requests == 2, printed
    assert "interrupted: finishing 2 edit(s) in flight (shade0, shade1)" in printed
    assert ("stopped False ['shade0', 'shade1'] ['shade2', 'shade3', 'shade4', 'shade5']"
            in printed), printed


def test_a_second_notebook_interrupt_abandons_g_run(tmp_path: Path) -> None:
    """A second interrupt during g.run() abandons at once, naming what may be billed."""
    reply, printed, requests = interrupted_cell(tmp_path, "g.run()", interrupts=2)
    assert reply["status"] == "error" and reply["ename"] == "RunInterrupted", reply
    assert requests == 2
    assert "abandoned: shade0, shade1 may have been billed without a result" in printed
    assert "stopped True [] " in printed, printed


def test_a_notebook_interrupt_drains_eg_batch(tmp_path: Path) -> None:
    """Interrupting the kernel during eg.batch() (a worker thread): the two cut-outs in
    flight finish, nothing starts after, and eg.batch returns the drained pass."""
    reply, printed, requests = interrupted_cell(tmp_path, "eg.batch", interrupts=1)
    assert reply["status"] == "ok", (reply, printed)
    assert requests == 2, printed
    assert "interrupted: no new item or edit starts; finishing 2 edit(s) in flight" in printed
    assert "summary True 0 2 2 4" in printed, printed


def test_a_second_notebook_interrupt_abandons_eg_batch(tmp_path: Path) -> None:
    """A second interrupt during eg.batch() abandons it at once: the cell ends with a
    KeyboardInterrupt naming each item/edit that may be billed."""
    reply, printed, requests = interrupted_cell(tmp_path, "eg.batch", interrupts=2)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert requests == 2, printed
    assert reply["evalue"].startswith("batch abandoned: "), reply
    assert "p0/cutout" in reply["evalue"] and "p1/cutout" in reply["evalue"], reply
    assert "summary" not in printed
