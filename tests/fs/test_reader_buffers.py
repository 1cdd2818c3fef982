"""The reader's memory: a sequential reader releases the chunks it passed (the kernel's page cache has
them), except chunks the file holds again later; and reads that arrive a little out of order, as the
kernel's readahead sends them for concurrent readers, do not make a sequential file count as random."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from artfs.core.content import FileLayout
from artfs.core.repo import Repo
from artfs.fs.chunks import ChunkSource
from artfs.fs.reader import MAX_WINDOW, PART, RANDOM_SEEKS, RELEASE_BEHIND, SEQUENTIAL_RUN, OpenFile, Reader
from tests.support.repos import indexed_entry, reading_machine

MiB = 1 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("buffers-src")
    rng = random.Random(13)
    (root / "big.bin").write_bytes(rng.randbytes(24 * MiB + 4321))  # random: stored raw, not zstd
    block = rng.randbytes(6 * MiB)
    (root / "repeats.bin").write_bytes(rng.randbytes(9 * MiB) + block + rng.randbytes(9 * MiB) + block)
    return root


@pytest.fixture
def repo(source: Path, tmp_path: Path) -> Iterator[Repo]:
    with reading_machine(source, tmp_path) as r:
        yield r


def _file(repo: Repo, path: str):
    return indexed_entry(repo, "ds", path)


def _with_reader(repo: Repo, path: str, body: Callable[[Reader, OpenFile, ChunkSource], Awaitable[None]],
                 **reader_options: Any) -> ChunkSource:
    """`body(reader, file, chunks)` inside a trio run with a ChunkSource and a Reader over `repo`, the
    file at `path` open; the chunk source after its cache writes are done."""
    rec, header, entry = _file(repo, path)

    async def main() -> ChunkSource:
        async with trio.open_nursery() as nursery:
            chunks = ChunkSource(repo.store, repo.cache)
            chunks.bind(nursery)
            reader = Reader(chunks, repo.index, 10.0, **reader_options)
            await body(reader, reader.open(path, rec.manifest, header.packs, entry), chunks)
            await chunks.drain()
            nursery.cancel_scope.cancel()
        return chunks

    return trio.run(main)


async def _read_sequentially(reader: Reader, f: OpenFile, data: bytes, upto: int) -> None:
    off = 0
    while off < upto:
        got = await reader.read(f, off, MiB)
        assert bytes(got) == data[off : off + MiB], off
        off += len(got)
        await trio.sleep(0)


def test_a_sequential_read_releases_what_it_passed(repo, source):
    data = (source / "big.bin").read_bytes()

    async def body(reader: Reader, f: OpenFile, chunks: ChunkSource) -> None:
        await _read_sequentially(reader, f, data, len(data))

    chunks = _with_reader(repo, "big.bin", body)
    assert chunks.stats["released"] > 0
    assert chunks.memory.bytes <= MAX_WINDOW + RELEASE_BEHIND + PART


def test_chunks_a_file_holds_twice_are_kept(repo, source):
    """A chunk that comes again later in the file stays in memory after the reader passes it."""
    _, header, entry = _file(repo, "repeats.bin")
    data = (source / "repeats.bin").read_bytes()
    layout = FileLayout.of_entry(entry, header.packs)
    counts = Counter(r.digest for r in layout.refs)
    repeated = {d for d, n in counts.items() if n > 1}
    assert repeated

    async def body(reader: Reader, f: OpenFile, chunks: ChunkSource) -> None:
        await _read_sequentially(reader, f, data, len(data) // 2 + 2 * MiB)  # past the first copy of the block
        passed = {r.digest for r in layout.refs[: f.released]}
        assert f.released > 0 and repeated & passed
        assert all(d in chunks.memory for d in repeated & passed)
        assert not any(d in chunks.memory for d in passed - repeated)

    _with_reader(repo, "repeats.bin", body)


def test_reads_out_of_order_do_not_make_a_sequential_file_random(repo, source):
    """Readahead of concurrent readers arrives out of order: now and then a read lands beyond the window
    (a far seek), but the file is read sequentially between them and must not be fetched whole."""
    data = (source / "big.bin").read_bytes()

    async def body(reader: Reader, f: OpenFile, chunks: ChunkSource) -> None:
        off = 0
        while off + 8 * MiB < len(data):
            for o in (off, off + 6 * MiB, *(off + k * 128 * 1024 for k in range(1, SEQUENTIAL_RUN + 2))):
                got = await reader.read(f, o, 128 * 1024)  # one read far ahead, then in order again
                assert bytes(got) == data[o : o + 128 * 1024], o
            off += 8 * MiB
        assert f.seeks < RANDOM_SEEKS and not f.whole

    assert _with_reader(repo, "big.bin", body, whole_limit=1 << 40).stats["whole_files"] == 0
