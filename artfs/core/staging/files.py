"""The files of a staging tree: their attributes and bytes, in data files on local disk or in the base.

A new or modified file's bytes live in `data/<id>`, written in place with pwrite, so a 4 GiB file is
never held in memory and its size and mtime are the data file's own: a write touches no database row,
and whatever reached the data file before a kill -9 is the file's content after a restart. A new file's
data file is an inode made ahead of need (spare.py), linked into place by the create that needs it.
An unchanged file of the base version has no data file: it is read from the version's chunks, and
copied up (like overlayfs) on its first write or truncate.

Files is the part of a StagingArea that owns the data files and the base files (base_files.py) of the
live generation; it is given the NodeTable (nodes.py) and knows nothing of names (namespace.py).

Locking: the area lock covers the database and the descriptor cache (local pread/pwrite run under it)
but is never held across a store fetch. Base reads and copy-ups fetch outside it; copy-ups of one node
are serialized by that node's lock (order: node lock, then area lock).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections import OrderedDict

import msgspec

from artfs.core.chunker import digest, stream_chunks
from artfs.core.manifest import DIR, FILE, LINK, Entry, content_digest
from artfs.core.repo import Repo
from artfs.core.staging.base_files import BaseFiles
from artfs.core.staging.layout import ROOT_ID
from artfs.core.staging.nodes import NodeTable, Row, StagedNode, dec, oserror
from artfs.core.staging.spare import SpareFiles
from artfs.errors import IntegrityError

DATA_MODE = 0o600  # every data file's: readable by the daemon's user only (a node's own mode is in its row)


class DataFiles:
    """The `data/` directory of one generation, with a small LRU of open descriptors; new data files are
    spares linked into place when `spares` has one ready (spare.py)."""

    def __init__(self, root: str, max_open: int = 128, spares: SpareFiles | None = None) -> None:
        self.root = root
        self._max_open = max_open
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._spares = spares

    def path(self, node_id: int) -> str:
        return os.path.join(self.root, str(node_id))

    def create(self, node_id: int, now_ns: int) -> None:
        """A new empty data file whose mtime is `now_ns`, the time its row was given for its other times
        (the disk's clock is coarser: a new file's atime and mtime must be equal)."""
        path = self.path(node_id)
        fd = self._spares.take(path) if self._spares is not None else None
        if fd is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, DATA_MODE)
        self._remember(node_id, fd)
        os.utime(fd, ns=(now_ns, now_ns))

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
        if self._spares is not None:
            self._spares.close()
        while self._fds:
            os.close(self._fds.popitem()[1])


def file_digest(path: str) -> bytes:
    """A file's content digest as a manifest computes it (over its content-defined chunks).

    Streamed with read(), not mmap: the file may be truncated meanwhile (status runs beside writes), and
    a shrinking mapping would kill the process with SIGBUS; a stream just sees fewer bytes. Read with
    O_NOATIME where allowed: staging behaves as noatime (a file made in staging keeps its atime on disk)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        return content_digest([digest(c) for c in stream_chunks(f)])


class Files:
    """Attributes and bytes of the staged files: reads, writes, truncate, setattr, fsync, copy-up, digests.

    Owns the live generation's data files and base files (swapped by `attach`), the write counts that
    make a digest computed across a write stale, and the per-node locks that serialize copy-ups."""

    def __init__(self, nodes: NodeTable, repo: Repo) -> None:
        self._nodes = nodes
        self._repo = repo
        self._data: DataFiles | None = None
        self._bases: BaseFiles | None = None
        self._node_locks: dict[int, threading.Lock] = {}
        self._wseq: dict[int, int] = {}  # writes per node since open: a digest computed across one is stale

    def attach(self, data: DataFiles, bases: BaseFiles | None) -> None:
        """Serve a new generation (under the area lock): its data files, its base version's files."""
        self._data, self._bases = data, bases
        data.purge(self._nodes.ids_with_data())
        self._wseq.clear()
        self._node_locks.clear()

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None

    @property
    def _data_files(self) -> DataFiles:
        """The live generation's data files (between attach and close)."""
        if self._data is None:
            raise RuntimeError(f"staging of {self._nodes.name}: no generation open")
        return self._data

    def _base_files(self) -> BaseFiles:
        """The base version's files (an area with no base version has no base entry to read)."""
        if self._bases is None:
            raise IntegrityError(f"staging of {self._nodes.name}: no base version to read from")
        return self._bases

    @property
    def base_packs(self) -> list[str]:
        return self._bases.packs if self._bases else []

    # --- for the other parts (the area lock held) ------------------------------------------------

    def attrs(self, row: Row) -> StagedNode:
        """A node's attributes (of the node a hard link's extra name names): a data file's size, mtime
        and ctime are the file's own (a write touches no row); its atime is the row's (reads of the data
        file may move the local file's atime, and staging behaves as noatime)."""
        row = self._nodes.node_of(row)
        size, mtime, ctime = row.size, row.mtime_ns, row.ctime_ns
        if row.has_data:
            st = os.fstat(self._data_files.fd(row.id))
            size, mtime, ctime = st.st_size, st.st_mtime_ns, max(ctime, st.st_ctime_ns)
        linked = row.parent is not None or row.id == ROOT_ID
        nlink = 0 if not linked else 1 if row.kind == DIR else row.nlink
        target = dec(row.link_target) if row.kind == LINK else None
        atime = mtime if row.atime_ns is None else row.atime_ns
        return StagedNode(row.id, row.kind, row.mode, size, mtime, ctime, nlink, target, row.uid, row.gid, atime)

    def file_entry(self, row: Row, path: str) -> tuple[Entry, int | None]:
        """A file row as a manifest entry at `path`, and its data id if its content is a data file (the
        entry then has no chunks, and its digest only if one is cached)."""
        if row.has_data:
            st = os.fstat(self._data_files.fd(row.id))
            return Entry(path, FILE, row.mode, st.st_mtime_ns, st.st_size, b"", row.digest or b""), row.id
        base = self._base_entry(row)
        return msgspec.structs.replace(base, path=path, mode=row.mode, mtime_ns=row.mtime_ns), None

    def create_data(self, node_id: int, now_ns: int) -> None:
        """A new file's empty data file, made at `now_ns`."""
        self._data_files.create(node_id, now_ns)

    def forget(self, node_id: int) -> None:
        """A node's row is gone: its data file and bookkeeping go too."""
        self._data_files.remove(node_id)
        self._node_locks.pop(node_id, None)
        self._wseq.pop(node_id, None)

    # --- operations ------------------------------------------------------------------------------

    def setattr(
        self, node_id: int, mode: int | None = None, size: int | None = None, mtime_ns: int | None = None,
        atime_ns: int | None = None, uid: int | None = None, gid: int | None = None,
    ) -> StagedNode:
        """chmod / chown / truncate / utimens. Who may chown is the caller's rule (the kernel's, with
        default_permissions); versions keep no owners and no atime, staging keeps both while staged.
        Setting only one of the times pins the other where it is (an atime that followed mtime stays)."""
        nodes = self._nodes
        if size is not None:
            nodes.check_not_quick()
            self.truncate(node_id, size)
        with nodes.lock:
            if mode is None and mtime_ns is None and atime_ns is None and uid is None and gid is None:
                return self.attrs(nodes.get(node_id))
            nodes.check_writable()
            row = nodes.get(node_id)
            if (row.has_data and row.atime_ns is not None and mtime_ns is not None and mode is None
                    and atime_ns is None and uid is None and gid is None):
                # Only mtime, of a file with its own data and its own atime: what the kernel's writeback
                # cache sends after writing a file. The data file keeps it (and moves its ctime); no row
                # changes. (The rest is one small transaction: cheap enough for StagingArea.quick too.)
                os.utime(self._data_files.fd(row.id), ns=(mtime_ns, mtime_ns))
                return self.attrs(row)
            if (row.has_data and mtime_ns is None and atime_ns is None and (mode is None or mode & 0o7777 == row.mode)
                    and (uid is None or uid == row.uid) and (gid is None or gid == row.gid)):
                # A chmod or chown to what the file already has (`tar x` sends both for every file): only
                # its ctime moves, which is the data file's own (see attrs). No transaction.
                os.fchmod(self._data_files.fd(row.id), DATA_MODE)
                return self.attrs(row)
            # One UPDATE of the node's row (NodeTable.update). A data file keeps its own mtime; set here
            # first, a failed UPDATE leaves only that changed, as a crash between the two would.
            columns: dict[str, int | None] = {}
            if mode is not None and row.kind != LINK:
                columns["mode"] = mode & 0o7777
            if uid is not None:
                columns["uid"] = uid
            if gid is not None:
                columns["gid"] = gid
            if mtime_ns is not None or atime_ns is not None:
                columns["atime_ns"] = self.attrs(row).atime_ns if atime_ns is None else atime_ns
                if mtime_ns is not None and row.has_data:
                    os.utime(self._data_files.fd(row.id), ns=(mtime_ns, mtime_ns))
                elif mtime_ns is not None:
                    columns["mtime_ns"] = mtime_ns
            columns["ctime_ns"] = time.time_ns()
            return self.attrs(nodes.update(row, **columns))

    def _file(self, node_id: int) -> Row:
        row = self._nodes.get(node_id)
        if row.kind == DIR:
            raise oserror(errno.EISDIR, f"node {node_id}")
        if row.kind != FILE:
            raise oserror(errno.EINVAL, f"node {node_id} is not a regular file")
        return row

    def _base_entry(self, row: Row) -> Entry:
        """The entry an unchanged file is served from: its base version's, or a staged reference's."""
        nodes = self._nodes
        if row.source is not None:
            return self._base_files().reference_entry(row.source, row.chunks or b"", row.mode, row.mtime_ns,
                                                      row.size)
        path = dec(row.base_path) if row.base_path is not None else None
        entry = None
        if nodes.manifest is not None and path is not None:
            entry = self._repo.index.lookup(nodes.manifest, path)
        if entry is None or entry.kind != FILE:
            raise IntegrityError(f"staging of {nodes.name}: {path!r} is not in base v{nodes.base}")
        return entry

    def base_entry(self, node_id: int) -> Entry | None:
        """The base version's entry for an unchanged file (serve it with the mount's chunk reader and
        `base_packs`); None once the file has its own data."""
        with self._nodes.lock:
            row = self._nodes.get(node_id)
            if row.kind != FILE or row.has_data:
                return None
            return self._base_entry(row)

    def is_reference(self, node_id: int) -> bool:
        """Whether an unchanged file is a staged reference (`artfs ref add`), not a base version's file."""
        with self._nodes.lock:
            row = self._nodes.get(node_id)
            return row.kind == FILE and not row.has_data and row.source is not None

    def read(self, node_id: int, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise oserror(errno.EINVAL, "negative offset or size")
        with self._nodes.lock:
            row = self._file(node_id)
            if row.has_data:
                return os.pread(self._data_files.fd(row.id), size, offset)
            entry = self._base_entry(row)
            bases = self._base_files()
        return bases.read(entry, offset, size)

    def _written(self, row: Row) -> None:
        """Content is about to change: a digest computed before is stale (persisted: status after a crash)."""
        self._wseq[row.id] = self._wseq.get(row.id, 0) + 1
        if row.digest is not None:
            with self._nodes.txn() as db:
                db.execute("UPDATE nodes SET digest = NULL WHERE id = ?", (row.id,))

    def write(self, node_id: int, offset: int, data: bytes | memoryview) -> int:
        """pwrite into the file's data file (copying a base file up first). Returns bytes written."""
        if offset < 0:
            raise oserror(errno.EINVAL, "negative offset")
        while True:
            with self._nodes.lock:
                self._nodes.check_writable()
                row = self._file(node_id)
                if row.has_data:
                    self._written(row)
                    return os.pwrite(self._data_files.fd(row.id), data, offset)
            self._copy_up(node_id, None)

    def truncate(self, node_id: int, size: int) -> None:
        if size < 0:
            raise oserror(errno.EINVAL, "negative size")
        while True:
            with self._nodes.lock:
                self._nodes.check_writable()
                row = self._file(node_id)
                if row.has_data:
                    self._written(row)
                    os.ftruncate(self._data_files.fd(row.id), size)
                    return
                if size == row.size:
                    return
            self._copy_up(node_id, size)

    def _copy_up(self, node_id: int, limit: int | None) -> None:
        """Give a base file its own data file: its first `limit` bytes (all by default), fetched outside
        the area lock, renamed into place, then recorded in one txn (a crash before that leaves a stray
        data file, purged on open, and the node still served from the base)."""
        nodes = self._nodes
        nodes.check_not_quick()  # it may fetch chunks: never on an event loop
        with nodes.lock:
            lock = self._node_locks.setdefault(node_id, threading.Lock())
        with lock:
            with nodes.lock:
                nodes.check_writable()
                row = self._file(node_id)
                if row.has_data:
                    return
                entry = self._base_entry(row)
                final = self._data_files.path(node_id)
                bases = self._base_files()
            keep = entry.size if limit is None else min(limit, entry.size)
            tmp = final + ".part"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, DATA_MODE)
            try:
                try:
                    bases.copy_to(entry, fd, keep)
                    os.ftruncate(fd, keep)
                    os.utime(fd, ns=(row.mtime_ns, row.mtime_ns))
                finally:
                    os.close(fd)
                with nodes.lock:
                    nodes.check_writable()
                    if nodes.row(node_id) is None:
                        raise oserror(errno.ENOENT, f"node {node_id}")
                    os.replace(tmp, final)
                    with nodes.txn() as db:
                        db.execute("UPDATE nodes SET has_data = 1, base_path = NULL, digest = NULL, source = NULL, "
                                   "chunks = NULL, atime_ns = coalesce(atime_ns, mtime_ns) WHERE id = ?", (node_id,))
                        nodes.changed(db)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def fsync(self, node_id: int) -> None:
        """Durable against power loss too (kill -9 never needed it): the data file, then the WAL."""
        with self._nodes.lock:
            row = self._nodes.get(node_id)
            if row.has_data:
                os.fsync(self._data_files.fd(row.id))
            self._nodes.sync()

    def data_path(self, node_id: int) -> str:
        return self._data_files.path(node_id)

    def data_digest(self, node_id: int) -> bytes:
        """A data file's content digest, cached in its row until the next write. Hashed outside the lock."""
        nodes = self._nodes
        with nodes.lock:
            seq = self._wseq.get(node_id, 0)
            path = self._data_files.path(node_id)
        d = file_digest(path)
        with nodes.lock:
            if self._wseq.get(node_id, 0) == seq and nodes.row(node_id) is not None:
                try:
                    with nodes.txn() as db:
                        db.execute("UPDATE nodes SET digest = ? WHERE id = ?", (d, node_id))
                except OSError as e:  # a full disk: the digest is only remembered to save a re-hash
                    if e.errno != errno.ENOSPC:
                        raise
        return d
