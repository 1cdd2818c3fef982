"""RetryingStore: one retry policy for every store, as a wrapper rather than a branch in each backend.

Only TransientStoreError is retried (throttling, 5xx, dropped connections, 409 on a conditional PUT),
with exponential backoff and full jitter, until `attempts` or `deadline` runs out; then the caller gets
StoreUnavailable. Everything else passes straight through.

Retrying `create_if_absent` needs care: a PUT can land on the server and still fail on the way back, so a
retry may find our own object. After a transient failure, "already exists" counts as ours when the stored
bytes equal ours. Two writers racing with identical bytes could then both be told "created"; callers that
must tell writers apart put something unique (a writer id) in what they claim.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from artfs.errors import StoreUnavailable, TransientStoreError
from artfs.storage.store import ObjectInfo, Store, WrappingStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingStore(WrappingStore):
    """Wraps a store with the retry policy (the settings' ARTFS_STORE_RETRIES and ARTFS_STORE_DEADLINE
    reach it through `open_store`)."""

    def __init__(
        self,
        inner: Store,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        deadline: float = 25.0,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        """`on_retry(why, seconds so far)` hears of every retry (a CLI says it is still trying)."""
        super().__init__(inner)
        self.attempts = attempts
        self.deadline = deadline
        self.on_retry = on_retry
        self.base_delay = base_delay
        self.max_delay = max_delay

    def _call(self, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                return fn()
            except TransientStoreError as e:
                last = e
            delay = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (tries - 1)))
            if tries >= self.attempts or time.monotonic() - start + delay > self.deadline:
                break
            log.debug("store %s: %s; retry %d in %.2fs", self.uri, last, tries, delay)
            if self.on_retry is not None:
                self.on_retry(str(last), time.monotonic() - start)
            time.sleep(delay)
        raise StoreUnavailable(f"store {self.uri} unreachable after {tries} attempts: {last}") from last

    def create_if_absent(self, key: str, data: bytes) -> bool:
        failed_before = False

        def attempt() -> bool:
            nonlocal failed_before
            try:
                created = self.inner.create_if_absent(key, data)
            except TransientStoreError:
                failed_before = True
                raise
            if not created and failed_before:
                return self.inner.get(key) == data  # did our own earlier try land?
            return created

        return self._call(attempt)

    def list(self, prefix: str) -> Iterator[str]:
        """Listed eagerly, so a failure halfway through a listing is retried as a whole."""
        return iter(self._call(lambda: [*self.inner.list(prefix)]))

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        return iter(self._call(lambda: [*self.inner.list_info(prefix)]))
