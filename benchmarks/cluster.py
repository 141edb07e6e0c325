"""``python -m benchmarks.cluster``: a batch on a Dask LocalCluster of 1 and 2 workers.

One recipe (one edit per item) over N distinct inputs, against FakeTogether with a fixed
latency per generation, an S3 cache on moto (loopback) and ``--cluster local:1`` then
``local:2`` (each against a fresh prefix, so every item is generated). Reports items per
second (from the first submission to the last item written), then S3 requests per edit
when "another machine" (a new, empty local cache) runs the same batch, fully cached. A
report, not a test: needs the ``test`` extra.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

RECIPE = '''
from pathlib import Path
import editgraph as eg

def recipe(photo: Path) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=256, height=256)
    product = g.image(photo, name="product")
    g.edit(f"Put {product} on a plain studio backdrop", name="studio")
    return g
'''


def _inputs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (48, 40), (number % 256, (7 * number) % 256, 90)).save(buffer, "PNG")
        (folder / f"p{number:04d}.png").write_bytes(buffer.getvalue())
    return folder


def main() -> None:
    """Print items/s for local:1 and local:2, and S3 requests per cached edit."""
    import editgraph as eg
    from editgraph.testing import FakeTogether
    from editgraph.testing.s3 import MotoS3

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per generation")
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    recipe = work / "studio.py"
    recipe.write_text(RECIPE)
    inputs = _inputs(work / "in", options.items)
    with MotoS3() as s3, FakeTogether(latency=options.latency) as fake:
        os.environ.update(s3.environment())
        os.environ["TOGETHER_API_KEY"] = "bench"
        os.environ["XDG_CACHE_HOME"] = str(work / "xdg")
        provider = eg.providers.Together(api_key="bench", base_url=fake.base_url)
        print(f"{options.items} items, one edit each, FakeTogether latency "
              f"{options.latency:g} s, --concurrency {options.concurrency}, S3 on moto")
        for workers in (1, 2):
            billed = len(fake.billed)
            started = time.perf_counter()
            result = eg.batch(recipe, inputs, out=work / f"out{workers}", provider=provider,
                              cache=s3.url(f"w{workers}"), cluster=f"local:{workers}",
                              concurrency=options.concurrency)
            elapsed = time.perf_counter() - started
            assert result.summary.done == options.items, result.summary
            print(f"local:{workers}: {options.items / elapsed:6.2f} items/s ({elapsed:.1f} s "
                  f"including the cluster's start), {len(fake.billed) - billed} paid")
        os.environ["XDG_CACHE_HOME"] = str(work / "xdg-other-machine")
        s3.clear_log()
        billed = len(fake.billed)
        result = eg.batch(recipe, inputs, out=work / "again", provider=provider,
                          cache=s3.url("w2"), cluster="local:2",
                          concurrency=options.concurrency)
        kinds = collections.Counter(
            f"{r.method} {r.path.split('/')[2] if r.path.count('/') > 1 else r.path}"
            for r in s3.requests
        )
        print(f"another machine, cached: {len(s3.requests) / options.items:.2f} S3 requests "
              f"per edit {dict(kinds)}, {len(fake.billed) - billed} paid, "
              f"{result.summary.cached} items fully cached")


if __name__ == "__main__":
    main()
