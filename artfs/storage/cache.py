"""The local chunk cache: a bounded, content-addressed store of chunk bytes in LMDB, shared at once by every
artfs process of a user on this machine (a mount daemon, CLI commands).

Why it is built this way:

- **Raw bytes, in equal segments.** Chunks are stored decompressed, so a warm hit is one B-tree lookup (the
  chunk's segments are neighbours on the same pages) and one memcpy: no decompression, no hashing, on the
  path that serves `read()`. A chunk is stored as values of exactly 64 pages (256 KiB) and a shorter tail:
  whole chunks of every size from 256 KiB to 4 MiB, each needing its own run of free pages, fragmented the
  file until a freed run rarely fitted the next chunk; equal runs always fit.
- **Trusted contents.** The caller (the core's chunk fetcher) verifies every chunk against its digest before
  `put`; the cache never re-hashes what it serves. LMDB commits are copy-on-write, so with sync=False an OS
  crash may lose the last commits but never tears one: the file stays consistent, only less warm.
- **Access stamps are batched.** LRU needs last-access times, but writing one per read would turn every read
  into a write transaction, and LMDB has one writer at a time across all processes. So `get` never writes:
  it notes the access in memory, and the cache's next write transaction (a `put`, or `flush_access()`)
  writes the notes. An owner that mostly reads (the daemon) calls `flush_access()` from a thread when
  `pending_access_due()` says so; `close()` flushes the rest. Unflushed stamps only make eviction a little
  less precise.
- **One exact total, one bound.** The byte total and the bound live in the environment and change in the
  same write transactions as the entries, so every process sees the same numbers and obeys the same bound.
  An opener that is given a bound (`--cache-size`, $ARTFS_CACHE_SIZE) records it; one that is not adopts the
  recorded one. (Each process once evicted to its own limit: a CLI command at the 20 GiB default filled a
  cache that a mount bounded to 2 MiB.)
- **The bound is on the file, not only on the count.** LMDB copies on write: pages freed by a transaction
  can be reused only two commits later. Counting chunk bytes alone let a 2 MiB cache grow a 9-10 MiB file
  (and a 64 MiB one 94 MiB). So: the map (the most the file may grow to) is the bound itself; each write
  transaction measures the pages the databases use and evicts until they, plus room for the next two
  transactions' writes and the B-trees' own copies (`_budget`), fit under it; a chunk over a quarter of the
  bound is not cached. Should the file still fill up (another process's reader pinning old pages, a short
  free run), the put evicts in a transaction of its own, commits once more so the freed pages become
  reusable, and tries again, evicting more each time (`_make_room`).
- **One environment per process, short transactions, never across fork.** The environment is opened by the
  rule of lmdb_env.py, which the per-store index follows too: ChunkCache objects on one directory share
  one environment, every call runs its own short transaction inside the gate (a count of the transactions
  in flight), and a forked child reopens the environment on first use.

Layout (four named databases):
    data   digest + segment number (u32, big-endian) -> that segment's bytes
    meta   digest -> last-access stamp (u64 ns) + size (u64)
    lru    stamp (u64, big-endian) + digest -> b""      (oldest first)
    stats  b"bytes" -> total size of the cached chunks (u64); b"bound" -> the bound in force (u64);
           b"batch" -> the most bytes a write transaction wrote (u64); b"format" -> b"2"
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb

from artfs.errors import ArtfsError
from artfs.storage import lmdb_env

log = logging.getLogger(__name__)
T = TypeVar("T")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MAX_BYTES = 20 * GiB
DIGEST_SIZE = 16

_MIN_MAP = 256 * KiB  # the smallest map: meta pages and the databases' first pages
_SLACK = 128 * KiB  # kept free beside the chunks: B-tree pages copied on write, the free list's own pages
_LOW_WATER = 0.9  # eviction stops here, so puts near the limit don't evict on every call
_TXN_BYTES = 1 << 20  # chunk bytes per write transaction (see put_many); less for a small bound
_PRUNE_TXN_BYTES = 16 * MiB  # chunk bytes a prune frees per transaction: its free-list record stays small
_ATTEMPTS = 4  # tries of one write transaction whose map is full, room made between them
_FLUSH_AGE_NS = 5_000_000_000
_FLUSH_ENTRIES = 1024
_SEGMENT_PAGES = 64  # a chunk is stored in values of this many pages (256 KiB), and a shorter tail
_NODE_MAX = 2000  # an entry of more bytes than this lives in overflow pages (LMDB: about half a page)

_U64 = struct.Struct(">Q")
_META = struct.Struct(">QQ")  # stamp, size
_SEG = struct.Struct(">I")
_SEG0 = _SEG.pack(0)
_TOTAL_KEY = b"bytes"
_FORMAT_KEY = b"format"
_FORMAT = b"2"  # 1 (no key): a chunk was one value
_BOUND_KEY = b"bound"
_BATCH_KEY = b"batch"  # the most chunk bytes one write transaction has written (see _budget)


def _map_size(bound: int) -> int:
    """The map for `bound`: the most the data file may grow to (whole pages)."""
    return -(-max(bound, _MIN_MAP) // 4096) * 4096


@dataclass(frozen=True, slots=True)
class _Handles:
    """The cache's environment and its databases, replaced together (after fork)."""

    env: lmdb.Environment
    data: Any  # lmdb._Database, which the stubs keep private
    meta: Any
    lru: Any
    stats: Any


def _databases(env: lmdb.Environment) -> _Handles:
    return _Handles(env, env.open_db(b"data"), env.open_db(b"meta"), env.open_db(b"lru"), env.open_db(b"stats"))


# Chunks are ~1 MiB values read whole: with readahead off, cold pages fault in 4 KiB at a time (~40 MB/s per
# thread, measured); on, 590-740 MB/s.
_OPTIONS = lmdb_env.Options("the chunk cache", max_dbs=4, readahead=True)

_SharedEnv = lmdb_env.SharedEnv
_ENVS = lmdb_env.OPEN  # every open environment of this process by real path, the cache's among them
_LIVE: weakref.WeakSet[ChunkCache] = weakref.WeakSet()  # caches whose locks a forked child must renew


def _renew_pending_locks() -> None:
    for cache in _LIVE:
        cache._reset_pending()


os.register_at_fork(after_in_child=_renew_pending_locks)


class ChunkCache:
    """A bounded LMDB cache of chunks, keyed by their 16-byte digests; safe across threads and processes.

    `max_bytes` given: the bound, recorded for every process that opens this cache without one; None: the
    recorded bound, else 20 GiB. See the module docstring for the design.
    """

    def __init__(self, cache_dir: str, max_bytes: int | None = None) -> None:
        self.cache_dir = os.path.abspath(cache_dir)
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes  # until the recorded one is read
        self.bound_recorded = max_bytes is not None  # whether the bound in force was given to some opener
        self.path = os.path.join(self.cache_dir, "chunks.lmdb")
        try:
            os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ArtfsError(f"cannot create the cache directory {self.cache_dir}: {e.strerror}") from None
        self._reset_pending()
        self._largest_batch = 0  # as recorded (_BATCH_KEY), read in each write transaction
        self._shared: _SharedEnv[_Handles] | None = lmdb_env.acquire(
            os.path.realpath(self.path), _map_size(self.max_bytes), _OPTIONS, _databases
        )
        self._release = weakref.finalize(self, lmdb_env.release, self._shared)  # if dropped unclosed
        _LIVE.add(self)
        try:
            self._psize = self._read(lambda txn, h: h.env.stat()["psize"])
            self._segment = _SEGMENT_PAGES * self._psize - 16  # a value of exactly that many overflow pages
            self._check_format()
            self._settle_bound(max_bytes)
        except BaseException:
            self.close()
            raise

    def _reset_pending(self) -> None:
        self._pending_lock = threading.Lock()
        self._pending: dict[bytes, int] = {}  # digest -> last access (ns), not yet written
        self._pending_since = 0

    def _env(self) -> _SharedEnv[_Handles]:
        shared = self._shared
        if shared is None:
            raise ValueError("the chunk cache is closed")
        return shared

    def _check_format(self) -> None:
        """A cache of another layout is emptied (it is disposable) and marked with this one."""
        if self._read(lambda txn, h: txn.get(_FORMAT_KEY, db=h.stats)) == _FORMAT:
            return

        def reset(txn: lmdb.Transaction, h: _Handles) -> bool:
            if txn.get(_FORMAT_KEY, db=h.stats) != _FORMAT:
                for db in (h.data, h.meta, h.lru):
                    txn.drop(db, delete=False)
                txn.put(_TOTAL_KEY, _U64.pack(0), db=h.stats)
                txn.put(_FORMAT_KEY, _FORMAT, db=h.stats)
            return True

        with self._env().write_lock:
            try:
                done = self._write_txn(reset) is not None
            except lmdb.Error as e:  # a full disk: reads still work (an old entry is a miss), writes fail
                log.warning("chunk cache %s: cannot empty a cache of another layout: %s", self.path, e)
                return
            if not done:
                log.warning("chunk cache %s: cannot empty a cache of another layout: its map is full", self.path)

    # --- the bound -------------------------------------------------------------------------------------

    def _settle_bound(self, given: int | None) -> None:
        """Adopt the recorded bound, or record the one given (the last opener given one wins)."""
        recorded = self._read(lambda txn, h: txn.get(_BOUND_KEY, db=h.stats))
        self.bound_recorded = given is not None or recorded is not None
        if given is None:
            if recorded is not None:
                self.max_bytes = _U64.unpack(recorded)[0]
        elif recorded != _U64.pack(given):
            with self._env().write_lock:
                try:
                    why = None if self._write_txn(
                        lambda txn, h: txn.put(_BOUND_KEY, _U64.pack(given), db=h.stats)) else "its map is full"
                except lmdb.Error as e:  # a full disk: the cache still works; other processes keep the old bound
                    why = str(e)
                if why is not None:
                    log.warning("chunk cache %s: cannot record the bound: %s", self.path, why)
        self._fit_map()

    def _fit_map(self) -> None:
        """Map exactly what the bound allows (or the file's extent, if an older or larger bound grew it
        further: LMDB files never shrink). Cheap when nothing changed."""
        shared = self._env()
        want = _map_size(self.max_bytes)
        if shared.requested_map == want:
            return
        info = self._read(lambda txn, h: h.env.info())
        shared.remap(max(want, (info["last_pgno"] + 1) * self._psize))
        shared.requested_map = want

    def _txn_bytes(self) -> int:
        """Chunk bytes per write transaction: 1 MiB, less for a small bound (see `_budget`)."""
        return min(_TXN_BYTES, max(self.max_bytes // 16, 64 * KiB))

    def _budget(self, written: int) -> int:
        """The bytes of pages the databases may use after a write transaction: the map less room for the
        next two transactions' writes (a transaction's freed pages are reusable two commits later), at
        most the largest any has written, and slack."""
        return _map_size(self.max_bytes) - _SLACK - 2 * max(written, self._largest_batch, self._txn_bytes())

    def capacity(self) -> int:
        """About the most chunk bytes the cache keeps at once (the bound less the room kept free for
        writes): a stream bigger than this evicts its own head before it ends."""
        return max(0, self._budget(0))

    def largest_chunk(self) -> int:
        """The largest chunk cached: a quarter of the bound, so that the room kept for two transactions'
        writes leaves at least half of the bound to the chunks."""
        return max(0, min(self.max_bytes, (_map_size(self.max_bytes) - _SLACK) // 4))

    def _page_bytes(self, size: int) -> int:
        """Bytes of the overflow pages a chunk of `size` bytes takes (its whole segments, and its tail
        unless that fits in a leaf page)."""
        whole, tail = divmod(size, self._segment)
        pages = whole * (self._segment + 16) // self._psize
        if tail > _NODE_MAX:
            pages += -(-(tail + 16) // self._psize)
        return pages * self._psize

    def _used(self, txn: lmdb.Transaction, h: _Handles) -> int:
        """Bytes of the pages the databases use in this transaction's view (the two meta pages and the
        main database's root besides)."""
        pages = 3
        for db in (h.data, h.meta, h.lru, h.stats):
            st = txn.stat(db)
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * self._psize

    # --- reads -----------------------------------------------------------------------------------------

    def _read(self, fn: Callable[[lmdb.Transaction, _Handles], T]) -> T:
        """`fn` in a short read transaction (the map adopted first if another process grew it)."""
        for _ in range(2):
            shared = self._env()
            h = shared.enter()
            try:
                with h.env.begin() as txn:
                    return fn(txn, h)
            except lmdb.MapResizedError:
                pass
            finally:
                shared.exit()
            shared.remap()
        raise ArtfsError(f"the chunk cache at {self.path} keeps being resized")

    def _segments(self, txn: lmdb.Transaction, digest: bytes, first: int, end: int) -> list[Any] | None:
        """Views of the chunk's segments from number `first` on, up to byte `end` or its tail; None if
        segment `first` does not exist. Each is a keyed `get`, not a cursor walk: the segments' leaf entries
        are neighbours either way, but stepping a py-lmdb cursor over overflow values, with the page cache
        dropped, took ~3x the page faults (4,600 vs 1,700 minor, 40 vs 5 major per 300 MB, in
        mdb_page_get) and ~1.6x the CPU (0.47 vs 0.30 core-s/GB) of these gets, which match one value per
        chunk (the old layout)."""
        value = txn.get(digest + _SEG.pack(first))
        if value is None:
            return None
        parts = [value]
        at = (first + 1) * self._segment
        while len(value) == self._segment and at < end:
            value = txn.get(digest + _SEG.pack(first + len(parts)))
            if value is None:  # the chunk was a whole number of segments
                break
            parts.append(value)
            at += self._segment
        return parts

    def _lookup(self, digest: bytes) -> bytes | None:
        """The chunk's segments, joined: a B-tree lookup per segment (neighbours on the same pages), one
        copy."""
        shared = self._env()
        h = shared.enter()
        try:
            txn = h.env.begin(db=h.data, buffers=True)  # views into the map, copied out before it ends
            try:
                parts = self._segments(txn, digest, 0, 1 << 62)
                if parts is None:
                    return None
                return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
            finally:
                txn.abort()
        finally:
            shared.exit()

    def _lookup_meta(self, digest: bytes) -> bytes | None:
        shared = self._env()
        h = shared.enter()
        try:
            txn = h.env.begin(db=h.meta)
            try:
                return txn.get(digest)
            finally:
                txn.abort()
        finally:
            shared.exit()

    def get(self, digest: bytes) -> bytes | None:
        """The chunk's bytes, or None. Never writes: the access is only noted in memory (see module doc)."""
        try:
            data = self._lookup(digest)
        except lmdb.MapResizedError:
            self._env().remap()
            data = self._lookup(digest)
        if data is not None:
            now = time.time_ns()
            with self._pending_lock:
                if not self._pending:
                    self._pending_since = now
                self._pending[digest] = now
        return data

    def _lookup_range(self, digest: bytes, offset: int, length: int) -> bytes | None:
        """Bytes [offset, offset+length) from the segments that hold them, copied once."""
        first, end = offset // self._segment, offset + length
        shared = self._env()
        h = shared.enter()
        try:
            txn = h.env.begin(db=h.data, buffers=True)  # views of LMDB's pages, valid while txn lives
            try:
                parts = self._segments(txn, digest, first, end)
                if parts is None:
                    return None if first == 0 or txn.get(digest + _SEG0) is None else b""  # past the end
                at, out = first * self._segment, []
                for value in parts:
                    out.append(value[max(0, offset - at):max(0, end - at)])
                    at += len(value)
                return bytes(out[0]) if len(out) == 1 else b"".join(out)
            finally:
                txn.abort()
        finally:
            shared.exit()

    def get_range(self, digest: bytes, offset: int, length: int) -> bytes | None:
        """Bytes [offset, offset+length) of a cached chunk, or None: a small read of a big chunk copies only
        what it asked for (only the segments holding them are touched). Noted as an access, like `get`."""
        try:
            data = self._lookup_range(digest, offset, length)
        except lmdb.MapResizedError:
            self._env().remap()
            data = self._lookup_range(digest, offset, length)
        if data is not None:
            now = time.time_ns()
            with self._pending_lock:
                if not self._pending:
                    self._pending_since = now
                self._pending[digest] = now
        return data

    def contains(self, digest: bytes) -> bool:
        """Whether the chunk is cached; does not count as an access."""
        try:
            return self._lookup_meta(digest) is not None
        except lmdb.MapResizedError:
            self._env().remap()
            return self._lookup_meta(digest) is not None

    __contains__ = contains

    def chunk_sizes(self) -> dict[bytes, int]:
        """Every cached chunk's size, by digest (one read transaction; no access noted). For reports: the
        cache holds at most its bound over the smallest chunk, tens of thousands of entries."""
        return self._read(lambda txn, h: {bytes(d): _META.unpack(m)[1] for d, m in txn.cursor(db=h.meta)})

    def pending_access_due(self) -> bool:
        """True when the noted accesses are many or old enough that the owner should `flush_access()`."""
        n = len(self._pending)
        return n >= _FLUSH_ENTRIES or (n > 0 and time.time_ns() - self._pending_since >= _FLUSH_AGE_NS)

    def stats(self) -> dict[str, Any]:
        """What the cache holds now (by all processes): `bytes` and `entries` (the chunks, as counted),
        `used_bytes` (the pages the databases use), `file_bytes` (the data file's size on disk, which LMDB
        never shrinks: freed pages are reused), the bound in force (`max_bytes`) and `path`."""

        def totals(txn: lmdb.Transaction, h: _Handles) -> tuple[int, int, int, Any]:
            total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
            return total, txn.stat(h.meta)["entries"], self._used(txn, h), txn.get(_BOUND_KEY, db=h.stats)

        total, entries, used, bound = self._read(totals)
        if bound is not None:
            self.max_bytes = _U64.unpack(bound)[0]
        try:
            file_bytes = os.stat(os.path.join(self.path, "data.mdb")).st_size
        except OSError:
            file_bytes = 0
        return {"bytes": total, "entries": entries, "used_bytes": used, "file_bytes": file_bytes,
                "max_bytes": self.max_bytes, "path": self.path}

    # --- writes ----------------------------------------------------------------------------------------

    def put(self, digest: bytes, data: bytes | memoryview) -> None:
        """Cache one verified chunk (see `put_many`)."""
        self.put_many(((digest, data),))

    def put_many(self, items: Iterable[tuple[bytes, bytes | memoryview]]) -> None:
        """Cache verified chunks. A chunk already cached only gets a fresh stamp; one larger than
        `largest_chunk()` is not cached. Each write transaction evicts least-recently-used chunks as the
        bound needs (see `_budget`).

        Items are written about 1 MiB per transaction: bigger transactions were 4-15x slower here (their
        dirty pages are fresh memory until the commit), and a short one holds LMDB's writer lock, which all
        processes share, only briefly."""
        group: list[tuple[bytes, bytes | memoryview]] = []
        size = 0
        largest, per_txn = self.largest_chunk(), self._txn_bytes()
        for digest, data in items:
            if len(digest) != DIGEST_SIZE:
                raise ValueError(f"a chunk digest is {DIGEST_SIZE} bytes, not {len(digest)}")
            if len(data) > largest:
                continue
            if group and size + len(data) > per_txn:
                self._write(group)
                group, size = [], 0
            group.append((digest, data))
            size += len(data)
        if group:
            self._write(group)

    def flush_access(self) -> None:
        """Write the accesses noted by `get` in one write transaction. The owner calls this periodically
        (from a thread: it may wait for another process's writer) and `close()` calls it."""
        self._write([])

    def prune(self, to_bytes: int) -> tuple[int, int]:
        """Evict least-recently-used chunks (of all processes) until at most `to_bytes` are cached: the
        (bytes, chunks) evicted. In transactions of at most 16 MiB each, so the writer lock is held only
        briefly and the free list stays small; the pages freed are reused by later puts (the file does not
        shrink). Safe while other processes read and write: a chunk gone is fetched again."""
        freed = count = 0
        self._take_pending()  # stamps of chunks about to go would only be written to be deleted
        while True:
            shared = self._env()
            with shared.write_lock:
                step = self._write_txn(lambda txn, h: self._evict_some(txn, h, to_bytes))
            if step is None:
                raise ArtfsError(f"cannot prune the chunk cache at {self.path}: its map is full; "
                                 "try again, or stop the processes using it and clear it")
            n_bytes, n = step
            freed += n_bytes
            count += n
            if n == 0:
                return freed, count

    def clear(self) -> tuple[int, int]:
        """Drop every cached chunk (of all processes), by the same path as `prune`: (bytes, chunks)."""
        return self.prune(0)

    def _evict_some(self, txn: lmdb.Transaction, h: _Handles, to_bytes: int) -> tuple[int, int]:
        total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
        cursor = txn.cursor(db=h.lru)
        freed = count = 0
        while total > to_bytes and freed < _PRUNE_TXN_BYTES and cursor.first():
            size = self._drop(txn, h, cursor)
            total -= size
            freed += size
            count += 1
        if count == 0 and total > to_bytes:
            total = 0  # nothing left to evict, so nothing is cached (the count agrees; cheap to be sure)
        txn.put(_TOTAL_KEY, _U64.pack(total), db=h.stats)
        return freed, count

    def _take_pending(self) -> dict[bytes, int]:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        return pending

    def _write_txn(self, fn: Callable[[lmdb.Transaction, _Handles], T]) -> T | None:
        """`fn` in one write transaction, the map adopted first if another process grew it; None if the map
        is full. Call with the write lock held."""
        shared = self._env()
        for _ in range(2):
            self._fit_map()
            h = shared.enter()
            try:
                with h.env.begin(write=True) as txn:
                    return fn(txn, h)
            except lmdb.MapResizedError:
                pass
            except lmdb.MapFullError:
                return None
            finally:
                shared.exit()
            shared.remap()
        return None

    def _write(self, batch: list[tuple[bytes, bytes | memoryview]]) -> None:
        """One write transaction for `batch` and the pending stamps. If the file is full (see the module
        docstring), make room in transactions of their own and try again."""
        shared = self._env()
        with shared.write_lock:
            pending = self._take_pending()
            if not batch and not pending:
                return
            written = sum(len(data) for _, data in batch)
            for attempt in range(_ATTEMPTS):
                if self._write_txn(lambda txn, h: self._apply(txn, h, batch, pending, written)) is not None:
                    return
                if attempt + 1 < _ATTEMPTS and not self._make_room(written, attempt):
                    break
            log.warning("chunk cache %s: no room in the file; %d chunks not cached", self.path, len(batch))

    def _make_room(self, written: int, attempt: int) -> bool:
        """After a full map: evict, commit, and commit once more so the pages freed become reusable by the
        next try. Each try evicts more: room for two more such writes, then half the budget, then all.
        False if even that finds no room."""

        def evict(txn: lmdb.Transaction, h: _Handles) -> bool:
            budget = self._budget(written)
            keep = (budget - 2 * max(written, self._txn_bytes()), budget // 2, 0)[min(attempt, 2)]
            total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
            total = self._evict(txn, h, total, self._used(txn, h), keep, self.max_bytes if attempt < 2 else 0,
                                hard=None)
            txn.put(_TOTAL_KEY, _U64.pack(total), db=h.stats)
            return True

        def age(txn: lmdb.Transaction, h: _Handles) -> bool:
            txn.put(_TOTAL_KEY, txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0), db=h.stats)
            return True

        return self._write_txn(evict) is not None and self._write_txn(age) is not None

    def _apply(self, txn: lmdb.Transaction, h: _Handles, batch: list[tuple[bytes, bytes | memoryview]],
               pending: dict[bytes, int], written: int) -> bool:
        total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
        bound = txn.get(_BOUND_KEY, db=h.stats)
        if bound is not None:  # another process may have set a new one: obey it (the map follows next time)
            self.max_bytes = _U64.unpack(bound)[0]
        largest = txn.get(_BATCH_KEY, db=h.stats)
        self._largest_batch = _U64.unpack(largest)[0] if largest is not None else 0
        if written > self._largest_batch:
            self._largest_batch = written
            txn.put(_BATCH_KEY, _U64.pack(written), db=h.stats)
        for digest, stamp in pending.items():
            self._touch(txn, h, digest, stamp)
        start = time.time_ns()
        for i, (digest, data) in enumerate(batch):
            stamp = start + i  # distinct, in batch order
            if self._touch(txn, h, digest, stamp):
                continue
            view = memoryview(data)
            for i, at in enumerate(range(0, max(len(view), 1), self._segment)):
                txn.put(digest + _SEG.pack(i), view[at:at + self._segment], db=h.data)
            txn.put(digest, _META.pack(stamp, len(data)), db=h.meta)
            txn.put(_U64.pack(stamp) + digest, b"", db=h.lru)
            total += len(data)
        if batch:
            budget = self._budget(written)
            used = self._used(txn, h)
            if used > budget or total > self.max_bytes:
                total = self._evict(txn, h, total, used, int(budget * _LOW_WATER),
                                    int(self.max_bytes * _LOW_WATER), hard=(budget, start))
        txn.put(_TOTAL_KEY, _U64.pack(total), db=h.stats)
        return True

    @staticmethod
    def _touch(txn: lmdb.Transaction, h: _Handles, digest: bytes, stamp: int) -> bool:
        """Move a cached chunk's stamp forward (never back: another process may have seen it later).
        False if it is not cached (never was, or evicted since the access)."""
        meta = txn.get(digest, db=h.meta)
        if meta is None:
            return False
        old, size = _META.unpack(meta)
        if stamp > old:
            txn.delete(_U64.pack(old) + digest, db=h.lru)
            txn.put(_U64.pack(stamp) + digest, b"", db=h.lru)
            txn.put(digest, _META.pack(stamp, size), db=h.meta)
        return True

    def _evict(self, txn: lmdb.Transaction, h: _Handles, total: int, used: int, used_target: int,
               total_target: int, hard: tuple[int, int] | None) -> int:
        """Delete least-recently-used chunks until the pages used and the bytes counted are down to their
        targets; the new total. With `hard` = (budget, first stamp of this transaction), this transaction's
        own chunks go only while the budget or the bound is exceeded, not merely the low-water marks."""
        cursor = txn.cursor(db=h.lru)
        while (used > used_target or total > total_target) and cursor.first():
            if hard is not None and used <= hard[0] and total <= self.max_bytes \
                    and _U64.unpack(cursor.key()[:8])[0] >= hard[1]:
                break
            size = self._drop(txn, h, cursor)
            total -= size
            used -= self._page_bytes(size)
        return total

    @staticmethod
    def _drop(txn: lmdb.Transaction, h: _Handles, cursor: lmdb.Cursor) -> int:
        """Delete the chunk under the LRU cursor (its segments, its meta, the cursor's entry); its size."""
        digest = cursor.key()[8:]
        meta = txn.get(digest, db=h.meta)
        segments = txn.cursor(db=h.data)
        if segments.set_range(digest):
            while segments.key()[:DIGEST_SIZE] == digest and segments.delete():
                pass
        txn.delete(digest, db=h.meta)
        cursor.delete()
        return _META.unpack(meta)[1] if meta is not None else 0

    # --- lifetime --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write the pending access stamps and let go of the environment; later calls raise ValueError."""
        shared = self._shared
        if shared is None:
            return
        try:
            self.flush_access()
        finally:
            self._shared = None
            _LIVE.discard(self)
            self._release()

    def __enter__(self) -> ChunkCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
