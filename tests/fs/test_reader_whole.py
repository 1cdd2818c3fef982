"""A randomly read file fetched whole, without FUSE: its landed parts are held in memory (readers are served
from them, nothing is fetched twice) and written to the cache once the file is in, or early when more than
WHOLE_HOLD is held; each part is pushed into the page cache before the cache writes start, and so are chunks
that were in the cache already; parts are about equal in size."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from artfs.core.packs import ChunkRef
from artfs.core.repo import Repo
from artfs.fs import chunks as chunks_mod
from artfs.fs import reader as reader_mod
from artfs.fs.chunks import ChunkSource, _split
from artfs.fs.reader import PAGE, Reader
from tests.support.faults import FaultyStore
from tests.support.repos import indexed_entry, reading_machine

MiB = 1 << 20
EDGES = 8 * PAGE  # pages across two separately pushed pieces (parts, chunks found here) are left to reads


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("whole-src")
    (root / "big.bin").write_bytes(random.Random(21).randbytes(24 * MiB + 555))  # random: stored raw
    return root


@pytest.fixture
def repo(source: Path, tmp_path: Path) -> Iterator[Repo]:
    with reading_machine(source, tmp_path) as r:
        yield r


class Recorder:
    """What reached the store, the cache and the page cache, in order: each cache write notes how many GETs
    had started by then and how many bytes had been pushed."""

    def __init__(self, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = FaultyStore(repo.store)
        self.store.delay = 0.01
        self.page_cache: dict[int, bytes] = {}
        self.pushed = 0
        self.writes: list[tuple[int, int, set[bytes]]] = []  # (GETs started, bytes pushed, digests)
        self._lock = threading.Lock()
        put_many = repo.cache.put_many

        def recording_put_many(items):
            items = list(items)
            with self._lock:
                self.writes.append((len(self.store.ranges), self.pushed, {d for d, _ in items}))
            put_many(items)

        monkeypatch.setattr(repo.cache, "put_many", recording_put_many)

    def store_pages(self, inode: int, off: int, data) -> None:
        with self._lock:
            self.page_cache[off] = bytes(data)
            self.pushed += len(data)


def read_at_random(repo: Repo, rec: Recorder, data: bytes, offsets: list[int], memory_bytes: int,
                   pushes: bool = True) -> set[bytes]:
    """Read `offsets` (4 KiB each, checked) with a reader that fetches big.bin whole and pushes it into
    `rec`'s page cache; then wait until the file is in the cache (and pushed, with `pushes`). Returns the
    digests the reader's first reads fetched on their own (before the whole fetch started)."""
    r, header, entry = indexed_entry(repo, "ds", "big.bin")
    first: set[bytes] = set()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            chunks = ChunkSource(rec.store, repo.cache, memory_bytes=memory_bytes)
            chunks.bind(nursery)
            reader = Reader(chunks, repo.index, 10.0, whole_limit=64 * MiB, store_pages=rec.store_pages)
            f = reader.open("big.bin", r.manifest, header.packs, entry, inode=9)
            for off in offsets:
                if not f.whole:
                    first.add(f.layout.refs[f.layout.covering(off, off + PAGE)[0]].digest)
                assert bytes(await reader.read(f, off, PAGE)) == data[off : off + PAGE], off
            with trio.fail_after(30):
                while chunks._flights or not all(repo.cache.contains(x.digest) for x in f.layout.refs):  # noqa: SLF001
                    await trio.sleep(0.01)
                while pushes and rec.pushed < len(data) - EDGES:
                    await trio.sleep(0.01)
            for off in offsets[::-1]:  # held parts were let go once written: the cache serves them now
                assert bytes(await reader.read(f, off, PAGE)) == data[off : off + PAGE], off
            await chunks.drain()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return first


def _offsets(data: bytes, n: int = 60) -> list[int]:
    rng = random.Random(7)
    return [rng.randrange(0, len(data) - PAGE) // PAGE * PAGE for _ in range(n)]


def test_landed_parts_are_held_and_written_once_the_file_is_in(repo, source, monkeypatch):
    data = (source / "big.bin").read_bytes()
    rec = Recorder(repo, monkeypatch)
    first = read_at_random(repo, rec, data, _offsets(data), memory_bytes=2 * MiB)  # the LRU holds ~2 chunks
    starts = [(key, start) for key, start, _ in rec.store.ranges]
    assert len(starts) == len(set(starts))  # held parts served the reads: nothing fetched twice
    gets = len(rec.store.ranges)
    whole = [(started, pushed) for started, pushed, digests in rec.writes if digests - first]
    assert whole, rec.writes
    for started, pushed in whole:  # written only after the last GET, and after every part was pushed
        assert started == gets
        assert pushed >= len(data) - EDGES
    for off, page in rec.page_cache.items():
        assert page == data[off : off + len(page)], off


def test_more_than_whole_hold_is_written_while_the_rest_lands(repo, source, monkeypatch):
    monkeypatch.setattr(chunks_mod, "WHOLE_HOLD", 4 * MiB)
    monkeypatch.setattr(reader_mod, "WHOLE_PART", 2 * MiB)  # ~12 parts, 4 in flight
    data = (source / "big.bin").read_bytes()
    rec = Recorder(repo, monkeypatch)
    first = read_at_random(repo, rec, data, _offsets(data), memory_bytes=2 * MiB, pushes=False)
    gets = len(rec.store.ranges)
    early = [started for started, _, digests in rec.writes if digests - first and started < gets]
    assert early  # held parts were written before the last part was fetched
    starts = [(key, start) for key, start, _ in rec.store.ranges]
    assert len(starts) == len(set(starts))


def test_chunks_already_in_the_cache_are_pushed_too(repo, source, monkeypatch):
    data = (source / "big.bin").read_bytes()
    rec = Recorder(repo, monkeypatch)
    read_at_random(repo, rec, data, _offsets(data), memory_bytes=2 * MiB)
    rec.store.ranges.clear()
    rec.page_cache.clear()
    rec.pushed = 0
    read_at_random(repo, rec, data, _offsets(data)[::-1], memory_bytes=2 * MiB)  # waits for the pushes
    assert rec.store.ranges == []
    for off, page in rec.page_cache.items():
        assert page == data[off : off + len(page)], off


def _refs(sizes: list[int]) -> list[ChunkRef]:
    out, off = [], 0
    for k, n in enumerate(sizes):
        out.append(ChunkRef(pack="p", offset=off, stored_len=n, raw_len=n, digest=k.to_bytes(16, "big"), flags=0))
        off += n
    return out


def test_split_cuts_a_span_into_about_equal_parts():
    rng = random.Random(3)
    span = _refs([rng.randrange(256 * 1024, 4 * MiB) for _ in range(40)])  # ~85 MiB
    size = span[-1].end - span[0].offset
    parts = _split(span, 16 * MiB)
    assert [r for p in parts for r in p] == span
    assert len(parts) == round(size / (16 * MiB))
    lengths = [p[-1].end - p[0].offset for p in parts]
    assert max(lengths) < 1.5 * 16 * MiB and min(lengths) > 16 * MiB / 2  # no small last part
    assert _split(span[:3], 16 * MiB) == [span[:3]]  # smaller than a part: one
