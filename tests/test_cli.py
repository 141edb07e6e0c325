"""Tests for the ``editgraph`` command: run and plan, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from edit_providers import png_bytes

import editgraph as eg
from editgraph.cli import main
from editgraph.testing import FakeTogether

RECOLOUR = Path(__file__).resolve().parents[1] / "recipes" / "recolour.py"
NOTICE = "TOGETHER_API_KEY is not set"


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No API key, a private cache directory, and the temp dir as working directory."""
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


def invoke(*args: str) -> Result:
    """Run the command in-process, as click would from a shell."""
    return CliRunner().invoke(main, list(args))


def write_recipe(folder: Path, body: str, name: str = "tiny.py") -> Path:
    """A recipe file with a small red source image next to it."""
    (folder / "red.png").write_bytes(png_bytes((255, 0, 0)))
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


TINY = """\
    import editgraph as eg

    def recipe(colour: str = "blue", steps: int = 2) -> eg.Graph:
        g = eg.Graph()
        previous = g.image("red.png")
        for index in range(steps):
            previous = g.edit(f"Paint {previous} {colour}", name=f"step{index + 1}")
        return g
"""


def assert_bad_input(result: Result, *fragments: str) -> None:
    """Exit 2 with a one-line error message on stderr and no traceback."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: "), message
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    )
    for fragment in fragments:
        assert fragment in message, message


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
