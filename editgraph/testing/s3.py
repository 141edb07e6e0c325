"""A real S3 API on loopback for tests and trials: moto's ``ThreadedMotoServer``, logged.

``MotoS3`` starts moto's server on 127.0.0.1 (an ephemeral port), creates a bucket,
keeps a log of every request it answers (method and path, to count what a store does)
and can play a vendor that ignores conditional writes (``conditional_writes=False``).
``environment()`` gives the AWS variables that point editgraph at it.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple

__all__ = ["MotoS3", "S3Request"]

_CONDITIONAL_HEADERS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")


class S3Request(NamedTuple):
    """One request the server answered."""

    method: str
    path: str  # the object's key, without the bucket
    query: str


class MotoS3:
    """moto's S3 server on 127.0.0.1 with one bucket, as a context manager.

    Args:
        bucket: the bucket created at start.
        conditional_writes: False strips ``If-None-Match`` and ``If-Match`` from every
            request, as a store without conditional writes would ignore them.

    >>> with MotoS3() as s3:
    ...     s3.environment()["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, bucket: str = "editgraph", *, conditional_writes: bool = True) -> None:
        self.bucket = bucket
        self.conditional_writes = conditional_writes
        self._log: list[S3Request] = []
        self._lock = threading.Lock()
        self._server: Any = None

    def __enter__(self) -> MotoS3:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and create the bucket."""
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        wsgi = self._server._server  # werkzeug's server: wrap its app to log requests
        wsgi.app = self._logged(wsgi.app)
        self._request("PUT", f"/{self.bucket}")
        self.clear_log()

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        """The AWS variables that point a client at this server (dummy credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "editgraph-test",
            "AWS_SECRET_ACCESS_KEY": "editgraph-test-secret",
            "AWS_REGION": "us-east-1",
        }

    def url(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    @property
    def requests(self) -> list[S3Request]:
        """Every request answered since start (or the last ``clear_log``), in order."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the requests logged so far."""
        with self._lock:
            self._log.clear()

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``: key → bytes (read through moto's backend)."""
        bucket = self._backend_bucket()
        return {
            key: bucket.keys[key].value for key in list(bucket.keys)
            if key.startswith(prefix)
        }

    def write(self, key: str, data: bytes) -> None:
        """Overwrite an object behind every client's back (to damage it in a test)."""
        self._backend().put_object(self.bucket, key, data)

    def _backend_bucket(self) -> Any:
        return self._backend().buckets[self.bucket]

    def _backend(self) -> Any:
        from moto.s3.models import s3_backends

        for account in s3_backends.values():
            for backend in account.values():
                if self.bucket in backend.buckets:
                    return backend
        raise KeyError(self.bucket)

    def _request(self, method: str, path: str, body: bytes = b"") -> None:
        import http.client

        host, port = self._server.get_host_and_port()
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise RuntimeError(f"moto: {method} {path} -> {response.status}")
        finally:
            connection.close()

    def _logged(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        bucket_prefix = f"/{self.bucket}/"

        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = urllib.parse.unquote(environ.get("PATH_INFO", ""))
            key = path.removeprefix(bucket_prefix)
            with self._lock:
                self._log.append(S3Request(environ["REQUEST_METHOD"], key,
                                           environ.get("QUERY_STRING", "")))
            if not self.conditional_writes:
                for header in _CONDITIONAL_HEADERS:
                    environ.pop(header, None)
            return app(environ, start_response)

        return logged
