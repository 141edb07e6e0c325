"""``python -m benchmarks [--quick]``: every figure side by side in one run, as one table.

Each row has its target, the physical floor for the same measure where one exists (what
no client could beat: one raw diskcache read, an empty event loop, the fake alone), and
``ok``, ``NO`` (missed) or ``info`` (no target). The exit
code is 0 even when a target is missed: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import (
    batch,
    building,
    client_cpu,
    critical_path,
    fake_cpu,
    interleave,
    loop_lag,
    memory,
    overhead,
    prefect_replay,
    rewriting,
    throughput,
)


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    measure: str
    value: str
    target: str
    verdict: str  # "ok", "NO", "info" or "n/a"
    notes: str = ""
    floor: str = "-"  # the physical floor for the same measure, in the value's unit


def _verdict(met: bool) -> str:
    return "ok" if met else "NO"


@dataclass(frozen=True)
class Sizes:
    """How big each measure is; ``--quick`` shrinks them."""

    width: int
    repeats: int
    cached_edits: int
    prefect_edits: int
    throughput_edits: int
    memory_edits: tuple[int, ...]
    building_edits: int
    fake_calls: int
    cached_rounds: int = 7
    fixed_rounds: int = 21
    held_edits: int = 2000


FULL = Sizes(width=16, repeats=3, cached_edits=1000, prefect_edits=200,
             throughput_edits=200, memory_edits=(500, 1000, 2000), building_edits=1000,
             fake_calls=300)
QUICK = Sizes(width=8, repeats=2, cached_edits=1000, prefect_edits=50,
              throughput_edits=60, memory_edits=(50, 100, 200), building_edits=1000,
              fake_calls=100, cached_rounds=5, fixed_rounds=11, held_edits=1000)

LAYERS = 4
LATENCY = 0.2
RATE = 1200.0


def _critical_path_rows(root: Path, sizes: Sizes) -> list[Row]:
    figures = critical_path.measure(root / "critical", layers=LAYERS, width=sizes.width,
                                    latency=LATENCY, repeats=sizes.repeats)
    bound = figures.bound
    wall = critical_path.median(figures.editgraph)
    hand = critical_path.median(figures.hand_written)
    floor = critical_path.median(figures.hand_aiohttp)
    first_use = critical_path.median(figures.first_use)
    ratio = wall / bound
    over_hand = figures.over_hand_written
    shape = f"{figures.edits} edits, width {figures.width}, {LATENCY * 1000:.0f} ms/call"
    server = (f"light server in a child process ({figures.fake_cpu_per_call_ms:.2f} ms CPU "
              f"per call, {'under' if figures.fake_cpu_per_call_ms < 1 else 'OVER'} DESIGN's "
              "1 ms; 1 MB JPEG results)" if figures.server == "light" else
              f"FakeTogether in a child process ({figures.fake_cpu_per_call_ms:.1f} ms CPU "
              "per call)")
    engine_ratio, engine_wall, _ = overhead.critical_path_ratio(
        root / "engine-alone", seconds=LATENCY, layers=LAYERS, width=sizes.width,
        repeats=sizes.repeats)
    parallelism = figures.edits / figures.layers
    speedup = figures.sequential / wall
    return [
        Row(f"wall / critical path ({shape})", f"{ratio:.3f}", "<= 1.08", _verdict(ratio <= 1.08),
            f"median of {len(figures.editgraph)}: {wall * 1000:.0f} ms vs bound "
            f"{bound * 1000:.0f} ms; existing cache dir; {server}",
            floor=f"{floor / bound:.3f}"),
        Row("  first use of a brand-new cache dir, wall / bound",
            f"{first_use / bound:.3f}", "-", "info",
            f"median of {len(figures.first_use)}: {(first_use - wall) * 1000:+.0f} ms "
            "vs the existing dir"),
        Row("  hand-written asyncio client, same HTTP stack (httpx + aiohttp transport) / bound",
            f"{hand / bound:.3f}", "-", "info",
            "same server, no engine, no store, no checks; interleaved with editgraph",
            floor="1.000"),
        Row("  hand-written asyncio client, aiohttp alone / bound", f"{floor / bound:.3f}",
            "-", "info", "the floor a client reaches on this server; interleaved too",
            floor="1.000"),
        Row("  editgraph / hand-written client, same HTTP stack (interleaved)",
            f"{over_hand:.3f}", "<= 1.03", _verdict(over_hand <= 1.03),
            f"median of round-by-round ratios; editgraph CPU "
            f"{figures.engine_cpu_per_edit_ms:.2f} ms per edit (engine, store and provider)",
            floor="1.000"),
        Row("  engine alone: in-process provider sleeping 200 ms, wall / bound",
            f"{engine_ratio:.3f}", "<= 1.05", _verdict(engine_ratio <= 1.05),
            f"median of {sizes.repeats}: {engine_wall * 1000:.0f} ms; no HTTP, no fake"),
        Row("sequential httpx script / editgraph (same graph)", f"{speedup:.1f}",
            f"~{parallelism:.0f}", _verdict(speedup >= 0.8 * parallelism),
            f"script {figures.sequential:.1f} s; parallelism {figures.edits}/{figures.layers}, "
            f"ok when >= 80% of it; script / hand-written client "
            f"{figures.sequential / hand:.1f}"),
    ]


def _client_cpu_rows(sizes: Sizes) -> list[Row]:
    # 9 rounds of 192 edits (6 of 96 with --quick; were 3 of 128), each after an untimed
    # full collection, in the time 3 took with httpcore in every round: client_cpu's
    # docstring says why.
    figures = client_cpu.measure(edits=12 * sizes.width, in_flight=2 * sizes.width,
                                 rounds=3 * sizes.repeats)
    provider = figures.per_edit("provider")
    same_stack = figures.per_edit("same stack")
    floor = figures.per_edit("aiohttp")
    shape = f"{figures.edits} edits, {figures.in_flight} in flight, 1 MB JPEG results"
    return [
        Row(f"client CPU per generated edit, Together provider ({shape})",
            f"{provider:.2f} ms", "<= 2 ms", _verdict(provider <= 2.0),
            f"median of {len(figures.values['provider'])} interleaved rounds; provider / "
            f"floor {figures.ratio('provider', 'aiohttp'):.2f}; request, retries armed, download "
            f"with its cap, header/size/EOI check; light server in a child process "
            f"({figures.server_cpu_per_call_ms:.2f} ms CPU per edit, "
            f"{'under' if figures.server_cpu_per_call_ms < 1 else 'OVER'} 1 ms)",
            floor=f"{floor:.2f} ms"),
        Row("  hand-written client, same HTTP stack (httpx + aiohttp transport)",
            f"{same_stack:.2f} ms", "-", "info",
            f"provider / it: {figures.ratio('provider', 'same stack'):.2f} (interleaved)",
            floor=f"{floor:.2f} ms"),
        Row("  hand-written client, aiohttp alone", f"{floor:.2f} ms", "-", "info",
            "no httpx layer: the floor"),
        Row("  Together provider on httpx's own transport (no aiohttp installed)",
            f"{figures.per_edit('provider, httpcore'):.2f} ms", "-", "info",
            "httpcore's pool: the fallback without the aiohttp extra; one round"),
    ]


def _cached_rows(root: Path, sizes: Sizes) -> list[Row]:
    cached = overhead.measure_cached(root / "cached", sizes.cached_edits,
                                     rounds=sizes.cached_rounds)
    per_edit = critical_path.median(cached.editgraph)
    hand = critical_path.median(cached.hand_written)
    floor = critical_path.median(cached.floor)
    batched = critical_path.median(cached.batched)
    fixed_figures = overhead.measure_fixed(root / "fixed", rounds=sizes.fixed_rounds)
    fixed = critical_path.median(fixed_figures.editgraph)
    rounds = f"median of {len(cached.editgraph)} interleaved rounds"
    rows = [
        Row(f"cached re-run, ms per edit ({sizes.cached_edits:,} edits)", f"{per_edit:.4f}",
            "<= 0.03", _verdict(per_edit <= 0.03),
            f"{rounds} (best {min(cached.editgraph):.4f}); floor: one raw diskcache read "
            f"per edit; x{interleave.ratio(cached.editgraph, cached.floor):.1f} the floor; "
            f"the same rows read in SELECTs of 100 (records, then images): {batched:.4f} ms "
            f"per edit, {'below' if batched < floor else 'above'} the floor",
            floor=f"{floor:.4f}"),
        Row("  editgraph / hand-written asyncio+diskcache script (cached re-run)",
            f"{interleave.ratio(cached.editgraph, cached.hand_written):.2f}", "-", "info",
            f"script {hand:.4f} ms per edit: per edit its key (2 sha256 of canonical JSON), "
            "record read and parsed, image read and hashed; round by round"),
    ]
    prefect = prefect_replay.measure(sizes.prefect_edits)
    if prefect.error is not None:
        reason = f"Prefect could not run: {prefect.error}"
        rows += [Row("Prefect 3 cached task (in sequence) / editgraph cached edit", "-",
                     ">= 30", "n/a", reason),
                 Row("Prefect 3 cached task (.submit) / editgraph cached edit", "-",
                     ">= 30", "n/a", reason),
                 Row("Prefect 3 flow-run fixed cost, ms", "-", "-", "n/a", reason)]
    else:
        assert prefect.sequential_ms_per_task is not None
        assert prefect.submit_ms_per_task is not None and prefect.flow_run_ms is not None
        sequential = prefect.sequential_ms_per_task / per_edit
        submitted = prefect.submit_ms_per_task / per_edit
        scope = (f"Prefect {prefect.version}, cache_policy=INPUTS, local ephemeral server, "
                 f"first {prefect.edits} edits of the same graph")
        rows += [
            Row("Prefect 3 cached task (in sequence) / editgraph cached edit",
                f"{sequential:,.0f}", ">= 30", _verdict(sequential >= 30),
                f"{prefect.sequential_ms_per_task:.2f} ms per task; {scope}"),
            Row("Prefect 3 cached task (.submit) / editgraph cached edit",
                f"{submitted:,.0f}", ">= 30", _verdict(submitted >= 30),
                f"{prefect.submit_ms_per_task:.2f} ms per task"),
            Row("Prefect 3 flow-run fixed cost, ms", f"{prefect.flow_run_ms:.0f}", "-", "info",
                f"{prefect.flow_run_ms / fixed:,.0f}x editgraph's one-edit cached run"),
        ]
    rows += [
        Row("fixed cost of a cached one-edit run (new Graph + run), ms", f"{fixed:.2f}",
            "<= 5", _verdict(fixed <= 5),
            f"median of {len(fixed_figures.editgraph)} interleaved rounds; "
            f"{critical_path.median(fixed_figures.reused):.2f} ms reusing the Graph; "
            "floor: one raw read on an open diskcache",
            floor=f"{critical_path.median(fixed_figures.floor):.3f}"),
        Row("  editgraph / hand-written script opening the diskcache (one cached edit)",
            f"{interleave.ratio(fixed_figures.editgraph, fixed_figures.hand_written):.2f}",
            "-", "info",
            f"script {critical_path.median(fixed_figures.hand_written):.2f} ms: open the "
            "cache, asyncio.run one lookup (record + image, hashed); round by round"),
    ]
    return rows


def _throughput_rows(sizes: Sizes) -> list[Row]:
    logging.getLogger("stamina").setLevel(logging.ERROR)
    rows = []
    for mode in ("adaptive", "user-set"):
        outcome = throughput.measure_graph(mode, RATE, sizes.throughput_edits, latency=0.05)
        ratio = outcome.achieved_rpm() / RATE
        rows.append(Row(
            f"throughput under rate_limit, achieved / limit ({mode})", f"{ratio:.3f}",
            ">= 0.95, 0 failed", _verdict(ratio >= 0.95 and outcome.failed == 0),
            f"{outcome.edits} independent edits through the graph, limit {RATE:g}/min, "
            f"bucket drained first; {outcome.failed} failed, "
            f"{outcome.rate_limited_by_service} 429s"))
    return rows


def _memory_rows(root: Path, sizes: Sizes) -> list[Row]:
    held = memory.run_bytes_per_edit(root / "held", sizes.held_edits)
    worst = max(held.values()) / 1000
    rows = [Row(
        f"KB per edit held by a finished Run ({sizes.held_edits:,} edits)", f"{worst:.2f}",
        "<= 3", _verdict(worst <= 3),
        f"traced allocations freed with the Run: generated {held['generated'] / 1000:.2f}, "
        f"cached {held['cached'] / 1000:.2f}; floor: its key and output hash (two 64-char str)",
        floor=f"{2 * sys.getsizeof('0' * 64) / 1000:.2f}")]
    results = [memory.measure(edits) for edits in sizes.memory_edits]
    peaks = [result["peak_mb"] for result in results]
    growth = peaks[-1] / peaks[0]
    met = max(peaks) <= 300 and growth <= 1.2
    sizes_text = "/".join(f"{edits:,}" for edits in sizes.memory_edits)
    return rows + [Row(
        f"peak RSS, MB, runs of {sizes_text} edits", "/".join(f"{peak:.0f}" for peak in peaks),
        "<= 300, flat", _verdict(met),
        f"~{results[0]['image_mb']:.1f} MB images, fresh process each; "
        f"{peaks[-1] / peaks[0]:.2f}x from smallest to largest (flat: <= 1.2x); "
        f"before the run {results[-1]['before_run_mb']:.0f} MB; the run holds up to one "
        "result per slot for the edits that take them (filled by ~300 edits here)")]


def _building_rows(root: Path, sizes: Sizes) -> list[Row]:
    built, planned = building.measure(root, sizes.building_edits)
    return [Row(f"build + plan a {sizes.building_edits:,}-node graph, ms",
                f"{built + planned:.0f}", "-", "info",
                f"build {built:.0f} ms ({built / sizes.building_edits:.2f} ms per edit), "
                f"plan {planned:.0f} ms")]


def _rewriting_rows() -> list[Row]:
    figures = rewriting.measure()
    reported = figures[rewriting.REPORTED]
    others = {label: value for label, value in figures.items() if label != rewriting.REPORTED}
    worst_label, worst = max(others.items(), key=lambda item: item[1])
    return [
        Row("g.edit with a 30,000-char prompt of \" 'a\" (was 15-21 s), ms",
            f"{reported:.1f}", "<= 50", _verdict(reported <= 50), "best of 3"),
        Row(f"  worst of {len(others)} other 30,000-char hostile prompts, ms", f"{worst:.1f}",
            "-", "info", f"{worst_label}; linear in the number of quote marks and mentions"),
    ]


def _fake_cpu_rows(sizes: Sizes) -> list[Row]:
    figures = fake_cpu.measure(sizes.fake_calls)
    shape = f"{fake_cpu.WIDTH}x{fake_cpu.HEIGHT} JPEG"
    return [
        Row(f"FakeTogether CPU per call, ms ({shape}, distinct prompts)",
            f"{figures.distinct_ms:.2f}", "<= 1", _verdict(figures.distinct_ms <= 1),
            f"generation + download, {figures.calls} calls in 3 interleaved rounds (medians), "
            f"fake in a child process; "
            f"floor: two requests answered 404 by its server alone "
            f"({figures.http_floor_ms:.2f} ms each)", f"{figures.floor_ms:.2f}"),
        Row("  chained: each call takes the previous result as its reference",
            f"{figures.chained_ms:.2f}", "<= 1", _verdict(figures.chained_ms <= 1),
            floor=f"{figures.floor_ms:.2f}"),
        Row("  repeated request (served from the render cache)",
            f"{figures.repeated_ms:.2f}", "-", "info", floor=f"{figures.floor_ms:.2f}"),
    ]


def _loop_lag_rows(root: Path, sizes: Sizes) -> list[Row]:
    rounds = 3 if sizes is QUICK else 7
    lag = loop_lag.measure_lag(root, rounds=rounds)
    value = statistics.median(lag.run)
    floor = max(statistics.median(lag.provider), statistics.median(lag.idle))
    per_link, commits = loop_lag.chain(root, links=200)
    return [
        Row(f"event-loop lag, max ms ({loop_lag.EDITS} edits in flight, ~1 MB results)",
            f"{value:.1f}", "<= 10 ms", _verdict(value <= 10), f"median of {rounds} runs' max, "
            f"worst {max(lag.run):.1f}; floor: provider alone {statistics.median(lag.provider):.1f}, "
            f"idle loop {statistics.median(lag.idle):.1f} (interleaved); real DiskStore",
            floor=f"{floor:.1f}"),
        Row("  deep chain: store commits per link (200 links)", f"{commits:.2f}", "<= 1",
            _verdict(commits <= 1.02), "the link's lease is taken in its input's commit; "
            "+2 per run (the first lease, plan's history)"),
        Row("  deep chain: ms per link (instant in-process provider)", f"{per_link:.2f}", "-",
            "info", "the whole edit (key, lookup, lease, keep); the two commits per link it "
            "paid before cost 0.7-0.8 ms"),
    ]


def _batch_rows(root: Path, sizes: Sizes) -> list[Row]:
    """Batches: the cached pass per item against its floor, and peak RSS by size."""
    quick = sizes.throughput_edits < FULL.throughput_edits
    items, counts = (100, (1_000, 4_000)) if quick else (300, (2_000, 20_000))
    per_item, floor = batch.cached_pass(root / "batch", items, repeats=sizes.repeats)
    peaks = [batch.peak_memory(count) for count in counts]
    small, large = peaks[0]["peak_mb"], peaks[-1]["peak_mb"]
    growth_kb = (large - small) * 1024 / (counts[-1] - counts[0])
    projected = large + growth_kb * (100_000 - counts[-1]) / 1024
    return [
        Row(f"batch, fully cached pass, ms per item ({items} one-edit items)",
            f"{per_item:.3f}", "<= 1", _verdict(per_item <= 1), f"{per_item / floor:.1f}x "
            "the floor: a hand-written loop (read + hash the input, one diskcache read, "
            "write the file, append a journal line), interleaved", floor=f"{floor:.3f}"),
        Row(f"batch peak RSS, MB, {counts[-1]:,} one-edit items (instant provider)",
            f"{large:.0f}", "< 400 at 100,000", _verdict(projected < 400),
            f"{small:.0f} MB at {counts[0]:,}: {growth_kb:.2f} KB per item more, "
            f"{projected:.0f} MB projected at 100,000 (python -m benchmarks.batch --full "
            f"measures it); {peaks[-1]['seconds'] / counts[-1] * 1000:.2f} ms "
            "per item"),
    ]


def _timed(section: Callable[[], list[Row]], timings: dict[str, float], name: str) -> list[Row]:
    started = time.perf_counter()
    rows = section()
    timings[name] = time.perf_counter() - started
    return rows


def print_table(rows: list[Row]) -> None:
    """The table, one row per measure, in plain text."""
    width = max(len(row.measure) for row in rows)
    value_width = max(len("value"), *(len(row.value) for row in rows))
    target_width = max(len("target"), *(len(row.target) for row in rows))
    floor_width = max(len("floor"), *(len(row.floor) for row in rows))
    print(f"{'measure':<{width}}  {'value':>{value_width}}  {'target':<{target_width}}  "
          f"{'floor':>{floor_width}}  {'ok':<4}  notes")
    for row in rows:
        print(f"{row.measure:<{width}}  {row.value:>{value_width}}  "
              f"{row.target:<{target_width}}  {row.floor:>{floor_width}}  {row.verdict:<4}  "
              f"{row.notes}")


def main(argv: list[str] | None = None) -> int:
    """Run the suite and print the table; always 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    parser.add_argument("--prefect-edits", type=int, default=None,
                        help="edits in the Prefect replay (default 200; 50 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.prefect_edits is not None:
        sizes = Sizes(**{**sizes.__dict__, "prefect_edits": args.prefect_edits})
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="editgraph-bench-") as directory:
        root = Path(directory)
        rows = _timed(lambda: _critical_path_rows(root, sizes), timings, "critical path")
        rows += _timed(lambda: _client_cpu_rows(sizes), timings, "client CPU")
        rows += _timed(lambda: _cached_rows(root, sizes), timings, "cached + Prefect")
        rows += _timed(lambda: _throughput_rows(sizes), timings, "throughput")
        rows += _timed(lambda: _memory_rows(root, sizes), timings, "memory")
        rows += _timed(lambda: _building_rows(root, sizes), timings, "building")
        rows += _timed(_rewriting_rows, timings, "rewriting")
        rows += _timed(lambda: _fake_cpu_rows(sizes), timings, "fake CPU")
        rows += _timed(lambda: _loop_lag_rows(root, sizes), timings, "loop lag")
        rows += _timed(lambda: _batch_rows(root, sizes), timings, "batch")
    print(f"editgraph benchmarks{' (--quick)' if args.quick else ''}: Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print_table(rows)
    missed = [row.measure.strip() for row in rows if row.verdict == "NO"]
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    print(f"\n{len(missed)} target(s) missed{': ' + '; '.join(missed) if missed else ''}")
    print(f"took {time.perf_counter() - started:.0f} s ({spent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
