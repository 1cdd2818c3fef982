"""StagingArea: a writable tree over a base version, persistent, shaped for FUSE (a node id is an inode).

It is assembled from TreeOps (tree.py: names) and ContentOps (content.py: bytes); this module owns the
state they share and the lifecycle: open, the generation in use (layout.py), refresh, discard, and the
entry points of seal and status (seal.py).

Thread-safe and synchronous: one RLock guards the database and the descriptor cache, and is never held
across a store fetch. Methods may block on the store (a lookup into a lazy directory reads the local
index; reads of base files and copy-ups may fetch chunks), so call them off any event loop. Errors a
FUSE operation should return are OSError(errno); everything else is an ArtfsError.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from artfs.core.commit import CommitResult
from artfs.core.fetch import ChunkFetcher
from artfs.core.names import check_name
from artfs.core.repo import Repo
from artfs.core.staging.content import BaseFiles, ContentOps, DataFiles
from artfs.core.staging.layout import ROOT_ID, Layout, connect
from artfs.core.staging.nodes import StatFs, WouldBlock
from artfs.core.staging.seal import seal, status
from artfs.core.staging.tree import TreeOps
from artfs.errors import IntegrityError, StoreError

T = TypeVar("T")


def areas_dir(repo: Repo) -> str:
    """The directory holding one staging area per artifact of `repo`'s store (beside its index)."""
    return os.path.join(os.path.dirname(repo.index.path), "staging")


class StagingArea(TreeOps, ContentOps):
    """The staging tree of one artifact in one store, owned by one process (a lock file says so).

    Node ids are inodes: the root is 1, and ids are never reused, not even across seals and discards
    (a new generation starts above the old one's ids), so a stale inode can only miss (ENOENT)."""

    def __init__(self, repo: Repo, name: str, layout: Layout) -> None:
        self.repo = repo
        self.name = name
        self._layout = layout
        self._lock = threading.RLock()
        self._node_locks: dict[int, threading.Lock] = {}
        self._frozen = False
        self._fetcher = ChunkFetcher(repo.store, repo.cache)
        self._wseq: dict[int, int] = {}  # writes per node since open: a digest computed across one is stale
        self._gen = -1
        self._db: sqlite3.Connection | None = None
        self._data: DataFiles | None = None
        self._bases: BaseFiles | None = None
        self._base: int | None = None
        self._mid: str | None = None
        self._dirty = False
        self._quick = False

    @classmethod
    def open(cls, repo: Repo, name: str) -> StagingArea:
        """Open (or create) the staging area of `name`: the same staged changes as before any crash or
        restart; a fresh view of latest (an empty tree for a new artifact) if it has none."""
        check_name(name)
        root = os.path.join(areas_dir(repo), name)
        layout = Layout(root, name)
        area = cls(repo, name, layout)
        try:
            gen = layout.current()
            if gen is None:
                layout.remove_others(-1)
                area._reset(area._latest(), new_gen=0)
            else:
                area._load(gen)
                layout.remove_others(gen)
                try:
                    area.refresh()
                except StoreError:
                    pass  # offline: the staged tree is still usable; its base is known locally
        except BaseException:
            area.close()
            raise
        return area

    @staticmethod
    def existing(repo: Repo) -> list[str]:
        """Artifacts with a staging area in this cache (a new artifact lives only here until sealed)."""
        try:
            names = os.listdir(areas_dir(repo))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(areas_dir(repo), n, "CURRENT")))

    def quick(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a read-only method (getattr, lookup, readlink, base_entry; forget of a node still linked)
        now, if that is cheap: the lock is free and nothing must be materialized or deleted. Otherwise
        raise WouldBlock, having changed nothing, and the caller makes the call in a thread. Lets an
        event loop answer most metadata requests in ~20 µs without ever waiting behind a writer."""
        if not self._lock.acquire(blocking=False):
            raise WouldBlock
        try:
            self._quick = True
            return fn(*args)
        finally:
            self._quick = False
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._close_gen()
            self._layout.close()

    def destroy(self) -> None:
        """Close the area and delete it with everything staged (for an artifact that was never sealed)."""
        with self._lock:
            self._writable()
            self.close()
            shutil.rmtree(self._layout.root, ignore_errors=True)

    def __enter__(self) -> StagingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_gen(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def _latest(self) -> int | None:
        numbers = self.repo.version_numbers(self.name)
        return numbers[-1] if numbers else None

    def _load(self, gen: int) -> None:
        """Open generation `gen`; drop what a crash left half-done (unlinked nodes, stray data files)."""
        db = connect(self._layout.db_path(gen))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("artifact") != self.name:
            db.close()
            raise IntegrityError(f"staging area {self._layout.root} belongs to {meta.get('artifact')!r}")
        db.execute("DELETE FROM nodes WHERE parent IS NULL AND id != ?", (ROOT_ID,))
        self._db, self._gen = db, gen
        self._base, self._mid, self._dirty = meta["base"], meta["manifest"], bool(meta["dirty"])
        self._data = DataFiles(self._layout.data_dir(gen))
        self._data.purge({i for (i,) in db.execute("SELECT id FROM nodes WHERE has_data = 1")})
        self._bases = None
        if self._base is not None:
            header = self.repo.ensure_index(self.repo.version(self.name, self._base))
            self._bases = BaseFiles(self._fetcher, header.packs)
        self._wseq.clear()

    def _reset(self, base: int | None, new_gen: int | None = None) -> None:
        """Replace the whole staged tree with a fresh view of `base`: build the new generation beside the
        old one, then switch (see layout.py). Node ids keep growing, so no inode number is reused."""
        rec = self.repo.version(self.name, base) if base is not None else None
        if rec is not None:
            self.repo.ensure_index(rec)
        with self._lock:
            gen = self._gen + 1 if new_gen is None else new_gen
            first_id = 0
            if self._db is not None:
                first_id = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()[0]
            self._layout.create(gen, base, rec.manifest if rec else None, first_id, time.time_ns())
            self._close_gen()
            self._layout.switch(gen)
            self._load(gen)
            self._node_locks.clear()
        self._layout.remove_others(gen)

    def refresh(self) -> bool:
        """Follow latest while nothing is staged (staging "starts as latest"). True if it moved."""
        with self._lock:
            if self._dirty or self._frozen:
                return False
            base = self._base
        latest = self._latest()
        if latest == base:
            return False
        if latest is not None:  # fetch and index the manifest before taking the lock
            self.repo.ensure_index(self.repo.version(self.name, latest))
        with self._lock:
            if self._dirty or self._frozen or self._base != base:
                return False
            self._reset(latest)
        return True

    def discard(self) -> None:
        """Drop every staged change: back to a fresh view of the current latest."""
        with self._lock:
            self._writable()
            self._frozen = True
        try:
            self._reset(self._latest())
        finally:
            self._frozen = False

    def seal(
        self, message: str = "", aliases: list[str] | tuple[str, ...] = (), type_: str | None = None,
        metadata: dict[str, str] | None = None, force: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> CommitResult:
        """Publish the staged tree as the next version (merging onto a newer latest); see seal.py."""
        return seal(self, message, aliases, type_, metadata, force, progress)

    def status(self) -> list[tuple[str, str]]:
        """[(added|modified|deleted, path)] against the base, in path order; see seal.py."""
        return status(self)

    @property
    def base(self) -> int | None:
        """The version this tree started from; None for an artifact with no version yet."""
        return self._base

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def generation(self) -> int:
        """Bumped by every seal/discard: all node ids of an older generation are gone."""
        return self._gen

    @property
    def dirty(self) -> bool:
        """Whether anything was changed since the last reset (cheap; `status()` says what)."""
        return self._dirty

    @property
    def base_manifest(self) -> str | None:
        """The base version's manifest id (its index serves lookups and directory-order prefetch)."""
        return self._mid

    @property
    def base_packs(self) -> list[str]:
        """The base manifest's pack table, for resolving refs of `base_entry()`."""
        return self._bases.packs if self._bases else []

    def statfs(self) -> StatFs:
        with self._lock:
            st = os.statvfs(self._layout.root)
            files = self._db.execute("SELECT count(*) FROM nodes").fetchone()[0]
        return StatFs(st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail, files + st.f_ffree, st.f_ffree)
