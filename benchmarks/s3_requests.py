"""``python -m benchmarks.s3_requests``: S3 requests per edit for the shared store.

A graph of N one-reference edits runs against FakeTogether with an S3 cache on moto
(loopback), three times: fresh (every edit generated), again on the same machine (its
local cache), and on "another machine" (a new, empty local cache). Requests are counted
at the moto server, by method and top-level folder. A report, not a test: needs the
``test`` extra.
"""

from __future__ import annotations

import collections
import io
import os
import tempfile
import time

from PIL import Image

EDITS = 20


def _graph(store: object, edits: int) -> object:
    import editgraph as eg

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    graph = eg.Graph(cache_dir=store, width=256, height=256)  # type: ignore[arg-type]
    car = graph.image(buffer.getvalue(), name="car")
    for index in range(edits):
        graph.edit(f"Paint {car} shade {index}", name=f"paint{index}")
    return graph


def main() -> None:
    """Print requests per edit for each pass, by kind."""
    import editgraph as eg
    from editgraph.stores.s3 import S3Store
    from editgraph.testing import FakeTogether
    from editgraph.testing.s3 import MotoS3

    with MotoS3() as s3, FakeTogether() as fake:
        os.environ.update(s3.environment())
        provider = eg.providers.Together(api_key="bench", base_url=fake.base_url)
        local = tempfile.mkdtemp()
        passes = [("fresh (generated)", local), ("cached, same machine", local),
                  ("cached, another machine", tempfile.mkdtemp())]
        for label, local_dir in passes:
            store = S3Store(s3.url("bench"), local_dir=local_dir)
            s3.clear_log()
            started = time.perf_counter()
            _graph(store, EDITS).run(provider=provider, progress=False)  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - started
            kinds = collections.Counter(
                f"{r.method} {r.path.split('/')[1] if r.path.count('/') else r.query}"
                for r in s3.requests
            )
            print(f"{label:26} {len(s3.requests) / EDITS:5.2f} requests/edit  "
                  f"{elapsed / EDITS * 1000:6.1f} ms/edit  {dict(kinds)}")
        print(f"paid generations: {len(fake.billed)} for {EDITS} edits")


if __name__ == "__main__":
    main()
