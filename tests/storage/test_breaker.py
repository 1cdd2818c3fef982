"""The circuit breaker: a store that keeps not answering is failed fast for a while, and recovers by itself.
Counted calls and a fake clock, no timing: a store that is down, then back."""

from __future__ import annotations

import socket
import threading

import pytest

from artfs.errors import StoreNotFound, StoreUnavailable, TransientStoreError
from artfs.storage.breaker import CircuitBreaker
from artfs.storage.local import LocalStore
from artfs.storage.open import open_store
from artfs.storage.retry import RetryingStore
from tests.support.faults import FaultyStore
from tests.support.s3server import s3_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stack(tmp_path, clock: Clock) -> tuple[FaultyStore, CircuitBreaker]:
    faulty = FaultyStore(LocalStore(str(tmp_path)))
    retrying = RetryingStore(faulty, attempts=2, base_delay=0, max_delay=0, deadline=5)
    return faulty, CircuitBreaker(retrying, threshold=3, cooldown=30, clock=clock)


def test_opens_after_repeated_unreachable_calls_then_recovers(tmp_path) -> None:
    clock = Clock()
    faulty, store = _stack(tmp_path, clock)
    store.put("k", b"v")
    faulty.fail = TransientStoreError("connection timed out")
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="unreachable after 2 attempts"):
            store.get("k")
    assert faulty.calls == 6 and store.is_open
    with pytest.raises(StoreUnavailable, match="failing fast for another 30 s") as exc:
        store.get_range("k", 0, 1)
    assert faulty.calls == 6, "an open breaker does not touch the store"
    assert "connection timed out" in str(exc.value) and "\n" not in str(exc.value)
    clock.now += 31
    faulty.fail = None  # the store is back
    assert store.get("k") == b"v" and not store.is_open
    faulty.fail = TransientStoreError("reset")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.get("k")
    assert not store.is_open, "one failure after recovering does not open it again"


def test_answers_that_are_errors_keep_it_closed(tmp_path) -> None:
    clock = Clock()
    faulty, store = _stack(tmp_path, clock)
    for _ in range(5):
        with pytest.raises(StoreNotFound):
            store.get("missing")
    faulty.fail = StoreUnavailable("access denied")
    for _ in range(5):
        with pytest.raises(StoreUnavailable, match="denied"):
            store.get("k")
    assert not store.is_open


def test_a_silent_s3_endpoint_fails_within_the_deadline_then_fast(monkeypatch, tmp_path) -> None:
    """A server that accepts connections and never answers: each call ends within its deadline (not the
    default 20 s read timeout), and after three the breaker answers at once."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel accepts; nobody ever reads or answers
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    for name, value in s3_env(endpoint).items():
        monkeypatch.setenv(name, value)
    try:
        store = CircuitBreaker(open_store("s3://bucket/p", retries=2, deadline=0.5), threshold=3, cooldown=60)
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="unreachable"):
                store.get("k")
        assert store.is_open
        done = threading.Event()

        def fast() -> None:
            with pytest.raises(StoreUnavailable, match="failing fast"):
                store.get("k")
            done.set()

        t = threading.Thread(target=fast)
        t.start()
        t.join(5)
        assert done.is_set()
    finally:
        silent.close()
