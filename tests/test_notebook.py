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
