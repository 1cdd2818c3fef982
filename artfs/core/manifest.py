"""A version's manifest: its entries (path → kind, mode, mtime, size, chunks), its digest, its wire form.

Manifests must scale to millions of files, so they are never held whole in memory: the writer spools
entries to disk as they come and the reader streams them back. The wire form (see `ManifestWriter.finish`)
is a run of independent zstd blocks, each one msgpack array of entries in `path_key` order, then a footer
with the header (pack table, counts, tree digest, block table); manifest_file.py reads it. (Format 1, still
read, framed each entry with its length instead: a block then took one decode call per entry, format 2's
one call for the block — the first `find` of a huge version decodes every block.)
Chunk refs are packed 40-byte structs that index the header's pack table.

The tree digest is deterministic over sorted paths, content and exec bits (not mtimes, as in W&B), so
identical trees give identical digests and a re-commit of an unchanged tree is recognized.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from typing import IO

import msgspec
import xxhash
import zstandard

from artfs.core.packs import REF, ChunkRef

FILE, DIR, LINK = 0, 1, 2
KIND_NAMES = {FILE: "file", DIR: "dir", LINK: "symlink"}
FORMAT = 2  # what the writer writes (a block: one msgpack array)
READ_FORMATS = (1, 2)  # what manifest_file.py reads (1: a block of length-prefixed entries)


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """One path of a version. `data` is packed ChunkRefs (files) or the UTF-8 target (symlinks)."""

    path: str
    kind: int
    mode: int
    mtime_ns: int
    size: int
    data: bytes = b""
    digest: bytes = b""  # files: content digest (xxh3-128 over the chunk digests)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def parent(self) -> str:
        return self.path.rpartition("/")[0]

    @property
    def target(self) -> str:
        return self.data.decode("utf-8", "surrogateescape")

    def chunk_count(self) -> int:
        return len(self.data) // REF.size if self.kind == FILE else 0

    def refs_raw(self) -> Iterator[tuple[bytes, int, int, int, int, int]]:
        """(digest, pack index, offset, stored length, raw length, flags) per chunk, unresolved."""
        return REF.iter_unpack(self.data) if self.kind == FILE else iter(())

    def refs(self, packs: list[str]) -> list[ChunkRef]:
        """The file's chunks in order, with pack ids resolved through the manifest's pack table."""
        if self.kind != FILE:
            return []
        return [
            ChunkRef(d, packs[p], off, stored, raw, flags)
            for d, p, off, stored, raw, flags in REF.iter_unpack(self.data)
        ]


BlockKey = bytes  # `Header.bytes` shadows the builtin inside the class body


class Header(msgspec.Struct, frozen=True):
    """A manifest's summary and its block table: (first path key, offset, length) per block."""

    format: int
    packs: list[str]
    entries: int
    files: int
    bytes: int
    digest: str
    blocks: list[tuple[BlockKey, int, int]] = []


def path_key(path: str) -> bytes:
    """Sort key that orders a tree as a recursive, name-sorted walk does ('a/b' before 'a-c')."""
    return path.encode("utf-8", "surrogateescape").replace(b"/", b"\x00")


def content_digest(chunk_digests: list[bytes]) -> bytes:
    return xxhash.xxh3_128_digest(b"".join(chunk_digests))


def pack_refs(refs: list[ChunkRef], pack_index: dict[str, int]) -> bytes:
    """ChunkRefs → the packed form stored in an Entry, registering new packs in `pack_index`."""
    out = bytearray()
    for r in refs:
        idx = pack_index.setdefault(r.pack, len(pack_index))
        out += REF.pack(r.digest, idx, r.offset, r.stored_len, r.raw_len, r.flags)
    return bytes(out)


_encoder = msgspec.msgpack.Encoder()
FRAME = struct.Struct("<I")


def _frame(obj: object) -> bytes:
    body = _encoder.encode(obj)
    return FRAME.pack(len(body)) + body


class ManifestWriter:
    """Takes entries in path order, spools them, and writes the final manifest file on `finish()`.

    Entries' chunk data must already be packed against this writer's `pack_index` (see `add_file`).
    """

    def __init__(self, tmp_dir: str | None = None) -> None:
        self._tmp_dir = tmp_dir
        self._spool: IO[bytes] = tempfile.TemporaryFile(dir=tmp_dir)  # noqa: SIM115 - closed by finish/close
        self.pack_index: dict[str, int] = {}
        self._hash = xxhash.xxh3_128()
        self._last: bytes | None = None
        self.entries = 0
        self.files = 0
        self.bytes = 0

    def add(self, entry: Entry) -> None:
        key = path_key(entry.path)
        if self._last is not None and key <= self._last:
            raise ValueError(f"manifest entries out of order at {entry.path!r}")
        self._last = key
        self._spool.write(_frame(entry))
        self.entries += 1
        h = self._hash
        h.update(entry.path.encode("utf-8", "surrogateescape"))
        h.update(b"\x00%d\x00" % entry.kind)
        if entry.kind == FILE:
            self.files += 1
            self.bytes += entry.size
            h.update(entry.digest)
            h.update(b"%o" % (entry.mode & 0o111))  # exec bits count, as in diff and merges
        elif entry.kind == LINK:
            h.update(entry.data)
        h.update(b"\n")

    def add_file(self, path: str, mode: int, mtime_ns: int, size: int, refs: list[ChunkRef]) -> Entry:
        entry = Entry(
            path, FILE, mode, mtime_ns, size, pack_refs(refs, self.pack_index),
            content_digest([r.digest for r in refs if r.raw_len]),  # a zero-byte reference's marker: no content
        )
        self.add(entry)
        return entry

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> tuple[str, Header]:
        """Write the manifest to a temp file; returns (path, header). The caller owns the file.

        Entries go out in independent zstd blocks of about BLOCK_BYTES, then a footer (the header and
        the block table), so one path can be found by decoding one block: a version never opened on
        this machine answers its first lookup before its index is built.
        """
        packs = [p for p, _ in sorted(self.pack_index.items(), key=lambda kv: kv[1])]
        fd, path = tempfile.mkstemp(prefix="manifest-", dir=self._tmp_dir)
        blocks: list[tuple[BlockKey, int, int]] = []
        cctx = zstandard.ZstdCompressor(level=3)
        with os.fdopen(fd, "wb") as out:
            self._spool.seek(0)
            pending: list[msgspec.Raw] = []  # entries, encoded, of the block being filled
            pending_bytes = 0
            first: bytes | None = None
            offset = 0

            def flush() -> None:
                nonlocal offset, first, pending_bytes
                if first is None:
                    return
                blob = cctx.compress(_encoder.encode(pending))  # one array: the entries as they are
                out.write(blob)
                blocks.append((first, offset, len(blob)))
                offset += len(blob)
                pending.clear()
                pending_bytes = 0
                first = None

            for raw in _frames(self._spool):
                if first is None:
                    first = path_key(entry_decoder.decode(raw).path)
                pending.append(msgspec.Raw(raw))
                pending_bytes += len(raw)
                if pending_bytes >= BLOCK_BYTES:
                    flush()
            flush()
            header = Header(FORMAT, packs, self.entries, self.files, self.bytes, self.digest, blocks)
            footer = cctx.compress(_encoder.encode(header))
            out.write(footer + TRAILER.pack(len(footer), MAGIC))
        self._spool.close()
        return path, header

    def close(self) -> None:
        self._spool.close()


header_decoder = msgspec.msgpack.Decoder(Header)
entry_decoder = msgspec.msgpack.Decoder(Entry)
TRAILER = struct.Struct("<I4s")
MAGIC = b"ARTM"
BLOCK_BYTES = 64 * 1024


def _frames(stream: IO[bytes], block: int = 4 << 20) -> Iterator[memoryview]:
    """The length-prefixed msgpack frames of a byte stream, read in large blocks (no per-frame reads)."""
    buf = b""
    pos = 0
    unpack = FRAME.unpack_from
    while True:
        if len(buf) - pos < 4 or len(buf) - pos < 4 + unpack(buf, pos)[0]:
            data = stream.read(block)
            if not data:
                if pos < len(buf):
                    raise msgspec.DecodeError("truncated manifest")
                return
            buf = buf[pos:] + data
            pos = 0
            continue
        (n,) = unpack(buf, pos)
        view = memoryview(buf)[pos + 4 : pos + 4 + n]
        pos += 4 + n
        yield view


def same_content(a: Entry, b: Entry) -> bool:
    """Same kind, content (or link target) and executable bits: what `diff` and merges compare."""
    if a.kind != b.kind:
        return False
    if a.kind == FILE:
        return a.digest == b.digest and (a.mode & 0o111) == (b.mode & 0o111)
    return a.data == b.data


def diff_entries(
    old: Iterator[Entry], new: Iterator[Entry]
) -> Iterator[tuple[str, str]]:
    """Merge two sorted entry streams into ('added'|'removed'|'modified', path), in path order."""
    a = next(old, None)
    b = next(new, None)
    while a is not None and b is not None:
        ka, kb = path_key(a.path), path_key(b.path)
        if ka < kb:
            yield "removed", a.path
            a = next(old, None)
        elif kb < ka:
            yield "added", b.path
            b = next(new, None)
        else:
            if not same_content(a, b):
                yield "modified", a.path
            a = next(old, None)
            b = next(new, None)
    while a is not None:
        yield "removed", a.path
        a = next(old, None)
    while b is not None:
        yield "added", b.path
        b = next(new, None)
