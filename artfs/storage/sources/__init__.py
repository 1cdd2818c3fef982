"""External objects a version refers to (s3://, https://, http://, file://): listed, pinned, read by range.

A reference is only worth having if it means the same bytes forever, so every object is described by a
**Pin** — the strongest identity its source offers — and every read is conditional on it: S3 reads name
the VersionId (versioned buckets) or carry `If-Match` on the ETag; HTTP reads carry `If-Match` on the ETag,
or `If-Range` on Last-Modified (a 200 with the whole body instead of a 206 means the object changed);
files are pread between two fstat checks of size and mtime. A changed or vanished object is
`SourceChanged` (an IntegrityError: EIO in the mount, never bytes), naming the URI and the pin.

One `Objects` implementation per scheme, one module each (file.py, s3.py, http.py; what they share, the pin
and the interface: common.py), chosen here by `objects_for(uri)`; this package knows nothing about manifests
or chunks (core/references.py does). The clients are thread-safe: the mount reads from workers.
"""

from __future__ import annotations

import threading

from artfs.storage.sources.common import (
    CONNECT_TIMEOUT,
    SCHEMES,
    TIMEOUT,
    Listed,
    Objects,
    Pin,
    SourceChanged,
    Stream,
    changed,
    has_scheme,
    scheme_of,
    too_many,
)
from artfs.storage.sources.file import FileObjects, file_path
from artfs.storage.sources.http import HttpObjects
from artfs.storage.sources.s3 import S3Objects, parse_s3

__all__ = [
    "CONNECT_TIMEOUT", "SCHEMES", "TIMEOUT", "FileObjects", "HttpObjects", "Listed", "Objects", "Pin", "S3Objects",
    "SourceChanged", "Stream", "changed", "file_path", "has_scheme", "objects_for", "parse_s3", "reset_clients",
    "scheme_of", "too_many",
]

_clients: dict[str, Objects] = {}
_lock = threading.Lock()


def objects_for(uri: str) -> Objects:
    """The (shared, thread-safe) client for `uri`'s scheme; InvalidName for anything else."""
    scheme = scheme_of(uri)
    kind = "http" if scheme in ("http", "https") else scheme
    with _lock:
        client = _clients.get(kind)
        if client is None:
            client = _clients[kind] = {"s3": S3Objects, "http": HttpObjects, "file": FileObjects}[kind]()
        return client


def reset_clients() -> None:
    """Forget the clients (tests change AWS_* settings between servers)."""
    with _lock:
        _clients.clear()
