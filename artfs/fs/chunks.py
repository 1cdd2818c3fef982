"""Where chunks come from: memory, the LMDB cache, the store — each fetched once, off the trio loop.

- **Warm chunks barely await.** Chunks are kept decoded in an in-memory LRU (a 4 MiB chunk is served in
  many kernel-sized slices but copied out of LMDB once). Small cached chunks are read from LMDB inline
  (a thread hop, ~120 µs here, costs more than the lookup); big ones are copied by worker threads, because
  LMDB's pages may be cold and fault in 4 KiB at a time, which must not stall the loop.
- **Fetched chunks are not copied.** A chunk fetched from the store is a view of its GET's buffer (see
  core/content.py's ChunkReader.fetch_span) in memory, in the reply to the kernel and on its way to LMDB, and the daemon
  keeps freed buffers for the next fetch (`keep_freed_memory`): fresh memory costs a fault per page.
- **Single flight.** `_flights` maps every chunk being fetched or loaded to its flight; whoever needs it
  waits for that flight instead of fetching again. Checking and registering happen with no await in
  between, so two readers cannot both miss the table.
- **Fetches belong to the mount, not to the request.** They run in the mount's nursery: a read that hits
  its deadline returns EIO while the fetch completes and fills the cache for the next reader.
- **A guess never delays a need.** Prefetches take a prefetch slot *before* registering their flights, so
  a queued prefetch never holds a chunk that a reader is waiting for.
- **A whole file, fetched for random reads** (`fetch_whole`), is planned into parts registered at once, each
  started when one of `WHOLE_SLOTS` is free or at once by a reader that needs one of its chunks; a reader
  waits for the part that holds its chunk instead of fetching the chunk again. Measured against moto on
  2,000 random preads of a 512 MiB file, a GET of its own per missed chunk (as before) sent ~30 extra
  requests that shared the server with the parts: each took 100-250 ms, about what waiting for the part
  takes, and the whole file landed later. `landed` hears of each part's chunks (the reader pushes them into
  the kernel's page cache, reader.py).
- **One cache writer.** Fetched chunks are served from memory at once and written to LMDB by one task,
  many spans per transaction: LMDB has one writer at a time, and readers must not wait behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

import trio

from artfs.core.content import MAX_SPAN, Chunk, ChunkReader, DamageControl, plan_spans
from artfs.core.packs import ChunkRef
from artfs.core.references import is_token, parse_token
from artfs.errors import ArtfsError
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store

log = logging.getLogger(__name__)

MiB = 1 << 20
MEMORY_BYTES = 128 * MiB
DEMAND_SLOTS = 16
PREFETCH_SLOTS = 8
WHOLE_SLOTS = 4  # parts of whole-file fetches in flight (for all files together): 4 x 16 MiB took less of
# moto's CPU (0.53-0.61 s vs 0.77 s per 512 MiB) and landed a file sooner than 8 x 8 MiB (see reader.py)
WHOLE_BACKLOG = 8  # ... fetched or in flight but not yet written to the cache (memory: 8 x WHOLE_PART)
INLINE_MAX = 256 * 1024  # cached chunks up to this size are read on the loop (cheap even if cold)
LOAD_BATCH = 4 * MiB  # chunks copied out of the cache per worker-thread call
WRITE_BATCH = 32 * MiB  # fetched chunks written to the cache per LMDB transaction (at most)
CACHE_QUEUE = 4  # fetched spans waiting for the cache writer before fetches wait


def keep_freed_memory(trim: int = 256 * MiB, mmap_threshold: int = 32 * MiB) -> bool:
    """Have glibc reuse freed chunk buffers instead of handing them back to the kernel (process-wide).

    Chunks pass through the daemon in buffers of 1-16 MiB, allocated by one thread and freed by another.
    By default glibc maps each big buffer fresh or trims its heaps, and gives every thread its own arena,
    so memory freed in one arena was rarely reused by the next fetch: ~200 page faults per MiB read, and
    ~100 with this (the first fill of the working set), which took ~10% off the daemon's CPU on a cold
    read. One arena (threads here mostly wait in syscalls, Python's small objects bypass malloc, and
    its big ones are made under the GIL anyway), big buffers from the heap, 256 MiB of free heap kept.
    False where this is not glibc. LMDB's write buffers, in this process, benefit too.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
    return all(mallopt(option, value) == 1 for option, value in (
        (m_arena_max, 1), (m_mmap_threshold, mmap_threshold), (m_trim_threshold, trim)))


class _Memory:
    """Recently used chunks, least recently used dropped first, bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._chunks: OrderedDict[bytes, Chunk] = OrderedDict()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._chunks

    def get(self, digest: bytes) -> Chunk | None:
        data = self._chunks.get(digest)
        if data is not None:
            self._chunks.move_to_end(digest)
        return data

    def discard(self, digest: bytes) -> None:
        data = self._chunks.pop(digest, None)
        if data is not None:
            self.bytes -= len(data)

    def put(self, digest: bytes, data: Chunk) -> None:
        if digest in self._chunks:
            self._chunks.move_to_end(digest)
            return
        self._chunks[digest] = data
        self.bytes += len(data)
        while self.bytes > self.limit and self._chunks:
            _, old = self._chunks.popitem(last=False)
            self.bytes -= len(old)


Landed = Callable[[dict[bytes, Chunk]], None]


class _Flight:
    """One ranged GET (or cache load) in progress; each of its chunks maps to it until it lands."""

    __slots__ = ("done", "data", "error", "queued", "landed")

    def __init__(self, queued: list[ChunkRef] | None = None, landed: Landed | None = None) -> None:
        self.done = trio.Event()
        self.data: dict[bytes, Chunk] = {}
        self.error: BaseException | None = None
        self.queued = queued  # a part of a whole-file fetch not started yet (see the module docstring)
        self.landed = landed  # told of the chunks when they land


class ChunkSource:
    """Chunks by digest: memory, then cache, then the store (verified, cached), one fetch per chunk."""

    def __init__(self, store: Store, cache: ChunkCache, memory_bytes: int = MEMORY_BYTES,
                 demand_slots: int = DEMAND_SLOTS, prefetch_slots: int = PREFETCH_SLOTS,
                 damage: DamageControl | None = None) -> None:
        self.cache = cache
        self.fetcher = ChunkReader(store, cache, damage)
        self.memory = _Memory(memory_bytes)
        self.stats: Counter[str] = Counter()
        self._flights: dict[bytes, _Flight] = {}
        self._demand = trio.CapacityLimiter(demand_slots)
        self._prefetch = trio.CapacityLimiter(prefetch_slots)
        self._whole = trio.CapacityLimiter(WHOLE_SLOTS)
        self._backlog = trio.CapacityLimiter(WHOLE_BACKLOG)
        self._threads = trio.CapacityLimiter(demand_slots + prefetch_slots + WHOLE_SLOTS)
        self._nursery: trio.Nursery | None = None
        self._busy = 0
        self._busy_lock = threading.Lock()

    def bind(self, nursery: trio.Nursery) -> None:
        """Fetches run in this nursery (the mount's), so they outlive the request that started them."""
        keep_freed_memory()
        self._nursery = nursery
        self._to_cache, receive = trio.open_memory_channel[list[tuple[bytes, Chunk]]](CACHE_QUEUE)
        self._writer_done = trio.Event()
        nursery.start_soon(self._write_cache, receive)

    async def drain(self) -> None:
        """Write what fetches queued for the cache (at unmount; later fetches are not cached)."""
        await self._to_cache.aclose()
        await self._writer_done.wait()

    async def _write_cache(self, receive: trio.MemoryReceiveChannel[list[tuple[bytes, Chunk]]]) -> None:
        """The one task that fills the LMDB cache with fetched chunks, many spans per transaction: LMDB has
        one writer at a time, and fetch threads queueing for it would delay the readers they serve."""
        try:
            async for items in receive:
                batch, size = list(items), sum(len(d) for _, d in items)
                while size < WRITE_BATCH:
                    try:
                        more = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch += more
                    size += sum(len(d) for _, d in more)
                try:
                    await trio.to_thread.run_sync(self.cache.put_many, batch)  # not abandoned: LMDB stays whole
                except Exception as e:  # noqa: BLE001 - an unwritten chunk is only a future miss
                    log.warning("cannot write %d chunks to the cache: %s", len(batch), e)
        finally:
            self._writer_done.set()

    @property
    def busy_threads(self) -> int:
        """Store fetches still running in worker threads (shutdown waits for them before closing LMDB)."""
        return self._busy

    # --- inline (never awaits) ---------------------------------------------------------------------

    def now(self, ref: ChunkRef) -> Chunk | None:
        """The chunk if it is in memory, or small and in the cache; else None (then `get` it)."""
        digest = ref.digest
        data = self.memory.get(digest)
        if data is not None:
            self.stats["memory_hits"] += 1
            return data
        if ref.raw_len > INLINE_MAX or digest in self._flights:
            return None
        data = self.cache.get(digest)
        if data is not None:
            self.stats["cache_hits"] += 1
            self.memory.put(digest, data)
        return data

    def slice_now(self, ref: ChunkRef, lo: int, hi: int) -> bytes | None:
        """Bytes [lo, hi) of a cached chunk that `now` would not serve inline (too big to copy whole on the
        loop): a small random read copies only the bytes it asked for. None if it is not cached."""
        data = self.cache.get_range(ref.digest, lo, hi - lo)  # a miss costs a B-tree lookup
        if data is not None:
            self.stats["slice_hits"] += 1
        return data

    def release(self, refs: list[ChunkRef]) -> None:
        """Forget chunks a sequential reader has read past: the kernel's page cache holds them now, and
        each one kept here holds its GET's whole buffer. A reader that wants one again finds it in the
        cache or fetches it."""
        for r in refs:
            self.memory.discard(r.digest)
        self.stats["released"] += len(refs)

    def background(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` (an async function) in the mount's nursery: work that outlives its request."""
        assert self._nursery is not None, "ChunkSource.bind() first"
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def present(self, digest: bytes) -> bool:
        """In memory, in the cache or on its way: nothing to fetch."""
        return digest in self.memory or digest in self._flights or self.cache.contains(digest)

    def start(self, need: Iterable[ChunkRef], extra: Iterable[ChunkRef] = (), load_cached: bool = False,
              max_span: int = MAX_SPAN, cache_extra: bool = True) -> None:
        """Get `need` now, with `extra` chunks where they share a GET; other `extra` spans prefetch.
        `cache_extra=False`: what the prefetch spans fetch is not written to LMDB (see `prefetch`).

        Chunks already in the cache are copied into memory by worker threads: the cache's pages may be
        cold, and LMDB faults them in 4 KiB at a time (one thread ~60 MB/s, eight ~2 GB/s, none of it on
        the loop). `extra` chunks in the cache are loaded only with `load_cached`.
        """
        assert self._nursery is not None, "ChunkSource.bind() first"
        wanted = {r.digest for r in need if r.digest not in self._flights}
        todo: list[ChunkRef] = []
        for r in need:
            if r.digest not in wanted or r.digest in self._flights:
                continue
            if self.cache.contains(r.digest):
                flight = self._register([r])
                self._nursery.start_soon(self._load, [r], flight)
            else:
                todo.append(r)
        loads: list[ChunkRef] = []
        for r in extra:
            if r.digest in wanted or r.digest in self.memory or r.digest in self._flights:
                continue
            if not self.cache.contains(r.digest):
                todo.append(r)
            elif load_cached:
                loads.append(r)
        for span in plan_spans(todo, max_span):
            if any(r.digest in wanted for r in span):
                flight = self._register(span)
                self._nursery.start_soon(self._run, span, flight, self._demand)
            else:
                self._nursery.start_soon(self._prefetch_span, span, max_span, cache_extra)
        batch: list[ChunkRef] = []
        size = 0
        for r in loads:
            batch.append(r)
            size += r.raw_len
            if size >= LOAD_BATCH:
                self._nursery.start_soon(self._load, batch, None)
                batch, size = [], 0
        if batch:
            self._nursery.start_soon(self._load, batch, None)

    def prefetch(self, refs: Iterable[ChunkRef], load_cached: bool = False, max_span: int = MAX_SPAN,
                 cache: bool = True) -> None:
        """Fetch in the background whatever of `refs` is not already here, in GETs of up to `max_span`.

        `cache=False` serves what it fetches from memory only: a stream bigger than the cache would evict
        its own head (and everything else) before a re-read, so writing it to LMDB is work for nothing
        (~0.5 of the daemon's ~2.5 core-seconds per GB of a cold stream here)."""
        self.start((), refs, load_cached, max_span, cache)

    def fetch_whole(self, refs: Iterable[ChunkRef], part: int, landed: Landed | None = None) -> int:
        """Fetch every chunk of `refs` not already here, in background GETs of up to `part` bytes (see the
        module docstring); `landed` is told at once of those in memory. Returns the number of parts."""
        assert self._nursery is not None, "ChunkSource.bind() first"
        todo: dict[bytes, ChunkRef] = {}
        here: dict[bytes, Chunk] = {}
        for r in refs:
            d = r.digest
            if d in todo or d in here or d in self._flights:
                continue
            data = self.memory.get(d)
            if data is not None:
                here[d] = data
            elif not self.cache.contains(d):
                todo[d] = r
        if here and landed is not None:
            landed(here)
        parts = plan_spans(todo.values(), part)
        for span in parts:
            self._nursery.start_soon(self._whole_part, self._register(span, queued=span, landed=landed))
        return len(parts)

    # --- awaiting ----------------------------------------------------------------------------------

    async def get(self, refs: list[ChunkRef]) -> dict[bytes, Chunk]:
        """Chunks that `now` did not have, fetched (or joined in flight). Raises the fetch's error."""
        out: dict[bytes, Chunk] = {}
        pending = refs
        for _ in range(3):
            self.start([r for r in pending if r.digest not in self._flights])
            flights = [(r, self._own_flight(r)) for r in pending]
            retry = []
            for r, flight in flights:
                await flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                data = flight.data.get(r.digest)
                if data is None:
                    data = self.memory.get(r.digest)
                if data is None:  # a cache load found it evicted meanwhile: fetch it
                    retry.append(r)
                else:
                    out[r.digest] = data
            if not retry:
                return out
            pending = retry
        raise ArtfsError(f"chunk {pending[0].digest.hex()} keeps disappearing from the cache")

    def _own_flight(self, ref: ChunkRef) -> _Flight:
        """The flight a reader waits for: the chunk's, started now if it is a queued part of a whole file."""
        flight = self._flights[ref.digest]
        if flight.queued is not None:
            assert self._nursery is not None
            span, flight.queued = flight.queued, None
            self.stats["whole_parts_needed"] += 1
            self._nursery.start_soon(self._run, span, flight, self._demand)
        return flight

    def _register(self, span: list[ChunkRef], queued: list[ChunkRef] | None = None,
                  landed: Landed | None = None) -> _Flight:
        flight = _Flight(queued, landed)
        for r in span:
            self._flights.setdefault(r.digest, flight)
        return flight

    async def _prefetch_span(self, span: list[ChunkRef], max_span: int = MAX_SPAN, cache: bool = True) -> None:
        async with self._prefetch:
            missing = [r for r in span if not self.present(r.digest)]
            for sub in plan_spans(missing, max_span):
                self.stats["prefetch_spans"] += 1
                await self._run(sub, self._register(sub), None, cache)

    async def _whole_part(self, flight: _Flight) -> None:
        """A part of a whole-file fetch, once a slot is free, unless a reader has started it already.

        Unlike other fetches it does not hold its slot while the cache writer catches up: the next part
        starts at once, up to WHOLE_BACKLOG parts not yet written. On this 2-core machine the one LMDB
        writer (~280 MB/s, loaded) was what paced a whole 512 MiB file in, not the GETs."""
        async with self._backlog:
            async with self._whole:
                span, flight.queued = flight.queued, None
                if span is None:
                    return
                self.stats["whole_parts"] += 1
                data = await self._run(span, flight, None, send=False)
            if data:
                with contextlib.suppress(trio.ClosedResourceError):  # unmounting
                    await self._to_cache.send(list(data.items()))

    async def _load(self, refs: list[ChunkRef], flight: _Flight | None) -> None:
        """Copy cached chunks into memory in a worker thread; `flight` given: a reader waits for it."""
        limiter = self._demand if flight is not None else self._prefetch
        async with limiter:
            if flight is None:
                refs = [r for r in refs if r.digest not in self.memory and r.digest not in self._flights]
                if not refs:
                    return
                flight = self._register(refs)
            try:
                flight.data = await trio.to_thread.run_sync(self._load_blocking, refs, limiter=self._threads,
                                                            abandon_on_cancel=True)
                for digest, chunk in flight.data.items():
                    self.memory.put(digest, chunk)
            except Exception as e:  # noqa: BLE001 - waiters fall back to fetching
                log.warning("cannot read chunks from the cache: %s", e)
            finally:
                self._land(refs, flight)

    def _load_blocking(self, refs: list[ChunkRef]) -> dict[bytes, Chunk]:
        out: dict[bytes, Chunk] = {}
        for r in refs:
            data = self.cache.get(r.digest)
            if data is not None:
                out[r.digest] = data
        self.stats["cache_loads"] += len(out)
        return out

    async def _run(self, span: list[ChunkRef], flight: _Flight, limiter: trio.CapacityLimiter | None,
                   cache: bool = True, send: bool = True) -> dict[bytes, Chunk] | None:
        """Fetch `span` for `flight`, holding `limiter`; the chunks go to the cache writer (`cache`), while
        the slot is held (`send`) or by the caller (the chunks are returned)."""
        async with limiter if limiter is not None else contextlib.nullcontext():
            data = None
            try:
                data = await trio.to_thread.run_sync(self._fetch, span, limiter=self._threads,
                                                     abandon_on_cancel=True)
            except Exception as e:  # noqa: BLE001 - handed to every waiter, which decides how to report it
                flight.error = e
                if limiter is None:
                    log.warning("prefetch from %s failed: %s", _where(span[0].pack), e)
            else:
                flight.data = data
                for digest, chunk in data.items():
                    self.memory.put(digest, chunk)
            finally:
                self._land(span, flight)
            if flight.landed is not None and data:
                flight.landed(data)
            if not cache and data:
                self.stats["uncached_bytes"] += sum(len(d) for d in data.values())
            elif data and send:
                try:  # holding the slot: a writer that falls behind slows fetching down
                    await self._to_cache.send(list(data.items()))
                except trio.ClosedResourceError:  # unmounting
                    pass
            return data

    def _land(self, refs: list[ChunkRef], flight: _Flight) -> None:
        for r in refs:
            if self._flights.get(r.digest) is flight:
                del self._flights[r.digest]
        flight.done.set()

    def _fetch(self, span: list[ChunkRef]) -> dict[bytes, Chunk]:
        """Worker thread: one ranged GET, verified (the cache writer task stores it)."""
        with self._busy_lock:
            self._busy += 1
        try:
            data = self.fetcher.fetch_span(span, populate=False)
            self.stats["fetched_spans"] += 1
            return data
        finally:
            with self._busy_lock:
                self._busy -= 1


def _where(pack: str) -> str:
    """A span's location for a log line: `pack ID`, or a reference's URI (not its source token's JSON)."""
    if is_token(pack):
        with contextlib.suppress(ArtfsError):
            return parse_token(pack).uri
    return f"pack {pack}"
