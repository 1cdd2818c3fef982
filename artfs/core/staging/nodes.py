"""What the parts of a staging area share: plain data (a node's attributes, statfs numbers, a node row),
the errno rules for names, and NodeTable, the row access under the area lock.

StagingArea (area.py) is assembled from TreeOps (tree.py: names) and ContentOps (content.py: bytes),
both NodeTables; area.py owns the state they share and the lifecycle."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from artfs.core.manifest import DIR, FILE, LINK
from artfs.core.staging.layout import ROOT_ID

if TYPE_CHECKING:
    from artfs.core.repo import Repo
    from artfs.core.staging.content import BaseFiles, DataFiles

RENAME_NOREPLACE = 1  # as <linux/fs.h>
RENAME_EXCHANGE = 2
NAME_MAX = 255
COLS = "id, parent, name, kind, mode, mtime_ns, ctime_ns, size, base_path, has_data, target, digest"


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


@dataclass(frozen=True, slots=True)
class Node:
    """An inode's attributes, as getattr returns them."""

    id: int
    kind: int  # manifest.FILE, DIR or LINK
    mode: int  # permission bits only
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int  # 0 once unlinked (an open file); directories say 1, "unknown", so `find` never skips
    target: str | None = None  # symlinks

    @property
    def st_mode(self) -> int:
        return {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, LINK: stat.S_IFLNK}[self.kind] | self.mode

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
    """Row access for the operations: every method here expects the area lock to be held."""

    repo: Repo
    name: str
    _lock: threading.RLock
    _db: sqlite3.Connection
    _data: DataFiles
    _bases: BaseFiles | None
    _base: int | None
    _mid: str | None
    _frozen: bool
    _dirty: bool
    _quick: bool  # inside StagingArea.quick: only cheap reads allowed
    _node_locks: dict[int, threading.Lock]
    _wseq: dict[int, int]  # writes per node since open: a digest computed across one is stale

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it or none of it is in the database, even after kill -9."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
                raise oserror(errno.ENOSPC, f"staging of {self.name}: {e}") from e
            raise

    def _row(self, node_id: int) -> Row | None:
        r = self._db.execute(f"SELECT {COLS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return Row._make(r) if r else None

    def _get(self, node_id: int) -> Row:
        row = self._row(node_id)
        if row is None:
            raise oserror(errno.ENOENT, f"node {node_id}")
        return row

    def _child(self, parent_id: int, raw: bytes) -> Row | None:
        r = self._db.execute(f"SELECT {COLS} FROM nodes WHERE parent = ? AND name = ?", (parent_id, raw)).fetchone()
        return Row._make(r) if r else None

    def _children(self, parent_id: int, after: bytes | None = None, limit: int = -1) -> list[Row]:
        rows = self._db.execute(
            f"SELECT {COLS} FROM nodes WHERE parent = ? AND name > ? ORDER BY name LIMIT ?",
            (parent_id, after if after is not None else b"", limit),
        ).fetchall()
        return [Row._make(r) for r in rows]

    def _node(self, row: Row) -> Node:
        size, mtime, ctime = row.size, row.mtime_ns, row.ctime_ns
        if row.has_data:
            st = os.fstat(self._data.fd(row.id))
            size, mtime, ctime = st.st_size, st.st_mtime_ns, max(ctime, st.st_ctime_ns)
        nlink = 1 if row.parent is not None or row.id == ROOT_ID else 0
        target = dec(row.target) if row.kind == LINK else None
        return Node(row.id, row.kind, row.mode, size, mtime, ctime, nlink, target)

    def _writable(self) -> None:
        if self._frozen:
            raise oserror(errno.EBUSY, f"staging of {self.name} is being sealed")

    def _changed(self, db: sqlite3.Connection) -> None:
        """Record that the tree differs from a fresh view (refresh() only follows latest until then)."""
        if not self._dirty:
            db.execute("UPDATE meta SET value = 1 WHERE key = 'dirty'")
            self._dirty = True

    def _touch(self, db: sqlite3.Connection, dir_id: int, now: int) -> None:
        db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE id = ?", (now, now, dir_id))

