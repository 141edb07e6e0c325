"""The same cached graph replayed in Prefect 3 (``cache_policy=INPUTS``), for comparison.

Run as ``python -m benchmarks.prefect_replay EDITS`` in a child process: Prefect reads its
settings from the environment at import, so the child gets a private ``PREFECT_HOME`` and
analytics off, and starts Prefect's local ephemeral server (nothing leaves the machine).
It prints one JSON line: per-task milliseconds of a fully cached replay with tasks called
in sequence and with ``.submit()``, and the fixed cost of a flow run (an empty flow,
best of three once the server is up).

The graph is the one :func:`benchmarks.cached.cached_graph` builds for editgraph: chains of
ten edits fanned out from one source, each task taking its upstream result. The task body
is an in-process function (a hash of its inputs): on a cached replay it is never called,
so what is measured is Prefect's own per-task and per-flow cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

_TIMEOUT_SECONDS = 240


@dataclass(frozen=True)
class PrefectFigures:
    """What the Prefect child measured, or why it could not."""

    edits: int
    sequential_ms_per_task: float | None = None
    submit_ms_per_task: float | None = None
    flow_run_ms: float | None = None
    version: str | None = None
    error: str | None = None


def _private_environment(home: str) -> dict[str, str]:
    environment = dict(os.environ)
    for name in list(environment):
        if name.startswith("PREFECT_"):
            del environment[name]  # a user's profile or API URL must not leak in
    environment.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="ERROR",
        PREFECT_LOGGING_TO_API_ENABLED="false",
        # A new home's server migrates its database first: on 2 busy CPUs that can pass
        # Prefect's default 20 s wait, and the whole measure was lost to it.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    return environment


def measure(edits: int, replays: int = 2) -> PrefectFigures:
    """Run the Prefect replay in a child process; any failure becomes ``error``."""
    with tempfile.TemporaryDirectory(prefix="editgraph-prefect-") as home:
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "benchmarks.prefect_replay", str(edits), str(replays)],
                env=_private_environment(home), check=False, capture_output=True, text=True,
                timeout=_TIMEOUT_SECONDS, cwd=os.path.dirname(os.path.dirname(__file__)),
            )
        except subprocess.TimeoutExpired:
            return PrefectFigures(edits, error=f"timed out after {_TIMEOUT_SECONDS} s")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return PrefectFigures(edits, error=f"exit {completed.returncode}: {tail[:160]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return PrefectFigures(**figures)


def _child(edits: int, replays: int) -> dict[str, Any]:
    """Measure inside the child (Prefect imported here only)."""
    try:
        import prefect
        from prefect import flow, task
        from prefect.cache_policies import INPUTS
    except ImportError as exc:
        return {"edits": edits, "error": f"Prefect is not installed ({exc}); "
                "pip install -e '.[bench]'"}
    import hashlib

    @task(cache_policy=INPUTS, persist_result=True)
    def edit(prompt: str, reference: str) -> str:
        return hashlib.sha256(f"{prompt}\0{reference}".encode()).hexdigest()

    source = hashlib.sha256(b"source").hexdigest()

    @flow
    def in_sequence() -> None:
        previous = source
        for index in range(edits):
            previous = edit(f"edit {index}", source if index % 10 == 0 else previous)

    @flow
    def submitted() -> None:
        futures = []
        previous: Any = source
        for index in range(edits):
            previous = edit.submit(f"edit {index}", source if index % 10 == 0 else previous)
            futures.append(previous)
        for future in futures:
            future.result()

    @flow
    def empty() -> None:
        return None

    def timed(run: Any) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    # Prefect's client sends events in the background and drains them at the end of a
    # later flow run, and the local server records them on the same CPUs: one flow's
    # wall says little alone. So each measure is a block of replays closed by an empty
    # flow run (which absorbs the drain), less the flow-run fixed cost measured idle.
    timed(empty)  # starts the ephemeral server
    flow_run = min(timed(empty) for _ in range(3))
    timed(in_sequence)  # fills the cache
    timed(empty)

    def per_task(replay: Any) -> float:
        block = sum(timed(replay) for _ in range(replays)) + timed(empty)
        return max(0.0, block - (replays + 1) * flow_run) / (replays * edits)

    sequential = per_task(in_sequence)
    submit = per_task(submitted)
    return {
        "edits": edits,
        "sequential_ms_per_task": sequential * 1000,
        "submit_ms_per_task": submit * 1000,
        "flow_run_ms": flow_run * 1000,
        "version": prefect.__version__,
    }


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)))
