"""Correctness of the read path's copy-saving: chunks served as views of one GET, the cache filled from those
views, sparse spans copied out, and the allocator tuning (no timing here: scripts/bench measures speed)."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from artfs.core.content import DENSE, ChunkReader, plan_spans
from artfs.core.repo import Repo
from artfs.fs.chunks import ChunkSource, keep_freed_memory
from artfs.fs.reader import Reader
from tests.support.repos import indexed_entry, reading_machine

MiB = 1 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perf-src")
    rng = random.Random(11)
    (root / "big.bin").write_bytes(rng.randbytes(40 * MiB + 12345))  # random: stored raw, not zstd
    (root / "small").mkdir()
    for i in range(40):
        (root / "small" / f"f{i:03d}.bin").write_bytes(rng.randbytes(rng.randint(2_000, 200_000)))
    return root


@pytest.fixture
def repo(source: Path, tmp_path: Path) -> Iterator[Repo]:
    with reading_machine(source, tmp_path) as r:
        yield r


def _layout(repo: Repo, path: str):
    rec, header, entry = indexed_entry(repo, "ds", path)
    return rec, header, entry, entry.refs(header.packs)


def test_dense_span_is_served_as_views_of_one_buffer(repo, source):
    _, _, _, refs = _layout(repo, "big.bin")
    data = (source / "big.bin").read_bytes()
    span = plan_spans(refs)[0]
    assert len(span) > 1
    got = ChunkReader(repo.store).fetch_span(span, populate=False)
    pos = sum(r.raw_len for r in refs[: refs.index(span[0])])
    owners = set()
    for r in span:
        chunk = got[r.digest]
        assert isinstance(chunk, memoryview) and chunk.readonly
        assert chunk == data[pos : pos + r.raw_len]
        owners.add(id(chunk.obj))
        pos += r.raw_len
    assert len(owners) == 1  # one GET buffer, no copy per chunk


def test_sparse_span_copies_its_chunks_out(repo, source):
    """Every other small file of one pack: one GET bridging the gaps, but no view may pin the gaps."""
    rec = repo.resolve("ds")
    header = repo.ensure_index(rec)
    names = sorted(p.name for p in (source / "small").iterdir())
    refs = []
    for name in names[::2]:
        entry = repo.index.lookup(rec.manifest, f"small/{name}")
        refs += entry.refs(header.packs)
    span = max(plan_spans(refs), key=len)
    assert len(span) > 1
    blob_len = max(r.end for r in span) - span[0].offset
    assert sum(r.stored_len for r in span) < DENSE * blob_len
    got = ChunkReader(repo.store).fetch_span(span, populate=False)
    for r in span:
        assert isinstance(got[r.digest], bytes)
        assert len(got[r.digest]) == r.raw_len


def test_read_chunk_is_bytes(repo, source):
    _, _, _, refs = _layout(repo, "big.bin")
    chunk = ChunkReader(repo.store).read_chunk(refs[1], populate=False)
    assert type(chunk) is bytes
    assert chunk == (source / "big.bin").read_bytes()[refs[0].raw_len : refs[0].raw_len + refs[1].raw_len]


def test_a_cold_sequential_read_fills_the_cache_with_the_right_bytes(repo, source):
    """Chunks travel as views of their GET buffers into memory, the reply and the LMDB writer."""
    rec, header, entry, refs = _layout(repo, "big.bin")
    data = (source / "big.bin").read_bytes()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            chunks = ChunkSource(repo.store, repo.cache, memory_bytes=8 * MiB)  # small: views get evicted
            chunks.bind(nursery)
            reader = Reader(chunks, repo.index, 10.0)
            f = reader.open("big.bin", rec.manifest, header.packs, entry)
            off = 0
            while off < len(data):
                got = await reader.read(f, off, MiB)
                assert bytes(got) == data[off : off + MiB], off
                off += len(got)
                await trio.sleep(0)
            await chunks.drain()
            nursery.cancel_scope.cancel()

    trio.run(main)
    pos = 0
    for r in refs:
        assert repo.cache.get(r.digest) == data[pos : pos + r.raw_len]
        pos += r.raw_len


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_takes_on_glibc():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent (the daemon and tests call it per ChunkSource)
