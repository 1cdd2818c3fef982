"""The read path without FUSE: single flight, prefetch, directory-order lookahead, failures, deadlines.

A counting wrapper (FaultyStore) around a real local store shows how many ranged GETs each access pattern costs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from artfs.core.repo import Repo
from artfs.errors import StoreUnavailable
from artfs.fs.chunks import ChunkSource
from artfs.fs.reader import WHOLE_PART, OpenFile, Reader
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store
from tests.support.faults import FaultyStore
from tests.support.repos import commit, fresh_repo

MiB = 1 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reader-src")
    rng = random.Random(3)
    (root / "big.bin").write_bytes(rng.randbytes(24 * MiB))
    (root / "small").mkdir()
    for i in range(300):
        (root / "small" / f"f{i:04d}.bin").write_bytes(rng.randbytes(rng.randint(100, 30_000)))
    return root


@pytest.fixture
def repo(source: Path, tmp_path: Path) -> Iterator[Repo]:
    store_path = str(tmp_path / "store")
    commit(store_path, source, "ds", tmp_path / "writer")
    r = fresh_repo(store_path, tmp_path / "reader")  # a cold cache
    yield r
    r.close()


Body = Callable[[Reader, ChunkSource, Callable[[str], OpenFile]], Awaitable[None]]


def run(repo: Repo, store: Store, body: Body, deadline: float = 10.0, whole_limit: int = 0,
        memory_bytes: int = 128 * MiB) -> None:
    rec = repo.resolve("ds")
    header = repo.ensure_index(rec)

    def open_file(path: str) -> OpenFile:
        entry = repo.index.lookup(rec.manifest, path)
        assert entry is not None
        return reader.open(path, rec.manifest, header.packs, entry)

    async def main() -> None:
        nonlocal reader
        async with trio.open_nursery() as nursery:
            chunks = ChunkSource(store, repo.cache, memory_bytes=memory_bytes)
            chunks.bind(nursery)
            reader = Reader(chunks, repo.index, deadline, whole_limit=whole_limit)
            await body(reader, chunks, open_file)
            nursery.cancel_scope.cancel()

    reader: Reader
    trio.run(main)


async def read_all(reader: Reader, f: OpenFile, size: int = MiB) -> bytes:
    out, off = [], 0
    while True:
        data = await reader.read(f, off, size)
        if not data:
            return b"".join(out)
        out.append(bytes(data))
        off += len(data)
        await trio.sleep(0)  # FUSE workers wait for the next request here


def test_concurrent_reads_share_one_fetch(repo, source):
    store = FaultyStore(repo.store)
    store.delay = 0.2
    off = 20 * MiB  # far from where a new reader starts: a random read, so no prefetch GET joins in
    expected = (source / "big.bin").read_bytes()[off : off + 4096]

    async def body(reader, chunks, open_file):
        results = []

        async def one() -> None:
            f = open_file("big.bin")
            results.append(bytes(await reader.read(f, off, 4096)))

        async with trio.open_nursery() as n:
            for _ in range(8):
                n.start_soon(one)
        assert results == [expected] * 8

    run(repo, store, body)
    assert len(store.ranges) == 1


def test_sequential_read_prefetches_in_big_spans(repo, source):
    store = FaultyStore(repo.store)

    async def body(reader, chunks, open_file):
        assert await read_all(reader, open_file("big.bin"), 128 * 1024) == (source / "big.bin").read_bytes()
        assert chunks.stats["prefetch_spans"] > 0

    run(repo, store, body)
    assert len(store.ranges) <= 24 // 8 + 4, store.ranges  # spans of up to 8 MiB, not one GET per chunk


def test_random_reads_do_not_prefetch(repo, source):
    store = FaultyStore(repo.store)
    data = (source / "big.bin").read_bytes()
    offsets = [20 * MiB, 2 * MiB, 11 * MiB + 77, 23 * MiB]

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        for off in offsets:
            assert bytes(await reader.read(f, off, 4096)) == data[off : off + 4096]
        assert chunks.stats["prefetch_spans"] == 0

    run(repo, store, body)
    assert len(store.ranges) == len(offsets)
    assert all(length <= 4 * MiB for _, _, length in store.ranges)  # one chunk each


async def settle(chunks: ChunkSource, f: OpenFile) -> None:
    """Wait until no fetch is in flight (the background ones included) and `f`'s chunks are in the cache
    (one task writes fetched chunks to LMDB after they land)."""
    with trio.fail_after(20):
        while chunks._flights or not all(chunks.cache.contains(r.digest) for r in f.layout.refs):  # noqa: SLF001
            await trio.sleep(0.01)


def test_a_randomly_read_file_is_fetched_whole_in_the_background(repo, source):
    store = FaultyStore(repo.store)
    store.delay = 0.01
    data = (source / "big.bin").read_bytes()
    rng = random.Random(5)
    offsets = [rng.randrange(0, len(data) - 4096) for _ in range(40)]

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        for off in offsets:  # every read right while the background fetch runs, some waiting for its part
            assert bytes(await reader.read(f, off, 4096)) == data[off : off + 4096]
        assert f.whole and chunks.stats["whole_files"] == 1
        await settle(chunks, f)
        gets = len(store.ranges)
        for off in offsets[::-1]:  # now all of it is here: no more GETs
            assert bytes(await reader.read(f, off, 4096)) == data[off : off + 4096]
        assert len(store.ranges) == gets

    run(repo, store, body, whole_limit=32 * MiB)
    background = [length for _, _, length in store.ranges if length > 4 * MiB]
    assert background and max(background) <= WHOLE_PART  # parallel parts, not one GET per chunk
    starts = [(key, start) for key, start, _ in store.ranges]
    assert len(starts) == len(set(starts))  # a read waits for the part holding its chunk: nothing fetched twice


def test_a_file_over_the_limit_is_not_fetched_whole(repo, source):
    store = FaultyStore(repo.store)
    data = (source / "big.bin").read_bytes()
    offsets = [20 * MiB, 2 * MiB, 11 * MiB + 77, 23 * MiB, 5 * MiB, 17 * MiB]

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        for off in offsets:
            assert bytes(await reader.read(f, off, 4096)) == data[off : off + 4096]
        assert not f.whole and chunks.stats["prefetch_spans"] == 0

    run(repo, store, body, whole_limit=16 * MiB)
    assert len(store.ranges) == len(offsets)


def test_small_reads_of_cached_big_chunks_copy_only_their_bytes(repo, source):
    """With a tiny memory cache, a 4 KiB read of a chunk in LMDB is a slice of it (chunk ends included)."""
    data = (source / "big.bin").read_bytes()

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        assert await read_all(reader, f) == data  # fills the cache
        await settle(chunks, f)
        g = open_file("big.bin")
        starts = g.layout.starts
        offsets = [0, 3 * MiB + 5, len(data) - 4096] + [starts[k] - 4096 for k in range(1, 4)]
        for off in offsets:
            assert bytes(await reader.read(g, off, 4096)) == data[off : off + 4096]
        assert chunks.stats["slice_hits"] >= len(offsets) - 1
        across = starts[2] - 100  # across a chunk boundary: assembled from whole chunks, as before
        assert bytes(await reader.read(g, across, 4096)) == data[across : across + 4096]

    run(repo, repo.store, body, memory_bytes=1)


def test_a_stream_bigger_than_the_cache_is_not_written_to_it(repo, source):
    """Readahead of a file over the cache's capacity is served from memory only: caching it would evict
    its own head (and all else) before a re-read. Reads stay correct; the cache keeps its bound."""
    data = (source / "big.bin").read_bytes()
    with ChunkCache(repo.cache.cache_dir, 8 * MiB):  # records a bound that repo.cache adopts
        pass
    repo.cache.stats()
    assert repo.cache.capacity() < len(data)

    async def body(reader, chunks, open_file):
        assert await read_all(reader, open_file("big.bin")) == data
        await chunks.drain()
        assert chunks.stats["uncached_bytes"] >= len(data) // 2

    run(repo, repo.store, body)
    assert repo.cache.stats()["bytes"] <= 8 * MiB


def test_small_files_in_name_order_cost_a_handful_of_gets(repo, source):
    store = FaultyStore(repo.store)
    names = sorted(p.name for p in (source / "small").iterdir())

    async def body(reader, chunks, open_file):
        for name in names:
            f = open_file(f"small/{name}")
            assert await read_all(reader, f) == (source / "small" / name).read_bytes()

    run(repo, store, body)
    assert len(store.ranges) <= 4, len(store.ranges)  # ~4.5 MiB of small files


def test_store_failure_is_raised_and_not_remembered(repo, source):
    store = FaultyStore(repo.store)
    store.fail = StoreUnavailable("store is down")

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        with pytest.raises(StoreUnavailable):
            await reader.read(f, 0, 4096)
        store.fail = None  # back online: the next read fetches again
        assert bytes(await reader.read(f, 0, 4096)) == (source / "big.bin").read_bytes()[:4096]

    run(repo, store, body)


def test_a_slow_store_hits_the_deadline_and_the_fetch_still_lands(repo, source):
    store = FaultyStore(repo.store)
    store.delay = 1.0

    async def body(reader, chunks, open_file):
        f = open_file("big.bin")
        started = time.monotonic()
        with pytest.raises(trio.TooSlowError):
            await reader.read(f, 0, 4096)
        assert time.monotonic() - started < 0.9
        await trio.sleep(1.5)  # the fetch finishes in the background and fills the cache
        count = len(store.ranges)
        assert bytes(await reader.read(f, 0, 4096)) == (source / "big.bin").read_bytes()[:4096]
        assert len(store.ranges) == count

    run(repo, store, body, deadline=0.3)
