"""FakeTogether in a child process, so it plays a remote service: off our interpreter's GIL.

In the same process, the fake's own work (about 1 ms of CPU per generation: HTTP, JSON,
reading references, joining the picture) would compete with the client for one GIL
and be counted as editgraph's. A real service runs elsewhere; so does this one. It is
still FakeTogether over real loopback HTTP, with the same ``latency`` and ``rate_limit``.

Run as ``python -m benchmarks.fake_service '{"latency": 0.2}'``: it prints its base URL,
then answers each ``stats`` line on stdin with a JSON line (requests, billed, cpu seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass(frozen=True)
class ServiceStats:
    """What the fake has seen so far, and the CPU time it has spent."""

    requests: int
    billed: int
    cpu_seconds: float


class FakeService:
    """A FakeTogether (``server="fake"``) or the light server of ``benchmarks.light_server``
    (``server="light"``) running in a child process; use as a context manager."""

    def __init__(self, server: str = "fake", **settings: Any) -> None:
        if server not in ("fake", "light"):
            raise ValueError(f"server must be 'fake' or 'light', got {server!r}")
        self.server = server
        self.settings = settings
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-m",
             "benchmarks.fake_service" if self.server == "fake" else "benchmarks.light_server",
             json.dumps(self.settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self._process.kill()
            raise RuntimeError(f"{self.server} server child did not start (said {self.base_url!r})")
        return self

    def stats(self) -> ServiceStats:
        """Ask the child for its counters."""
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        answer = json.loads(self._process.stdout.readline())
        return ServiceStats(answer["requests"], answer["billed"], answer["cpu"])

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def _serve(settings: dict[str, Any]) -> None:
    import time

    from editgraph.testing import FakeTogether

    with FakeTogether(**settings) as fake:
        print(fake.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                answer = {"requests": len(fake.requests), "billed": len(fake.billed),
                          "cpu": time.process_time()}
                print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
