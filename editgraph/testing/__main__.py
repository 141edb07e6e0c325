"""``python -m editgraph.testing serve NAME``: run one of the fake services from the shell.

It prints the base URL on the first line (so a script can read it), then how to point
editgraph at it, and serves until Ctrl-C (SIGINT) or SIGTERM; it exits 0 after saying
how many requests it answered and how many generations it would have billed.

Each fake is one entry of ``FAKES``: its class, a line of help, and the options only it
takes. Every fake takes the common options (``--port``, ``--latency``,
``--fault-rate``, ``--fault-seed``, ``--api-key``, ``--url-ttl``), passed to its
constructor under the same names. Adding a fake is one entry.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import click


def _require_the_extra() -> None:
    """Without the ``testing`` extra: one line saying what to install, exit 2 (rather
    than a traceback ending in "No module named 'aiohttp'")."""
    try:
        import aiohttp  # noqa: F401  (FakeTogether fetches URL references with it)
    except ImportError as exc:
        click.echo(f"error: the fakes need the testing extra ({exc}): "
                   "pip install 'editgraph[testing]'", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    _require_the_extra()

# After the check: together.py needs aiohttp.
from .bfl import FakeBFL
from .together import FakeTogether

__all__ = ["FAKES", "Fake", "FakeEntry", "main"]


class Fake(Protocol):
    """What ``serve`` needs of a fake: start, stop, its base URL and its logs."""

    @property
    def base_url(self) -> str: ...
    @property
    def requests(self) -> list[dict[str, Any]]: ...
    @property
    def billed(self) -> list[dict[str, Any]]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class FiniteRange(click.FloatRange):
    """click's FloatRange that also refuses nan and infinity (its bounds let nan through:
    every comparison with nan is false)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


@dataclass(frozen=True)
class FakeEntry:
    """One fake ``serve`` can run: how to build it, what to tell the user, its own options."""

    factory: Callable[..., Fake]
    help: str
    #: Shell lines that point editgraph at the fake; ``{base_url}`` and ``{api_key}`` filled in.
    setup: tuple[str, ...]
    options: tuple[click.Option, ...] = ()


FAKES: dict[str, FakeEntry] = {
    "together": FakeEntry(
        factory=FakeTogether,
        help="FakeTogether: Together AI's FLUX.2 image API (POST /v1/images/generations).",
        setup=(
            "export TOGETHER_BASE_URL={base_url}",
            "export TOGETHER_API_KEY={api_key}",
        ),
        options=(
            click.Option(
                ["--rate-limit"], type=FiniteRange(min=0, min_open=True), default=None,
                help="Requests per minute; beyond it a 429 with Retry-After.",
            ),
            click.Option(
                ["--honour"], type=click.Choice(["both", "guidance", "guidance_scale"]),
                default="both", show_default=True,
                help="Which guidance field the fake reads.",
            ),
            click.Option(
                ["--accept-data-uris/--reject-data-uris"], default=True, show_default=True,
                help="Whether data: URIs are accepted as reference images.",
            ),
        ),
    ),
    "bfl": FakeEntry(
        factory=FakeBFL,
        help="FakeBFL: Black Forest Labs' asynchronous FLUX.2 API (submit, then poll).",
        setup=(
            "export BFL_BASE_URL={base_url}",
            "export BFL_API_KEY={api_key}",
        ),
        options=(
            click.Option(
                ["--max-active"], type=click.IntRange(min=1), default=24, show_default=True,
                help="Tasks open at once before a submit gets a 429.",
            ),
        ),
    ),
}


def _common_options() -> list[click.Option]:
    return [
        click.Option(["--port"], type=click.IntRange(0, 65535), default=0, show_default=True,
                     help="Port on 127.0.0.1 (0: any free port)."),
        click.Option(["--latency"], type=FiniteRange(min=0), default=0.0, show_default=True,
                     help="Seconds each generation takes."),
        click.Option(["--fault-rate"], type=FiniteRange(0, 1), default=0.0,
                     show_default=True,
                     help="Fraction of generations that fail (5xx, 429 or a dropped connection)."),
        click.Option(["--fault-seed"], type=int, default=0, show_default=True,
                     help="Seed of the draw of faults."),
        click.Option(["--api-key"], default=None,
                     help="The only key accepted (default: any key)."),
        click.Option(["--url-ttl"], type=FiniteRange(min=0), default=600.0,
                     show_default=True, help="Seconds a result URL stays fetchable."),
        click.Option(["--exif-orientation"], type=click.Choice(["ignore", "honour"]),
                     default="ignore", show_default=True,
                     help="Whether a reference's EXIF orientation tag turns it when read."),
        click.Option(["--animated-references"], type=click.Choice(["first_frame", "refuse"]),
                     default="first_frame", show_default=True,
                     help="How an animated reference is read."),
    ]


def _serve(name: str, entry: FakeEntry, settings: dict[str, Any]) -> None:
    """Run the fake until SIGINT or SIGTERM, then stop it and report."""
    fake = entry.factory(**settings)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            fake.start()
        except RuntimeError as exc:
            cause = exc.__cause__ or exc
            raise click.ClickException(f"could not start the {name} fake: {cause}") from exc
        try:
            api_key = settings.get("api_key") or "any-key"
            click.echo(fake.base_url)
            click.echo(f"{type(fake).__name__} is serving. Point editgraph at it:")
            for line in entry.setup:
                click.echo("  " + line.format(base_url=fake.base_url, api_key=api_key))
            click.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()
            stopping.wait()
        finally:
            fake.stop()
        click.echo(
            f"stopped: {len(fake.requests)} generation request(s), "
            f"{len(fake.billed)} generation(s) billed"
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _command(name: str, entry: FakeEntry) -> click.Command:
    def callback(**settings: Any) -> None:
        _serve(name, entry, settings)

    return click.Command(
        name, callback=callback, help=entry.help, params=[*_common_options(), *entry.options]
    )


@click.group()
def cli() -> None:
    """Fakes of the image services, for trying recipes without an account or network."""


@cli.group()
def serve() -> None:
    """Serve a fake on 127.0.0.1 until Ctrl-C; prints its base URL first."""


for _name, _entry in FAKES.items():
    serve.add_command(_command(_name, _entry))


def main(argv: Sequence[str] | None = None) -> None:
    """The ``python -m editgraph.testing`` command."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="python -m editgraph.testing")


if __name__ == "__main__":
    main()
