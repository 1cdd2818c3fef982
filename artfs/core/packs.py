"""Packs: many chunks in one store object, and reading chunks back out of them, verified.

A dataset of 100k small files must be a few hundred objects, not 100k, because per-request cost
dominates object stores. A pack is the concatenation of chunk blobs (each zstd-compressed where that
helps, else raw) followed by a trailer that lists its chunks, so a pack describes itself (recovery, GC).
Manifests record (pack, offset, length) for every chunk, so a read needs no global index.

Layout: blob* | trailer (msgpack list of [digest, offset, stored_len, raw_len, flags]) | u32 trailer_len | b"ARTP"
"""

from __future__ import annotations

import secrets
import struct
import sys
from array import array
from dataclasses import dataclass
from functools import partial
from operator import add, eq, gt, not_

import msgspec
import zstandard

from artfs.core.chunker import MAX_CHUNK
from artfs.core.chunker import digest as chunk_digest
from artfs.errors import IntegrityError

PACK_TARGET = 32 * 1024 * 1024
FLAG_ZSTD = 1
# A chunk in an external object (core/references.py), not a pack: its "pack" is a source token, its offset
# the offset in the object; UNVERIFIED: its digest names the pinned range, not its content (no checksum).
FLAG_SOURCE = 2
FLAG_UNVERIFIED = 4
_MAGIC = b"ARTP"
_SAMPLE = 64 * 1024
_zstd_level = 3

# A chunk ref as stored in manifests: digest, pack index, offset, stored length, raw length, flags.
REF = struct.Struct("<16sIQIII")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where one chunk lives: pack id (hex), byte range in the pack, raw size, compression flag."""

    digest: bytes
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.stored_len


def new_pack_id() -> str:
    return secrets.token_hex(16)


def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=_zstd_level)


def maybe_compress(data: bytes | memoryview, cctx: zstandard.ZstdCompressor) -> tuple[bytes | memoryview, int]:
    """Compress when it pays (≥ 10% smaller). A 64 KiB sample decides first, so random data costs little."""
    n = len(data)
    if n < 512:
        return data, 0
    if n > 2 * _SAMPLE:
        sample = cctx.compress(data[:_SAMPLE])
        if len(sample) > 0.9 * _SAMPLE:
            return data, 0
    packed = cctx.compress(data)
    if len(packed) <= 0.9 * n:
        return packed, FLAG_ZSTD
    return data, 0


# A pack is closed once it reaches PACK_TARGET, so nothing in it lies beyond PACK_TARGET plus one stored chunk
# (a chunk is stored raw or zstd-compressed only when that is smaller); the trailer follows the chunks.
PACK_MAX = PACK_TARGET + MAX_CHUNK


def ref_problem(offset: int, stored_len: int, raw_len: int, flags: int) -> str | None:
    """Why a chunk location cannot have been written by artfs (a damaged or crafted manifest), or None.

    Checked when a manifest entry is decoded, before any reader, export or dedup can trust the location:
    a lie here would otherwise make a file of the wrong size or send a read far past a pack's end."""
    if not 0 < raw_len <= MAX_CHUNK:
        return f"a chunk of {raw_len} bytes (chunks are 1 to {MAX_CHUNK} bytes)"
    if flags not in (0, FLAG_ZSTD):
        return f"unknown chunk flags {flags}"
    if (flags == 0 and stored_len != raw_len) or not 0 < stored_len <= raw_len:
        return f"a stored length of {stored_len} for a chunk of {raw_len} bytes"
    if offset < 0 or offset + stored_len > PACK_MAX:
        return f"a chunk at offset {offset} (packs end before {PACK_MAX})"
    return None


_REF_WORDS = REF.size // 4  # a packed ref as 32-bit words: digest 0-3, pack 4, offset 5-6, stored 7, raw 8, flags 9


# What `_plainly_in_packs` asks of one byte of every ref (REF: digest 0-15, pack 16-19, offset 20-27, stored 28-31,
# raw 32-35, flags 36-39), all of it sufficient for `ref_problem` to find nothing: pack < 256; offset < 2**25
# (= PACK_TARGET: so offset + stored < PACK_MAX, stored being ≤ MAX_CHUNK); raw < 2**22 (= MAX_CHUNK); no flags.
_ZERO_BYTES = (17, 18, 19, 24, 25, 26, 27, 35, 36, 37, 38, 39)
_OFFSET_BYTE, _OFFSET_BELOW = 23, bytes(range(PACK_TARGET >> 24))
_RAW_BYTE, _RAW_BELOW = 34, bytes(range(MAX_CHUNK >> 16))
assert PACK_TARGET == 1 << 25 and MAX_CHUNK == 1 << 22  # what the byte tests above are written for


def _plainly_in_packs(refs: bytes, stored: array, raw: array, npacks: int, external: frozenset[int]) -> bool:
    """A quick test, sufficient but not necessary, that every ref passes `ref_problem` and names a pack:
    uncompressed chunks below MAX_CHUNK in one of the first 256 packs — what small files make. One pass in
    C over one byte of each ref at a time (a min or max over a column makes an int per ref: ten times
    slower); what it does not decide goes to the exact tests."""
    if npacks > 256:
        return False
    column = partial(_column, refs)
    zeros = b"".join(map(column, _ZERO_BYTES))
    if zeros.count(0) != len(zeros):
        return False
    packs = bytes(p for p in range(npacks) if p not in external)
    if column(16).translate(None, packs) or column(_OFFSET_BYTE).translate(None, _OFFSET_BELOW):
        return False
    if column(_RAW_BYTE).translate(None, _RAW_BELOW) or stored != raw:
        return False
    # raw ≥ 1: no ref whose three low raw bytes (the fourth is zero, above) are all zero
    n = len(raw)
    low = int.from_bytes(column(32)) | int.from_bytes(column(33)) | int.from_bytes(column(34))
    return 0 not in low.to_bytes(n)


def _column(refs: bytes, i: int) -> bytes:
    """Byte i of every ref."""
    return refs[i::REF.size]


def plain_raw_lengths(refs: bytes, npacks: int, external: frozenset[int] = frozenset()) -> array | None:
    """The raw lengths of a run of packed refs (REF after REF) if every one passes `ref_problem` and names
    one of the first `npacks` locations, none of them an `external` source; else None (the caller then
    finds and names the culprit with `ref_problem`). Column by column in C: the first `find` of a huge
    version never opened here waits for its manifest's validation, which one call per ref made slow."""
    words = array("I")
    if len(refs) % REF.size or sys.byteorder != "little" or words.itemsize != 4:
        return None
    words.frombytes(refs)
    if not words:
        return words
    raw = words[8::_REF_WORDS]
    if _plainly_in_packs(refs, words[7::_REF_WORDS], raw, npacks, external):
        return raw
    packs, off_lo, off_hi, stored, raw, flags = (words[k::_REF_WORDS] for k in range(4, 10))
    if max(packs) >= npacks or (external and any(map(external.__contains__, set(packs)))):
        return None
    if max(flags) > FLAG_ZSTD or max(off_hi) or min(raw) < 1 or max(raw) > MAX_CHUNK or min(stored) < 1:
        return None
    # stored == raw when uncompressed (all raw: one array comparison), stored ≤ raw anyway
    if stored != raw if not max(flags) else (
            any(map(gt, stored, raw)) or any(map(gt, map(not_, flags), map(eq, stored, raw)))):
        return None
    # within a pack's possible extent (the cheap bound first: it holds in every pack artfs wrote)
    if max(off_lo) + max(stored) > PACK_MAX and max(map(add, off_lo, stored)) > PACK_MAX:
        return None
    return raw


def decode_chunk(ref: ChunkRef, stored: bytes | memoryview) -> bytes | memoryview:
    """Decompress (if needed) and verify a chunk against its digest. Corrupt data is an error, never data."""
    if len(stored) != ref.stored_len:
        raise IntegrityError(
            f"chunk {ref.digest.hex()} in pack {ref.pack} is truncated ({len(stored)} of {ref.stored_len} bytes)"
        )
    data: bytes | memoryview
    if ref.flags & FLAG_ZSTD:
        try:
            data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=ref.raw_len)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"chunk {ref.digest.hex()} in pack {ref.pack} is corrupt: {e}") from None
    else:
        data = stored
    if len(data) != ref.raw_len or chunk_digest(data) != ref.digest:
        raise IntegrityError(
            f"chunk {ref.digest.hex()} in pack {ref.pack} is corrupt: its content does not match its digest"
        )
    return data


class PackBuilder:
    """Accumulates new chunks into one pack in memory until it reaches PACK_TARGET."""

    def __init__(self) -> None:
        self.pack_id = new_pack_id()
        self._parts: list[bytes | memoryview] = []
        self._index: list[list] = []
        self.size = 0
        self.raw_size = 0
        self._cctx = _compressor()

    def add(self, digest: bytes, data: bytes | memoryview, compress: bool = True) -> ChunkRef:
        stored, flags = maybe_compress(data, self._cctx) if compress else (data, 0)
        if isinstance(stored, memoryview):
            stored = bytes(stored)  # the source buffer (an mmap) may close before upload
        ref = ChunkRef(digest, self.pack_id, self.size, len(stored), len(data), flags)
        self._parts.append(stored)
        self._index.append([digest, ref.offset, ref.stored_len, ref.raw_len, flags])
        self.size += len(stored)
        self.raw_size += len(data)
        return ref

    @property
    def full(self) -> bool:
        return self.size >= PACK_TARGET

    def __len__(self) -> int:
        return len(self._parts)

    def finish(self) -> list[bytes | memoryview]:
        """The pack's bytes as a list of parts (blobs, then trailer), ready to upload."""
        trailer = msgspec.msgpack.encode(self._index)
        return [*self._parts, trailer, struct.pack("<I", len(trailer)) + _MAGIC]


def read_trailer(data: bytes) -> list[list]:
    """The chunk list at the end of a whole pack (for recovery and garbage collection)."""
    if len(data) < 8 or data[-4:] != _MAGIC:
        raise IntegrityError("not an artfs pack: bad magic")
    (n,) = struct.unpack("<I", data[-8:-4])
    return msgspec.msgpack.decode(data[-8 - n : -8])
