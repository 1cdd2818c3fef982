"""Where a staging area lives on disk, and how it is replaced atomically.

    <cache_dir>/stores/<store tag>/staging/<artifact>/
        lock                  flock'd by the one process that owns the area (two owners would corrupt it)
        CURRENT               the name of the live generation directory, replaced with rename()
        gen-<n>/staging.db    nodes and meta (SQLite, WAL: a committed change survives kill -9)
        gen-<n>/data/<id>     content of new or modified files, written in place
        gen-<n>/upper/<id>    the content of directory <id>, made in staging: real files and directories
                              (see upper.py)

A seal or a discard ends in a fresh view of the new latest. That view is built in a new generation
directory, fsynced, and made live by renaming CURRENT: a crash at any point leaves either the old staged
changes or the fresh view, never a mix. Whatever generation lost is removed on the next open.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import threading

from artfs.core.manifest import DIR
from artfs.errors import ArtfsError

log = logging.getLogger(__name__)

ROOT_ID = 1
CHECKPOINT_EVERY = 256  # commits between WAL checkpoints (a create writes ~4 pages; SQLite's own: 1,000 pages)
# A commit writes every page it changed whole into the WAL: a create changes ~4 (the row's, its directory's
# row's, the name index's, sqlite_sequence) to add ~150 bytes. 1 KiB pages rather than SQLite's 4 KiB
# write a quarter of the bytes (measured: a create's transaction 29 -> 22 µs, WAL frames 78 -> 23 MB per
# 5,000 creates) for a B-tree one level deeper. Set when a generation is made; older ones keep theirs.
PAGE_SIZE = 1024
SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
CREATE TABLE nodes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the inode; never reused, not even across generations
    parent INTEGER,       -- NULL for the root and for unlinked nodes waiting for forget()
    name BLOB,            -- UTF-8 (surrogateescape) bytes, so ORDER BY name is the manifest's order
    kind INTEGER NOT NULL,  -- manifest.FILE / DIR / LINK
    mode INTEGER NOT NULL,  -- permission bits only
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,  -- base files, symlinks; a data file's size is its file's size
    base_path BLOB,       -- file: content is the base entry at base_path; dir: lazy, children are base_path's
    has_data INTEGER NOT NULL DEFAULT 0,  -- file content is data/<id>
    target BLOB,          -- symlinks
    digest BLOB,          -- cached content digest of data/<id>; cleared by the first write after it is set
    uid INTEGER,          -- owner while staged (the creator's); NULL: the mount's user (base entries)
    gid INTEGER,
    atime_ns INTEGER,     -- NULL: the same as mtime (base entries)
    nlink INTEGER NOT NULL DEFAULT 1,  -- names of a file or symlink (hard links); 0 never stored
    inode INTEGER,        -- a hard link's extra name: the node it names (that row has everything else)
    source TEXT,          -- a staged reference: its source token (core/references.py), content is `chunks`
    chunks BLOB           -- a staged reference's chunk refs, packed against the one-entry table [source]
);
CREATE UNIQUE INDEX dirents ON nodes(parent, name) WHERE parent IS NOT NULL;
CREATE INDEX links ON nodes(inode) WHERE inode IS NOT NULL;
CREATE TABLE upper_roots(id INTEGER PRIMARY KEY);  -- directories whose content is upper/<id> (upper.py)
CREATE TABLE upper_moves(id INTEGER PRIMARY KEY, path BLOB);  -- files of a demoted tree on their way to data/
"""
# Columns added since the first layout: (name, declaration). An area made before them is upgraded in
# place when opened; its rows keep NULL owners and atimes, i.e. what they showed before.
ADDED_COLUMNS = [
    ("uid", "INTEGER"), ("gid", "INTEGER"), ("atime_ns", "INTEGER"), ("nlink", "INTEGER NOT NULL DEFAULT 1"),
    ("inode", "INTEGER"), ("source", "TEXT"), ("chunks", "BLOB"),
]


def connect(path: str) -> sqlite3.Connection:
    """WAL + synchronous=NORMAL: a committed transaction survives the process being killed (the OS has
    it); fsync() of a file adds a WAL checkpoint for power loss. One connection, guarded by the area's lock,
    the only one ever open on the database while the area is (Layout's lock says whose it is): so
    locking_mode=EXCLUSIVE, which takes SQLite's file locks once instead of some 14 fcntl() calls per
    changed file, and keeps the WAL index in the heap rather than in a shared -shm mapping.
    No automatic checkpoints: see Checkpointer."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before the first access: the WAL index then lives in the heap
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


class Checkpointer:
    """Copies a database's WAL back into it from a thread of its own, never inside a commit.

    SQLite's automatic checkpoint runs inside whichever commit takes the WAL past 1,000 pages and, with
    synchronous=NORMAL, fsyncs the WAL and the database there: tens of ms on a busy disk, under the area
    lock, maybe on an event loop (StagingArea.quick). Here a commit only counts; every `every` commits wake
    a thread that takes the area lock (`lock`: calls meanwhile go to threads and wait, as behind any slow
    call) and checkpoints on the writer's own connection (`db`). Run there, with nothing writing, the
    checkpoint copies every frame, so the next commit starts the WAL over at its beginning: it stays a few
    MB. (Run on a connection of its own beside the writer, a checkpoint never caught up during a burst of
    changes — `tar x` of 5,000 files left a 126 MB WAL — and every commit appended to it: fresh pages, a
    bigger WAL index for every read to search.) Most of a checkpoint's time is its first step, an fsync
    of the WAL that writes out every frame since the last one (~4 MB: ~5 ms here); the thread does that
    fsync itself before taking the lock, so the checkpoint's own finds little left and the lock is held
    for the copy. Durability is unchanged: a commit is in the WAL, which is what survives a kill -9."""

    def __init__(self, db: sqlite3.Connection, path: str, lock: threading.RLock, name: str,
                 every: int = CHECKPOINT_EVERY) -> None:
        self._db = db
        self._wal = path + "-wal"
        self._lock = lock
        self._name = name
        self._every = every
        self._commits = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """A transaction committed (the area lock held: no race on the count)."""
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="artfs-wal-checkpoint", daemon=True)
                self._thread.start()
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._sync_wal()
            # never block on the lock: `close` holds it while it waits for this thread
            while not self._lock.acquire(timeout=0.05):
                if self._stopping:
                    return
            try:
                if self._stopping:
                    return
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:  # e.g. a full disk: the WAL grows until a later one works
                log.warning("staging of %s: checkpoint failed: %s", self._name, e)
            finally:
                self._lock.release()

    def _sync_wal(self) -> None:
        """fsync the WAL without the lock (writers may append meanwhile: what they add, the checkpoint's
        own fsync covers)."""
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        except OSError as e:  # the checkpoint's own fsync will meet it too, and say so
            log.debug("staging of %s: fsync of the WAL: %s", self._name, e)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be in); closing the database checkpoints the rest."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def upgrade(db: sqlite3.Connection) -> None:
    """Bring a generation's database made by an older artfs to the current schema (one transaction;
    ADD COLUMN with a constant default rewrites no row, so this is instant on any size)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
    missing = [(n, decl) for n, decl in ADDED_COLUMNS if n not in have]
    no_roots = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'upper_moves'").fetchone() is None
    if not missing and not no_roots:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for n, decl in missing:
            db.execute(f"ALTER TABLE nodes ADD COLUMN {n} {decl}")
        db.execute("CREATE INDEX IF NOT EXISTS links ON nodes(inode) WHERE inode IS NOT NULL")
        db.execute("CREATE TABLE IF NOT EXISTS upper_roots(id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE IF NOT EXISTS upper_moves(id INTEGER PRIMARY KEY, path BLOB)")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Layout:
    """The directory of one staging area: its lock, its generations, and the switch between them."""

    def __init__(self, root: str, name: str) -> None:
        self.root = root
        self.name = name
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ArtfsError(
                    f"the staging area of {name!r} is open in another process (only one mount or daemon "
                    f"per cache directory may own it): {root}"
                ) from None
            raise
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # --- generations -----------------------------------------------------------------------------

    def current(self) -> int | None:
        """The live generation, or None if there is none yet (a new area, or a crash during the first)."""
        try:
            with open(os.path.join(self.root, "CURRENT")) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        if not text.startswith("gen-") or not text[4:].isdigit():
            raise ArtfsError(f"staging area {self.root} is damaged: CURRENT says {text!r}")
        gen = int(text[4:])
        if not os.path.exists(self.db_path(gen)):
            raise ArtfsError(f"staging area {self.root} is damaged: generation {gen} is missing")
        return gen

    def gen_dir(self, gen: int) -> str:
        return os.path.join(self.root, f"gen-{gen}")

    def db_path(self, gen: int) -> str:
        return os.path.join(self.gen_dir(gen), "staging.db")

    def data_dir(self, gen: int) -> str:
        return os.path.join(self.gen_dir(gen), "data")

    def upper_dir(self, gen: int) -> str:
        return os.path.join(self.gen_dir(gen), "upper")

    def create(self, gen: int, base: int | None, manifest: str | None, first_id: int, now_ns: int) -> None:
        """Write generation `gen` as a fresh view of `base` (None: an empty tree), durably, not yet live."""
        gdir = self.gen_dir(gen)
        shutil.rmtree(gdir, ignore_errors=True)
        os.makedirs(os.path.join(gdir, "data"), mode=0o700)
        os.makedirs(os.path.join(gdir, "upper"), mode=0o700)
        db = sqlite3.connect(self.db_path(gen), isolation_level=None)
        try:
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before the first table: see PAGE_SIZE
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript("BEGIN;\n" + SCHEMA)  # the schema and the rows below: one transaction, one fsync
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("artifact", self.name), ("base", base), ("manifest", manifest), ("dirty", 0),
                 ("created_ns", now_ns)],
            )
            # The root is lazy over the base's root directory ('' in the base's index).
            db.execute(
                "INSERT INTO nodes(id, parent, name, kind, mode, mtime_ns, ctime_ns, base_path) "
                "VALUES (?, NULL, NULL, ?, ?, ?, ?, ?)",
                (ROOT_ID, DIR, 0o755, now_ns, now_ns, b"" if base is not None else None),
            )
            db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'nodes'", (max(first_id, ROOT_ID),))
            db.execute("COMMIT")
        finally:
            db.close()
        _fsync_dir(os.path.join(gdir, "data"))
        _fsync_dir(os.path.join(gdir, "upper"))
        _fsync_dir(gdir)
        _fsync_dir(self.root)

    def switch(self, gen: int) -> None:
        """Make `gen` live: one rename of CURRENT (the commit point of a reset)."""
        tmp = os.path.join(self.root, "CURRENT.tmp")
        with open(tmp, "w") as f:
            f.write(f"gen-{gen}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.root, "CURRENT"))
        _fsync_dir(self.root)

    def remove_others(self, live: int) -> None:
        """Delete every generation but the live one (the old one after a switch, leftovers of crashes)."""
        for entry in os.listdir(self.root):
            if entry.startswith("gen-") and entry != f"gen-{live}":
                shutil.rmtree(os.path.join(self.root, entry), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, "CURRENT.tmp"))
