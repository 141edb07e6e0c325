"""Helpers shared by the command's tests: run it in-process, write a recipe, check a
one-line error."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner, Result
from edit_providers import png_bytes

from editgraph.cli import main


def invoke(*args: str, input: str | None = None) -> Result:
    """Run the command in-process, as click would from a shell."""
    return CliRunner().invoke(main, list(args), input=input)


def write_recipe(folder: Path, body: str, name: str = "tiny.py") -> Path:
    """A recipe file with a small red source image next to it."""
    (folder / "red.png").write_bytes(png_bytes((255, 0, 0)))
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


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
