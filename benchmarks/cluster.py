"""``python -m benchmarks.cluster``: a batch on a Dask LocalCluster of 1 and 2 workers.

One recipe (one edit per item) over N distinct inputs, against FakeTogether with a fixed
latency per generation, with no cluster, ``--cluster local:1`` and ``local:2``, each
against a fresh cache (a folder, then an S3 prefix on moto), so every item is generated. Reports items per
second (from the call to the summary, the cluster's start included; a plain local batch
for comparison), then S3 requests per edit when "another machine" (a new, empty local
cache) runs the same batch, fully cached. A report, not a test: needs the ``test`` extra.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
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


@contextlib.contextmanager
def _moto_process() -> Iterator[str]:
    """moto's server in its own process (so that it does not share the GIL with the
    client, the scheduler and FakeTogether); its endpoint, with a bucket "editgraph"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/editgraph", method="PUT"))
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    """Print items/s for local:1 and local:2, and S3 requests per cached edit."""
    import editgraph as eg
    from editgraph.testing import FakeTogether
    from editgraph.testing.s3 import MotoS3

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per generation")
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    recipe = work / "studio.py"
    recipe.write_text(RECIPE)
    inputs = _inputs(work / "in", options.items)
    os.environ.update(TOGETHER_API_KEY="bench", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      XDG_CACHE_HOME=str(work / "xdg"))
    print(f"{options.items} items, one edit each, FakeTogether latency "
          f"{options.latency:g} s, --concurrency {options.concurrency} (items and calls at "
          "once), S3 on moto (its own process)")
    with _moto_process() as endpoint, FakeTogether(latency=options.latency) as fake:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        provider = eg.providers.Together(api_key="bench", base_url=fake.base_url)
        runs = [(cache, target) for cache in ("folder", "s3")
                for target in ("no cluster", "local:1", "local:2")]
        for run, (cache, target) in enumerate(runs):
            billed = len(fake.billed)
            started = time.perf_counter()
            result = eg.batch(recipe, inputs, out=work / f"out{run}", provider=provider,
                              cache=(f"s3://editgraph/run{run}" if cache == "s3"
                                     else work / f"cache{run}"),
                              cluster=None if target == "no cluster" else target,
                              concurrency=options.concurrency)
            elapsed = time.perf_counter() - started
            assert result.summary.done == options.items, result.summary
            print(f"{cache:6} cache, {target:10} {options.items / elapsed:6.2f} items/s "
                  f"({elapsed:5.1f} s, the cluster's start included), "
                  f"{len(fake.billed) - billed} paid")

    # Requests counted at the server: moto in this process, with its request log.
    with MotoS3() as s3, FakeTogether() as fake:
        os.environ.update(s3.environment())
        provider = eg.providers.Together(api_key="bench", base_url=fake.base_url)
        eg.batch(recipe, inputs, out=work / "first", provider=provider, cache=s3.url("team"),
                 cluster="local:2", concurrency=options.concurrency)
        os.environ["XDG_CACHE_HOME"] = str(work / "xdg-other-machine")
        s3.clear_log()
        billed = len(fake.billed)
        result = eg.batch(recipe, inputs, out=work / "again", provider=provider,
                          cache=s3.url("team"), cluster="local:2",
                          concurrency=options.concurrency)
        kinds = collections.Counter(
            f"{r.method} {_folder(r.path)}" for r in s3.requests
        )
        per_item = {kind: count for kind, count in kinds.items() if count >= options.items}
        print(f"another machine, all cached: {len(s3.requests) / options.items:.2f} S3 "
              f"requests per edit ({', '.join(f'{k}: {v}' for k, v in per_item.items())}; "
              f"plus {sum(kinds.values()) - sum(per_item.values())} once per batch), "
              f"{len(fake.billed) - billed} paid, {result.summary.cached} items fully cached")


def _folder(path: str) -> str:
    for folder in ("records", "blobs", "history", "leases", "probe", "journal"):
        if f"/{folder}/" in path:
            return folder
    return "other"

if __name__ == "__main__":
    main()
