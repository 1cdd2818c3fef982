"""CircuitBreaker: after repeated calls that could not reach the store, fail at once for a while.

A store that accepts connections and never answers costs every call its whole retry deadline (tens of
seconds) before it fails. For a one-shot command that is one wait; for a mount it is every uncached read,
again and again, each holding a reader (and a FUSE request) for the full deadline. So after `threshold`
calls in a row ended unreachable (retries exhausted on transient faults), the breaker opens: calls fail
immediately with StoreUnavailable for `cooldown` seconds. Then calls go through again; the first success
closes it, another failure opens it for another cooldown. Errors that say something about the request
(not found, denied, corrupt) pass through and count as the store answering.

Wraps a RetryingStore (retry.py): the breaker counts what is left after retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from artfs.errors import StoreUnavailable, TransientStoreError
from artfs.storage.store import Store, WrappingStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class CircuitBreaker(WrappingStore):
    def __init__(self, inner: Store, threshold: int = 3, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(inner)
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._last = ""

    @property
    def deadline(self) -> float:
        """The wrapped store's retry deadline (how long one call may take before it fails)."""
        return float(getattr(self.inner, "deadline", 25.0))

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._clock() < self._open_until

    def _call(self, fn: Callable[[], T]) -> T:
        with self._lock:
            left = self._open_until - self._clock()
            if left > 0:
                raise StoreUnavailable(
                    f"store {self.uri} unreachable ({self._last}); failing fast for another {left:.0f} s"
                )
        try:
            result = fn()
        except StoreUnavailable as e:
            if isinstance(e.__cause__, TransientStoreError):
                self._failed(str(e.__cause__))
            raise
        with self._lock:
            if self._failures >= self.threshold:
                log.info("store %s answers again", self.uri)
            self._failures = 0
        return result

    def _failed(self, why: str) -> None:
        with self._lock:
            self._failures += 1
            self._last = why
            if self._failures >= self.threshold:
                self._open_until = self._clock() + self.cooldown
                log.warning("store %s unreachable %d times in a row (%s): failing fast for %.0f s",
                            self.uri, self._failures, why, self.cooldown)
