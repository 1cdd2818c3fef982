"""Reading a manifest file: streamed in full, or one block at a time to find a path or a directory.

The store is untrusted, so everything read is validated: the footer and its block table, then each block
whole as it is decoded, before any of its entries is handed out (path rules, symlinks that stay inside,
chunk tables that add up to the file's size, chunk locations that artfs could have written:
`packs.ref_problem`, entries in order) — so no reader, listing, export or dedup ever sees an unchecked
entry, and the first byte of a huge version waits for one block, not the whole manifest. A block is
checked column by column (`_validate_block`: a few C-level passes over all its entries); what that does
not decide (non-ASCII paths, symlinks, references, a problem to name) is checked entry by entry
(`_validate`). One exception, for listings: a block reached by skipping a subtree is only peeked at
(its paths decoded, in order), and the few entries handed out of it are decoded and validated alone.
Reads use `pread` on one descriptor, so several threads may look things up at once.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from itertools import accumulate, islice
from operator import lt, sub
from typing import Any

import msgspec
import zstandard

from artfs.core.manifest import (
    DIR,
    FILE,
    FRAME,
    LINK,
    MAGIC,
    READ_FORMATS,
    TRAILER,
    Entry,
    Header,
    entry_decoder,
    header_decoder,
    path_key,
)
from artfs.core.names import MAX_COMPONENT_BYTES, MAX_PATH_BYTES, check_path, check_symlink_target
from artfs.core.packs import REF, plain_raw_lengths, ref_problem
from artfs.core.references import Source, is_token, parse_token, source_ref_problem
from artfs.errors import IntegrityError, InvalidName

Row = tuple[bytes, int, int, int, int, int]  # a directory listing's row: name, code, kind, mode, size, mtime_ns
MAX_BLOCK = 64 << 20  # a block decompresses to at most this (ours are ~64 KiB): a bound against bombs
POS_BITS = 16  # an entry's code is (block << POS_BITS) | its position in the block (ours hold < 5,000)
MAX_BLOCK_ENTRIES = 1 << POS_BITS
CACHED_BLOCKS = 16  # decoded blocks kept per open manifest (a listing reads one block several times)


Encoded = memoryview | msgspec.Raw  # an entry's msgpack as the block holds it (a buffer: bytes(it) copies it)


class _Block:
    """One decoded, validated block: path keys (ascending), entries, and each entry's encoded form (found
    only for the index build, which stores it, and for an entry of a block only peeked at)."""

    __slots__ = ("keys", "entries", "kinds", "data", "starts", "raws")

    def __init__(self, keys: list[bytes], entries: list[Any], kinds: list[int] | None, data: bytes,
                 starts: list[int] | None) -> None:
        self.keys = keys
        self.entries = entries  # Entry, validated; or, in a block only peeked at, _Path: not validated
        self.kinds = kinds  # the entries' kinds; None in a block only peeked at
        self.data = data
        self.starts = starts  # format 1: where each entry's frame body starts; format 2: None
        self.raws: list[msgspec.Raw] | None = None  # format 2: the array's items, when first asked for

    def raw(self, p: int) -> Encoded:
        if self.starts is None:
            raws = self.raws
            if raws is None:  # already decoded whole once: this cannot fail (nor disagree, if two threads race)
                raws = self.raws = _raws_decoder.decode(self.data)
            return raws[p]
        end = self.starts[p + 1] - FRAME.size if p + 1 < len(self.starts) else len(self.data)
        return memoryview(self.data)[self.starts[p]:end]


class _Path(msgspec.Struct, array_like=True):
    """An encoded Entry's first field only: enough to find one's way through a block."""

    path: str


_path_decoder = msgspec.msgpack.Decoder(_Path)
# format 2: a block is one array; decoded whole in one call, or its paths only, or its items as they are
_block_decoder = msgspec.msgpack.Decoder(list[Entry])
_block_paths_decoder = msgspec.msgpack.Decoder(list[_Path])
_raws_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])


def array_header(n: int) -> bytes:
    """msgpack's header of an array of n items (what a block starts with; index.py frames a page of
    encoded entries with it to decode them in one call)."""
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2) if n < 1 << 16 else b"\xdd" + n.to_bytes(4)


def _array_length(data: bytes) -> int:
    """How many items the msgpack array `data` starts with says it holds (0 if it is no array: decoding
    it then says what is wrong)."""
    kind = data[0] if data else 0
    if 0x90 <= kind <= 0x9F:
        return kind & 0x0F
    if kind in (0xDC, 0xDD):  # array 16, array 32
        return int.from_bytes(data[1:3 if kind == 0xDC else 5])
    return 0


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
        # decoded blocks: lookups, listings, inode lookups by code and the index build (which walks the
        # blocks in the order `find` does) decode a block once between them
        self._decoded: OrderedDict[int, _Block] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self.last_used = time.monotonic()  # of a decoded block (index.py waits for quiet to build)
        try:  # pack ids, and the external sources of references (core/references.py), parsed once
            self._locations = [parse_token(p) if is_token(p) else None for p in self.header.packs]
        except IntegrityError as e:
            self.close()
            raise _reject(self.source, str(e)) from None
        self._external = frozenset(i for i, loc in enumerate(self._locations) if loc is not None)

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
        if header.format not in READ_FORMATS:
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

    def _decode(self, i: int, peek: bool = False) -> _Block:
        """Block i, decoded and validated whole (`_validate_block`): nothing of it is usable before. With
        `peek`, only the paths are decoded, to find one's way (in order, checked): nothing else of it may be
        used but what `_one` decodes and validates."""
        first, offset, length = self.header.blocks[i]
        try:
            data = zstandard.ZstdDecompressor().decompress(os.pread(self._fd, length, offset),
                                                           max_output_size=MAX_BLOCK)
        except zstandard.ZstdError as err:
            raise _reject(self.source, f"undecodable block ({err})") from None
        starts: list[int] | None = None
        try:
            if self.header.format == 1:
                entries, starts = self._frames_of(data, peek)
            else:
                if _array_length(data) > MAX_BLOCK_ENTRIES:  # refused before a million entries are made
                    raise _reject(self.source, f"a block of more than {MAX_BLOCK_ENTRIES} entries")
                entries = (_block_paths_decoder if peek else _block_decoder).decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise _reject(self.source, f"undecodable entry ({err})") from None
        if len(entries) > MAX_BLOCK_ENTRIES:  # entry codes (inode numbers of a mount) leave room for no more
            raise _reject(self.source, f"a block of more than {MAX_BLOCK_ENTRIES} entries")
        paths = [e.path for e in entries]
        keys = _path_keys(paths)
        if len(keys) != len(entries):
            raise _reject(self.source, f"a path holding a NUL byte in block {i}")
        if not keys or keys[0] != first:
            raise _reject(self.source, "block table does not match its blocks")
        # in order within the block and before the next one: the block table is in order (footer), so the
        # whole manifest is, and searches may bisect
        if not all(map(lt, keys, islice(keys, 1, None))) or (
                i + 1 < len(self._first_keys) and keys[-1] >= self._first_keys[i + 1]):
            raise _reject(self.source, f"entries out of order in block {i}")
        kinds = None if peek else _validate_block(entries, self._locations, self._external, self.source, paths)
        return _Block(keys, entries, kinds, data, starts)

    def _frames_of(self, data: bytes, peek: bool) -> tuple[list[Any], list[int]]:
        """A format-1 block's entries (or, with `peek`, their paths) and where each one's frame body starts."""
        view = memoryview(data)
        starts: list[int] = []
        decode = _path_decoder.decode if peek else entry_decoder.decode
        unpack, n, pos = FRAME.unpack_from, len(data), 0
        entries: list[Any] = []
        try:
            for _ in range(MAX_BLOCK_ENTRIES + 1):  # one more, so that too many is seen
                if pos >= n:
                    break
                start = pos + 4
                pos = start + unpack(data, pos)[0]
                if pos > n:
                    raise _reject(self.source, "truncated block")
                entries.append(decode(view[start:pos]))
                starts.append(start)
        except struct.error:
            raise _reject(self.source, "truncated block") from None
        return entries, starts

    def _one(self, block: _Block, p: int) -> Entry:
        """Entry p of a block only peeked at, decoded and validated alone."""
        try:
            e = entry_decoder.decode(block.raw(p))
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise _reject(self.source, f"undecodable entry ({err})") from None
        _validate(e, self._locations, self.source)
        return e

    def frames(self) -> Iterator[tuple[Entry, Encoded]]:
        """Every entry in path order, with its encoded form; order and count checked."""
        count = 0
        for i in range(len(self.header.blocks)):
            block = self._decode(i)
            count += len(block.entries)
            for p, e in enumerate(block.entries):
                yield e, block.raw(p)
        if count != self.header.entries:
            raise _reject(self.source, f"{count} entries, header says {self.header.entries}")

    def decoded(self, i: int) -> _Block:
        """Block i, decoded and validated; a few blocks stay decoded (a thread-safe LRU)."""
        self.last_used = time.monotonic()
        with self._decoded_lock:
            hit = self._decoded.get(i)
            if hit is not None:
                self._decoded.move_to_end(i)
                return hit
        block = self._decode(i)
        with self._decoded_lock:
            self._decoded[i] = block
            while len(self._decoded) > CACHED_BLOCKS:
                self._decoded.popitem(last=False)
        return block

    def entry_at(self, code: int) -> Entry | None:
        """The entry with this code ((block << POS_BITS) | position), or None if there is none."""
        block, pos = code >> POS_BITS, code & (MAX_BLOCK_ENTRIES - 1)
        if not 0 <= block < len(self._first_keys):
            return None
        entries = self.decoded(block).entries
        return entries[pos] if pos < len(entries) else None

    def lookup_coded(self, path: str) -> tuple[int, Entry] | None:
        """The code and entry at `path`, decoding only the one block that can hold it."""
        key = path_key(path)
        i = bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        block = self.decoded(i)
        keys = block.keys
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return (i << POS_BITS) | j, block.entries[j]
        return None

    def lookup(self, path: str) -> Entry | None:
        """The entry at `path`, decoding only the one block that can hold it."""
        found = self.lookup_coded(path)
        return found[1] if found is not None else None

    def children_coded(self, path: str, after: str | None = None) -> Iterator[tuple[int, Entry]]:
        """(code, entry) directly inside directory `path` ('' is the root), in name order; `after` resumes."""
        for block, j, p, q in self._child_runs(path, after):
            base = j << POS_BITS
            if block.kinds is None:  # only peeked at: a run of one, decoded and validated alone
                yield base | p, self._one(block, p)
            else:
                entries = block.entries
                for i in range(p, q):
                    yield base | i, entries[i]

    def children_rows(self, path: str, after: str | None = None, limit: int | None = None) -> list[Row]:
        """What a listing shows of the entries directly inside directory `path`, by name, after `after`:
        (name, code, kind, mode, size, mtime_ns) rows (index.py's, for a version whose index is not built
        yet). A run of children is made into rows by one comprehension, names cut from the path keys."""
        rows: list[Row] = []
        cut = len(path_key(path)) + 1 if path else 0
        for block, j, p, q in self._child_runs(path, after):
            base = j << POS_BITS
            if block.kinds is None:
                e = self._one(block, p)
                rows.append((block.keys[p][cut:], base | p, e.kind, e.mode, e.size, e.mtime_ns))
            else:
                rows += [(key[cut:], base | i, e.kind, e.mode, e.size, e.mtime_ns)
                         for i, key, e in zip(range(p, q), block.keys[p:q], block.entries[p:q], strict=True)]
            if limit is not None and len(rows) >= limit:
                del rows[limit:]
                break
        return rows

    def next_directory(self, path: str) -> tuple[int, Entry] | None:
        """(code, entry) of the directory after `path` in a walk that lists a directory and then enters
        its subdirectories in name order (find, os.walk): the first directory entry past `path`'s own in
        path_key order — its first subdirectory, else the next directory after its subtree. Only from
        blocks still decoded (a listing of `path` just read them) and the one after them; None when it
        lies further (nothing is decoded for a guess)."""
        key = path_key(path) if path else b""
        nblocks = len(self._first_keys)
        j = max(0, bisect_right(self._first_keys, key) - 1)
        for i in range(j, nblocks):
            with self._decoded_lock:
                cached = self._decoded.get(i)
            frontier = cached is None
            if cached is None:
                if i == j:
                    return None
                cached = self.decoded(i)  # the next listing decodes it anyway
            block = cached
            assert block.kinds is not None  # kept decoded: validated whole
            try:
                q = block.kinds.index(DIR, bisect_right(block.keys, key) if i == j else 0)
            except ValueError:
                if frontier:
                    return None
                continue
            return (i << POS_BITS) | q, block.entries[q]
        return None

    def _child_runs(self, path: str, after: str | None) -> Iterator[tuple[_Block, int, int, int]]:
        """(block, its index, p, q): entries p..q-1 of the block are children of directory `path`, one
        after another, in name order; `after` resumes. A directory's descendants follow it (path_key
        order), so a run of a fully decoded block ends at its first directory, whose subtree is skipped —
        found with `list.index` on the block's kinds, in C. A run is checked to hold no deeper entry (a
        crafted manifest could list `d/x/y` without `d/x`); one that does, and a block only peeked at,
        go entry by entry, deeper entries skipped with their subtrees."""
        prefix = path + "/" if path else ""
        lo = path_key(path) + b"\x00" if path else b""
        hi = path_key(path) + b"\x01" if path else None
        if after is not None:
            lo = path_key(prefix + after) + b"\x01"  # past `after` and its whole subtree
        cut = len(prefix)
        nuls = path_key(path).count(0) + 1 if path else 0  # NULs in a child's key (a deeper one has more)
        careful = False  # a run held a deeper entry: the rest of this block goes entry by entry
        nblocks = len(self._first_keys)
        j = max(0, bisect_right(self._first_keys, lo) - 1)
        skipped = False
        while j < nblocks:
            if hi is not None and self._first_keys[j] >= hi:
                return
            # A block reached by skipping a subtree is only peeked at: listing a directory of directories
            # (a version's root) wants one entry of each block, and the listings of those directories,
            # which come next, decode their blocks whole anyway.
            block = self._peeked(j) if skipped else self.decoded(j)
            keys, kinds = block.keys, block.kinds
            skipped = kinds is None  # ...and so is the next block, while nothing in them is handed out
            careful = False
            p = bisect_left(keys, lo)
            end = bisect_left(keys, hi) if hi is not None else len(keys)
            while p < end:
                if kinds is not None and not careful:
                    try:
                        q = kinds.index(DIR, p, end) + 1  # up to and including the next directory
                    except ValueError:
                        q = end
                    if b"\x00".join(keys[p:q]).count(0) == (q - p) * (nuls + 1) - 1:  # none deeper
                        yield block, j, p, q
                        if kinds[q - 1] != DIR:
                            p = q
                            continue
                        lo = keys[q - 1] + b"\x01"  # past the directory's subtree
                        p = bisect_left(keys, lo, q)
                        if p == len(keys):
                            break
                        continue
                    careful = True
                entry_path = block.entries[p].path
                slash = entry_path.find("/", cut)
                if slash < 0:
                    yield block, j, p, p + 1
                    skipped = False
                    p += 1
                    continue
                # deeper: skip the child's whole subtree (it may span blocks: bisect the block table)
                lo = path_key(entry_path[:slash]) + b"\x01"
                p = bisect_left(keys, lo, p)
                if p == len(keys):
                    break
            else:
                if end < len(keys):
                    return  # past the directory
                j += 1
                continue
            j = max(j + 1, bisect_right(self._first_keys, lo) - 1)
            skipped = True

    def _peeked(self, i: int) -> _Block:
        """Block i decoded whole if it is at hand, else peeked at (its paths only: `_decode`)."""
        self.last_used = time.monotonic()  # a use like any other: a listing of a root peeks for a while
        with self._decoded_lock:
            hit = self._decoded.get(i)
        return hit if hit is not None else self._decode(i, peek=True)

    def children(self, path: str, after: str | None = None) -> Iterator[Entry]:
        """Entries directly inside directory `path` ('' is the root), in name order; `after` resumes."""
        return (e for _, e in self.children_coded(path, after))

    def coded_frames(self) -> Iterator[tuple[int, Entry, Encoded]]:
        """Every entry in path order with its code and encoded form; order and count checked."""
        count = 0
        for i in range(len(self.header.blocks)):
            block = self.decoded(i)
            count += len(block.entries)
            base = i << POS_BITS
            for p, e in enumerate(block.entries):
                yield base | p, e, block.raw(p)
        if count != self.header.entries:
            raise _reject(self.source, f"{count} entries, header says {self.header.entries}")


_SLASH_NUL = bytes.maketrans(b"/\x00", b"\x00/")


def _path_keys(paths: list[str]) -> list[bytes]:
    """`manifest.path_key` of each path, in three C calls for the lot: joined by NULs, slashes and NULs
    swapped, split at the (former NUL) slashes. A path holding a NUL (never valid) makes an extra key."""
    return "\x00".join(paths).encode("utf-8", "surrogateescape").translate(_SLASH_NUL).split(b"/")


def _validate_block(entries: list[Entry], locations: list[Source | None], external: frozenset[int],
                    source: str, paths: list[str] | None = None) -> list[int]:
    """Every entry of a block, as `_validate` checks them one by one — in a few C-level passes over the
    whole block where that is plainly the same (`_paths_ok`, `packs.plain_raw_lengths`), one by one
    otherwise, which also names the problem. `paths`: the entries' paths, if at hand. Returns the
    entries' kinds (listings use them)."""
    if paths is None:
        paths = [e.path for e in entries]
    if not _paths_ok(paths):  # non-ASCII names, say: the one-by-one rule (or a rejection naming the path)
        for path in paths:
            try:
                check_path(path)
            except InvalidName as err:
                raise _reject(source, str(err)) from None
    kinds = [e.kind for e in entries]
    if kinds.count(FILE) + kinds.count(DIR) != len(kinds):  # symlinks (few), or an unknown kind
        for e in entries:
            if e.kind != FILE and e.kind != DIR:
                _validate(e, locations, source)
    files = [e for e in entries if e.kind == FILE]
    if not _files_ok(files, len(locations), external):  # references, or a problem to name
        for e in files:
            _validate(e, locations, source)
    return kinds


def _paths_ok(paths: list[str]) -> bool:
    """True only if `check_path` accepts every one of these paths (short ASCII ones are decided here)."""
    joined = "/".join(paths)
    if not joined.isascii() or "\x00" in joined:
        return False
    longest = max(map(len, paths), default=0)
    if longest > MAX_COMPONENT_BYTES and (longest > MAX_PATH_BYTES
                                          or max(map(len, joined.split("/"))) > MAX_COMPONENT_BYTES):
        return False
    # every path between slashes, so an empty, '.' or '..' component (or a leading '/') shows as one of these
    walled = f"/{joined}/"
    return "//" not in walled and "/./" not in walled and "/../" not in walled


def _files_ok(files: list[Entry], npacks: int, external: frozenset[int]) -> bool:
    """True only if `_validate` accepts the chunk tables of these file entries: chunks in packs where artfs
    could have written them (none in an `external` source), adding up to each file's size."""
    datas = [e.data for e in files]
    raw = plain_raw_lengths(b"".join(datas), npacks, external)
    if raw is None:
        return False
    lens = list(map(len, datas))
    sizes = [e.size for e in files]
    if lens.count(REF.size) == len(lens):  # one chunk each (small files): its length is the size
        try:
            return raw == array("I", sizes)  # one comparison in C (raw is an array of "I" too)
        except OverflowError:  # a size below 0 or of 4 GiB or more: not one chunk's
            return False
    if any(n % REF.size for n in lens):
        return False
    ends = list(accumulate(n // REF.size for n in lens))
    cum = list(accumulate(raw, initial=0))
    return list(map(sub, map(cum.__getitem__, ends), map(cum.__getitem__, [0, *ends[:-1]]))) == sizes


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


def read_manifest_frames(path: str, source: str = "") -> tuple[Header, Iterator[tuple[Entry, Encoded]]]:
    """Header, then every entry with its encoded form (indexes store it as it is, no re-encoding)."""
    mf = ManifestFile(path, source)

    def frames() -> Iterator[tuple[Entry, Encoded]]:
        try:
            yield from mf.frames()
        finally:
            mf.close()

    return mf.header, frames()


def read_manifest(path: str, source: str = "") -> tuple[Header, Iterator[Entry]]:
    """Stream a manifest file: its header, then its entries, each validated (the store is untrusted)."""
    header, frames = read_manifest_frames(path, source)
    return header, (entry for entry, _ in frames)
