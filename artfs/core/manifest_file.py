"""Reading a manifest file: streamed in full, or one block at a time to find a path or a directory.

The store is untrusted, so everything read is validated: the footer and its block table, then every
entry that is handed out (path rules, symlinks that stay inside, chunk tables that add up to the file's
size, chunk locations that artfs could have written: `packs.ref_problem`), block by block as entries are
decoded — so no reader, export or dedup ever sees an unchecked entry, and the first byte of a huge
version does not wait for the whole manifest. Reads use
`pread` on one descriptor, so several threads may look things up at once.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator

import msgspec
import zstandard

from artfs.core.manifest import (
    DIR,
    FILE,
    FORMAT,
    FRAME,
    LINK,
    MAGIC,
    TRAILER,
    Entry,
    Header,
    entry_decoder,
    header_decoder,
    path_key,
)
from artfs.core.names import check_path, check_symlink_target
from artfs.core.packs import REF, ref_problem
from artfs.core.references import Source, is_token, parse_token, source_ref_problem
from artfs.errors import IntegrityError, InvalidName

MAX_BLOCK = 64 << 20  # a block decompresses to at most this (ours are ~64 KiB): a bound against bombs
POS_BITS = 16  # an entry's code is (block << POS_BITS) | its position in the block (ours hold < 5,000)
MAX_BLOCK_ENTRIES = 1 << POS_BITS
CACHED_BLOCKS = 16  # decoded blocks kept per open manifest (a listing reads one block several times)


_Decoded = tuple[list[bytes], list[Entry], list[memoryview], bytearray]  # keys, entries, frames, validated


def _reject(source: str, why: str) -> IntegrityError:
    return IntegrityError(f"manifest {source} rejected: {why}")


class ManifestFile:
    """A local manifest file, opened: its header, its entries, and lookups by path without an index."""

    def __init__(self, path: str, source: str = "") -> None:
        self.source = source or os.path.basename(path)
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.header = self._read_footer()
        except BaseException:
            self.close()
            raise
        self._first_keys = [first for first, _, _ in self.header.blocks]
        # block → (path keys, entries, encoded entries): lookups, listings, inode lookups by code and the
        # index build (which walks the blocks in the order `find` does) decode a block once between them
        self._decoded: OrderedDict[int, _Decoded] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self.last_used = time.monotonic()  # of a decoded block (index.py waits for quiet to build)
        try:  # pack ids, and the external sources of references (core/references.py), parsed once
            self._locations = [parse_token(p) if is_token(p) else None for p in self.header.packs]
        except IntegrityError as e:
            self.close()
            raise _reject(self.source, str(e)) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> ManifestFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_footer(self) -> Header:
        size = os.fstat(self._fd).st_size
        if size < TRAILER.size:
            raise _reject(self.source, "too short")
        length, magic = TRAILER.unpack(os.pread(self._fd, TRAILER.size, size - TRAILER.size))
        if magic != MAGIC or length > size - TRAILER.size:
            raise _reject(self.source, "no footer")
        try:
            raw = zstandard.ZstdDecompressor().decompress(
                os.pread(self._fd, length, size - TRAILER.size - length), max_output_size=MAX_BLOCK)
            header = header_decoder.decode(raw)
        except (zstandard.ZstdError, msgspec.DecodeError, msgspec.ValidationError) as e:
            raise _reject(self.source, f"bad header ({e})") from None
        if header.format != FORMAT:
            raise _reject(self.source, f"unknown format {header.format}")
        end = 0
        last = None
        for first, offset, blen in header.blocks:
            if offset != end or blen <= 0 or (last is not None and first <= last):
                raise _reject(self.source, "bad block table")
            end, last = offset + blen, first
        if end != size - TRAILER.size - length:
            raise _reject(self.source, "block table does not cover the file")
        return header

    def _block(self, i: int, validate: bool = True) -> Iterator[tuple[Entry, memoryview]]:
        """Entries of block i, decoded and (unless the caller does it lazily) validated, with their
        encoded form."""
        first, offset, length = self.header.blocks[i]
        try:
            data = zstandard.ZstdDecompressor().decompress(os.pread(self._fd, length, offset),
                                                           max_output_size=MAX_BLOCK)
        except zstandard.ZstdError as err:
            raise _reject(self.source, f"undecodable block ({err})") from None
        view = memoryview(data)
        pos, n = 0, len(data)
        count = 0
        while pos < n:
            count += 1
            if count > MAX_BLOCK_ENTRIES:  # entry codes (inode numbers of a mount) leave room for no more
                raise _reject(self.source, f"a block of more than {MAX_BLOCK_ENTRIES} entries")
            if pos + 4 > n:
                raise _reject(self.source, "truncated block")
            (size,) = FRAME.unpack_from(data, pos)
            raw = view[pos + 4 : pos + 4 + size]
            if len(raw) < size:
                raise _reject(self.source, "truncated block")
            pos += 4 + size
            try:
                e = entry_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                raise _reject(self.source, f"undecodable entry ({err})") from None
            if validate:
                _validate(e, self._locations, self.source)
            if pos == 4 + size and path_key(e.path) != first:
                raise _reject(self.source, "block table does not match its blocks")
            yield e, raw

    def frames(self) -> Iterator[tuple[Entry, memoryview]]:
        """Every entry in path order, with its encoded form; order and count checked."""
        last = b""
        count = 0
        for i in range(len(self.header.blocks)):
            for e, raw in self._block(i):
                key = path_key(e.path)
                if key <= last:
                    raise _reject(self.source, f"entries out of order at {e.path!r}")
                last = key
                count += 1
                yield e, raw
        if count != self.header.entries:
            raise _reject(self.source, f"{count} entries, header says {self.header.entries}")

    def decoded(self, i: int) -> _Decoded:
        """Block i's path keys, entries and their encoded forms; a few blocks stay decoded (a thread-safe
        LRU). Entries are validated when handed out (`_checked`), not here: a listing of the version's
        root decodes a block per child but hands out one entry of each."""
        self.last_used = time.monotonic()
        with self._decoded_lock:
            hit = self._decoded.get(i)
            if hit is not None:
                self._decoded.move_to_end(i)
                return hit
        pairs = list(self._block(i, validate=False))
        out = ([path_key(e.path) for e, _ in pairs], [e for e, _ in pairs], [raw for _, raw in pairs],
               bytearray(len(pairs)))
        keys = out[0]
        # in order within the block and before the next one (its first key is checked in _block): searches bisect
        if any(keys[p] <= keys[p - 1] for p in range(1, len(keys))) or (
                keys and i + 1 < len(self._first_keys) and keys[-1] >= self._first_keys[i + 1]):
            raise _reject(self.source, f"entries out of order in block {i}")
        with self._decoded_lock:
            self._decoded[i] = out
            while len(self._decoded) > CACHED_BLOCKS:
                self._decoded.popitem(last=False)
        return out

    def _checked(self, block: _Decoded, p: int) -> Entry:
        """Entry p of a decoded block, validated (once)."""
        e = block[1][p]
        if not block[3][p]:
            _validate(e, self._locations, self.source)
            block[3][p] = 1
        return e

    def entry_at(self, code: int) -> Entry | None:
        """The entry with this code ((block << POS_BITS) | position), or None if there is none."""
        block, pos = code >> POS_BITS, code & (MAX_BLOCK_ENTRIES - 1)
        if not 0 <= block < len(self._first_keys):
            return None
        decoded = self.decoded(block)
        return self._checked(decoded, pos) if pos < len(decoded[0]) else None

    def lookup_coded(self, path: str) -> tuple[int, Entry] | None:
        """The code and entry at `path`, decoding only the one block that can hold it."""
        key = path_key(path)
        i = bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        decoded = self.decoded(i)
        keys = decoded[0]
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return (i << POS_BITS) | j, self._checked(decoded, j)
        return None

    def lookup(self, path: str) -> Entry | None:
        """The entry at `path`, decoding only the one block that can hold it."""
        found = self.lookup_coded(path)
        return found[1] if found is not None else None

    def children_coded(self, path: str, after: str | None = None) -> Iterator[tuple[int, Entry]]:
        """(code, entry) directly inside directory `path` ('' is the root), in name order; `after` resumes."""
        prefix = path + "/" if path else ""
        lo = path_key(path) + b"\x00" if path else b""
        hi = path_key(path) + b"\x01" if path else None
        if after is not None:
            lo = path_key(prefix + after) + b"\x01"  # past `after` and its whole subtree
        nblocks = len(self._first_keys)
        j = max(0, bisect_right(self._first_keys, lo) - 1)
        while j < nblocks:
            if hi is not None and self._first_keys[j] >= hi:
                return
            decoded = self.decoded(j)
            keys, entries = decoded[0], decoded[1]
            p = bisect_left(keys, lo)
            while p < len(keys):
                if hi is not None and keys[p] >= hi:
                    return
                e = entries[p]
                child, sep, _ = e.path[len(prefix):].partition("/")
                if not sep:
                    yield (j << POS_BITS) | p, self._checked(decoded, p)
                    p += 1
                    continue
                # deeper: skip the child's whole subtree (it may span blocks: bisect the block table)
                lo = path_key(prefix + child) + b"\x01"
                p = bisect_left(keys, lo)
                if p == len(keys):
                    break
            else:
                j += 1
                continue
            j = max(j + 1, bisect_right(self._first_keys, lo) - 1)

    def children(self, path: str, after: str | None = None) -> Iterator[Entry]:
        """Entries directly inside directory `path` ('' is the root), in name order; `after` resumes."""
        return (e for _, e in self.children_coded(path, after))

    def coded_frames(self) -> Iterator[tuple[int, Entry, memoryview]]:
        """Every entry in path order with its code and encoded form; order and count checked."""
        count = 0
        for i in range(len(self.header.blocks)):
            decoded = self.decoded(i)  # checked in order there
            raws = decoded[2]
            count += len(raws)
            for p in range(len(raws)):
                yield (i << POS_BITS) | p, self._checked(decoded, p), raws[p]
        if count != self.header.entries:
            raise _reject(self.source, f"{count} entries, header says {self.header.entries}")


def _validate(e: Entry, locations: list[Source | None], source: str) -> None:
    try:
        check_path(e.path)
    except InvalidName as err:
        raise _reject(source, str(err)) from None
    if e.kind == FILE:
        if len(e.data) % REF.size:
            raise _reject(source, f"bad chunk list for {e.path!r}")
        total = 0
        npacks = len(locations)
        first: int | None = None  # the location of the first chunk
        for _, p, offset, stored_len, raw_len, flags in REF.iter_unpack(e.data):
            if p >= npacks:
                raise _reject(source, f"chunk of {e.path!r} names an unknown pack")
            first = p if first is None else first
            external = locations[p]
            if p != first and (external is not None or locations[first] is not None):
                raise _reject(source, f"chunks of {e.path!r} mix packs and an external source")
            if external is not None:  # a reference: every chunk in one source; zero-length only when empty
                problem = source_ref_problem(external, offset, stored_len, raw_len, flags)
                if problem is None and raw_len == 0 and len(e.data) != REF.size:
                    problem = "a zero-length chunk in a non-empty reference"
            else:
                problem = ref_problem(offset, stored_len, raw_len, flags)
            if problem is not None:
                raise _reject(source, f"{e.path!r} has {problem}")
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


def read_manifest_frames(path: str, source: str = "") -> tuple[Header, Iterator[tuple[Entry, memoryview]]]:
    """Header, then every entry with its encoded form (indexes store it as it is, no re-encoding)."""
    mf = ManifestFile(path, source)

    def frames() -> Iterator[tuple[Entry, memoryview]]:
        try:
            yield from mf.frames()
        finally:
            mf.close()

    return mf.header, frames()


def read_manifest(path: str, source: str = "") -> tuple[Header, Iterator[Entry]]:
    """Stream a manifest file: its header, then its entries, each validated (the store is untrusted)."""
    header, frames = read_manifest_frames(path, source)
    return header, (entry for entry, _ in frames)
