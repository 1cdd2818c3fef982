"""Content-defined chunking and xxh3-128 addressing.

Chunk boundaries depend on content (FastCDC), so inserting bytes into a big file changes only the
chunks around the insert, and unchanged regions dedup against earlier versions. Sizes follow restic:
256 KiB min / 1 MiB average / 4 MiB max.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import xxhash
from pyfastcdc import FastCDC

MIN_CHUNK = 256 * 1024
AVG_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
DIGEST_SIZE = 16

_cdc = FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def digest(data: bytes | memoryview) -> bytes:
    """The 16-byte xxh3-128 address of a chunk."""
    return xxhash.xxh3_128_digest(data)


def cut(buf: bytes | memoryview | mmap.mmap) -> Iterator[memoryview]:
    """Split a buffer into content-defined chunks (views into `buf`, no copies)."""
    if len(buf) <= MIN_CHUNK:
        if len(buf):
            yield memoryview(buf)
        return
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    for chunk in _cdc.cut_buf(view):
        yield chunk.data


class MappedFile:
    """A file's bytes as a buffer: read() for small files, mmap for big ones (no copy into the heap)."""

    SMALL = 4 * 1024 * 1024

    def __init__(self, path: str | os.PathLike, size: int) -> None:
        self._mmap: mmap.mmap | None = None
        if size == 0:
            self.buf: bytes | mmap.mmap = b""
        elif size <= self.SMALL:
            with open(path, "rb") as f:
                self.buf = f.read()
        else:
            with open(path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._mmap.madvise(mmap.MADV_SEQUENTIAL)
            self.buf = self._mmap

    def close(self) -> None:
        if self._mmap is not None:
            self.buf = b""
            try:
                self._mmap.close()
            except BufferError:  # a chunk view still alive; the mapping goes when it does
                pass
            self._mmap = None

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
