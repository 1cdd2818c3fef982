"""The Store interface (the implementations: local.py, s3.py; opening one from a URI: open.py).

A store is a flat key/value space of immutable-or-rarely-rewritten objects. Keys are '/'-separated
relative strings (`packs/ab/ab12…`, `artifacts/animals/versions/0000000003.json`). Every method is
synchronous and may block (botocore, disk): callers on an event loop run them in a thread.

The one primitive publishing depends on is `create_if_absent`: it must be atomic across processes and
machines (S3 conditional PUT `If-None-Match: *`; `link()` on a directory), because claiming a version
number with it is what makes concurrent commits safe.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

from artfs.errors import StoreError, StoreNotFound

T = TypeVar("T")


class ObjectInfo(NamedTuple):
    """A listed object: its key, size in bytes, and when it was last written (seconds since the epoch)."""

    key: str
    size: int
    mtime: float


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

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        """Like `list`, with each object's size and last-write time (garbage collection ages objects by
        it). Stores that cannot say so refuse."""
        raise StoreError(f"store {self.uri} cannot list object times")

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    def exists(self, key: str) -> bool:
        try:
            self.get_range(key, 0, 0)
        except StoreNotFound:
            return False
        return True

    def check(self) -> None:  # noqa: B027 - optional: a store that cannot be missing has nothing to check
        """Raise StoreUnavailable, saying so in one line, if the store itself (its directory, its bucket)
        is not there: a reader must not mistake a mistyped store for an empty one."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class WrappingStore(Store):
    """A store around another, every call going through `_call`: how cross-cutting concerns (retries,
    the circuit breaker) wrap any store instead of branching inside each one."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    @property
    def uri(self) -> str:  # type: ignore[override]
        return self.inner.uri

    def _call(self, fn: Callable[[], T]) -> T:
        return fn()

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._call(lambda: self.inner.get_range(key, offset, length))

    def put(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put(key, data))

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        self._call(lambda: self.inner.put_file(key, path))

    def create_if_absent(self, key: str, data: bytes) -> bool:
        return self._call(lambda: self.inner.create_if_absent(key, data))

    def list(self, prefix: str) -> Iterator[str]:
        return self._call(lambda: self.inner.list(prefix))

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._call(lambda: self.inner.list_info(prefix))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def check(self) -> None:
        self._call(self.inner.check)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
