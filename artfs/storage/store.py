"""The Store interface and `open_store(uri)`.

A store is a flat key/value space of immutable-or-rarely-rewritten objects. Keys are '/'-separated
relative strings (`packs/ab/ab12…`, `artifacts/animals/versions/0000000003.json`). Every method is
synchronous and may block (boto3, disk): callers on an event loop run them in a thread.

The one primitive publishing depends on is `create_if_absent`: it must be atomic across processes and
machines (S3 conditional PUT `If-None-Match: *`; `link()` on a directory), because claiming a version
number with it is what makes concurrent commits safe.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from artfs.errors import InvalidName


class Store(ABC):
    """One place artifacts live. Implementations: LocalStore (directory), S3Store."""

    uri: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object. Raises StoreNotFound."""

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of an object. Raises StoreNotFound."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) an object atomically: readers see the old or the new, never a part."""

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        """Write an object from a local file (large packs); the default reads it into memory."""
        self.put(key, Path(path).read_bytes())

    @abstractmethod
    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically create an object if no object has that key. True if we created it."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys that start with `prefix`, in lexicographic order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    def exists(self, key: str) -> bool:
        try:
            self.get_range(key, 0, 0)
        except Exception as e:  # noqa: BLE001 - narrowed below
            from artfs.errors import StoreNotFound

            if isinstance(e, StoreNotFound):
                return False
            raise
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def default_store_uri() -> str:
    """`$ARTFS_STORE`, else the embedded default directory `~/.local/share/artfs/store`."""
    env = os.environ.get("ARTFS_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "artfs", "store")


def open_store(uri: str | None = None, *, endpoint_url: str | None = None) -> Store:
    """A store from a URI: `s3://bucket/prefix`, `file:///path`, or a plain path. Wrapped with retries."""
    from artfs.storage.retry import RetryingStore

    uri = uri or default_store_uri()
    if uri.startswith("s3://"):
        from artfs.storage.s3 import S3Store

        return RetryingStore(S3Store(uri, endpoint_url=endpoint_url))
    if uri.startswith("file://"):
        path = uri[len("file://") :]
    elif "://" in uri:
        raise InvalidName(f"unsupported store URI {uri!r} (use s3://bucket/prefix, file:///path or a path)")
    else:
        path = uri
    from artfs.storage.local import LocalStore

    return RetryingStore(LocalStore(os.path.abspath(os.path.expanduser(path))))
