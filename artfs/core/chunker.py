"""Content-defined chunking and xxh3-128 addressing.

Chunk boundaries depend on content (FastCDC), so inserting bytes into a big file changes only the
chunks around the insert, and unchanged regions dedup against earlier versions. Sizes follow restic:
256 KiB min / 1 MiB average / 4 MiB max.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import BinaryIO

import xxhash
from pyfastcdc import FastCDC

from artfs.errors import ArtfsError

MIN_CHUNK = 256 * 1024
AVG_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
DIGEST_SIZE = 16

_cdc = FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def digest(data: bytes | memoryview) -> bytes:
    """The 16-byte xxh3-128 address of a chunk."""
    return xxhash.xxh3_128_digest(data)


@functools.lru_cache(maxsize=256)
def zero_chunk_digest(size: int) -> bytes:
    """The digest of `size` zero bytes: a chunk with it is a hole (sparse files, zero-filled tensors)."""
    return digest(bytes(size))


def cut(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a buffer into content-defined chunks (views into `buf`, no copies)."""
    if len(buf) <= MIN_CHUNK:
        if len(buf):
            yield memoryview(buf)
        return
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    for chunk in _cdc.cut_buf(view):
        yield chunk.data


def stream_chunks(f: BinaryIO) -> Iterator[memoryview]:
    """The content-defined chunks of an open file from its current position (the same cuts as `cut` of its
    bytes), read into a buffer of this process; each chunk is valid until the next one is asked for."""
    start = f.tell()
    head = f.read(MIN_CHUNK + 1)
    if len(head) <= MIN_CHUNK:  # as cut(): a small file is one chunk
        if head:
            yield memoryview(head)
        return
    f.seek(start)
    for chunk in FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK).cut_stream(f):
        yield chunk.data


class SourceChanged(ArtfsError):
    """A file changed (size, times, inode) while it was being read: its chunks would not be one state of it."""


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_chunks(path: str | os.PathLike, expect: os.stat_result | None = None,
                size: int | None = None) -> Iterator[memoryview]:
    """A file's content-defined chunks, read with read() into buffers this process owns — never mmap'd.

    Integrity, not taste: a chunk is hashed and then packed from the same bytes, which must not change in
    between (another process writing a mapped file would change them: a chunk whose bytes do not match
    its digest), and a file truncated under a mapping raises SIGBUS inside C code, which kills the
    process. Each chunk is valid until the next one is asked for (the stream's buffer is reused).

    The file must stay one state while it is read: `expect` (an lstat taken before, e.g. by a tree walk)
    or else the open file's own fstat, must still describe it afterwards, and exactly `size` bytes (its
    size) must have been read. Otherwise SourceChanged, naming the file, once its last chunk was read.
    """
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        want = before.st_size if size is None else size
        if expect is not None and _identity(expect) != _identity(before):
            raise SourceChanged(f"{os.fspath(path)} changed while being read (it was replaced or written)")
        if before.st_size != want:
            raise SourceChanged(f"{os.fspath(path)} changed size while being read")
        got = 0
        for chunk in stream_chunks(f):
            got += len(chunk)
            yield chunk
        after = os.fstat(f.fileno())
    if got != want or _identity(after) != _identity(before):
        raise SourceChanged(f"{os.fspath(path)} changed while being read ({got:,} of {want:,} bytes read)")
