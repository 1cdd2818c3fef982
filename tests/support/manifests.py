"""Manifest files taken apart and put together by hand, the way a hostile or an old store could hold them:
(header, decompressed blocks) out of a file, and a file out of them (blocks compressed, block table
offsets and lengths recomputed, the first keys kept from the header)."""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import zstandard

TRAILER = struct.Struct("<I4s")  # footer length, b"ARTM"


def read_parts(path: str) -> tuple[dict[str, Any], list[bytes]]:
    """A manifest file's header (as a plain dict) and its blocks, decompressed."""
    with open(path, "rb") as f:
        data = f.read()
    length, _ = TRAILER.unpack(data[-TRAILER.size:])
    header = msgspec.msgpack.decode(zstandard.decompress(data[-TRAILER.size - length:-TRAILER.size]))
    return header, [zstandard.decompress(data[off:off + n]) for _, off, n in header["blocks"]]


def write_parts(path: str, header: dict[str, Any], blocks: list[bytes]) -> str:
    """Write a manifest file of these blocks under this header (its block table's first keys kept)."""
    table, blobs, offset = [], [], 0
    for (first, _, _), block in zip(header["blocks"], blocks, strict=True):
        blob = zstandard.ZstdCompressor().compress(block)
        table.append([first, offset, len(blob)])
        blobs.append(blob)
        offset += len(blob)
    footer = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode({**header, "blocks": table}))
    with open(path, "wb") as f:
        f.write(b"".join(blobs) + footer + TRAILER.pack(len(footer), b"ARTM"))
    return path
