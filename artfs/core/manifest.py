"""A version's manifest: its entries (path → kind, mode, mtime, size, chunks), its digest, its wire form.

Manifests must scale to millions of files, so they are never held whole in memory: the writer spools
entries to disk as they come and the reader streams them back. The wire form is one zstd stream of
length-prefixed msgpack frames: a header (pack table, counts, tree digest) followed by entries in `path_key` order.
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

from artfs.core.names import check_path, check_symlink_target
from artfs.core.packs import REF, ChunkRef
from artfs.errors import IntegrityError, InvalidName

FILE, DIR, LINK = 0, 1, 2
KIND_NAMES = {FILE: "file", DIR: "dir", LINK: "symlink"}
FORMAT = 1


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


class Header(msgspec.Struct, frozen=True):
    format: int
    packs: list[str]
    entries: int
    files: int
    bytes: int
    digest: str


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
_FRAME = struct.Struct("<I")


def _frame(obj: object) -> bytes:
    body = _encoder.encode(obj)
    return _FRAME.pack(len(body)) + body


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
            content_digest([r.digest for r in refs]),
        )
        self.add(entry)
        return entry

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> tuple[str, Header]:
        """Write the manifest to a temp file; returns (path, header). The caller owns the file."""
        packs = [p for p, _ in sorted(self.pack_index.items(), key=lambda kv: kv[1])]
        header = Header(FORMAT, packs, self.entries, self.files, self.bytes, self.digest)
        fd, path = tempfile.mkstemp(prefix="manifest-", dir=self._tmp_dir)
        with os.fdopen(fd, "wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as z:
            z.write(_frame(header))
            self._spool.seek(0)
            while block := self._spool.read(1 << 20):
                z.write(block)
        self._spool.close()
        return path, header

    def close(self) -> None:
        self._spool.close()


def _reject(source: str, why: str) -> IntegrityError:
    return IntegrityError(f"manifest {source} rejected: {why}")


def read_manifest(path: str, source: str = "") -> tuple[Header, Iterator[Entry]]:
    """Stream a manifest file: its header, then its entries, each validated (the store is untrusted)."""
    header, frames = read_manifest_frames(path, source)
    return header, (entry for entry, _ in frames)


def read_manifest_frames(path: str, source: str = "") -> tuple[Header, Iterator[tuple[Entry, memoryview]]]:
    """Like `read_manifest`, with each entry's encoded form (indexes store it as it is, no re-encoding)."""
    source = source or os.path.basename(path)
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator
    frames = _frames(zstandard.ZstdDecompressor().stream_reader(f))
    try:
        header = _header_decoder.decode(next(frames))
    except (msgspec.ValidationError, msgspec.DecodeError, zstandard.ZstdError, StopIteration) as e:
        f.close()
        raise _reject(source, f"bad header ({e})") from None
    if header.format != FORMAT:
        f.close()
        raise _reject(source, f"unknown format {header.format}")

    def entries() -> Iterator[tuple[Entry, memoryview]]:
        last = b""
        count = 0
        npacks = len(header.packs)
        decode = _entry_decoder.decode
        try:
            while True:
                try:
                    raw = next(frames, None)
                    if raw is None:
                        break
                    e = decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError, zstandard.ZstdError) as err:
                    raise _reject(source, f"undecodable entry ({err})") from None
                try:
                    check_path(e.path)
                except InvalidName as err:
                    raise _reject(source, str(err)) from None
                key = path_key(e.path)
                if key <= last:
                    raise _reject(source, f"entries out of order at {e.path!r}")
                last = key
                if e.kind == FILE:
                    if len(e.data) % REF.size:
                        raise _reject(source, f"bad chunk list for {e.path!r}")
                    total = 0
                    for _, p, _, _, raw_len, _ in REF.iter_unpack(e.data):
                        if p >= npacks:
                            raise _reject(source, f"chunk of {e.path!r} names an unknown pack")
                        total += raw_len
                    if total != e.size:
                        raise _reject(source, f"chunks of {e.path!r} do not add up to its size")
                elif e.kind == LINK:
                    try:
                        check_symlink_target(e.path, e.target)
                    except InvalidName as err:
                        raise _reject(source, str(err)) from None
                elif e.kind != DIR:
                    raise _reject(source, f"unknown entry kind {e.kind} at {e.path!r}")
                count += 1
                yield e, raw
            if count != header.entries:
                raise _reject(source, f"{count} entries, header says {header.entries}")
        finally:
            f.close()

    return header, entries()


_header_decoder = msgspec.msgpack.Decoder(Header)
_entry_decoder = msgspec.msgpack.Decoder(Entry)
_BLOCK = 4 << 20


def _frames(stream: IO[bytes]) -> Iterator[memoryview]:
    """The length-prefixed frames of a manifest stream, read in large blocks (no per-frame reads)."""
    buf = b""
    pos = 0
    unpack = _FRAME.unpack_from
    while True:
        if len(buf) - pos < 4 or len(buf) - pos < 4 + unpack(buf, pos)[0]:
            block = stream.read(_BLOCK)
            if not block:
                if pos < len(buf):
                    raise msgspec.DecodeError("truncated manifest")
                return
            buf = buf[pos:] + block
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
    sentinel = None
    a = next(old, sentinel)
    b = next(new, sentinel)
    while a is not None or b is not None:
        ka = path_key(a.path) if a is not None else None
        kb = path_key(b.path) if b is not None else None
        if b is None or (a is not None and ka < kb):
            yield "removed", a.path
            a = next(old, sentinel)
        elif a is None or kb < ka:
            yield "added", b.path
            b = next(new, sentinel)
        else:
            if not same_content(a, b):
                yield "modified", a.path
            a = next(old, sentinel)
            b = next(new, sentinel)
