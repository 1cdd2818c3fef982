"""A file's bytes: where they are (its layout) and how they are read — cache first, verified.

Every reader of a version's file content goes through this module: the mount (`fs/reader.py`, which adds
prefetch, over `fs/chunks.py`, which adds single flight and an in-memory LRU on the trio loop), a staging
area's unchanged base files (`core/staging/base_files.py`) and `artfs get` (`core/export.py`).

- **FileLayout** is a file as a sequence of chunks with cumulative offsets: a read bisects the offsets
  (restic's `fuse/file.go`) and is assembled from the chunks it covers, in one place.
- **ChunkReader** gets chunks: whole spans from the cache when every chunk is there, else one ranged GET
  per span of a pack (`plan_spans`: per-request cost dominates object stores), and **every chunk that
  comes from the store is verified** against its digest here (`packs.decode_chunk`) before anyone sees it.

Where a second kind of content plugs in: a file whose bytes live in an external object (a reference,
core/references.py) is one more FileLayout whose pieces are pinned ranges of that object (chunk refs with
FLAG_SOURCE), and one more way for `ChunkReader.fetch_span` to fetch a span of them (a pinned ranged read,
each chunk verified; no quarantine or relocation: a changed source is the source's fault, not a copy's);
bisecting, assembling, single flight, prefetch and the cache are shared as they are.
A layout is built only from entries validated when their manifest block was decoded
(`manifest_file._validate`: the chunks add up to the file's size, every location is one artfs could have
written), so no reader checks them again.
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Protocol

from artfs.core.manifest import Entry
from artfs.core.packs import FLAG_SOURCE, ChunkRef, decode_chunk
from artfs.core.references import fetch_source_span
from artfs.core.store_keys import pack_key
from artfs.errors import IntegrityError, StoreNotFound
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store

Chunk = bytes | memoryview  # a chunk's bytes: chunks fetched from the store are views of their GET's buffer

# 16 MiB: per-request costs are not only the server's. Against moto, 16 MiB GETs took ~15% less of the
# server's CPU per byte and ~8% less of ours than 8 MiB ones, and a cold read ran ~20% faster (packs: 32 MiB).
MAX_SPAN = 16 * 1024 * 1024
MAX_GAP = 1024 * 1024
DENSE = 0.75  # chunks filling at least this much of a GET are returned as views of it (see fetch_span)


def plan_spans(refs: Iterable[ChunkRef], max_span: int = MAX_SPAN, max_gap: int = MAX_GAP) -> list[list[ChunkRef]]:
    """Group chunks into spans, one GET each: same pack, sorted by offset, gaps ≤ max_gap, length ≤ max_span.

    Nearby chunks of one pack share a GET, because per-request cost dominates object stores: 5,000 small
    files packed together cost a handful of GETs, not 5,000."""
    by_pack: dict[str, dict[bytes, ChunkRef]] = defaultdict(dict)
    for r in refs:
        by_pack[r.pack].setdefault(r.digest, r)
    spans: list[list[ChunkRef]] = []
    for chunks in by_pack.values():
        ordered = sorted(chunks.values(), key=lambda r: r.offset)
        cur: list[ChunkRef] = []
        for r in ordered:
            if cur and (r.offset - cur[-1].end > max_gap or r.end - cur[0].offset > max_span):
                spans.append(cur)
                cur = []
            cur.append(r)
        if cur:
            spans.append(cur)
    return spans


class FileLayout:
    """A file's chunks in order, with the offset where each starts (`starts[k]`; `starts[-1]` is the size)."""

    __slots__ = ("refs", "starts", "size")

    def __init__(self, refs: list[ChunkRef], size: int) -> None:
        self.refs = refs
        self.starts = [0, *accumulate(r.raw_len for r in refs)]
        self.size = size

    @classmethod
    def of_entry(cls, entry: Entry, packs: list[str]) -> FileLayout:
        """The layout of a version's file entry (its pack indexes resolved through the manifest's packs)."""
        return cls(entry.refs(packs), entry.size)

    def covering(self, off: int, end: int) -> tuple[int, int]:
        """(first, last): chunks first..last-1 cover bytes [off, end), which must lie within the file."""
        return bisect_right(self.starts, off) - 1, bisect_left(self.starts, end)

    def clip(self, off: int, size: int) -> int:
        """The end of a read of `size` bytes at `off`: short at the end of the file."""
        return min(off + size, self.size)

    def assemble(self, first: int, chunks: Sequence[Chunk], off: int, end: int,
                 scratch: bytearray | None = None) -> Chunk:
        """Bytes [off, end) from `chunks` = the data of chunks first, first+1, … (as `covering` gave).

        Within one chunk: a view of it, no copy. Across chunks: copied into `scratch` when it is given and
        big enough (a caller that reuses one buffer saves the page faults of fresh memory), else into new
        bytes."""
        starts = self.starts
        if len(chunks) == 1:
            base = starts[first]
            return memoryview(chunks[0])[off - base : end - base]
        out = memoryview(scratch)[: end - off] if scratch is not None and len(scratch) >= end - off \
            else memoryview(bytearray(end - off))
        pos = 0
        for k, data in enumerate(chunks, first):
            lo = max(off, starts[k]) - starts[k]
            hi = min(end, starts[k + 1]) - starts[k]
            out[pos : pos + hi - lo] = memoryview(data)[lo:hi]
            pos += hi - lo
        return out

    def pieces(self, limit: int | None = None) -> Iterator[tuple[int, ChunkRef]]:
        """(start, chunk) for each chunk of the file's first `limit` bytes (all by default), in order."""
        for start, ref in zip(self.starts, self.refs, strict=False):
            if limit is not None and start >= limit:
                return
            yield start, ref


class DamageControl(Protocol):
    """What a reader does about bad copies (core/damage.py): report them, and look for a good one."""

    def report(self, ref: ChunkRef, why: str) -> None: ...
    def relocated(self, ref: ChunkRef) -> ChunkRef | None: ...


class ChunkReader:
    """Reads chunks cache first, fetching spans from the store and verifying every chunk. Thread-safe and
    blocking: call it from worker threads when on an event loop."""

    def __init__(self, store: Store, cache: ChunkCache | None = None, damage: DamageControl | None = None) -> None:
        """`damage` hears of every stored copy that fails verification (the quarantine), and is asked for a
        good copy elsewhere (a relocation) before the failure reaches the caller."""
        self.store = store
        self.cache = cache
        self.damage = damage
        self.fetched_bytes = 0
        self.requests = 0

    # --- from the store -------------------------------------------------------------------------------

    def _get_stored(self, span: list[ChunkRef]) -> tuple[int, bytes]:
        """The stored bytes covering `span`, and the offset where they start (one ranged GET of a pack)."""
        start, end = span[0].offset, max(r.end for r in span)
        pack = span[0].pack
        try:
            return start, self.store.get_range(pack_key(pack), start, end - start)
        except StoreNotFound:
            raise IntegrityError(
                f"pack {pack} is missing from the store (needed for chunk {span[0].digest.hex()})"
            ) from None

    def fetch_span(self, span: list[ChunkRef], populate: bool = True, relocated: bool = False) -> dict[bytes, Chunk]:
        """One ranged GET covering `span` (chunks of one pack, by offset) → digest → verified data.

        Stored-raw chunks come back as read-only views of the GET's one buffer, not copies: a copy per
        chunk cost more than the hashing (fresh memory faults in page by page). A view keeps the whole
        buffer alive, so where the chunks fill less than DENSE of it (a span bridging gaps between small
        chunks) they are copied out instead: a cache of views must not hold megabytes per kilobyte chunk.
        """
        if span[0].flags & FLAG_SOURCE:  # a reference: pinned ranged read of its external object
            fetched, got = fetch_source_span(span)
            self.requests += 1
            self.fetched_bytes += fetched
            if populate and self.cache is not None:
                self.cache.put_many(got.items())
            return got
        try:
            start, blob = self._get_stored(span)
        except IntegrityError as e:  # the pack is gone
            return self._relocated(span, e, populate, relocated)
        self.requests += 1
        self.fetched_bytes += len(blob)
        view = memoryview(blob).toreadonly()
        dense = sum(r.stored_len for r in span) >= DENSE * len(blob)
        out: dict[bytes, Chunk] = {}
        bad: list[tuple[ChunkRef, IntegrityError]] = []
        for r in span:
            try:
                data = decode_chunk(r, view[r.offset - start : r.end - start])
            except IntegrityError as e:  # every bad copy of the span is reported (quarantined)
                if self.damage is not None:
                    self.damage.report(r, str(e))
                bad.append((r, e))
                continue
            out[r.digest] = data if dense or isinstance(data, bytes) else bytes(data)
        if bad:
            out.update(self._relocated([r for r, _ in bad], bad[0][1], populate, relocated))
        if populate and self.cache is not None:
            self.cache.put_many(out.items())
        return out

    def _relocated(self, refs: list[ChunkRef], error: IntegrityError, populate: bool,
                   relocated: bool) -> dict[bytes, Chunk]:
        """The chunks of bad copies `refs`, read from where a repair relocated them (verified like any
        chunk), or `error` if one has no good copy recorded. One hop: a relocation's target is not followed."""
        if self.damage is None or relocated:
            raise error
        targets = []
        for r in refs:
            to = self.damage.relocated(r)
            if to is None:
                raise error
            targets.append(to)
        out: dict[bytes, Chunk] = {}
        for span in plan_spans(targets):
            out.update(self.fetch_span(span, populate, relocated=True))
        return out

    # --- cache first ----------------------------------------------------------------------------------

    def read_span(self, span: list[ChunkRef]) -> dict[bytes, Chunk]:
        """The span's chunks: from the cache if it has every one of them, else one GET for all (not cached:
        the callers — an export, a copy-up — write the bytes to a copy of their own)."""
        if self.cache is not None:
            cached: dict[bytes, Chunk] = {}
            for r in span:
                data = self.cache.get(r.digest)
                if data is None:
                    break
                cached[r.digest] = data
            else:
                return cached
        return self.fetch_span(span, populate=False)

    def read_chunk(self, ref: ChunkRef, populate: bool = True) -> bytes:
        """One chunk, as bytes: from the cache, else fetched (and cached with `populate`)."""
        if self.cache is not None:
            data = self.cache.get(ref.digest)
            if data is not None:
                return data
        return bytes(self.fetch_span([ref], populate)[ref.digest])

    # --- files ----------------------------------------------------------------------------------------

    def read(self, layout: FileLayout, off: int, size: int) -> bytes:
        """Bytes [off, off+size) of a file (short at its end), chunk by chunk through the cache."""
        end = layout.clip(off, size)
        if off >= end:
            return b""
        first, last = layout.covering(off, end)
        chunks = [self.read_chunk(layout.refs[k]) for k in range(first, last)]
        return bytes(layout.assemble(first, chunks, off, end))

    def copy_to(self, layout: FileLayout, fd: int, limit: int) -> None:
        """Write a file's first `limit` bytes into `fd`, span by span (≤ MAX_SPAN each), so a big file goes
        to disk without being held in memory; a chunk that repeats in the file is read once. Does not fill
        the cache (the copy is the copy)."""
        where: dict[bytes, list[int]] = defaultdict(list)
        needed: dict[bytes, ChunkRef] = {}
        for start, ref in layout.pieces(limit):
            needed.setdefault(ref.digest, ref)
            where[ref.digest].append(start)
        for span in plan_spans(needed.values()):
            for digest, data in self.read_span(span).items():
                for pos in where[digest]:
                    os.pwrite(fd, data, pos)
