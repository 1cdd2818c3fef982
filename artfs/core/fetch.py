"""Reading chunks: cache first, else ranged GETs of packs; every chunk from the store verified.

Nearby chunks of one pack are fetched with one ranged GET (a span), because per-request cost dominates
object stores: 5,000 small files packed together cost a handful of GETs, not 5,000.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from artfs.core.packs import ChunkRef, decode_chunk, pack_key
from artfs.errors import IntegrityError, StoreNotFound
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store

MAX_SPAN = 8 * 1024 * 1024
MAX_GAP = 1024 * 1024


def plan_spans(refs: Iterable[ChunkRef], max_span: int = MAX_SPAN, max_gap: int = MAX_GAP) -> list[list[ChunkRef]]:
    """Group chunks into spans: same pack, sorted by offset, gaps ≤ max_gap, length ≤ max_span."""
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


class ChunkFetcher:
    """Fetches and verifies chunks. Thread-safe; blocking (call it from a worker thread on a loop)."""

    def __init__(self, store: Store, cache: ChunkCache | None = None) -> None:
        self.store = store
        self.cache = cache
        self.fetched_bytes = 0
        self.requests = 0

    def fetch_span(self, span: list[ChunkRef], populate: bool = True) -> dict[bytes, bytes]:
        """One ranged GET covering `span` (chunks of one pack, by offset) → digest → verified data."""
        start, end = span[0].offset, max(r.end for r in span)
        pack = span[0].pack
        try:
            blob = self.store.get_range(pack_key(pack), start, end - start)
        except StoreNotFound:
            raise IntegrityError(
                f"pack {pack} is missing from the store (needed for chunk {span[0].digest.hex()})"
            ) from None
        self.requests += 1
        self.fetched_bytes += len(blob)
        view = memoryview(blob)
        out = {}
        for r in span:
            data = decode_chunk(r, view[r.offset - start : r.end - start])
            out[r.digest] = data if isinstance(data, bytes) else bytes(data)
        if populate and self.cache is not None:
            self.cache.put_many(out.items())
        return out

    def read_chunk(self, ref: ChunkRef, populate: bool = True) -> bytes:
        if self.cache is not None:
            data = self.cache.get(ref.digest)
            if data is not None:
                return data
        return self.fetch_span([ref], populate)[ref.digest]
