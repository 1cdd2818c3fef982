"""The local chunk cache: a bounded, content-addressed store of chunk bytes in LMDB, shared at once by every
artfs process of a user on this machine (a mount daemon, CLI commands).

Why it is built this way:

- **Raw bytes.** Chunks are stored decompressed, so a warm hit is one B-tree lookup and one memcpy: no
  decompression, no hashing, on the path that serves `read()`.
- **Trusted contents.** The caller (the core's chunk fetcher) verifies every chunk against its digest before
  `put`; the cache never re-hashes what it serves. LMDB commits are copy-on-write, so with sync=False an OS
  crash may lose the last commits but never tears one: the file stays consistent, only less warm.
- **Access stamps are batched.** LRU needs last-access times, but writing one per read would turn every read
  into a write transaction, and LMDB has one writer at a time across all processes. So `get` never writes:
  it notes the access in memory, and the cache's next write transaction (a `put`, or `flush_access()`)
  writes the notes. An owner that mostly reads (the daemon) calls `flush_access()` from a thread when
  `pending_access_due()` says so; `close()` flushes the rest. Unflushed stamps only make eviction a little
  less precise.
- **One exact total.** The byte total lives in the environment and changes in the same write transaction as
  the entries, so every process sees the same exact number. A put that takes the total past the inserting
  cache's own limit evicts least-recently-used entries, in that transaction, down to 90% of that limit.
- **One environment per process, short transactions, never across fork.** The environment is opened by the
  rule of lmdb_env.py, which the per-store index follows too: ChunkCache objects on one directory share
  one environment, every call runs its own short transaction inside the gate (a count of the transactions
  in flight), and a forked child reopens the environment on first use.

Layout (four named databases):
    data   digest -> chunk bytes
    meta   digest -> last-access stamp (u64 ns) + size (u64)
    lru    stamp (u64, big-endian) + digest -> b""      (oldest first)
    stats  b"bytes" -> total size of the cached chunks (u64)
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lmdb

from artfs.errors import ArtfsError
from artfs.storage import lmdb_env

log = logging.getLogger(__name__)

GiB = 1 << 30
DEFAULT_MAX_BYTES = 20 * GiB
DIGEST_SIZE = 16

# The map is address space, not disk: the file only grows as pages are used. 2x the limit absorbs the free
# pages LMDB cannot reuse yet (fragmentation, pages a reader still sees). Module constants so tests can
# shrink them.
_MAP_HEADROOM = GiB
_MIN_MAP_SIZE = 4 * GiB

_LOW_WATER = 0.9  # eviction stops here, so puts near the limit don't evict on every call
_TXN_BYTES = 1 << 20  # chunk bytes per write transaction (see put_many)
_FLUSH_AGE_NS = 5_000_000_000
_FLUSH_ENTRIES = 1024

_U64 = struct.Struct(">Q")
_META = struct.Struct(">QQ")  # stamp, size
_TOTAL_KEY = b"bytes"


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

    Each opener passes its own limit (`max_bytes`, default 20 GiB; the settings say what the user asked
    for); eviction uses the limit of the cache that inserts. See the module docstring for the design.
    """

    def __init__(self, cache_dir: str, max_bytes: int | None = None) -> None:
        self.cache_dir = os.path.abspath(cache_dir)
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.path = os.path.join(self.cache_dir, "chunks.lmdb")
        try:
            os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ArtfsError(f"cannot create the cache directory {self.cache_dir}: {e.strerror}") from None
        self._reset_pending()
        map_size = max(2 * self.max_bytes + _MAP_HEADROOM, _MIN_MAP_SIZE)
        self._shared: _SharedEnv[_Handles] | None = lmdb_env.acquire(
            os.path.realpath(self.path), map_size, _OPTIONS, _databases
        )
        self._release = weakref.finalize(self, lmdb_env.release, self._shared)  # if dropped unclosed
        _LIVE.add(self)

    def _reset_pending(self) -> None:
        self._pending_lock = threading.Lock()
        self._pending: dict[bytes, int] = {}  # digest -> last access (ns), not yet written
        self._pending_since = 0

    def _env(self) -> _SharedEnv[_Handles]:
        shared = self._shared
        if shared is None:
            raise ValueError("the chunk cache is closed")
        return shared

    # --- reads -----------------------------------------------------------------------------------------

    def _lookup(self, digest: bytes, in_meta: bool = False) -> bytes | None:
        shared = self._env()
        h = shared.enter()
        try:
            txn = h.env.begin(db=h.meta if in_meta else h.data)  # buffers=False: copied out while txn lives
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

    def contains(self, digest: bytes) -> bool:
        """Whether the chunk is cached; does not count as an access."""
        try:
            return self._lookup(digest, in_meta=True) is not None
        except lmdb.MapResizedError:
            self._env().remap()
            return self._lookup(digest, in_meta=True) is not None

    __contains__ = contains

    def pending_access_due(self) -> bool:
        """True when the noted accesses are many or old enough that the owner should `flush_access()`."""
        n = len(self._pending)
        return n >= _FLUSH_ENTRIES or (n > 0 and time.time_ns() - self._pending_since >= _FLUSH_AGE_NS)

    def stats(self) -> dict[str, Any]:
        """`bytes` and `entries` cached now (by all processes), this cache's `max_bytes`, and `path`."""
        try:
            total, entries = self._totals()
        except lmdb.MapResizedError:
            self._env().remap()
            total, entries = self._totals()
        return {"bytes": total, "entries": entries, "max_bytes": self.max_bytes, "path": self.path}

    def _totals(self) -> tuple[int, int]:
        shared = self._env()
        h = shared.enter()
        try:
            with h.env.begin() as txn:
                total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
                return total, txn.stat(h.meta)["entries"]
        finally:
            shared.exit()

    # --- writes ----------------------------------------------------------------------------------------

    def put(self, digest: bytes, data: bytes | memoryview) -> None:
        """Cache one verified chunk (see `put_many`)."""
        self.put_many(((digest, data),))

    def put_many(self, items: Iterable[tuple[bytes, bytes | memoryview]]) -> None:
        """Cache verified chunks. A chunk already cached only gets a fresh stamp; one larger than
        `max_bytes` is not cached. After each write transaction, a total past `max_bytes` is evicted down
        to 90% of it, least recently used first.

        Items are written about 1 MiB per transaction: bigger transactions were 4-15x slower here (their
        dirty pages are fresh memory until the commit), and a short one holds LMDB's writer lock, which all
        processes share, only briefly."""
        group: list[tuple[bytes, bytes | memoryview]] = []
        size = 0
        for digest, data in items:
            if len(digest) != DIGEST_SIZE:
                raise ValueError(f"a chunk digest is {DIGEST_SIZE} bytes, not {len(digest)}")
            if len(data) > self.max_bytes:
                continue
            group.append((digest, data))
            size += len(data)
            if size >= _TXN_BYTES:
                self._write(group)
                group, size = [], 0
        if group:
            self._write(group)

    def flush_access(self) -> None:
        """Write the accesses noted by `get` in one write transaction. The owner calls this periodically
        (from a thread: it may wait for another process's writer) and `close()` calls it."""
        self._write([])

    def clear(self) -> None:
        """Drop every cached chunk (of all processes)."""
        shared = self._env()
        with shared.write_lock:
            self._take_pending()
            h = shared.enter()
            try:
                with h.env.begin(write=True) as txn:
                    for db in (h.data, h.meta, h.lru):
                        txn.drop(db, delete=False)
                    txn.put(_TOTAL_KEY, _U64.pack(0), db=h.stats)
            finally:
                shared.exit()

    def _take_pending(self) -> dict[bytes, int]:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        return pending

    def _write(self, batch: list[tuple[bytes, bytes | memoryview]]) -> None:
        """One write transaction for `batch` and the pending stamps. If the map is too small, adopt the
        size another process may have grown it to and retry; if it is still full, free space first."""
        shared = self._env()
        with shared.write_lock:
            pending = self._take_pending()
            if not batch and not pending:
                return
            full = False
            for _ in range(3):
                h = shared.enter()
                try:
                    with h.env.begin(write=True) as txn:
                        self._apply(txn, h, batch, pending, make_room=full)
                    return
                except lmdb.MapResizedError:
                    pass
                except lmdb.MapFullError:
                    full = True
                finally:
                    shared.exit()
                shared.remap()
            log.warning("chunk cache %s: no room in the map; %d chunks not cached", self.path, len(batch))

    def _apply(self, txn: lmdb.Transaction, h: _Handles, batch: list[tuple[bytes, bytes | memoryview]],
               pending: dict[bytes, int], make_room: bool) -> None:
        total = _U64.unpack(txn.get(_TOTAL_KEY, db=h.stats) or _U64.pack(0))[0]
        if make_room:  # the last attempt ran out of map: free half the cache before inserting
            total = self._evict(txn, h, total, self.max_bytes // 2, keep_from=None)
        for digest, stamp in pending.items():
            self._touch(txn, h, digest, stamp)
        start = time.time_ns()
        for i, (digest, data) in enumerate(batch):
            stamp = start + i  # distinct, in batch order
            if self._touch(txn, h, digest, stamp):
                continue
            txn.put(digest, data, db=h.data)
            txn.put(digest, _META.pack(stamp, len(data)), db=h.meta)
            txn.put(_U64.pack(stamp) + digest, b"", db=h.lru)
            total += len(data)
        if total > self.max_bytes:
            total = self._evict(txn, h, total, int(self.max_bytes * _LOW_WATER), keep_from=start)
        txn.put(_TOTAL_KEY, _U64.pack(total), db=h.stats)

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

    def _evict(self, txn: lmdb.Transaction, h: _Handles, total: int, target: int,
               keep_from: int | None) -> int:
        """Delete least-recently-used chunks until `total <= target`; the new total. Chunks stamped at or
        after `keep_from` (this transaction's own) go only while the total is over the limit."""
        cursor = txn.cursor(db=h.lru)
        while total > target and cursor.first():
            key = cursor.key()
            if keep_from is not None and total <= self.max_bytes and _U64.unpack(key[:8])[0] >= keep_from:
                break
            digest = key[8:]
            meta = txn.get(digest, db=h.meta)
            total -= _META.unpack(meta)[1] if meta is not None else 0
            txn.delete(digest, db=h.data)
            txn.delete(digest, db=h.meta)
            cursor.delete()
        return total

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
