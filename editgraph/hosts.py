"""Image hosts: how a reference held as bytes reaches a service that takes only URLs.

:class:`S3ImageHost` uploads each reference once per content hash to an S3-compatible
bucket (``<prefix>/<hash>.<ext>``) and sends a presigned GET URL; pass it as
``eg.providers.Together(image_host=eg.hosts.S3ImageHost("s3://bucket/prefix"))`` or
``editgraph run --image-host s3://bucket/prefix``. The inline default is
``eg.providers.DataURIHost``.
"""

from __future__ import annotations

import datetime
import threading

from .errors import StoreError
from .requests import Reference
from .stores.s3 import connect, missing_bucket, parse_s3_url

__all__ = ["MAX_EXPIRES", "S3ImageHost"]

#: The longest life of a presigned (SigV4) URL: S3 refuses a longer X-Amz-Expires.
MAX_EXPIRES = 7 * 24 * 3600

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class S3ImageHost:
    """Uploads references to ``s3://bucket/prefix`` once per content hash and hands out
    presigned GET URLs valid for ``expires`` seconds.

    Endpoint and credentials come from the usual AWS variables, as for the S3 store.
    An object already in the bucket (uploaded by another run or machine) is not sent
    again; a URL is signed locally, without a request.

    Raises:
        StoreError: ``location`` is not ``s3://...``, obstore is missing, or
            ``expires`` is not positive.
    """

    def __init__(self, location: str, *, expires: float = 3600) -> None:
        self.location = parse_s3_url(location)
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not (
            0 < expires <= MAX_EXPIRES
        ):  # nan and inf refused too
            raise StoreError(
                f"S3ImageHost: expires must be more than 0 and at most {MAX_EXPIRES} "
                f"seconds (7 days, the longest a presigned S3 URL lives), got {expires!r}"
            )
        self.expires = expires
        self._objects = connect(self.location)
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ImageHost({str(self.location)!r}, expires={self.expires:g})"

    async def url_for(self, reference: Reference) -> str:
        """A presigned GET URL for ``reference``'s bytes, uploaded first if need be."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        if reference.data is None:
            raise ValueError(f"reference {reference.source!r} carries no bytes to upload")
        extension = _EXTENSIONS.get(reference.media_type, "bin")
        path = f"{reference.hash}.{extension}"
        with self._lock:
            known = path in self._uploaded
        if not known:
            try:
                await obstore.head_async(self._objects, path)
            except (NotFoundError, FileNotFoundError):
                try:
                    await obstore.put_async(
                        self._objects, path, reference.data, mode="create",
                        attributes={"Content-Type": reference.media_type},
                    )
                except (AlreadyExistsError, PreconditionError):
                    pass  # uploaded meanwhile by another run: the same bytes
                except (NotFoundError, FileNotFoundError):  # a PUT answered 404: NoSuchBucket
                    raise missing_bucket(self.location) from None
            with self._lock:
                self._uploaded.add(path)
        return await obstore.sign_async(
            self._objects, "GET", path, datetime.timedelta(seconds=self.expires)
        )
