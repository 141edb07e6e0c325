"""Tests for the ``editgraph`` command: every subcommand, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_checks import assert_bad_input, invoke, write_recipe
from edit_providers import png_bytes

import editgraph as eg
from editgraph.keys import content_hash
from editgraph.store import DiskStore
from editgraph.testing import FakeTogether

RECOLOUR = Path(__file__).resolve().parents[1] / "recipes" / "recolour.py"
NOTICE = "TOGETHER_API_KEY and BFL_API_KEY are not set"


pytestmark = pytest.mark.usefixtures("offline")


TINY = """\
    import editgraph as eg

    def recipe(colour: str = "blue", steps: int = 2) -> eg.Graph:
        g = eg.Graph()
        previous = g.image("red.png")
        for index in range(steps):
            previous = g.edit(f"Paint {previous} {colour}", name=f"step{index + 1}")
        return g
"""


def test_run_writes_images_and_manifest(tmp_path: Path) -> None:
    """run writes one image per edit and manifest.json, and a one-line summary."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("run", str(recipe), "--out", "out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "step1.jpg", "step2.jpg",
    ]
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.provider == "preview" and manifest.edits_run == 2
    assert result.stdout.count(NOTICE) == 1
    summary = next(line for line in result.stdout.splitlines() if "edits:" in line)
    assert summary.startswith("2 edits: 2 run, 0 cached")
    assert summary.endswith("(2 images + manifest.json)")  # one line, never wrapped


def test_unwritable_out_dir_exits_1_without_traceback(tmp_path: Path) -> None:
    """An --out that cannot be created is one line, exit 1; the results stay cached."""
    recipe = write_recipe(tmp_path, TINY)
    (tmp_path / "taken").write_text("a file, not a folder")
    result = invoke("run", str(recipe), "--out", "taken/out")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: --out taken/out: cannot write")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "0 run, 2 cached" in invoke("run", str(recipe), "--out", "out").stdout


def test_run_default_out_dir_is_named_after_the_recipe(tmp_path: Path) -> None:
    """Without --out, images land in out/<recipe name>/."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe)).exit_code == 0
    assert (tmp_path / "out" / "tiny" / "manifest.json").is_file()


def test_set_changes_a_parameter(tmp_path: Path) -> None:
    """--set colour=green reaches the recipe, checked against its type hint."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("run", str(recipe), "--out", "out", "--set", "colour=green",
                    "--set", "steps=1", "--provider", "preview")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [entry["prompt"] for entry in manifest["edits"]] == ["Paint image 1 green"]
    assert NOTICE not in result.output  # preview chosen explicitly: nothing to announce


def test_second_run_is_all_cached_and_plan_shows_nothing_to_run(tmp_path: Path) -> None:
    """A second run generates nothing; plan then shows 0 to run and $0."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    again = invoke("run", str(recipe), "--out", "out")
    assert again.exit_code == 0
    assert "0 run, 2 cached" in again.stdout
    plan = invoke("plan", str(recipe))
    assert plan.exit_code == 0, plan.output
    assert "0 to run, 2 cached" in plan.stdout
    assert "estimated $0.0000" in plan.stdout


def test_plan_before_running_shows_what_and_why(tmp_path: Path) -> None:
    """plan lists each edit as to run, its rewritten prompt, and the total."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("plan", str(recipe))
    assert result.exit_code == 0, result.output
    assert "Paint image 1 blue" in result.stdout
    assert "new" in result.stdout
    assert "2 to run, 0 cached" in result.stdout and "$0.0600" in result.stdout


def test_cache_only_run(tmp_path: Path) -> None:
    """--cache-only fails with exit 2 before running when an edit is missing, else succeeds."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--cache-only"), "--cache-only", "step1")
    assert invoke("run", str(recipe)).exit_code == 0
    assert invoke("run", str(recipe), "--cache-only").exit_code == 0


def test_missing_recipe(tmp_path: Path) -> None:
    """A recipe file that does not exist: exit 2, one line."""
    assert_bad_input(invoke("run", "nowhere.py"), "nowhere.py", "no such file")
    assert_bad_input(invoke("plan", "nowhere.py"), "no such file")


def test_recipe_with_a_syntax_error(tmp_path: Path) -> None:
    """A recipe that does not parse: exit 2 naming the line."""
    recipe = write_recipe(tmp_path, "def recipe(:\n    pass\n")
    assert_bad_input(invoke("run", str(recipe)), "syntax error at line 1")


def test_recipe_that_raises(tmp_path: Path) -> None:
    """A recipe() that raises: exit 2 with the exception's type and message."""
    recipe = write_recipe(tmp_path, """\
        def recipe(size: int = 3):
            raise RuntimeError("the swatch is missing")
    """)
    assert_bad_input(invoke("run", str(recipe)), "RuntimeError", "the swatch is missing")


def test_recipe_that_fails_at_import(tmp_path: Path) -> None:
    """A recipe module whose top level raises: exit 2, one line."""
    recipe = write_recipe(tmp_path, "import no_such_module_anywhere\n")
    assert_bad_input(invoke("run", str(recipe)), "ModuleNotFoundError")


def test_recipe_without_recipe_function(tmp_path: Path) -> None:
    """A file with no recipe(): exit 2."""
    recipe = write_recipe(tmp_path, "x = 1\n")
    assert_bad_input(invoke("plan", str(recipe)), "no recipe(...) function")


def test_recipe_returning_something_else(tmp_path: Path) -> None:
    """recipe() returning a non-Graph: exit 2 saying what it returned."""
    recipe = write_recipe(tmp_path, "def recipe():\n    return 42\n")
    assert_bad_input(invoke("run", str(recipe)), "must return an eg.Graph", "int")


def test_set_with_the_wrong_type(tmp_path: Path) -> None:
    """--set steps=many for an int parameter: exit 2 naming the parameter."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--set", "steps=many"), "--set steps=many")


def test_set_unknown_name(tmp_path: Path) -> None:
    """--set of a parameter the recipe does not take: exit 2 listing the known ones."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--set", "color=red"),
                     "--set color", "colour, steps")


def test_required_parameter_without_set(tmp_path: Path) -> None:
    """A recipe parameter with no default must be --set: exit 2 saying how."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        def recipe(colour: str) -> eg.Graph:
            g = eg.Graph()
            g.edit(f"A {colour} car", name="car")
            return g
    """)
    assert_bad_input(invoke("plan", str(recipe)), "'colour' has no default", "--set colour=")
    assert invoke("plan", str(recipe), "--set", "colour=red").exit_code == 0


def test_recipe_may_define_dataclasses(tmp_path: Path) -> None:
    """A recipe module is importable like any module (dataclasses look it up in sys.modules)."""
    recipe = write_recipe(tmp_path, """\
        from __future__ import annotations

        import dataclasses

        import editgraph as eg

        @dataclasses.dataclass
        class Look:
            colour: str = "teal"

        def recipe() -> eg.Graph:
            g = eg.Graph()
            g.edit(f"A {Look().colour} car", name="car")
            return g
    """)
    result = invoke("plan", str(recipe))
    assert result.exit_code == 0, result.output
    assert "A teal car" in result.stdout


def test_set_without_equals(tmp_path: Path) -> None:
    """--set colour (no value): exit 2 with the expected form."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--set", "colour"), "NAME=VALUE")


def test_invalid_graph(tmp_path: Path) -> None:
    """A recipe building an invalid graph: exit 2 naming the node and field."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        def recipe():
            g = eg.Graph()
            car = g.image("red.png")
            g.edit(f"Paint {car}", name="paint", steps=30)
            return g
    """)
    assert_bad_input(invoke("run", str(recipe)), "node 'paint': steps")


def test_missing_source_image(tmp_path: Path) -> None:
    """A recipe whose source file is missing: exit 2 naming the source."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        def recipe():
            g = eg.Graph()
            g.image("lorry.png")
            return g
    """)
    assert_bad_input(invoke("plan", str(recipe)), "source 'lorry'", "no such file")


def test_budget_below_the_estimate(tmp_path: Path) -> None:
    """--budget 0.01 below the estimate: exit 2 before anything runs or is written."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--budget", "0.01", "--out", "out"),
                     "budget", "$0.01")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_together_without_a_key(tmp_path: Path, command: str) -> None:
    """--provider together with no TOGETHER_API_KEY: exit 2, one line, no traceback."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke(command, str(recipe), "--provider", "together"),
                     "--provider together", "TOGETHER_API_KEY")


def test_together_run_through_the_fake_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key, runs go to Together (here the loopback fake); a bad key fails without showing it."""
    recipe = write_recipe(tmp_path, TINY)
    secret = "tg-wrong-key-never-printed-987654321"
    with FakeTogether(api_key="tg-the-right-key") as fake:
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        monkeypatch.setenv("TOGETHER_API_KEY", secret)
        refused = invoke("run", str(recipe), "--out", "out")
        monkeypatch.setenv("TOGETHER_API_KEY", "tg-the-right-key")
        accepted = invoke("run", str(recipe), "--out", "out")
    assert refused.exit_code == 1, refused.output
    assert "failed step1: " in refused.stderr and "failed step2: " in refused.stderr
    assert secret not in refused.output
    assert "Traceback" not in refused.output
    assert accepted.exit_code == 0, accepted.output
    assert "2 edits: 2 run, 0 cached" in accepted.stdout
    assert NOTICE not in accepted.output
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.provider != "preview"


def test_failed_edits_exit_1_and_save_the_rest(tmp_path: Path) -> None:
    """When an edit fails, the finished ones are saved and the exit code is 1."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        class Flaky:
            name = "flaky"

            async def generate(self, request):
                if request.node == "bad":
                    raise RuntimeError("service said no")
                return await eg.providers.Preview().generate(request)

        def recipe():
            g = eg.Graph(provider=Flaky())
            car = g.image("red.png")
            g.edit(f"Paint {car} blue", name="good")
            bad = g.edit(f"Paint {car} red", name="bad")
            g.edit(f"Frame {bad}", name="framed")
            return g
    """)
    result = invoke("run", str(recipe), "--out", "out")
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.jpg", "manifest.json"]
    assert "failed bad: " in result.stderr and "service said no" in result.stderr
    assert "failed framed: " in result.stderr
    assert "Traceback" not in result.output


def test_python_dash_m_editgraph_shows_help() -> None:
    """python -m editgraph is the same command."""
    result = subprocess.run(
        [sys.executable, "-m", "editgraph", "--help"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "editgraph run recipes/recolour.py" in result.stdout


# Runs the command in a fresh interpreter and prints its exit code, then every module the
# command loaded beyond what `import editgraph` already had.
_MODULES_LOADED_BY = """\
import sys
import editgraph
before = set(sys.modules)
from editgraph.cli import main
try:
    main(sys.argv[1:], prog_name="editgraph")
except SystemExit as stop:
    code = stop.code
print(code, *sorted(set(sys.modules) - before))
"""


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0), (["--version"], 0), (["nosuchcommand"], 2), (["run", "--help"], 0),
])
def test_help_and_errors_load_no_subcommand_modules(args: list[str], code: int) -> None:
    """--help, --version and an unknown command import none of the subcommands' modules."""
    result = subprocess.run(
        [sys.executable, "-c", _MODULES_LOADED_BY, *args],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    exit_code, *loaded = result.stdout.split("\n")[-2].split()
    assert exit_code == str(code)
    assert "editgraph.cli" in loaded
    assert [name for name in loaded if name != "editgraph.cli" and name.startswith(
        ("editgraph.", "jinja2", "markupsafe", "networkx", "PIL", "httpx"))] == []


def test_console_script_runs_the_recolour_recipe_offline(tmp_path: Path) -> None:
    """The installed `editgraph` script runs recipes/recolour.py offline, then all cached."""
    script = Path(sys.executable).with_name("editgraph")
    assert script.is_file(), f"no console script next to {sys.executable}"
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TOGETHER_API_KEY", "TOGETHER_BASE_URL")}
    environment["EDITGRAPH_CACHE_DIR"] = str(tmp_path / "script-cache")
    out = tmp_path / "tmp"

    def editgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], capture_output=True, text=True,
                              env=environment, cwd=tmp_path, check=False, timeout=120)

    first = editgraph("run", str(RECOLOUR), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "hex.jpg", "manifest.json", "night.jpg", "poster.png", "swatch.jpg",
    ]
    eg.Manifest.model_validate_json((out / "manifest.json").read_text())
    combined = first.stdout + first.stderr
    assert combined.count(NOTICE) == 1
    assert "Traceback" not in combined
    assert any(line.startswith("4 edits: 4 run, 0 cached") and line.endswith("manifest.json)")
               for line in first.stdout.splitlines())

    second = editgraph("run", str(RECOLOUR), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "0 run, 4 cached" in second.stdout

    plan = editgraph("plan", str(RECOLOUR))
    assert plan.returncode == 0, plan.stderr
    assert "0 to run, 4 cached" in plan.stdout and "$0" in plan.stdout


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [
    ["run"], ["plan"], ["show"], ["cache"], ["cache", "info"], ["cache", "prune"],
    ["cache", "clear"], ["report"], ["replay"], ["resume"],
])
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    """Each command's --help shows its usage and at least one example command line."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: main {' '.join(command)}" in result.stdout
    assert "Example" in result.stdout
    assert f"editgraph {' '.join(command)}" in result.stdout


def test_top_level_help_teaches_a_workflow() -> None:
    """editgraph --help lists every command in workflow order and a short session."""
    result = invoke("--help")
    assert result.exit_code == 0
    listing = result.stdout.split("Commands:")[1].strip().splitlines()
    assert [line.split()[0] for line in listing] == [
        "run", "resume", "plan", "batch", "show", "cache", "report", "replay"]
    for step in ("editgraph plan", "editgraph run", "editgraph batch", "editgraph show",
                 "editgraph report",
                 "editgraph cache info", "Exit codes"):
        assert step in result.stdout


# --------------------------------------------------------------------------- bad input


BAD_RECIPES = {
    "syntax": ("def recipe(:\n    pass\n", "syntax error at line 1"),
    "raises": ("def recipe():\n    raise RuntimeError('the swatch is missing')\n",
               "RuntimeError: the swatch is missing"),
    "invalid-graph": (TINY.replace('name=f"step{index + 1}"',
                                   'name=f"step{index + 1}", steps=30'),
                      "node 'step1': steps"),
}


@pytest.mark.parametrize("command", ["run", "plan", "show"])
@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipes_are_one_line_for_every_command(
    tmp_path: Path, command: str, case: str
) -> None:
    """A broken recipe is exit 2 and one line whether it is run, planned or shown."""
    body, fragment = BAD_RECIPES[case]
    recipe = write_recipe(tmp_path, body)
    assert_bad_input(invoke(command, str(recipe)), "tiny.py", fragment)


@pytest.mark.parametrize("command", ["run", "plan", "show"])
def test_bad_set_values_for_every_command(tmp_path: Path, command: str) -> None:
    """A missing recipe, an ill-typed and an unknown --set are exit 2 for run, plan and show."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke(command, "missing.py"), "missing.py", "no such file")
    assert_bad_input(invoke(command, str(recipe), "--set", "steps=two"),
                     "--set steps=two", "integer")
    assert_bad_input(invoke(command, str(recipe), "--set", "shade=red"),
                     "--set shade", "unknown parameter", "colour, steps")


def test_budget_below_the_estimate_calls_no_provider_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: Path
) -> None:
    """--budget under the estimate: exit 2, no request reaches the service, no cache record."""
    recipe = write_recipe(tmp_path, TINY)
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        monkeypatch.setenv("TOGETHER_API_KEY", "tg-test")
        result = invoke("run", str(recipe), "--budget", "0.05", "--out", "out")
        assert fake.requests == []
    assert_bad_input(result, "estimated at $0.0600", "budget of $0.05", "nothing was run")
    assert DiskStore(offline).stats().records == 0
    assert not (tmp_path / "out").exists()


def test_budget_at_the_estimate_runs(tmp_path: Path) -> None:
    """A --budget that covers the estimate runs every edit and spends no more than it."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("run", str(recipe), "--budget", "0.06", "--out", "out")
    assert result.exit_code == 0, result.output
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.edits_run == 2 and manifest.estimated_cost <= 0.06


def test_cache_only_after_a_run_calls_no_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cache-only names the first missing edit before a run, and after it sends nothing."""
    recipe = write_recipe(tmp_path, TINY)
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        monkeypatch.setenv("TOGETHER_API_KEY", "tg-test")
        assert_bad_input(invoke("run", str(recipe), "--cache-only"),
                         "edit 'step1' is not in the cache", "2 edits missing")
        assert fake.requests == []
        assert invoke("run", str(recipe)).exit_code == 0
        sent = len(fake.requests)
        again = invoke("run", str(recipe), "--cache-only", "--out", "again")
        assert len(fake.requests) == sent == 2
    assert again.exit_code == 0, again.output
    assert "2 edits: 0 run, 2 cached" in again.stdout
    assert (tmp_path / "again" / "step2.jpg").is_file()


def test_prompts_are_printed_verbatim_not_as_markup(tmp_path: Path) -> None:
    """Square brackets in a prompt are shown as typed (rich markup is off)."""
    recipe = write_recipe(tmp_path, """\
        import editgraph as eg

        def recipe() -> eg.Graph:
            g = eg.Graph()
            car = g.image("red.png")
            g.edit(f"Put a [bold] sticker [/] on {car}", name="sticker")
            return g
    """)
    for command in ("plan", "show"):
        result = invoke(command, str(recipe))
        assert result.exit_code == 0, result.output
        assert "[bold] sticker [/]" in result.stdout


# --------------------------------------------------------------------------- run output


def test_run_lists_each_edit_then_the_summary(tmp_path: Path) -> None:
    """run prints one line per edit (generated or cached) before the summary line."""
    recipe = write_recipe(tmp_path, TINY)
    first = invoke("run", str(recipe), "--out", "out").stdout.splitlines()
    assert [line.split()[:2] for line in first if "step" in line and "edits:" not in line] == [
        ["generated", "step1.jpg"], ["generated", "step2.jpg"]]
    second = invoke("run", str(recipe), "--out", "out").stdout.splitlines()
    assert [line.split() for line in second if "step" in line] == [
        ["cached", "step1.jpg"], ["cached", "step2.jpg"]]


def test_run_on_a_terminal_shows_a_progress_bar(tmp_path: Path) -> None:
    """On a terminal, run draws a progress bar counting edits; the summary follows."""
    pty = pytest.importorskip("pty")
    script = Path(sys.executable).with_name("editgraph")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TOGETHER_API_KEY", "TOGETHER_BASE_URL", "NO_COLOR")}
    environment.update(EDITGRAPH_CACHE_DIR=str(tmp_path / "tty-cache"), TERM="xterm",
                       COLUMNS="120")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(script), "run", str(RECOLOUR), "--out", str(tmp_path / "tty")],
        stdin=follower, stdout=follower, stderr=follower, env=environment, cwd=tmp_path,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=120) == 0
    output = b"".join(chunks).decode("utf-8", "replace")
    assert "4/4" in output and "cached" in output  # the bar: done/total and cache hits
    assert "\x1b[" in output  # drawn with terminal control sequences
    assert "4 edits: 4 run, 0 cached" in output


# --------------------------------------------------------------------------- show


def test_show_lists_sources_and_edits_in_order(tmp_path: Path) -> None:
    """show prints each source, then each edit in run order with 'image N = name' and model."""
    recipe = write_recipe(tmp_path, TINY)
    result = invoke("show", str(recipe), "--set", "steps=3")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("tiny.py: 1 source, 3 edits")
    assert re.search(r"^red\s+red\.png\s+image/png\s+[0-9a-f]{12}", text, re.MULTILINE)
    assert text.index("step1") < text.index("step2") < text.index("step3")
    assert "image 1 = red" in text and "image 1 = step2" in text
    assert "black-forest-labs/FLUX.2-pro · 1024x768 · seed from key · jpeg" in text
    assert "Paint image 1 blue" in text


def test_show_writes_nothing_and_reads_no_cache(tmp_path: Path, offline: Path) -> None:
    """show spends nothing: it leaves no cache directory behind."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("show", str(recipe)).exit_code == 0
    assert not offline.exists()


def test_show_out_without_svg_is_bad_input(tmp_path: Path) -> None:
    """--out is where the SVG goes; without --svg it is exit 2 saying so."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("show", str(recipe), "--out", "g.svg"), "--svg")


def test_show_svg(tmp_path: Path) -> None:
    """show --svg prints an SVG drawing, or writes it to --out."""
    pytest.importorskip("editgraph.display")
    recipe = write_recipe(tmp_path, TINY)
    printed = invoke("show", str(recipe), "--svg")
    assert printed.exit_code == 0, printed.output
    assert "<svg" in printed.stdout and "step2" in printed.stdout
    written = invoke("show", str(recipe), "--svg", "--out", "graph.svg")
    assert written.exit_code == 0, written.output
    assert "<svg" in (tmp_path / "graph.svg").read_text()
    assert "wrote graph.svg" in written.stdout


# --------------------------------------------------------------------------- cache


def records_line(output: str, label: str) -> str:
    """The value printed after ``label`` by cache info."""
    match = re.search(rf"^{label}\s+(.*?)\s*$", output, re.MULTILINE)
    assert match, output
    return match[1]


def test_cache_info_after_a_run(tmp_path: Path, offline: Path) -> None:
    """cache info shows the directory, one record per edit, sizes and the spend saved."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--set", "steps=3").exit_code == 0
    assert invoke("run", str(recipe), "--set", "steps=3").exit_code == 0  # 3 cache hits
    result = invoke("cache", "info")
    assert result.exit_code == 0, result.output
    assert records_line(result.stdout, "directory") == str(offline)
    assert records_line(result.stdout, "records").startswith("3 ")
    # Three edit outputs plus the source, kept so that a saved run can be replayed.
    assert records_line(result.stdout, "images").startswith("4 (")
    assert re.fullmatch(r"\d+\.\d (KB|MB) on disk", records_line(result.stdout, "size"))
    assert records_line(result.stdout, "saved").startswith("$0.09 ")


def test_cache_dir_option_overrides_the_environment(tmp_path: Path) -> None:
    """--cache-dir points every cache command at another directory."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--cache-dir", "elsewhere").exit_code == 0
    info = invoke("cache", "info", "--cache-dir", "elsewhere")
    assert records_line(info.stdout, "directory") == "elsewhere"
    assert records_line(info.stdout, "records").startswith("2 ")
    assert records_line(invoke("cache", "info").stdout, "records").startswith("0 ")


def plant_old_record(cache: Path, days: float) -> None:
    """A record (and its image) made ``days`` ago, as a long-lived cache would hold."""
    store = DiskStore(cache)
    template = next(iter(store.records()))
    data = png_bytes((1, 2, 3))
    store.put_blob(content_hash(data), data)
    store.put_record(template.model_copy(update={
        "key": "0" * 64, "node": "ancient", "output_hash": content_hash(data),
        "size_bytes": len(data), "created_at": time.time() - days * 86400,
    }))
    store.close()


def test_cache_prune_older_than(tmp_path: Path, offline: Path) -> None:
    """prune --older-than 30d removes only the record made 40 days ago and names it."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe)).exit_code == 0
    plant_old_record(offline, days=40)
    assert DiskStore(offline).stats().records == 3
    result = invoke("cache", "prune", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert re.search(r"removed ancient\s+made 40 d ago", result.stdout)
    assert "removed 1 record," in result.stdout and "2 records" in result.stdout
    assert sorted(r.node for r in DiskStore(offline).records()) == ["step1", "step2"]
    again = invoke("cache", "prune", "--older-than", "4w")
    assert again.exit_code == 0 and again.stdout.startswith("nothing to remove")
    assert "0 run, 2 cached" in invoke("run", str(recipe)).stdout


@pytest.mark.parametrize("age", ["30", "30x", "d", "-3d", "3 days", ""])
def test_cache_prune_bad_age(age: str) -> None:
    """An --older-than that is not a number and a unit is exit 2, one line."""
    assert_bad_input(invoke("cache", "prune", "--older-than", age), "--older-than", "30d")


@pytest.mark.parametrize("age", ["90s", "15m", "2h", "1.5d", "2W"])
def test_cache_prune_accepts_every_unit(age: str) -> None:
    """s, m, h, d and w (either case, decimals allowed) are accepted."""
    assert invoke("cache", "prune", "--older-than", age).exit_code == 0


def test_cache_prune_by_size(tmp_path: Path, offline: Path) -> None:
    """prune --max-size removes the oldest records until the images fit."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe)).exit_code == 0
    plant_old_record(offline, days=1)
    sizes = {r.node: r.size_bytes for r in DiskStore(offline).records()}
    limit = sizes["step1"] + sizes["step2"]
    result = invoke("cache", "prune", "--max-size", f"{limit}B")
    assert result.exit_code == 0, result.output
    assert "removed ancient" in result.stdout and "removed 1 record," in result.stdout
    assert sorted(r.node for r in DiskStore(offline).records()) == ["step1", "step2"]
    assert invoke("cache", "prune", "--max-size", "0.001KB").exit_code == 0
    assert DiskStore(offline).stats().records == 0


@pytest.mark.parametrize("size", ["500XB", "MB", "lots"])
def test_cache_prune_bad_size(size: str) -> None:
    """A --max-size that is not a number and a unit is exit 2, one line."""
    assert_bad_input(invoke("cache", "prune", "--max-size", size), "--max-size", "500MB")


def test_cache_prune_needs_an_age_or_a_size() -> None:
    """prune without --older-than or --max-size is exit 2 saying which to give."""
    assert_bad_input(invoke("cache", "prune"), "--older-than", "--max-size")


def test_cache_clear(tmp_path: Path, offline: Path) -> None:
    """clear asks first (no changes nothing), --yes clears without asking."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe)).exit_code == 0
    declined = invoke("cache", "clear", input="n\n")
    assert declined.exit_code == 1
    assert "Remove 2 records and 3 images" in declined.stderr  # 2 outputs + the source
    assert DiskStore(offline).stats().records == 2
    cleared = invoke("cache", "clear", "--yes")
    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.startswith("removed 2 records and 3 images")
    assert DiskStore(offline).stats().records == 0
    assert "2 run, 0 cached" in invoke("run", str(recipe)).stdout


def test_cache_clear_confirmed_interactively(tmp_path: Path, offline: Path) -> None:
    """Answering y to clear's question clears the cache."""
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe)).exit_code == 0
    assert invoke("cache", "clear", input="y\n").exit_code == 0
    assert DiskStore(offline).stats().records == 0


def test_unusable_cache_dir_is_one_line(tmp_path: Path) -> None:
    """A --cache-dir under a file is exit 2 with the store's message, for run and cache."""
    recipe = write_recipe(tmp_path, TINY)
    (tmp_path / "file").write_text("not a directory")
    assert_bad_input(invoke("cache", "info", "--cache-dir", "file/cache"), "cannot be opened")
    assert_bad_input(invoke("run", str(recipe), "--cache-dir", "file/cache"), "cannot be opened")


def test_reading_commands_leave_a_missing_cache_folder_unmade(tmp_path: Path) -> None:
    """cache info/verify/prune/clear and plan (of a recipe and a batch) read a missing
    cache folder as empty and do not make it (nor its parent)."""
    recipe = write_recipe(tmp_path, TINY)
    missing = tmp_path / "not" / "here"
    info = invoke("cache", "info", "--cache-dir", str(missing))
    assert info.exit_code == 0, info.output
    assert records_line(info.stdout, "records").startswith("0 ")
    assert records_line(info.stdout, "images").startswith("0 ")
    assert records_line(info.stdout, "saved").startswith("$0.00")
    verify = invoke("cache", "verify", "--cache-dir", str(missing))
    assert verify.exit_code == 0 and "checked 0 records and 0 images: no damage" in verify.stdout
    prune = invoke("cache", "prune", "--older-than", "1d", "--cache-dir", str(missing))
    assert prune.exit_code == 0 and "nothing to remove" in prune.stdout, prune.output
    clear = invoke("cache", "clear", "--yes", "--cache-dir", str(missing))
    assert clear.exit_code == 0 and "removed 0 records" in clear.stdout, clear.output
    plan = invoke("plan", str(recipe), "--cache-dir", str(missing))
    assert plan.exit_code == 0 and "2 to run, 0 cached" in plan.stdout, plan.output
    photo = write_recipe(tmp_path, """\
        import pathlib

        import editgraph as eg

        def recipe(photo: pathlib.Path = pathlib.Path("red.png")) -> eg.Graph:
            g = eg.Graph()
            g.edit(f"Paint {g.image(photo)} blue", name="paint")
            return g
    """, name="photo.py")
    planned = invoke("plan", str(photo), "--over", "*.png", "--cache-dir", str(missing))
    assert planned.exit_code == 0 and "1 item: 1 edits to run, 0 cached" in planned.stdout, (
        planned.output)
    assert not (tmp_path / "not").exists()
    assert invoke("run", str(recipe), "--cache-dir", str(missing)).exit_code == 0
    assert "0 to run, 2 cached" in invoke("plan", str(recipe), "--cache-dir", str(missing)).stdout


def test_reading_commands_refuse_a_cache_folder_that_could_not_be_made(tmp_path: Path) -> None:
    """A missing --cache-dir under a file is still a one-line refusal for every command
    that only reads, naming the file in the way."""
    recipe = write_recipe(tmp_path, TINY)
    (tmp_path / "file").write_text("not a directory")
    for args in (("cache", "info"), ("cache", "verify"), ("cache", "clear", "--yes"),
                 ("cache", "prune", "--older-than", "1d"), ("plan", str(recipe))):
        assert_bad_input(invoke(*args, "--cache-dir", "file/deeper/cache"),
                         "cannot be opened", "'file' is not a folder")


# --------------------------------------------------------------------------- report, replay


def test_report_of_a_folder_without_a_manifest(tmp_path: Path) -> None:
    """report of a folder no run wrote is exit 2 saying what to pass."""
    (tmp_path / "empty").mkdir()
    assert_bad_input(invoke("report", "empty"), "no manifest.json")


def test_report_writes_html(tmp_path: Path) -> None:
    """report OUT_DIR writes OUT_DIR/report.html (or --out) and says where."""
    pytest.importorskip("editgraph.report")
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    result = invoke("report", "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").is_file()
    assert "wrote " in result.stdout and "report.html" in result.stdout
    elsewhere = invoke("report", "out", "--out", "page.html")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (tmp_path / "page.html").is_file()


def test_replay_of_a_missing_target(tmp_path: Path) -> None:
    """replay of a file that does not exist is exit 2, one line."""
    assert_bad_input(invoke("replay", "gone/manifest.json"), "no such file")


def test_replay_verify(tmp_path: Path, offline: Path) -> None:
    """replay --verify of a saved run reproduces every edit, from the cache or afresh."""
    pytest.importorskip("editgraph.replay")
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    cached = invoke("replay", "out/manifest.json", "--verify")
    assert cached.exit_code == 0, cached.output
    assert "2 edits: 0 generated, 2 cached" in cached.stdout
    assert "verified" in cached.stdout
    assert invoke("cache", "clear", "--yes").exit_code == 0
    fresh = invoke("replay", "out/manifest.json", "--verify")
    assert fresh.exit_code == 0, fresh.output
    assert "2 edits: 2 generated, 0 cached" in fresh.stdout


def test_replay_verify_reports_an_output_that_differs(tmp_path: Path) -> None:
    """replay --verify exits 1 naming the edit whose recorded output is not reproduced."""
    pytest.importorskip("editgraph.replay")
    recipe = write_recipe(tmp_path, TINY)
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["edits"][1]["output_hash"] = "0" * 64  # the record no longer matches step2
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("replay", "out", "--verify")
    assert result.exit_code == 1, result.output
    assert "1 not reproduced" in result.stdout
    assert result.stderr.startswith("mismatch step2: ")
    assert "Traceback" not in result.output


def test_replay_of_something_that_is_not_a_record(tmp_path: Path) -> None:
    """replay of a file editgraph did not write is exit 2, one line."""
    pytest.importorskip("editgraph.replay")
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    assert_bad_input(invoke("replay", "notes.json"), "notes.json")


def test_bfl_without_a_key_is_bad_input(tmp_path: Path) -> None:
    """--provider bfl without BFL_API_KEY exits 2 naming the variable."""
    recipe = write_recipe(tmp_path, TINY)
    assert_bad_input(invoke("run", str(recipe), "--provider", "bfl"), "--provider bfl", "BFL_API_KEY")


def test_bfl_key_alone_makes_bfl_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TOGETHER_API_KEY, BFL_API_KEY picks BFL; the summary shows the charged cost."""
    from editgraph.testing import FakeBFL

    recipe = write_recipe(tmp_path, TINY)
    with FakeBFL(api_key="bfl_Q7x2Kd9Zt4") as fake:
        monkeypatch.setenv("BFL_API_KEY", "bfl_Q7x2Kd9Zt4")
        monkeypatch.setenv("BFL_BASE_URL", fake.base_url)
        result = invoke("run", str(recipe), "--out", "out")
        billed = fake.billed
    assert result.exit_code == 0, result.output
    assert NOTICE not in result.output and len(billed) == 2
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.provider == "bfl"
    assert "as charged" in result.stdout


def test_malformed_bfl_key_exits_2_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BFL_API_KEY with a control character is a one-line configuration error, exit 2."""
    recipe = write_recipe(tmp_path, TINY)
    monkeypatch.setenv("BFL_API_KEY", "bfl-se\x07cret")
    result = invoke("run", str(recipe))
    assert_bad_input(result, "BFL_API_KEY", "position 7")
    assert "cret" not in result.output
