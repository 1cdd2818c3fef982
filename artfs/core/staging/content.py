"""File content in a staging area: data files on local disk, and base files read from their chunks.

A new or modified file's bytes live in `data/<id>`, written in place with pwrite, so a 4 GiB file is
never held in memory and its size and mtime are the data file's own: a write touches no database row,
and whatever reached the data file before a kill -9 is the file's content after a restart.
An unchanged file of the base version has no data file: it is read from the version's chunks, and
copied up (like overlayfs) on its first write or truncate.

Locking: the area lock covers the database and the descriptor cache (local pread/pwrite run under it)
but is never held across a store fetch. Base reads and copy-ups fetch outside it; copy-ups of one node
are serialized by that node's lock (order: node lock, then area lock).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import threading
import time
from collections import OrderedDict, defaultdict

from pyfastcdc import FastCDC

from artfs.core.chunker import AVG_CHUNK, MAX_CHUNK, MIN_CHUNK, digest
from artfs.core.fetch import ChunkFetcher, plan_spans
from artfs.core.manifest import DIR, FILE, LINK, Entry, content_digest
from artfs.core.packs import ChunkRef
from artfs.core.staging.nodes import Node, NodeTable, Row, dec, oserror
from artfs.errors import IntegrityError


class DataFiles:
    """The `data/` directory of one generation, with a small LRU of open descriptors."""

    def __init__(self, root: str, max_open: int = 128) -> None:
        self.root = root
        self._max_open = max_open
        self._fds: OrderedDict[int, int] = OrderedDict()

    def path(self, node_id: int) -> str:
        return os.path.join(self.root, str(node_id))

    def create(self, node_id: int) -> None:
        fd = os.open(self.path(node_id), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._remember(node_id, fd)

    def fd(self, node_id: int) -> int:
        fd = self._fds.get(node_id)
        if fd is not None:
            self._fds.move_to_end(node_id)
            return fd
        fd = os.open(self.path(node_id), os.O_RDWR)
        self._remember(node_id, fd)
        return fd

    def _remember(self, node_id: int, fd: int) -> None:
        old = self._fds.pop(node_id, None)
        if old is not None:
            os.close(old)
        self._fds[node_id] = fd
        while len(self._fds) > self._max_open:
            _, victim = self._fds.popitem(last=False)
            os.close(victim)

    def forget(self, node_id: int) -> None:
        fd = self._fds.pop(node_id, None)
        if fd is not None:
            os.close(fd)

    def remove(self, node_id: int) -> None:
        self.forget(node_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(node_id))

    def purge(self, keep: set[int]) -> int:
        """Delete data files of no node (left by a crash between writing one and committing its row)."""
        removed = 0
        for name in os.listdir(self.root):
            if not (name.isdigit() and int(name) in keep):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, name))
                removed += 1
        return removed

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])


def file_digest(path: str) -> bytes:
    """A file's content digest as a manifest computes it (over its content-defined chunks).

    Streamed with read(), not mmap: the file may be truncated meanwhile (status runs beside writes), and
    a shrinking mapping would kill the process with SIGBUS; a stream just sees fewer bytes."""
    with open(path, "rb") as f:
        head = f.read(MIN_CHUNK + 1)
        if len(head) <= MIN_CHUNK:  # as chunker.cut: a small file is one chunk
            return content_digest([digest(head)] if head else [])
        f.seek(0)
        cdc = FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
        return content_digest([digest(c.data) for c in cdc.cut_stream(f)])


class BaseFiles:
    """Reads the base version's files from their chunks, through the chunk cache. Thread-safe."""

    def __init__(self, fetcher: ChunkFetcher, packs: list[str], max_layouts: int = 256) -> None:
        self.fetcher = fetcher
        self.packs = packs
        self._layouts: OrderedDict[str, tuple[list[int], list[ChunkRef]]] = OrderedDict()
        self._max_layouts = max_layouts

    def _layout(self, entry: Entry) -> tuple[list[int], list[ChunkRef]]:
        """(start offset of each chunk, chunks): a read bisects the starts instead of scanning."""
        got = self._layouts.get(entry.path)
        if got is None:
            refs = entry.refs(self.packs)
            starts, pos = [], 0
            for r in refs:
                starts.append(pos)
                pos += r.raw_len
            got = (starts, refs)
            self._layouts[entry.path] = got
            while len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
        return got

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        end = min(entry.size, offset + size)
        if offset >= end:
            return b""
        starts, refs = self._layout(entry)
        i = bisect.bisect_right(starts, offset) - 1
        parts = []
        while i < len(refs) and starts[i] < end:
            data = self.fetcher.read_chunk(refs[i])
            lo = max(offset - starts[i], 0)
            hi = min(end - starts[i], len(data))
            parts.append(data[lo:hi])
            i += 1
        return b"".join(parts)

    def copy_to(self, entry: Entry, fd: int, limit: int) -> None:
        """Write the first `limit` bytes of a base file into `fd`: span by span (≤ 8 MiB each), so a big
        file goes to disk without being held in memory. Does not fill the cache (the copy is the copy)."""
        starts, refs = self._layout(entry)
        where: dict[bytes, list[int]] = defaultdict(list)
        needed = []
        for start, ref in zip(starts, refs, strict=True):
            if start >= limit:
                break
            if ref.digest not in where:
                needed.append(ref)
            where[ref.digest].append(start)
        cache = self.fetcher.cache
        for span in plan_spans(needed):
            got: dict[bytes, bytes] = {}
            if cache is not None:
                for r in span:
                    data = cache.get(r.digest)
                    if data is None:
                        break
                    got[r.digest] = data
            if len(got) != len(span):
                got = self.fetcher.fetch_span(span, populate=False)
            for d, data in got.items():
                for pos in where[d]:
                    os.pwrite(fd, data, pos)


class ContentOps(NodeTable):
    """The bytes half of StagingArea: attributes, reads, writes, copy-up."""

    def setattr(
        self, node_id: int, mode: int | None = None, size: int | None = None, mtime_ns: int | None = None,
        atime_ns: int | None = None,
    ) -> Node:
        """chmod / truncate / utimens. Versions keep no atime: it is accepted and reads back as mtime."""
        if size is not None:
            self.truncate(node_id, size)
        with self._lock:
            if mode is None and mtime_ns is None:
                return self._node(self._get(node_id))
            self._writable()
            row = self._get(node_id)
            now = time.time_ns()
            with self._txn() as db:
                if mode is not None and row.kind != LINK:
                    db.execute("UPDATE nodes SET mode = ?, ctime_ns = ? WHERE id = ?", (mode & 0o7777, now, row.id))
                if mtime_ns is not None:
                    if row.has_data:
                        os.utime(self._data.fd(row.id), ns=(mtime_ns, mtime_ns))
                    else:
                        db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE id = ?", (mtime_ns, now, row.id))
                self._changed(db)
            return self._node(self._get(node_id))

    def _file(self, node_id: int) -> Row:
        row = self._get(node_id)
        if row.kind == DIR:
            raise oserror(errno.EISDIR, f"node {node_id}")
        if row.kind != FILE:
            raise oserror(errno.EINVAL, f"node {node_id} is not a regular file")
        return row

    def _base_entry(self, row: Row) -> Entry:
        entry = self.repo.index.lookup(self._mid, dec(row.base_path))
        if entry is None or entry.kind != FILE:
            raise IntegrityError(f"staging of {self.name}: {dec(row.base_path)!r} is not in base v{self._base}")
        return entry

    def base_entry(self, node_id: int) -> Entry | None:
        """The base version's entry for an unchanged file (serve it with the mount's chunk reader and
        `base_packs`); None once the file has its own data."""
        with self._lock:
            row = self._get(node_id)
            if row.kind != FILE or row.has_data:
                return None
            return self._base_entry(row)

    def read(self, node_id: int, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise oserror(errno.EINVAL, "negative offset or size")
        with self._lock:
            row = self._file(node_id)
            if row.has_data:
                return os.pread(self._data.fd(row.id), size, offset)
            entry = self._base_entry(row)
        return self._bases.read(entry, offset, size)

    def _written(self, row: Row) -> None:
        """Content is about to change: a digest computed before is stale (persisted: status after a crash)."""
        self._wseq[row.id] = self._wseq.get(row.id, 0) + 1
        if row.digest is not None:
            with self._txn() as db:
                db.execute("UPDATE nodes SET digest = NULL WHERE id = ?", (row.id,))

    def write(self, node_id: int, offset: int, data: bytes | memoryview) -> int:
        """pwrite into the file's data file (copying a base file up first). Returns bytes written."""
        if offset < 0:
            raise oserror(errno.EINVAL, "negative offset")
        while True:
            with self._lock:
                self._writable()
                row = self._file(node_id)
                if row.has_data:
                    self._written(row)
                    return os.pwrite(self._data.fd(row.id), data, offset)
            self._copy_up(node_id, None)

    def truncate(self, node_id: int, size: int) -> None:
        if size < 0:
            raise oserror(errno.EINVAL, "negative size")
        while True:
            with self._lock:
                self._writable()
                row = self._file(node_id)
                if row.has_data:
                    self._written(row)
                    os.ftruncate(self._data.fd(row.id), size)
                    return
                if size == row.size:
                    return
            self._copy_up(node_id, size)

    def _copy_up(self, node_id: int, limit: int | None) -> None:
        """Give a base file its own data file: its first `limit` bytes (all by default), fetched outside
        the area lock, renamed into place, then recorded in one txn (a crash before that leaves a stray
        data file, purged on open, and the node still served from the base)."""
        with self._lock:
            lock = self._node_locks.setdefault(node_id, threading.Lock())
        with lock:
            with self._lock:
                self._writable()
                row = self._file(node_id)
                if row.has_data:
                    return
                entry = self._base_entry(row)
                final = self._data.path(node_id)
            keep = entry.size if limit is None else min(limit, entry.size)
            tmp = final + ".part"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    self._bases.copy_to(entry, fd, keep)
                    os.ftruncate(fd, keep)
                    os.utime(fd, ns=(row.mtime_ns, row.mtime_ns))
                finally:
                    os.close(fd)
                with self._lock:
                    self._writable()
                    if self._row(node_id) is None:
                        raise oserror(errno.ENOENT, f"node {node_id}")
                    os.replace(tmp, final)
                    with self._txn() as db:
                        db.execute("UPDATE nodes SET has_data = 1, base_path = NULL, digest = NULL WHERE id = ?",
                                   (node_id,))
                        self._changed(db)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def fsync(self, node_id: int) -> None:
        """Durable against power loss too (kill -9 never needed it): the data file, then the WAL."""
        with self._lock:
            row = self._get(node_id)
            if row.has_data:
                os.fsync(self._data.fd(row.id))
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _data_path(self, node_id: int) -> str:
        return self._data.path(node_id)

    def _data_digest(self, node_id: int) -> bytes:
        """A data file's content digest, cached in its row until the next write. Hashed outside the lock."""
        with self._lock:
            seq = self._wseq.get(node_id, 0)
            path = self._data.path(node_id)
        d = file_digest(path)
        with self._lock:
            if self._wseq.get(node_id, 0) == seq and self._row(node_id) is not None:
                with self._txn() as db:
                    db.execute("UPDATE nodes SET digest = ? WHERE id = ?", (d, node_id))
        return d
