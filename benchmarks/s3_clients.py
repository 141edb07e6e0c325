"""``python -m benchmarks.s3_clients``: obstore against boto3 for the S3 store's calls.

Both talk to one moto ``ThreadedMotoServer`` on loopback, interleaved round by round:
create-only puts (``If-None-Match: *``), compare-and-swap puts (``If-Match``), small
gets and presigning. It also checks that moto refuses a conditional put that should
fail (412), which the S3 store's tests rely on. A report, not a test: needs the
``test`` extra (moto, boto3, obstore).
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from collections.abc import Callable

ROUNDS = 3
CALLS = 100
SIZE = 20_000  # a small JPEG-sized blob; records are ~1 KB


def _median_ms(call: Callable[[int], object], offset: int) -> float:
    timings = []
    for index in range(CALLS):
        start = time.perf_counter()
        call(offset + index)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> None:
    """Print a table of medians (ms) per client and call, and the conditional checks."""
    import boto3
    import botocore.exceptions
    import obstore
    from moto.server import ThreadedMotoServer
    from obstore.store import S3Store

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    boto = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
    boto.create_bucket(Bucket="bench")
    ob = S3Store(
        "bench",
        config={"endpoint": endpoint, "region": "us-east-1", "access_key_id": "bench",
                "secret_access_key": "bench"},
        client_options={"allow_http": True},
    )
    data = os.urandom(SIZE)

    # Conditional writes as the store uses them.
    boto.put_object(Bucket="bench", Key="check", Body=data, IfNoneMatch="*")
    try:
        boto.put_object(Bucket="bench", Key="check", Body=data, IfNoneMatch="*")
        print("moto IGNORES If-None-Match: *")
    except botocore.exceptions.ClientError as exc:
        print(f"moto If-None-Match: * on an existing key -> {exc.response['Error']['Code']}")
    try:
        boto.put_object(Bucket="bench", Key="check", Body=data, IfMatch='"stale"')
        print("moto IGNORES If-Match")
    except botocore.exceptions.ClientError as exc:
        print(f"moto If-Match with a stale etag -> {exc.response['Error']['Code']}")
    etag = obstore.head(ob, "check")["e_tag"]
    obstore.put(ob, "check", b"new", mode={"e_tag": etag})
    print("obstore put mode={'e_tag': current} -> accepted")

    results: dict[str, list[float]] = {}
    for round_number in range(ROUNDS):
        base = round_number * CALLS
        measures: dict[str, Callable[[int], object]] = {
            "boto3 create-only put": lambda i: boto.put_object(
                Bucket="bench", Key=f"b/{i}", Body=data, IfNoneMatch="*"),
            "obstore create-only put": lambda i: obstore.put(ob, f"o/{i}", data, mode="create"),
            "boto3 get": lambda i: boto.get_object(Bucket="bench", Key=f"b/{i}")["Body"].read(),
            "obstore get": lambda i: bytes(obstore.get(ob, f"o/{i}").bytes()),
            "boto3 presign": lambda i: boto.generate_presigned_url(
                "get_object", Params={"Bucket": "bench", "Key": f"b/{i}"}, ExpiresIn=3600),
            "obstore presign": lambda i: obstore.sign(
                ob, "GET", f"o/{i}", datetime.timedelta(seconds=3600)),
        }
        for label, call in measures.items():
            results.setdefault(label, []).append(_median_ms(call, base))
    server.stop()
    print(f"{'call':28} median of {ROUNDS} round medians (ms), {CALLS} calls a round")
    for label, medians in results.items():
        print(f"{label:28} {statistics.median(medians):8.2f}")


if __name__ == "__main__":
    main()
