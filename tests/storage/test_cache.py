"""The LMDB chunk cache: bounds, LRU order, sharing between processes and threads, fork, remapping."""

from __future__ import annotations

import gc
import multiprocessing
import os
import stat
import threading

import pytest
import xxhash

from artfs.storage import cache as cache_mod
from artfs.storage.cache import ChunkCache

KiB = 1 << 10
MiB = 1 << 20


def chunk(size: int, seed: int | None = None) -> tuple[bytes, bytes]:
    """(digest, data): random data, or data derived from `seed` so two processes can make the same chunk."""
    data = os.urandom(size) if seed is None else seed.to_bytes(8, "big") * (size // 8)
    return xxhash.xxh3_128_digest(data), data


def audit(cache: ChunkCache) -> tuple[int, int]:
    """Check that data, meta, lru and the running total agree; returns (bytes, entries)."""
    h = cache._env().enter()
    try:
        with h.env.begin() as txn:
            sizes = {k: len(v) for k, v in txn.cursor(db=h.data)}
            meta = {k: cache_mod._META.unpack(v) for k, v in txn.cursor(db=h.meta)}
            lru = {(cache_mod._U64.unpack(k[:8])[0], k[8:]) for k, _ in txn.cursor(db=h.lru)}
            total = cache_mod._U64.unpack(txn.get(cache_mod._TOTAL_KEY, db=h.stats) or bytes(8))[0]
    finally:
        cache._env().exit()
    assert sizes.keys() == meta.keys()
    assert all(meta[d][1] == n for d, n in sizes.items())
    assert lru == {(stamp, d) for d, (stamp, _) in meta.items()}
    assert total == sum(sizes.values())
    assert cache.stats()["bytes"] == total and cache.stats()["entries"] == len(sizes)
    return total, len(sizes)


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def small(cache_dir):
    """A 4 MiB cache: eight 512 KiB chunks fill it."""
    with ChunkCache(cache_dir, max_bytes=4 * MiB) as c:
        yield c


# --- basics ---


def test_round_trip(small):
    digest, data = chunk(100 * KiB)
    small.put(digest, data)
    assert small.get(digest) == data
    assert digest in small and small.contains(digest)
    assert audit(small) == (len(data), 1)


def test_miss_returns_none(small):
    digest, _ = chunk(10)
    assert small.get(digest) is None
    assert digest not in small
    assert small.get(b"short") is None


def test_put_of_a_cached_chunk_counts_once(small):
    digest, data = chunk(64 * KiB)
    small.put(digest, data)
    small.put_many([(digest, data), (digest, data)])
    assert audit(small) == (len(data), 1)


def test_bad_digest_is_rejected(small):
    with pytest.raises(ValueError):
        small.put(b"\0" * 15, b"x")


def test_empty_chunk(small):
    digest, data = chunk(0)
    small.put(digest, data)
    assert small.get(digest) == b""


def test_clear(small):
    small.put_many(chunk(64 * KiB) for _ in range(5))
    small.clear()
    assert audit(small) == (0, 0)


def test_stats(small, cache_dir):
    small.put(*chunk(1000))
    assert small.stats() == {
        "bytes": 1000,
        "entries": 1,
        "max_bytes": 4 * MiB,
        "path": os.path.join(cache_dir, "chunks.lmdb"),
    }


# --- bounds and LRU ---


def test_eviction_keeps_total_under_the_bound(small):
    for _ in range(40):
        small.put(*chunk(300 * KiB))
        total, _ = audit(small)
        assert total <= 4 * MiB
    assert total >= 3 * MiB  # evicts down to 90%, not to nothing


@pytest.mark.parametrize("flush", [True, False], ids=["flush_access", "flushed-by-put"])
def test_least_recently_used_goes_first(small, flush):
    chunks = [chunk(512 * KiB) for _ in range(7)]  # 3.5 MiB: under the limit
    for c in chunks:
        small.put(*c)
    a, b = chunks[0], chunks[1]
    assert small.get(a[0]) == a[1]  # A is now the most recently used; B is the oldest
    if flush:
        small.flush_access()
    small.put_many([chunk(512 * KiB), chunk(512 * KiB)])  # 4.5 MiB > 4 MiB: evict to <= 3.6 MiB
    assert a[0] in small
    assert b[0] not in small and chunks[2][0] not in small
    assert audit(small)[0] <= 0.9 * 4 * MiB


def test_oversize_chunk_is_not_cached(small):
    big = chunk(4 * MiB + 1)
    fits = chunk(4 * MiB)
    small.put(*big)
    assert big[0] not in small and audit(small) == (0, 0)
    small.put(*fits)
    assert small.get(fits[0]) == fits[1]


def test_batch_larger_than_the_limit_keeps_its_tail(small):
    batch = [chunk(512 * KiB) for _ in range(12)]  # 6 MiB in one put_many
    small.put_many(batch)
    total, _ = audit(small)
    assert total <= 4 * MiB
    assert batch[-1][0] in small and batch[0][0] not in small


def test_a_put_does_not_evict_itself(cache_dir):
    with ChunkCache(cache_dir, max_bytes=1 * MiB) as c:
        c.put(*chunk(300 * KiB))
        big = chunk(950 * KiB)  # over 90% of the limit, under the limit
        c.put(*big)
        assert big[0] in c
        assert audit(c) == (len(big[1]), 1)


def test_pending_access_due(small):
    digests = []
    for _ in range(cache_mod._FLUSH_ENTRIES):
        d, data = chunk(16)
        small.put(d, data)
        digests.append(d)
    assert not small.pending_access_due()
    for d in digests[:-1]:
        small.get(d)
    assert not small.pending_access_due()
    small.get(digests[-1])
    assert small.pending_access_due()
    small.flush_access()
    assert not small.pending_access_due()
    small.get(digests[0])
    small._pending_since -= cache_mod._FLUSH_AGE_NS
    assert small.pending_access_due()


# --- files and settings ---


def test_reopen_after_close_keeps_contents(cache_dir):
    digest, data = chunk(200 * KiB)
    c = ChunkCache(cache_dir, max_bytes=4 * MiB)
    c.put(digest, data)
    c.close()
    c.close()
    with pytest.raises(ValueError):
        c.get(digest)
    with ChunkCache(cache_dir, max_bytes=4 * MiB) as again:
        assert again.get(digest) == data
        assert audit(again) == (len(data), 1)


def test_cache_dir_is_private(tmp_path):
    path = tmp_path / "a" / "cache"
    with ChunkCache(str(path), max_bytes=MiB):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path / "chunks.lmdb").st_mode) == 0o700


# --- one environment per process ---


def test_caches_on_one_directory_share_one_environment(cache_dir, monkeypatch):
    monkeypatch.setattr(cache_mod, "_MIN_MAP_SIZE", 0)
    monkeypatch.setattr(cache_mod, "_MAP_HEADROOM", 1 * MiB)
    first = ChunkCache(cache_dir, max_bytes=1 * MiB)  # map: 3 MiB
    a = chunk(100 * KiB)
    first.put(*a)
    second = ChunkCache(os.path.join(cache_dir, ".", ""), max_bytes=16 * MiB)  # same files; map: 33 MiB
    assert second._shared is first._shared
    assert second.get(a[0]) == a[1]
    second.put_many(chunk(512 * KiB) for _ in range(16))  # 8 MiB: needs the bigger map
    first.close()
    assert audit(second)[1] == 17
    second.close()
    assert os.path.realpath(second.path) not in cache_mod._ENVS
    with ChunkCache(cache_dir, max_bytes=16 * MiB) as again:
        assert again.get(a[0]) == a[1]


def test_a_cache_dropped_unclosed_releases_its_environment(cache_dir):
    c = ChunkCache(cache_dir, max_bytes=MiB)
    c.put(*chunk(10))
    key = os.path.realpath(c.path)
    assert key in cache_mod._ENVS
    del c
    gc.collect()
    assert key not in cache_mod._ENVS


# --- threads, processes, fork ---


def test_threads_share_one_cache(small):
    errors: list[BaseException] = []
    shared = [chunk(64 * KiB) for _ in range(8)]

    def work() -> None:
        try:
            for i in range(60):
                mine = chunk(96 * KiB)
                small.put(*mine)
                small.put(*shared[i % len(shared)])
                got = small.get(mine[0])
                assert got is None or got == mine[1]
                got = small.get(shared[i % len(shared)][0])
                assert got is None or got == shared[i % len(shared)][1]
                if i % 10 == 0:
                    small.flush_access()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert audit(small)[0] <= 4 * MiB


def _worker(cache_dir: str, me: int, max_bytes: int, barrier, results) -> None:
    """Run in another process: put own chunks and shared ones, then read the other worker's."""
    with ChunkCache(cache_dir, max_bytes=max_bytes) as c:
        for i in range(30):
            c.put(*chunk(64 * KiB, seed=me * 1000 + i))
            c.put(*chunk(32 * KiB, seed=10**6 + i))  # both workers put these
        barrier.wait()
        other = 1 - me
        seen = sum(c.get(chunk(64 * KiB, seed=other * 1000 + i)[0]) is not None for i in range(30))
        results.put((me, seen))


def _run_workers(cache_dir: str, max_bytes: int) -> dict[int, int]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cache_dir, me, max_bytes, barrier, results)) for me in (0, 1)]
    for p in procs:
        p.start()
    seen = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return seen


def test_two_processes_see_each_others_chunks(cache_dir):
    seen = _run_workers(cache_dir, max_bytes=64 * MiB)
    assert seen == {0: 30, 1: 30}
    with ChunkCache(cache_dir, max_bytes=64 * MiB) as c:
        assert audit(c) == (2 * 30 * 64 * KiB + 30 * 32 * KiB, 90)


def test_two_processes_evicting_keep_the_total_exact(cache_dir):
    _run_workers(cache_dir, max_bytes=2 * MiB)
    with ChunkCache(cache_dir, max_bytes=2 * MiB) as c:
        assert audit(c)[0] <= 2 * MiB


def _fork_child(cache: ChunkCache, digest: bytes, data: bytes, results) -> None:
    results.put(cache.get(digest) == data)
    cache.put(*chunk(10 * KiB, seed=42))
    cache.close()


def test_fork_child_reopens_and_parent_keeps_working(small):
    digest, data = chunk(100 * KiB)
    small.put(digest, data)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(small, digest, data, results))
    p.start()
    assert results.get(timeout=60) is True
    p.join(timeout=60)
    assert p.exitcode == 0
    assert small.get(digest) == data
    assert small.get(chunk(10 * KiB, seed=42)[0]) is not None  # the child's put
    small.put(*chunk(10 * KiB))
    audit(small)


def test_fork_waits_for_transactions_in_flight(small):
    digest, data = chunk(100 * KiB)
    small.put(digest, data)
    in_txn, done = threading.Event(), threading.Event()
    read: list[bytes | None] = []

    def slow_reader() -> None:  # a reader that another thread is inside of when the process forks
        shared = small._env()
        h = shared.enter()
        try:
            with h.env.begin() as txn:
                in_txn.set()
                done.wait(10)
                read.append(txn.get(digest, db=h.data))
        finally:
            shared.exit()

    reader = threading.Thread(target=slow_reader)
    reader.start()
    in_txn.wait(10)
    threading.Timer(0.3, done.set).start()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(small, digest, data, results))
    p.start()  # waits for the reader: the child must not inherit (and then close) a live transaction
    assert done.is_set()
    assert results.get(timeout=60) is True
    p.join(timeout=60)
    reader.join()
    assert p.exitcode == 0
    assert read == [data]
    assert small.get(digest) == data


# --- a map grown by another process ---


def _grow(cache_dir: str) -> None:
    cache_mod._MIN_MAP_SIZE = 0
    cache_mod._MAP_HEADROOM = 1 * MiB
    with ChunkCache(cache_dir, max_bytes=32 * MiB) as c:  # map: 65 MiB
        c.put_many(chunk(256 * KiB, seed=i) for i in range(40))


def test_adopts_a_map_grown_by_another_process(cache_dir, monkeypatch):
    monkeypatch.setattr(cache_mod, "_MIN_MAP_SIZE", 0)
    monkeypatch.setattr(cache_mod, "_MAP_HEADROOM", 1 * MiB)
    remaps = []
    remap = cache_mod._SharedEnv.remap

    def spy(self, size=0):
        remaps.append(size)
        remap(self, size)

    monkeypatch.setattr(cache_mod._SharedEnv, "remap", spy)
    with ChunkCache(cache_dir, max_bytes=1 * MiB) as c:  # map: 3 MiB
        c.put(*chunk(10 * KiB))
        p = multiprocessing.get_context("spawn").Process(target=_grow, args=(cache_dir,))
        p.start()
        p.join(timeout=120)
        assert p.exitcode == 0
        last = chunk(256 * KiB, seed=39)
        assert c.get(last[0]) == last[1]  # beyond our 3 MiB map until we remap
        assert remaps
        c.put(*chunk(10 * KiB))  # evicts down to our own limit
        assert audit(c)[0] <= 1 * MiB
