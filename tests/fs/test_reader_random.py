"""Random reads of a big file: fetched whole in a few parallel parts (a reader waits for its part instead of
fetching its chunk again), and each landed part pushed into the kernel's page cache, with the right bytes."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from artfs.fs.reader import PAGE, WHOLE_PART, push_pages
from tests.support.repos import commit

MiB = 1 << 20


def _pushed(size: int, pieces: list[tuple[int, bytes]]) -> tuple[bytearray, list[tuple[int, int]], int]:
    page_cache = bytearray(size)
    calls: list[tuple[int, int]] = []

    def store(inode: int, off: int, data) -> None:
        assert inode == 9
        page_cache[off : off + len(data)] = data
        calls.append((off, len(data)))

    return page_cache, calls, push_pages(store, 9, size, pieces)


def test_push_pages_pushes_whole_pages_only_and_joins_pages_across_chunks():
    rng = random.Random(4)
    size = 10 * PAGE + 123
    data = rng.randbytes(size)
    cuts = [0, 5000, 9000, 20_000, 30_000, size]  # chunks ending inside pages, one page holding three
    chunks = [(a, data[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    page_cache, calls, pushed = _pushed(size, chunks)
    for off, length in calls:
        assert off % PAGE == 0 and (length % PAGE == 0 or off + length == size)  # whole pages (or up to EOF)
        assert page_cache[off : off + length] == data[off : off + length]
    covered = {p for off, length in calls for p in range(off // PAGE, -(-(off + length) // PAGE))}
    assert covered == set(range(-(-size // PAGE)))  # every page, the ones across chunks assembled
    assert pushed == size

    # chunks 1 and 3 missing: the pages they share with their neighbours are not pushed half-filled
    page_cache, calls, _ = _pushed(size, [chunks[0], chunks[2], chunks[4]])
    for off, length in calls:
        assert off % PAGE == 0
        assert page_cache[off : off + length] == data[off : off + length]
        for a, b in ((cuts[1], cuts[2]), (cuts[3], cuts[4])):
            assert off + length <= a or off >= b  # nothing of a missing chunk


def _wait_for(cond, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_randomly_read_file_lands_whole_in_few_gets_and_in_the_page_cache(mount_artfs, s3_store_uri, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(8).randbytes(40 * MiB + 777)  # random: ~40 chunks of ~1 MiB, stored raw
    (src / "big.bin").write_bytes(data)
    commit(s3_store_uri, src, "ds", tmp_path / "writer-cache")
    m = mount_artfs(s3_store_uri)
    path = m.path / "ds" / "v0" / "big.bin"
    rng = random.Random(2)
    fd = os.open(path, os.O_RDONLY)
    try:
        before = m.stats()
        offsets = [rng.randrange(0, len(data) - PAGE) for _ in range(40)]
        for off in offsets:  # the first reads are misses; later ones wait for their part or find it here
            assert os.pread(fd, PAGE, off) == data[off : off + PAGE], off
        _wait_for(lambda: m.stats().get("pushed_bytes", 0) >= len(data) - 2 * MiB)
        s = m.stats()
        assert s["whole_files"] == 1
        parts = s.get("whole_parts", 0) + s.get("whole_parts_needed", 0)
        assert 0 < parts <= -(-len(data) // WHOLE_PART) + 4  # ~3 parts (pack boundaries split a few)
        assert s["store_bytes"] - before.get("store_bytes", 0) == len(data)  # every byte fetched once
        assert s["store_requests"] - before.get("store_requests", 0) <= 10  # not one GET per chunk (~40)

        reads = s["reads"]
        for off in (rng.randrange(0, len(data) - PAGE) for _ in range(300)):
            assert os.pread(fd, PAGE, off) == data[off : off + PAGE], off
        assert m.stats()["reads"] - reads < 30  # served by the kernel from the pushed pages, not the daemon
    finally:
        os.close(fd)
    assert Path(path).read_bytes() == data  # every pushed page holds the file's bytes
