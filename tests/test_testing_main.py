"""``python -m editgraph.testing serve together``, run as a user runs it: a real process."""

from __future__ import annotations

import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import editgraph as eg
from editgraph.testing import FakeTogether
from editgraph.testing.__main__ import FAKES, cli

RECOLOUR = Path(__file__).resolve().parent.parent / "recipes" / "recolour.py"


class Lines:
    """The lines a process prints, read by a thread so a test waits on them with a bound."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._lines: queue.Queue[str] = queue.Queue()
        stream = process.stdout
        self._reader = threading.Thread(
            target=lambda: [self._lines.put(line) for line in stream], daemon=True
        )
        self._reader.start()

    def next(self, timeout: float = 60.0) -> str:
        """The next line, stripped; fails the test after ``timeout`` seconds."""
        try:
            return self._lines.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s") from None

    def rest(self, timeout: float = 30.0) -> list[str]:
        """Every remaining line, once the process has closed its output."""
        self._reader.join(timeout)
        assert not self._reader.is_alive()
        lines = []
        while not self._lines.empty():
            lines.append(self._lines.get().strip())
        return lines


@pytest.fixture
def served(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """The fake served from the shell with a little latency; killed if a test leaves it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "editgraph.testing", "serve", "together", "--latency", "0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_serve_together_runs_a_recipe_from_the_shell_and_stops_on_ctrl_c(
    served: subprocess.Popen[str], tmp_path: Path
) -> None:
    """It prints its base URL, `editgraph run` completes a recipe against it, SIGINT exits 0."""
    output = Lines(served)
    base_url = output.next()
    assert base_url.startswith("http://127.0.0.1:")
    banner = [output.next() for _ in range(4)]
    assert banner[1:3] == [f"export TOGETHER_BASE_URL={base_url}", "export TOGETHER_API_KEY=any-key"]
    assert banner[3] == "Press Ctrl-C to stop."

    environment = {key: value for key, value in os.environ.items() if not key.endswith("_PROXY")}
    environment.update(TOGETHER_BASE_URL=base_url, TOGETHER_API_KEY="any-key",
                       EDITGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    script = Path(sys.executable).with_name("editgraph")
    out = tmp_path / "out"
    result = subprocess.run(
        [str(script), "run", str(RECOLOUR), "--out", str(out)],
        capture_output=True, text=True, env=environment, cwd=tmp_path, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "4 edits: 4 run, 0 cached" in result.stdout
    manifest = eg.Manifest.model_validate_json((out / "manifest.json").read_text())
    assert {edit.provider for edit in manifest.edits} == {"together"}

    served.send_signal(signal.SIGINT)
    assert served.wait(timeout=30) == 0
    assert output.rest() == ["stopped: 4 generation request(s), 4 generation(s) billed"]


def test_serve_bfl_runs_a_recipe_from_the_shell(tmp_path: Path) -> None:
    """`serve bfl` prints BFL's variables; `editgraph run` with them is billed by the fake."""
    process = subprocess.Popen(
        [sys.executable, "-m", "editgraph.testing", "serve", "bfl", "--api-key", "bfl-k3y-9Zq"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        output = Lines(process)
        base_url = output.next()
        banner = [output.next() for _ in range(4)]
        assert banner[1:3] == [f"export BFL_BASE_URL={base_url}", "export BFL_API_KEY=bfl-k3y-9Zq"]
        environment = {key: value for key, value in os.environ.items()
                       if not key.endswith("_PROXY")}
        environment.update(BFL_BASE_URL=base_url, BFL_API_KEY="bfl-k3y-9Zq",
                           EDITGRAPH_CACHE_DIR=str(tmp_path / "cache"))
        script = Path(sys.executable).with_name("editgraph")
        result = subprocess.run(
            [str(script), "run", str(RECOLOUR), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=environment, cwd=tmp_path, check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "4 edits: 4 run, 0 cached" in result.stdout and "as charged" in result.stdout
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert output.rest() == ["stopped: 4 generation request(s), 4 generation(s) billed"]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    """A port already taken is a one-line error and exit 1, not a traceback."""
    with FakeTogether() as fake:
        port = fake.base_url.rsplit(":", 1)[1]
        result = subprocess.run(
            [sys.executable, "-m", "editgraph.testing", "serve", "together", "--port", port],
            capture_output=True, text=True, cwd=tmp_path, check=False, timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: could not start the together fake")
    assert "Traceback" not in result.stderr


def test_serve_lists_each_fake_with_its_options() -> None:
    """`serve --help` lists the fakes; each takes the common options and its own."""
    runner = CliRunner()
    listing = runner.invoke(cli, ["serve", "--help"])
    assert listing.exit_code == 0 and "together" in listing.output
    together = runner.invoke(cli, ["serve", "together", "--help"])
    for option in ("--port", "--latency", "--fault-rate", "--honour", "--reject-data-uris"):
        assert option in together.output
    refused = runner.invoke(cli, ["serve", "together", "--fault-rate", "2"])
    assert refused.exit_code == 2 and "fault-rate" in refused.output


def test_each_option_is_a_constructor_parameter_of_its_fake() -> None:
    """Every option of every fake (common or its own) names a parameter of its constructor."""
    for name, entry in FAKES.items():
        command = cli.commands["serve"].commands[name]  # type: ignore[attr-defined]
        accepted = set(inspect.signature(entry.factory).parameters)
        assert {param.name for param in command.params} <= accepted, name


#: A child's start-up that makes aiohttp unimportable (as without the ``testing`` extra),
#: then runs the command named on its own command line as ``python -m`` would.
_WITHOUT_AIOHTTP = """\
import importlib.abc, runpy, sys

class NoAiohttp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoAiohttp())
sys.argv = [sys.argv[1], *sys.argv[2:]]
if sys.argv[0] == "-c":
    exec(sys.argv[1])
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _without_aiohttp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_AIOHTTP, *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("fake", ["together", "bfl"])
def test_serve_without_the_testing_extra_is_one_line(fake: str) -> None:
    """Without aiohttp (the ``testing`` extra), ``serve`` is one line saying what to
    install, exit 2, no traceback, and serves nothing."""
    result = _without_aiohttp("editgraph.testing", "serve", fake, "--port", "0")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "pip install 'editgraph[testing]'" in lines[0]
    assert "aiohttp" in lines[0]


def test_importing_a_fake_without_the_testing_extra_names_it() -> None:
    """``from editgraph.testing import FakeTogether`` without aiohttp fails naming the extra
    to install; FakeBFL, which does not use aiohttp, still imports."""
    result = _without_aiohttp("-c", (
        "from editgraph.testing import FakeBFL\n"
        "try:\n"
        "    from editgraph.testing import FakeTogether\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, '|', exc)\n"
    ))
    assert result.returncode == 0, result.stderr
    name, message = result.stdout.strip().split(" | ")
    assert name == "aiohttp" and "pip install 'editgraph[testing]'" in message
