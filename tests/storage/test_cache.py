"""The LMDB chunk cache: bounds (counted and on disk), LRU order, one bound for every process, prune and
clear, sharing between processes and threads, fork, remapping."""

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
            sizes: dict[bytes, int] = {}
            for k, v in txn.cursor(db=h.data):
                assert cache_mod._SEG.unpack(k[16:])[0] == (sizes.get(k[:16], 0) + cache._segment - 1) // cache._segment
                sizes[k[:16]] = sizes.get(k[:16], 0) + len(v)
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


def data_file(cache: ChunkCache) -> int:
    return os.path.getsize(os.path.join(cache.path, "data.mdb"))


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
    assert small.clear() == (5 * 64 * KiB, 5)
    assert audit(small) == (0, 0)


def test_stats(small, cache_dir):
    small.put(*chunk(1000))
    st = small.stats()
    assert st.pop("used_bytes") >= 4 * KiB and st.pop("file_bytes") >= 4 * KiB
    assert st == {"bytes": 1000, "entries": 1, "max_bytes": 4 * MiB, "path": os.path.join(cache_dir, "chunks.lmdb")}


# --- bounds and LRU ---


def test_eviction_keeps_total_and_file_under_the_bound(small):
    for _ in range(40):
        small.put(*chunk(300 * KiB))
        total, _ = audit(small)
        assert total <= 4 * MiB
        assert data_file(small) <= 4 * MiB
    assert total >= 2 * MiB  # evicts down to a low-water mark, not to nothing


@pytest.mark.parametrize("flush", [True, False], ids=["flush_access", "flushed-by-put"])
def test_least_recently_used_goes_first(cache_dir, flush):
    with ChunkCache(cache_dir, max_bytes=8 * MiB) as c:
        chunks = [chunk(512 * KiB) for _ in range(12)]  # 6 MiB: under the budget (8 MiB less room for writes)
        for ch in chunks:
            c.put(*ch)
        assert audit(c)[1] == 12
        a, b = chunks[0], chunks[1]
        assert c.get(a[0]) == a[1]  # A is now the most recently used; B is the oldest
        if flush:
            c.flush_access()
        c.put_many([chunk(512 * KiB) for _ in range(3)])  # past the budget: the oldest go
        assert a[0] in c
        assert b[0] not in c
        kept = [ch[0] in c for ch in chunks[1:]]
        assert kept == sorted(kept)  # evicted oldest first: a run of misses, then hits


def test_oversize_chunk_is_not_cached(small):
    assert small.largest_chunk() == (4 * MiB - cache_mod._SLACK) // 4
    big = chunk(small.largest_chunk() + 1)
    fits = chunk(small.largest_chunk())
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


def test_a_put_does_not_evict_itself(small):
    small.put_many(chunk(256 * KiB) for _ in range(8))
    big = chunk(small.largest_chunk())  # past the low-water mark with the others: they go, it stays
    small.put(*big)
    assert small.get(big[0]) == big[1]
    assert audit(small)[0] <= 4 * MiB


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


def test_caches_on_one_directory_share_one_environment(cache_dir):
    first = ChunkCache(cache_dir, max_bytes=1 * MiB)  # map: 1 MiB
    a = chunk(100 * KiB)
    first.put(*a)
    second = ChunkCache(os.path.join(cache_dir, ".", ""), max_bytes=16 * MiB)  # same files; the bound now
    assert second._shared is first._shared
    assert second.get(a[0]) == a[1]
    second.put_many(chunk(512 * KiB) for _ in range(16))  # 8 MiB: needs the bigger map
    assert first.stats()["max_bytes"] == 16 * MiB  # one bound for every opener
    first.close()
    assert audit(second)[1] == 17
    second.close()
    assert os.path.realpath(second.path) not in cache_mod._ENVS
    with ChunkCache(cache_dir, max_bytes=16 * MiB) as again:
        assert again.get(a[0]) == a[1]


def test_an_opener_without_a_bound_adopts_the_recorded_one(cache_dir):
    with ChunkCache(cache_dir, max_bytes=2 * MiB):
        pass
    with ChunkCache(cache_dir) as c:  # as a CLI command with no --cache-size: not the 20 GiB default
        assert c.max_bytes == 2 * MiB
        c.put_many(chunk(64 * KiB) for _ in range(100))
        assert audit(c)[0] <= 2 * MiB and data_file(c) <= 2 * MiB
    with ChunkCache(cache_dir, max_bytes=8 * MiB):  # a bound given is recorded: the last one given wins
        pass
    with ChunkCache(cache_dir) as c:
        assert c.stats()["max_bytes"] == 8 * MiB


def test_prune_evicts_oldest_first_and_the_space_is_reused(cache_dir):
    with ChunkCache(cache_dir, max_bytes=8 * MiB) as c:
        chunks = [chunk(256 * KiB) for _ in range(20)]  # 5 MiB
        c.put_many(chunks)
        c.get(chunks[0][0])
        c.flush_access()
        size = data_file(c)
        assert c.prune(2 * MiB) == (12 * 256 * KiB, 12)
        assert audit(c) == (2 * MiB, 8)
        assert chunks[0][0] in c and chunks[1][0] not in c and chunks[-1][0] in c
        assert c.prune(2 * MiB) == (0, 0)
        assert data_file(c) >= size  # LMDB files never shrink...
        for _ in range(3):
            c.put_many(chunk(256 * KiB) for _ in range(12))
        assert data_file(c) <= max(size, 8 * MiB)  # ...their pages are reused


def test_a_cache_of_the_old_layout_is_emptied(cache_dir):
    with ChunkCache(cache_dir, max_bytes=4 * MiB) as c:
        c.put(*chunk(10 * KiB))
        with c._env().transaction(write=True) as (txn, h):  # as an older artfs left it: one value per chunk
            txn.delete(cache_mod._FORMAT_KEY, db=h.stats)
            txn.put(b"\1" * 16, b"old", db=h.data)
    with ChunkCache(cache_dir, max_bytes=4 * MiB) as c:
        assert audit(c) == (0, 0)


def test_a_full_map_makes_room_and_retries(cache_dir, monkeypatch):
    with ChunkCache(cache_dir, max_bytes=2 * MiB) as c:
        monkeypatch.setattr(ChunkCache, "_budget", lambda self, written: 2 * MiB)  # no room kept: the map fills
        rooms = []
        make_room = ChunkCache._make_room

        def spy(self, written, attempt):
            rooms.append(attempt)
            return make_room(self, written, attempt)

        monkeypatch.setattr(ChunkCache, "_make_room", spy)
        for _ in range(60):
            last = chunk(128 * KiB)
            c.put(*last)
            assert c.get(last[0]) == last[1]
        assert rooms
        assert audit(c)[0] <= 2 * MiB and data_file(c) <= 2 * MiB


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
                read.append(txn.get(digest + cache_mod._SEG0, db=h.data))
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
    with ChunkCache(cache_dir, max_bytes=32 * MiB) as c:  # map: 32 MiB
        c.put_many(chunk(256 * KiB, seed=i) for i in range(40))


def test_adopts_a_map_grown_by_another_process(cache_dir, monkeypatch):
    remaps = []
    remap = cache_mod._SharedEnv.remap

    def spy(self, size=0):
        remaps.append(size)
        remap(self, size)

    monkeypatch.setattr(cache_mod._SharedEnv, "remap", spy)
    with ChunkCache(cache_dir, max_bytes=1 * MiB) as c:  # map: 1 MiB
        c.put(*chunk(10 * KiB))
        p = multiprocessing.get_context("spawn").Process(target=_grow, args=(cache_dir,))
        p.start()
        p.join(timeout=120)
        assert p.exitcode == 0
        last = chunk(256 * KiB, seed=39)
        assert c.get(last[0]) == last[1]  # beyond our 1 MiB map until we remap
        assert 0 in remaps
        c.put(*chunk(10 * KiB))  # under the bound the other process recorded, and its map
        assert c.max_bytes == 32 * MiB
        assert audit(c)[0] <= 32 * MiB and data_file(c) <= 32 * MiB


# --- the bound holds on disk, with two processes writing far more than it ---


def _hammer(cache_dir: str, me: int, bound: int, volume: int, sizes: list[int], results) -> None:
    """Write `volume` bytes of chunks of `sizes` (and read some back); report the most seen at once."""
    import random

    rnd = random.Random(me)
    most = {"bytes": 0, "used_bytes": 0, "file_bytes": 0}
    with ChunkCache(cache_dir, max_bytes=bound) as c:
        written, mine = 0, []
        while written < volume:
            digest, data = chunk(rnd.choice(sizes), seed=me << 32 | len(mine))
            c.put(digest, data)
            mine.append((digest, data))
            for d, want in rnd.sample(mine, min(3, len(mine))):
                got = c.get(d)
                assert got is None or got == want
            written += len(data)
            st = c.stats()
            for k in most:
                most[k] = max(most[k], st[k])
    results.put(most)


def hammer(cache_dir: str, bound: int, volume: int, sizes: list[int]) -> dict[str, int]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(cache_dir, me, bound, volume, sizes, results)) for me in (0, 1)]
    for p in procs:
        p.start()
    seen = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return {k: max(s[k] for s in seen) for k in seen[0]}


@pytest.mark.parametrize(("bound", "sizes"), [
    (2 * MiB, [64 * KiB]),
    (2 * MiB, [16 * KiB, 64 * KiB, 100 * KiB, 300 * KiB, 480 * KiB, 1 * MiB]),
    (24 * MiB, [256 * KiB, 512 * KiB, 1 * MiB, 1536 * KiB, 2 * MiB, 4 * MiB]),
], ids=["2M-64K-chunks", "2M-mixed", "24M-chunker-sizes"])
def test_the_bound_holds_on_disk_with_two_writers(cache_dir, bound, sizes):
    """Each of two processes writes 16x the bound: the counted bytes, the pages in use and the data file
    never pass the bound (before the file was the bound, a 2 MiB cache grew to 9-10 MiB)."""
    seen = hammer(cache_dir, bound, 16 * bound, sizes)
    assert seen["bytes"] <= bound
    assert seen["used_bytes"] <= bound
    assert seen["file_bytes"] <= bound
    with ChunkCache(cache_dir) as c:
        total, entries = audit(c)
        assert 0 < total <= bound and entries > 0
        assert data_file(c) <= bound


def test_get_range_reads_across_segments(small):
    seg = small._segment
    digest, data = chunk(2 * seg + 1000)
    small.put(digest, data)
    for offset, length in ((0, 10), (seg - 5, 10), (seg, seg), (seg - 1, seg + 2), (2 * seg + 990, 50),
                           (0, len(data)), (len(data), 10), (3 * seg, 4)):
        assert small.get_range(digest, offset, length) == data[offset:offset + length]
    assert small.get_range(chunk(10)[0], 0, 5) is None
    assert small.pending_access_due() is False and small._pending  # noted as an access
