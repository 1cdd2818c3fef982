"""A store wrapper for tests of faults: it counts and records calls, slows them down, makes them fail.

Like the retry wrapper it wraps any store, so a fault test runs over a real directory or S3 store.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from artfs.errors import TransientStoreError
from artfs.storage.store import Store


class FaultyStore(Store):
    """Delegates to `inner`. The faultable calls are the reads (get, get_range, list) and create_if_absent;
    put and delete pass straight through, so a test can set up its objects through the wrapper.

    - `calls` counts the faultable calls; `ranges` lists the get_ranges that reached `inner`.
    - `delay`: seconds each faultable call sleeps first (a slow store).
    - `fail`: while set, every faultable call raises it (a store that is down).
    - `fail_first=N`: the first N faultable calls raise `error`, by default TransientStoreError (a flaky
      store). With `land`, a failing create_if_absent writes first: the write lands, its answer is lost.

    Closing the wrapper leaves `inner` open: it belongs to whoever opened it.
    """

    def __init__(self, inner: Store, *, fail_first: int = 0, error: Exception | None = None,
                 land: bool = False) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.fail_first, self.error, self.land = fail_first, error, land
        self.delay = 0.0
        self.fail: Exception | None = None
        self.calls = 0
        self.ranges: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def _fault(self) -> None:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if n <= self.fail_first:
            raise self.error or TransientStoreError(f"flaky failure {n}")

    def get(self, key: str) -> bytes:
        self._fault()
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._fault()
        with self._lock:
            self.ranges.append((key, offset, length))
        return self.inner.get_range(key, offset, length)

    def list(self, prefix: str) -> Iterator[str]:
        self._fault()
        return self.inner.list(prefix)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        if self.land and self.calls < self.fail_first:  # the write lands, but its answer is lost
            self.inner.create_if_absent(key, data)
        self._fault()
        return self.inner.create_if_absent(key, data)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        self.inner.put_file(key, path)

    def delete(self, key: str) -> None:
        self.inner.delete(key)
