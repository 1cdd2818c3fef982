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
- **A whole file, fetched for random reads** (`fetch_whole`), is planned into parts of about equal size
  registered at once, each started when one of `WHOLE_SLOTS` is free or at once by a reader that needs one
  of its chunks; a reader waits for the part that holds its chunk instead of fetching the chunk again.
  Measured against moto on 2,000 random preads of a 512 MiB file, a GET of its own per missed chunk (as
  before) sent ~30 extra requests that shared the server with the parts: each took 100-250 ms, about what
  waiting for the part takes, and the whole file landed later. `landed` hears of each part's chunks (the
  reader pushes them into the kernel's page cache, reader.py) while the part holds its slot, and landed
  parts are *held* (served from memory, still in `_flights`) until the whole file is in, then written to
  LMDB: see `_hold`.
- **One cache writer.** Fetched chunks are served from memory at once and written to LMDB by one task,
  many spans per transaction: LMDB has one writer at a time, and readers must not wait behind it. (Held
  whole-file parts are written by the task that lands the file's last part, after the landing.)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable

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


def physical_ram() -> int:
    """The machine's RAM in bytes (0 where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


# Landed whole-file parts held in memory, not yet written to the cache (see _hold): at most 512 MiB, and a
# 32nd of the RAM; handed back to the kernel after (give_back_freed_memory)
WHOLE_HOLD = min(512 * MiB, physical_ram() // 32 or 128 * MiB)
INLINE_MAX = 256 * 1024  # cached chunks up to this size are read on the loop (cheap even if cold)
LOAD_BATCH = 4 * MiB  # chunks copied out of the cache per worker-thread call
WRITE_BATCH = 32 * MiB  # fetched chunks written to the cache per LMDB transaction (at most)
CACHE_QUEUE = 4  # fetched spans waiting for the cache writer before fetches wait
WHOLE_SPAN = 1 << 40  # a whole file's chunks of one pack: one span, then cut into parts (_split)


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
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
    return all(mallopt(option, value) == 1 for option, value in (
        (m_arena_max, 1), (m_mmap_threshold, mmap_threshold), (m_trim_threshold, trim)))


def give_back_freed_memory() -> None:
    """Hand the free heap back to the kernel (glibc's malloc_trim; nothing elsewhere), after a burst that
    needed far more memory than the daemon keeps: a file fetched whole for random reads holds up to
    WHOLE_HOLD until it is in, and the 256 MiB that `keep_freed_memory` lets glibc keep at the heap's top
    would otherwise stay resident too, as would free chunks below it. Blocking (walks the heap): a thread."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)


def _libc(function: str) -> Callable[..., int] | None:
    """A function of glibc's, or None where there is none (another libc)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None


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


Landed = Callable[[dict[bytes, Chunk]], Awaitable[None]]


class _Whole:
    """One whole-file fetch (`fetch_whole`): how many of its parts have not landed (or failed) yet."""

    __slots__ = ("left",)

    def __init__(self, parts: int) -> None:
        self.left = parts


class _Flight:
    """One ranged GET (or cache load) in progress; each of its chunks maps to it until it lands."""

    __slots__ = ("done", "data", "error", "queued", "landed", "whole")

    def __init__(self, queued: list[ChunkRef] | None = None, landed: Landed | None = None,
                 whole: _Whole | None = None) -> None:
        self.done = trio.Event()
        self.data: dict[bytes, Chunk] = {}
        self.error: BaseException | None = None
        self.queued = queued  # a part of a whole-file fetch not started yet (see the module docstring)
        self.landed = landed  # told of the chunks when they land
        self.whole = whole  # the whole-file fetch it is a part of


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
        self._held: list[tuple[_Flight, dict[bytes, Chunk]]] = []  # landed whole-file parts, not written yet
        self._held_bytes = 0
        self._written = trio.Event()  # set (and replaced) whenever held parts have been written
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
        if self._held:
            await self._write_held()
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
        """Fetch every chunk of `refs` not already here, in background GETs of about `part` bytes (see the
        module docstring); `landed` is told at once of those in memory, and of those in the cache once a
        worker thread has copied them out. Returns the number of parts."""
        assert self._nursery is not None, "ChunkSource.bind() first"
        todo: dict[bytes, ChunkRef] = {}
        here: dict[bytes, Chunk] = {}
        cached: dict[bytes, ChunkRef] = {}
        for r in refs:
            d = r.digest
            if d in todo or d in here or d in cached or d in self._flights:
                continue
            data = self.memory.get(d)
            if data is not None:
                here[d] = data
            elif self.cache.contains(d):
                cached[d] = r
            else:
                todo[d] = r
        if landed is not None:
            if here:
                self._nursery.start_soon(landed, here)
            if cached:
                self._nursery.start_soon(self._cached_landed, list(cached.values()), landed)
        parts = [piece for span in plan_spans(todo.values(), WHOLE_SPAN) for piece in _split(span, part)]
        whole = _Whole(len(parts))
        for span in parts:
            self._nursery.start_soon(self._whole_part, self._register(span, queued=span, landed=landed, whole=whole))
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
            self._nursery.start_soon(self._needed_part, span, flight)
        return flight

    def _register(self, span: list[ChunkRef], queued: list[ChunkRef] | None = None,
                  landed: Landed | None = None, whole: _Whole | None = None) -> _Flight:
        flight = _Flight(queued, landed, whole)
        for r in span:
            self._flights.setdefault(r.digest, flight)
        return flight

    async def _prefetch_span(self, span: list[ChunkRef], max_span: int = MAX_SPAN, cache: bool = True) -> None:
        async with self._prefetch:
            missing = [r for r in span if not self.present(r.digest)]
            for sub in plan_spans(missing, max_span):
                self.stats["prefetch_spans"] += 1
                await self._run(sub, self._register(sub), None, cache)

    async def _cached_landed(self, refs: list[ChunkRef], landed: Landed) -> None:
        """Tell `landed` of a whole file's chunks that were already in the cache, LOAD_BATCH at a time (copied
        out by a worker thread, not kept in memory): pushed into the page cache like the rest of the file."""
        k = 0
        while k < len(refs):
            batch, size = [], 0
            while k < len(refs) and size < LOAD_BATCH:
                batch.append(refs[k])
                size += refs[k].raw_len
                k += 1
            try:
                data = await trio.to_thread.run_sync(self._load_blocking, batch, limiter=self._threads)
            except Exception as e:  # noqa: BLE001 - then reads of them are served from the cache
                log.warning("cannot read chunks from the cache: %s", e)
                return
            if data:
                await landed(data)

    async def _whole_part(self, flight: _Flight) -> None:
        """A part of a whole-file fetch, once a slot is free and fewer than WHOLE_HOLD bytes are held, unless a
        reader has started it already. It keeps its slot until `landed` is done with it (pushed into the
        page cache): pushes that fell behind the landing sent the reader's next reads to the daemon, ~2-10
        ms each on a loaded machine instead of a few µs (a slot per push: 1,330 vs 1,174 ops/s, medians
        of 6 alternating pairs, 2,000 random preads of a 512 MiB file)."""
        async with self._whole:
            while self._held_bytes >= WHOLE_HOLD:
                await self._written.wait()
            span, flight.queued = flight.queued, None
            if span is None:
                return  # a reader needed it first (_needed_part)
            self.stats["whole_parts"] += 1
            data = await self._run(span, flight, None, send=False)
            await self._hold(flight, data)
        await self._settle(flight)

    async def _needed_part(self, span: list[ChunkRef], flight: _Flight) -> None:
        """A queued part that a reader waits for: started at once, held like the others."""
        data = await self._run(span, flight, self._demand, send=False)
        await self._hold(flight, data)
        await self._settle(flight)

    async def _hold(self, flight: _Flight, data: dict[bytes, Chunk] | None) -> None:
        """Keep a landed part in memory, its chunks mapped to its flight again (readers are served from it, and
        nothing fetches them twice), and tell `landed`. `_run` unregistered the flight when it landed: no
        await falls between that and this, so no reader can miss the table in between.

        Held parts are written to LMDB once their file is in (or WHOLE_HOLD bytes are held): writing them
        while the rest lands made LMDB's copies into its file (~0.3 core-s per 512 MiB here, kernel and
        memcpy) compete with the GETs, moto and the pushes for 2 cores. 2,000 random preads of a cold
        512 MiB file: 1,225 -> 1,540 ops/s (medians of 5 alternating pairs, moto, loaded machine)."""
        if data:
            for digest in data:
                self._flights.setdefault(digest, flight)
            self._held.append((flight, data))
            self._held_bytes += sum(len(c) for c in data.values())
            if flight.landed is not None:
                await flight.landed(data)

    async def _settle(self, flight: _Flight) -> None:
        """One part fewer to land: write what is held once the file is in, or when too much is held."""
        assert flight.whole is not None
        flight.whole.left -= 1
        if self._held and (flight.whole.left == 0 or self._held_bytes >= WHOLE_HOLD):
            await self._write_held()
            if not self._held:  # nothing else landed meanwhile: the burst is over
                await trio.to_thread.run_sync(give_back_freed_memory)

    async def _write_held(self) -> None:
        """Write every held part to the cache, a part per call (LMDB takes one writer at a time, and the
        cache writer task may take its turn in between), then let go of them (memory keeps what its LRU
        wants; a reader finds the rest in the cache)."""
        held, self._held = self._held, []
        try:
            for _, data in held:
                await trio.to_thread.run_sync(self.cache.put_many, data.items())  # not abandoned: LMDB stays whole
        except Exception as e:  # noqa: BLE001 - an unwritten chunk is only a future miss
            log.warning("cannot write %d chunks to the cache: %s", sum(len(data) for _, data in held), e)
        finally:
            for flight, data in held:
                for digest in data:
                    if self._flights.get(digest) is flight:
                        del self._flights[digest]
                self._held_bytes -= sum(len(c) for c in data.values())
            self._written.set()
            self._written = trio.Event()

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


def _split(span: list[ChunkRef], part: int) -> list[list[ChunkRef]]:
    """`span` cut at chunk boundaries into pieces of about equal size, about `part` bytes each (less than 1.5 x):
    a pack of ~34 MiB in parts of 16 MiB was 16 + 16 + 2 MiB, and the small GETs cost the server almost
    what big ones do (33 GETs per 512 MiB instead of 49)."""
    size = span[-1].end - span[0].offset
    n = max(1, round(size / part))
    out: list[list[ChunkRef]] = []
    cur: list[ChunkRef] = []
    for r in span:
        if cur and r.offset - span[0].offset >= size * (len(out) + 1) / n:
            out.append(cur)
            cur = []
        cur.append(r)
    out.append(cur)
    return out


def _where(pack: str) -> str:
    """A span's location for a log line: `pack ID`, or a reference's URI (not its source token's JSON)."""
    if is_token(pack):
        with contextlib.suppress(ArtfsError):
            return parse_token(pack).uri
    return f"pack {pack}"
