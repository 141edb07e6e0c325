"""Tests for report.py: the self-contained HTML report, checked in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from edit_providers import png_bytes
from PIL import Image

import editgraph as eg
from editgraph.report import report_from_folder

SCRIPT = "<script>document.title='PWNED'</script>"
ONERROR = "<img src=x onerror=\"document.title='PWNED2';document.body.dataset.pwned=1\">"
HOSTILE_NAME = "night<img src=x onerror=document.title='PWNED3'>"
RED = png_bytes((200, 30, 30), (64, 48))
BLUE = png_bytes((30, 30, 200), (64, 48))


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, if one is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(page: Path, profile: Path, *extra: str) -> str:
    """Load ``page`` in headless Chromium and return what it printed (the DOM with --dump-dom)."""
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary found (install Debian's `chromium` to run this test)")
    completed = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return completed.stdout


class _Text(HTMLParser):
    """Collects the text of a document (what a reader sees, not markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def parse(document: str) -> _Text:
    """The text and elements of an HTML document."""
    parser = _Text()
    parser.feed(document)
    return parser


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with script-laden prompts and a source named like markup, saved, with one node
    renamed in the manifest to markup (as a hand-edited manifest could be)."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "car<i>.png").write_bytes(RED)
    graph = eg.Graph(cache_dir=folder / "cache", width=256, height=256)
    car = graph.image(folder / "car<i>.png", name="car")
    swatch = graph.image(BLUE, name="swatch")
    blue = graph.edit(f"Colour {car} like {swatch} {SCRIPT}", name="blue")
    night = graph.edit(f"Make {blue} a night scene {ONERROR}", name="night", seed=7)
    graph.edit(f"A poster of {night} with {car}", name="poster", output_format="png")
    graph.run(provider=eg.providers.Preview())  # a second run is all cache hits
    out = graph.run(provider=eg.providers.Preview()).save(folder / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["edits"][1]["node"] = HOSTILE_NAME
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def page(saved: Path) -> Path:
    """The report of the saved run, as `editgraph report` writes it."""
    return report_from_folder(saved)


@pytest.fixture(scope="module")
def dom(page: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report's DOM after Chromium loaded it (and ran whatever it would run)."""
    return browse(page, tmp_path_factory.mktemp("profile"), "--dump-dom")


def test_report_is_written_beside_the_manifest(saved: Path, page: Path) -> None:
    """report_from_folder writes OUT_DIR/report.html by default, one file."""
    assert page == saved / "report.html" and page.stat().st_size > 10_000
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")


def test_page_renders_every_node_and_prompt_as_text(dom: str) -> None:
    """Chromium's DOM shows each edit's name and full rewritten prompt as text."""
    text = "".join(parse(dom).parts)
    for name in ("blue", HOSTILE_NAME, "poster"):
        assert name in text
    assert f"Colour image 1 like image 2 {SCRIPT}" in text
    assert f"Make image 1 a night scene {ONERROR}" in text
    assert "A poster of image 1 with image 2" in text


def test_no_injected_script_runs(dom: str, page: Path) -> None:
    """The planted script and onerror handler never run: the title is ours, no marker set."""
    parsed = parse(dom)
    title = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    assert title is not None and "PWNED" not in title.group(1)
    assert html.unescape(title.group(1)) == "editgraph run · out"
    assert "data-pwned" not in dom
    assert not [tag for tag, _ in parsed.tags if tag == "script"]
    assert not [attrs for tag, attrs in parsed.tags if tag == "img" and attrs.get("src") == "x"]
    assert not [attrs for _, attrs in parsed.tags if any(k.startswith("on") for k in attrs)]
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in page.read_text()


def test_references_are_numbered_in_order_with_thumbnails(dom: str) -> None:
    """Each edit lists its inputs as image 1, image 2… with a thumbnail; upstream ones link."""
    parsed = parse(dom)
    sections = re.findall(r'<section class="panel edit".*?</section>', dom, re.DOTALL)
    assert len(sections) == 3
    poster = sections[2]
    assert poster.index("image 1") < poster.index("image 2")
    assert 'href="#edit-2"' in poster  # image 1 of the poster is the night edit
    assert "car&lt;i&gt;.png" in poster  # image 2: the source, its odd name as text
    images = [attrs["src"] or "" for tag, attrs in parsed.tags if tag == "img"]
    # 3 results + 1 + 1 + 2 reference thumbnails, all embedded; the swatch was given as
    # bytes, so a saved run has no file to show it from.
    assert len(images) == 7 and all(src.startswith("data:image/jpeg;base64,") for src in images)
    assert sections[0].count("not available") == 1


def test_parameters_seed_key_timing_and_totals(dom: str, saved: Path) -> None:
    """Per edit: model, seed, parameters, key, state; at the top, the run's totals."""
    manifest = eg.Manifest.model_validate_json((saved / "manifest.json").read_text())
    text = " ".join(" ".join(parse(dom).parts).split())
    for entry in manifest.edits:
        assert entry.key in text and entry.output_hash in text
    assert "seed 7" in text and "output_format png" in text
    assert "black-forest-labs/FLUX.2-pro" in text
    assert "3 edits 0 generated 3 from the cache 0 failed 2 sources $0.0000" in text
    assert text.count("from the cache ($0)") == 3


def test_dag_drawing_is_in_the_page(dom: str) -> None:
    """The graph is drawn inline: sources and edits, the arrows labelled image N."""
    drawing = re.search(r"<svg.*?</svg>", dom, re.DOTALL)
    assert drawing is not None
    text = "".join(parse(drawing.group(0)).parts)
    assert "car_i" in text and "<bytes>" in text and "poster" in text
    assert text.count("image 1") >= 3 and "image 2" in text
    assert "&lt;img src=x" in drawing.group(0)  # the hostile name, as text


def test_page_draws_pictures(page: Path, tmp_path: Path) -> None:
    """A screenshot of the page is not blank: the images and drawing are painted."""
    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile", "--window-size=1200,1600", f"--screenshot={shot}")
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 500


def test_run_report_from_memory(tmp_path: Path) -> None:
    """run.report(path) writes the same page for a run in memory, sources included."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car} blue {SCRIPT}", name="blue")
    run = graph.run(provider=eg.providers.Preview())
    written = run.report(tmp_path / "pages" / "run.html")
    assert written == tmp_path / "pages" / "run.html"
    document = written.read_text()
    assert document.count("data:image/jpeg;base64,") == 2  # the result and its source
    assert "&lt;script&gt;" in document and SCRIPT not in document
    assert "1 run" not in document and ">1</strong>generated" in document


def test_missing_files_show_placeholders(tmp_path: Path) -> None:
    """A saved run whose images or sources are gone still reports, with placeholders."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    graph.edit(f"Paint {graph.image(RED, name='car')} blue", name="blue")
    out = graph.run(provider=eg.providers.Preview()).save(tmp_path / "out")
    (out / "blue.jpg").unlink()
    document = report_from_folder(out, tmp_path / "elsewhere.html").read_text()
    assert "image not found (blue.jpg)" in document and "not available" in document
