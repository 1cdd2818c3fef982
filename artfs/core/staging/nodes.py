"""The bottom of a staging area: plain data (a node's attributes, statfs numbers, a node row), the errno
rules for names, and NodeTable, the rows of the live generation under the area lock.

NodeTable is the one part every other part is given (files.py, namespace.py); it imports none of them."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from artfs.core.manifest import DIR, FILE, LINK
from artfs.core.staging.layout import ROOT_ID, Checkpointer, connect, upgrade
from artfs.errors import IntegrityError

RENAME_NOREPLACE = 1  # as <linux/fs.h>
RENAME_EXCHANGE = 2
NAME_MAX = 255
RESERVE_BYTES = 1 << 20
ROW_CACHE = 256  # rows remembered between two transactions (`cp` of one file reads the same 2 rows 5 times)
COLS = "id, parent, name, kind, mode, mtime_ns, ctime_ns, size, base_path, has_data, target, digest, uid, gid, " \
       "atime_ns, nlink, inode, source, chunks"


@functools.cache
def _update_sql(columns: tuple[str, ...]) -> str:
    """`UPDATE nodes SET a = ?, b = ? WHERE id = ?` for NodeTable.update (column names from code only)."""
    return f"UPDATE nodes SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


class WouldBlock(Exception):
    """A `StagingArea.quick` call would wait for the lock or do more than a cheap read."""


def enc(s: str) -> bytes:
    """Names and paths are stored as bytes: str from FUSE is surrogate-escaped, and bytes sort as a manifest."""
    return s.encode("utf-8", "surrogateescape")


def dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def oserror(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


def check_entry_name(name: str, new: bool = False) -> bytes:
    """A directory entry name: what the kernel would let through, as bytes. A `new` name must also be
    UTF-8, because a version stores names as UTF-8 (EILSEQ, as ZFS utf8only does)."""
    raw = enc(name)
    if not raw or b"/" in raw or b"\0" in raw or raw in (b".", b".."):
        raise oserror(errno.EINVAL, name)
    if len(raw) > NAME_MAX:
        raise oserror(errno.ENAMETOOLONG, name)
    if new:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise oserror(errno.EILSEQ, f"{name!r}: names in a version must be UTF-8") from None
    return raw


class Row(NamedTuple):
    """One row of the nodes table (see layout.SCHEMA), in COLS order."""

    id: int
    parent: int | None
    name: bytes | None
    kind: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    size: int
    base_path: bytes | None
    has_data: int
    target: bytes | None
    digest: bytes | None
    uid: int | None
    gid: int | None
    atime_ns: int | None
    nlink: int
    inode: int | None  # set on a hard link's extra name: the node it names
    source: str | None  # a staged reference (`artfs ref add`): its source token; its chunks in `chunks`
    chunks: bytes | None

    @property
    def node_id(self) -> int:
        """The node this row's name names: its own id, or a hard link's node."""
        return self.id if self.inode is None else self.inode

    @property
    def entry_name(self) -> bytes:
        """Its name in its directory: every node with a parent has one (the root and unlinked nodes none)."""
        if self.name is None:
            raise IntegrityError(f"staging node {self.id} has no name")
        return self.name

    @property
    def link_target(self) -> bytes:
        """A symlink's target: every LINK row has one."""
        if self.target is None:
            raise IntegrityError(f"staging node {self.id} is a symlink without a target")
        return self.target


_FILE_TYPE = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, LINK: stat.S_IFLNK}


class StagedNode(NamedTuple):
    """A staged inode's attributes, as getattr returns them (the mount's own inodes are fs/tree.py's).
    Immutable; a NamedTuple rather than a frozen dataclass because several are made per FUSE request
    (~0.5 µs each against ~3.4)."""

    id: int
    kind: int  # manifest.FILE, DIR or LINK
    mode: int  # permission bits only
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int  # 0 once unlinked (an open file); directories say 1, "unknown", so `find` never skips
    target: str | None = None  # symlinks
    uid: int | None = None  # the owner while staged; None: the mount's user (see StagingArea.create)
    gid: int | None = None
    atime_ns: int = 0

    @property
    def st_mode(self) -> int:
        return _FILE_TYPE[self.kind] | self.mode

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR


@dataclass(frozen=True)
class StatFs:
    """statfs numbers: space is the local disk staged data lives on; files counts staged nodes."""

    block_size: int
    blocks: int
    blocks_free: int
    blocks_avail: int
    files: int
    files_free: int
    name_max: int = NAME_MAX


class NodeTable:
    """The node rows of the live generation (its SQLite database and its meta), with the lock and the
    modes that guard the whole area: every part of a StagingArea is given this one object.

    Every method but open/close expects `lock` held. The modes outlive generations: a discard stays
    `frozen` while it builds the next one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()  # the area lock: the database and the data files' descriptors
        self.frozen = False  # a seal or discard is replacing the tree: every change gets EBUSY
        self.quick = False  # inside StagingArea.quick: only cheap calls allowed (see check_not_quick)
        self._db: sqlite3.Connection | None = None
        self._checkpoints: Checkpointer | None = None
        self._path = ""  # the live generation's database file
        # Rows read (or just written, `remember`) since the last transaction: every change is one
        # transaction (`txn`), which empties this, so a row found here is the row in the database.
        self._rows: dict[int, Row] = {}
        self._in_txn = False
        self.base: int | None = None  # the version the live generation is a view of
        self.manifest: str | None = None  # that version's manifest id (its index serves lazy directories)
        self.dirty = False  # changed since the generation was created (persisted in meta)

    def open(self, path: str) -> None:
        """Open a generation's database and drop rows of unlinked nodes (nothing holds them after a restart)."""
        db = connect(path)
        upgrade(db)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("artifact") != self.name:
            db.close()
            raise IntegrityError(f"staging area {os.path.dirname(os.path.dirname(path))} belongs to "
                                 f"{meta.get('artifact')!r}")
        db.execute("DELETE FROM nodes WHERE parent IS NULL AND id != ?", (ROOT_ID,))
        self._db = db
        self._path = path
        self._rows.clear()
        self._checkpoints = Checkpointer(db, path, self.lock, self.name)
        self.base, self.manifest, self.dirty = meta["base"], meta["manifest"], bool(meta["dirty"])
        self._reserve = os.path.join(os.path.dirname(os.path.dirname(path)), "reserve")
        self._reserve_held = False  # known to be on disk: spend_reserve is the only way it goes
        self._keep_reserve()

    def spend_reserve(self) -> bool:
        """Give the reserve back to the disk (True if there was one): see `_keep_reserve`."""
        self._reserve_held = False
        try:
            os.unlink(self._reserve)
        except FileNotFoundError:
            return False
        return True

    def _keep_reserve(self) -> None:
        """A little disk held back for the database: on a full disk, the transaction of an unlink (the way
        to make room) must still commit, so an unlink that gets ENOSPC spends this and tries again; it is
        taken back after the next transaction that finds room."""
        if self._reserve_held:
            return  # no stat after every transaction
        if os.path.exists(self._reserve):
            self._reserve_held = True
            return
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            self._reserve_held = True
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._reserve)  # still full: try again after the next transaction

    def close(self) -> None:
        self._rows.clear()
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The live generation's database (between open and close)."""
        if self._db is None:
            raise RuntimeError(f"staging of {self.name}: no generation open")
        return self._db

    def sync(self) -> None:
        """Every committed transaction durable against power loss too (a kill -9 never needed this): a
        checkpoint, which with synchronous=NORMAL fsyncs the WAL first, and the WAL fsync'd here as well
        (a checkpoint that had nothing to copy syncs nothing)."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        try:
            fd = os.open(self._path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # everything is in the database file, which that checkpoint synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def base_manifest(self) -> str:
        """The base version's manifest id, for a node that refers into the base (base_path set)."""
        if self.manifest is None:
            raise IntegrityError(f"staging of {self.name} refers to a base version it does not have")
        return self.manifest

    def last_id(self) -> int:
        """The highest node id ever given (0 before any generation): the next generation starts above it."""
        if self._db is None:
            return 0
        return self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()[0]

    def reserve_ids(self, n: int) -> range:
        """`n` node ids no row will ever take (the sequence moves past them, durably): for nodes that live
        outside the table (upper.py), so one id space, never reused, serves both."""
        with self.txn() as db:
            db.execute("UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'nodes'", (n,))
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()[0]
        return range(last - n + 1, last + 1)

    def upper_roots(self) -> set[int]:
        """Directories whose content lives in the upper tree (upper.py), of rows still in the table."""
        return {i for (i,) in self.db.execute("SELECT u.id FROM upper_roots u JOIN nodes n ON n.id = u.id")}

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM nodes").fetchone()[0]

    def ids_with_data(self) -> set[int]:
        return {i for (i,) in self.db.execute("SELECT id FROM nodes WHERE has_data = 1")}

    @contextmanager
    def txn(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it or none of it is in the database, even after kill -9. Rows read
        inside it are not remembered, and those remembered before are forgotten (it may change any)."""
        db = self.db
        self._rows.clear()
        self._in_txn = True
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            full = self._disk_full(e)
            if full is not None:
                raise full from e
            raise
        finally:
            self._in_txn = False
            self._rows.clear()
        self._committed()

    def _disk_full(self, e: BaseException) -> OSError | None:
        """A failed statement's error as ENOSPC when SQLite says the disk is full, else None."""
        if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
            return oserror(errno.ENOSPC, f"staging of {self.name}: {e}")
        return None

    def _committed(self) -> None:
        """After every committed change (`txn`, `update`): count it toward a checkpoint, keep the reserve."""
        if self._checkpoints is not None:
            self._checkpoints.committed()
        self._keep_reserve()

    def update(self, row: Row, **columns: Any) -> Row:
        """Set `columns` of the node `row` (its row as read) and return its row as it is now, as one
        transaction like `txn`'s, for the hot single-row changes (chmod, chown, utimens): one UPDATE in
        SQLite's autocommit — atomic and as durable as a COMMIT, without BEGIN and COMMIT round trips —
        after which only this row's remembered copy changes (no other row did), so the next request's
        reads of it, or of its directory, need no SELECT."""
        if not self.dirty:  # the first change of a generation also marks it changed: two statements
            with self.txn() as db:
                db.execute(_update_sql(tuple(columns)), (*columns.values(), row.id))
                self.changed(db)
        else:
            self._rows.pop(row.id, None)
            try:
                self.db.execute(_update_sql(tuple(columns)), (*columns.values(), row.id))
            except sqlite3.OperationalError as e:
                full = self._disk_full(e)
                if full is not None:
                    raise full from e
                raise
            self._committed()
        new = row._replace(**columns)
        self.remember(new)
        return new

    def row(self, node_id: int) -> Row | None:
        row = self._rows.get(node_id)
        if row is not None:
            return row
        r = self.db.execute(f"SELECT {COLS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if r is None:
            return None
        row = Row._make(r)
        self.remember(row)
        return row

    def remember(self, row: Row) -> None:
        """`row` is the node's row in the database now (read, or just committed by the caller, who knows
        every column): the next `row()` of it, before any transaction, needs no SELECT."""
        if not self._in_txn:
            if len(self._rows) >= ROW_CACHE:
                self._rows.clear()
            self._rows[row.id] = row

    def get(self, node_id: int) -> Row:
        row = self.row(node_id)
        if row is None:
            raise oserror(errno.ENOENT, f"node {node_id}")
        return row

    def node_of(self, row: Row) -> Row:
        """The node a directory entry names: the row itself, or for a hard link's extra name, its node."""
        return row if row.inode is None else self.get(row.inode)

    def child(self, parent_id: int, raw: bytes) -> Row | None:
        r = self.db.execute(f"SELECT {COLS} FROM nodes WHERE parent = ? AND name = ?", (parent_id, raw)).fetchone()
        if r is None:
            return None
        row = Row._make(r)
        self.remember(row)  # a lookup is followed by getattr, open, setattr of the same node
        return row

    def children(self, parent_id: int, after: bytes | None = None, limit: int = -1) -> list[Row]:
        rows = self.db.execute(
            f"SELECT {COLS} FROM nodes WHERE parent = ? AND name > ? ORDER BY name LIMIT ?",
            (parent_id, after if after is not None else b"", limit),
        ).fetchall()
        return [Row._make(r) for r in rows]

    def check_writable(self) -> None:
        if self.frozen:
            raise oserror(errno.EBUSY, f"staging of {self.name} is being sealed")

    def check_not_quick(self) -> None:
        """Before work too slow for StagingArea.quick (materializing, copy-up, truncate, deleting data):
        raise WouldBlock there, before anything is changed. Under the lock: `quick` is the flag of the
        thread holding it (a worker thread asking while the loop is inside a quick call waits for it to
        end, rather than reading the loop's flag as its own)."""
        with self.lock:
            if self.quick:
                raise WouldBlock

    def changed(self, db: sqlite3.Connection) -> None:
        """Record that the tree differs from a fresh view (refresh() only follows latest until then)."""
        if not self.dirty:
            db.execute("UPDATE meta SET value = 1 WHERE key = 'dirty'")
            self.dirty = True

    def touch(self, db: sqlite3.Connection, dir_id: int, now: int) -> None:
        """A directory's entries changed: its mtime moves, its atime stays (one that followed mtime, a base
        directory's, is pinned where it was)."""
        db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ?, atime_ns = coalesce(atime_ns, mtime_ns) WHERE id = ?",
                   (now, now, dir_id))
