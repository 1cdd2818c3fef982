"""StagingArea: a writable tree over a base version, persistent, shaped for FUSE (a node id is an inode).

It is built from three parts, each owning its state and given its collaborators:
NodeTable (nodes.py: the rows of the live generation, the area lock, the frozen/quick modes), Files
(files.py: attributes and bytes, data files, base files) and Namespace (namespace.py: names, and the
walk of the whole tree). This module owns the lifecycle: open, the generation in use (layout.py),
refresh, discard, reset, and the entry points of seal and status (seal.py, through a small public
surface: freeze/thaw, walk, data_path/data_digest, reset).

Thread-safe and synchronous: one RLock guards the database and the descriptor cache, and is never held
across a store fetch. Methods may block on the store (a lookup into a lazy directory reads the local
index; reads of base files and copy-ups may fetch chunks), so call them off any event loop. Errors a
FUSE operation should return are OSError(errno); everything else is an ArtfsError.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from artfs.core.commit import CommitResult
from artfs.core.content import ChunkReader
from artfs.core.gc_guard import StagingLeases, staging_area_id
from artfs.core.manifest import Entry
from artfs.core.names import check_name
from artfs.core.repo import Repo
from artfs.core.staging.base_files import BaseFiles
from artfs.core.staging.files import DataFiles, Files
from artfs.core.staging.layout import Layout
from artfs.core.staging.namespace import Namespace
from artfs.core.staging.nodes import NodeTable, StagedNode, StatFs, WouldBlock
from artfs.core.staging.seal import area_status, seal_area
from artfs.core.staging.spare import SpareFiles
from artfs.core.staging.upper import UpperTrees
from artfs.errors import ArtfsError, StoreError

T = TypeVar("T")

QUICK_SLOW = 0.02  # seconds: a `quick` call that took longer sends the next ones to threads...
QUICK_BACKOFF = 1.0  # ...for this long


def areas_dir(repo: Repo) -> str:
    """The directory holding one staging area per artifact of `repo`'s store (in the data directory: staged
    data is not disposable; see core/places.py)."""
    return repo.places.staging_root(repo.store.uri)


class AreasClaim:
    """One process (a mount daemon) serves the staging areas of a store from one data directory: held for
    its life, so a second mount sharing them is refused up front with the reason, instead of failing
    every staging access later (each area has its own lock too; this says it once, at mount)."""

    def __init__(self, repo: Repo) -> None:
        root = areas_dir(repo)
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._fd = os.open(os.path.join(root, "owner.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise ArtfsError(
                f"another artfs mount (pid {owner}) already serves the staging of {repo.store.uri} from "
                f"{repo.places.data}: unmount it, or give this mount its own data directory (ARTFS_DATA)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StagingArea:
    """The staging tree of one artifact in one store, owned by one process (a lock file says so).

    Node ids are inodes: the root is 1, and ids are never reused, not even across seals and discards
    (a new generation starts above the old one's ids), so a stale inode can only miss (ENOENT)."""

    def __init__(self, repo: Repo, name: str, layout: Layout) -> None:
        self.repo = repo
        self.name = name
        self._layout = layout
        self._gen = -1
        self._chunks = ChunkReader(repo.store, repo.cache, repo.damage)
        self._nodes = NodeTable(name)
        self._files = Files(self._nodes, repo)
        self._upper = UpperTrees(self._nodes, lambda node_id: self._namespace.path_of(node_id))
        self._namespace = Namespace(self._nodes, self._files, repo, self._upper)
        # its base's chunks stay alive while it exists, on whatever machine (gc_guard.StagingLeases)
        self._leases = StagingLeases(repo.store)
        self._lease_id = staging_area_id(areas_dir(repo), name)
        self._slow_until = 0.0  # monotonic time until which `quick` declines (a slow call was seen)

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
                area._reset(area.latest(), new_gen=0)
            else:
                area._load(gen)
                area._leases.hold(area._lease_id, name, area.base)
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
        """Call a method now if that is cheap: the lock is free and the call needs no store fetch, no
        materializing, copy-up, truncate or deleting of data — a read (getattr, lookup, readlink,
        base_entry), or a small change that is one small transaction or pwrite (create, mkdir, a small
        write, chmod, chown, utimens; forget of a node still linked). Otherwise raise WouldBlock, having
        changed nothing, and the caller makes the call in a thread. Lets an event loop answer most
        requests in tens of µs without ever waiting behind a writer.

        A call that took long anyway (the local disk stalled: a journal commit, a full page cache) makes
        the next `QUICK_BACKOFF` seconds' calls WouldBlock, so a slow disk holds up threads, not a loop."""
        nodes = self._nodes
        if self._slow_until and time.monotonic() < self._slow_until:
            raise WouldBlock
        if not nodes.lock.acquire(blocking=False):
            raise WouldBlock
        t0 = time.perf_counter()
        try:
            nodes.quick = True
            return fn(*args)
        finally:
            nodes.quick = False
            nodes.lock.release()
            if time.perf_counter() - t0 > QUICK_SLOW:
                self._slow_until = time.monotonic() + QUICK_BACKOFF

    def close(self) -> None:
        with self._nodes.lock:
            self._close_gen()
            self._layout.close()

    def destroy(self) -> None:
        """Close the area and delete it with everything staged (for an artifact that was never sealed)."""
        with self._nodes.lock:
            self._nodes.check_writable()
            self.close()
            shutil.rmtree(self._layout.root, ignore_errors=True)
        self._leases.release(self._lease_id)

    def __enter__(self) -> StagingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generations -----------------------------------------------------------------------------

    def _close_gen(self) -> None:
        self._upper.detach()
        self._files.close()
        self._nodes.close()

    def _load(self, gen: int) -> None:
        """Open generation `gen`; drop what a crash left half-done (unlinked nodes, stray data files)."""
        nodes = self._nodes
        nodes.open(self._layout.db_path(gen))
        self._gen = gen
        packs: list[str] = []  # no base version: still a table for staged references
        if nodes.base is not None:
            packs = self.repo.ensure_index(self.repo.version(self.name, nodes.base)).packs
        bases = BaseFiles(self._chunks, packs)
        data = self._layout.data_dir(gen)
        self._files.attach(DataFiles(data, spares=SpareFiles(data)), bases)
        self._upper.attach(self._layout.upper_dir(gen), data)

    def _reset(self, base: int | None, new_gen: int | None = None) -> None:
        """Replace the whole staged tree with a fresh view of `base`: build the new generation beside the
        old one, then switch (see layout.py). Node ids keep growing, so no inode number is reused."""
        rec = self.repo.version(self.name, base) if base is not None else None
        self._leases.hold(self._lease_id, self.name, base)  # before the area reads the new base
        if rec is not None:
            self.repo.ensure_index(rec)
        with self._nodes.lock:
            gen = self._gen + 1 if new_gen is None else new_gen
            first_id = self._nodes.last_id()
            self._layout.create(gen, base, rec.manifest if rec else None, first_id, time.time_ns())
            self._close_gen()
            self._layout.switch(gen)
            self._load(gen)
        self._layout.remove_others(gen)

    def renew_lease(self) -> None:
        """Rewrite this area's lease on its base if it is due (a mount calls this at every poll)."""
        self._leases.hold(self._lease_id, self.name, self.base, force=False)

    def latest(self) -> int | None:
        """The artifact's latest version number in the store now: the newest live one (None: no version
        yet, or every version deleted)."""
        return self.repo.heads(self.name)[0]

    def refresh(self) -> bool:
        """Follow latest while nothing is staged (staging "starts as latest"). True if it moved."""
        nodes = self._nodes
        with nodes.lock:
            if nodes.dirty or nodes.frozen:
                return False
            base = nodes.base
        latest = self.latest()
        if latest == base:
            return False
        if latest is not None:  # fetch and index the manifest before taking the lock
            self.repo.ensure_index(self.repo.version(self.name, latest))
        with nodes.lock:
            if nodes.dirty or nodes.frozen or nodes.base != base:
                return False
            self._reset(latest)
        return True

    def discard(self) -> None:
        """Drop every staged change: back to a fresh view of the current latest."""
        self.freeze()
        try:
            self._reset(self.latest())
        finally:
            self.thaw()

    # --- what sealing uses (seal.py) -------------------------------------------------------------

    def freeze(self) -> None:
        """Refuse every change (EBUSY) until thaw(): a seal or discard is replacing the tree. EBUSY
        here too if one already is."""
        with self._nodes.lock:
            self._nodes.check_writable()
            self._nodes.frozen = True

    def thaw(self) -> None:
        self._nodes.frozen = False

    def reset(self, base: int | None) -> None:
        """Replace the staged tree with a fresh view of version `base` (None: empty), as a new generation."""
        self._reset(base)

    def walk(self) -> Iterator[tuple[Entry, int | None]]:
        """The staged tree in manifest order, as (entry, data id); see Namespace.walk."""
        return self._namespace.walk()

    def data_path(self, data_id: int) -> str:
        """Where the staged content of a walk entry with this data id is (a file on local disk)."""
        if self._upper.walked(data_id):
            return self._upper.data_path(data_id)
        return self._files.data_path(data_id)

    _data_path = data_path  # the name tests/core/test_staging.py uses

    def data_digest(self, data_id: int) -> bytes:
        """That content's digest, as a manifest computes it (cached until the next write)."""
        if self._upper.walked(data_id):
            return self._upper.data_digest(data_id)
        return self._files.data_digest(data_id)

    def seal(
        self, message: str = "", aliases: list[str] | tuple[str, ...] = (), type_: str | None = None,
        metadata: dict[str, str] | None = None, force: bool = False,
        progress: Callable[[int], None] | None = None, run: str | None = None, ttl: float | None = None,
    ) -> CommitResult:
        """Publish the staged tree as the next version (merging onto a newer latest); see seal.py."""
        return seal_area(self, message, aliases, type_, metadata, force, progress, run=run, ttl=ttl)

    def status(self) -> list[tuple[str, str]]:
        """[(added|modified|deleted, path)] against the base, in path order; see seal.py."""
        return area_status(self)

    # --- state -----------------------------------------------------------------------------------

    @property
    def base(self) -> int | None:
        """The version this tree started from; None for an artifact with no version yet."""
        return self._nodes.base

    @property
    def frozen(self) -> bool:
        return self._nodes.frozen

    @property
    def generation(self) -> int:
        """Bumped by every seal/discard: all node ids of an older generation are gone."""
        return self._gen

    @property
    def dirty(self) -> bool:
        """Whether anything was changed since the last reset (cheap; `status()` says what)."""
        return self._nodes.dirty

    @property
    def base_manifest(self) -> str | None:
        """The base version's manifest id (its index serves lookups and directory-order prefetch)."""
        return self._nodes.manifest

    @property
    def base_packs(self) -> list[str]:
        """The base manifest's pack table, for resolving refs of `base_entry()`."""
        return self._files.base_packs

    def statfs(self) -> StatFs:
        with self._nodes.lock:
            st = os.statvfs(self._layout.root)
            files = self._nodes.count()
        return StatFs(st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail, files + st.f_ffree, st.f_ffree)

    # --- names (namespace.py) --------------------------------------------------------------------

    def lookup(self, parent_id: int, name: str) -> StagedNode | None:
        """The node `name` in directory `parent_id`, or None (materializes the directory)."""
        upper = self._upper
        if upper.owns(parent_id):
            if name == ".":
                return upper.getattr(parent_id)
            if name == "..":
                if upper.below(parent_id):
                    return self.getattr(upper.parent_of(parent_id))
                return self._namespace.lookup(parent_id, name)
            return upper.lookup(parent_id, name)
        return self._namespace.lookup(parent_id, name)

    def getattr(self, node_id: int) -> StagedNode:
        if self._upper.owns(node_id):
            return self._upper.getattr(node_id)
        return self._namespace.getattr(node_id)

    def listdir(self, node_id: int) -> list[tuple[str, StagedNode]]:
        """A directory's entries sorted by name (bytes), without '.' and '..'."""
        if self._upper.owns(node_id):
            return self._upper.listdir(node_id)
        return self._namespace.listdir(node_id)

    def readlink(self, node_id: int) -> str:
        if self._upper.below(node_id):
            return self._upper.readlink(node_id)
        return self._namespace.readlink(node_id)

    def path_of(self, node_id: int) -> str:
        """The node's path in the tree ('' for the root). ENOENT once unlinked."""
        if self._upper.below(node_id):
            return self._upper.tree_path(node_id)
        return self._namespace.path_of(node_id)

    def create(self, parent_id: int, name: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> StagedNode:
        """A new empty regular file, owned by `owner` (uid, gid: the caller's; None: the mount's user)
        while staged. Special files (FIFOs, devices, sockets): EPERM."""
        if self._upper.owns(parent_id):
            return self._upper.create(parent_id, name, mode, owner)
        return self._namespace.create(parent_id, name, mode, owner)

    mknod = create

    def mkdir(self, parent_id: int, name: str, mode: int = 0o755, owner: tuple[int, int] | None = None) -> StagedNode:
        if self._upper.owns(parent_id):
            return self._upper.mkdir(parent_id, name, mode, owner)
        return self._namespace.mkdir(parent_id, name, mode, owner)

    def symlink(self, parent_id: int, name: str, target: str, owner: tuple[int, int] | None = None) -> StagedNode:
        """A symlink; versions only keep relative targets inside the tree, so others get EPERM here."""
        if self._upper.owns(parent_id):
            return self._upper.symlink(parent_id, name, target, owner)
        return self._namespace.symlink(parent_id, name, target, owner)

    def link(self, node_id: int, new_parent_id: int, new_name: str) -> StagedNode:
        """A hard link: another name for the file or symlink `node_id` in this area (a directory: EPERM).
        Sealed as one entry per name, sharing chunks."""
        upper = self._upper.owns(new_parent_id)
        if upper != self._upper.below(node_id) and not (upper and node_id in self._upper.roots):
            self._demote(node_id, new_parent_id)  # between the table and an upper tree: all in the table
            upper = False
        if upper:
            return self._upper.link(node_id, new_parent_id, new_name)
        return self._namespace.link(node_id, new_parent_id, new_name)

    def add_references(self, items: list[tuple[str, str, bytes, int, int]],
                       check_only: bool = False) -> list[tuple[int, str]]:
        """Staged references (`artfs ref add`): (path, source token, chunk refs packed against [token],
        size, mtime_ns) each, all or none; read like base files, sealed as reference entries. Returns
        (directory id, name) of what appeared in directories that existed (for the kernel to re-read)."""
        return self._namespace.add_references(items, check_only)

    def is_reference(self, node_id: int) -> bool:
        """Whether an unchanged file is a staged reference rather than a file of the base version."""
        if self._upper.below(node_id):
            return False
        return self._files.is_reference(node_id)

    def unlink(self, parent_id: int, name: str) -> None:
        if self._upper.owns(parent_id):
            return self._upper.unlink(parent_id, name)
        self._namespace.unlink(parent_id, name)

    def rmdir(self, parent_id: int, name: str) -> None:
        if self._upper.owns(parent_id):
            return self._upper.rmdir(parent_id, name)
        self._namespace.rmdir(parent_id, name)

    def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0) -> None:
        """rename(2)/renameat2, with RENAME_NOREPLACE and RENAME_EXCHANGE. Between a directory of the table
        and an upper tree, the upper tree becomes rows of the table first (upper.py)."""
        upper = self._upper.owns(old_parent)
        if upper != self._upper.owns(new_parent):
            self._demote(old_parent, new_parent)
            upper = False
        if upper:
            return self._upper.rename(old_parent, old_name, new_parent, new_name, flags)
        self._namespace.rename(old_parent, old_name, new_parent, new_name, flags)

    def _demote(self, *node_ids: int) -> None:
        """The upper trees holding any of `node_ids` become rows of the table (UpperTrees.demote)."""
        upper = self._upper
        with self._nodes.lock:
            for root in {upper.root_of(n) for n in node_ids if upper.owns(n)}:
                upper.demote(root)

    def forget(self, node_id: int) -> None:
        """The kernel forgot an inode: if it was unlinked, its row and data go now."""
        if self._upper.below(node_id):
            return self._upper.forget(node_id)
        self._namespace.forget(node_id)

    # --- bytes (files.py) ------------------------------------------------------------------------

    def setattr(
        self, node_id: int, mode: int | None = None, size: int | None = None, mtime_ns: int | None = None,
        atime_ns: int | None = None, uid: int | None = None, gid: int | None = None,
    ) -> StagedNode:
        """chmod / chown / truncate / utimens. Owners and atime are kept while staged, not in versions."""
        if self._upper.owns(node_id):
            return self._upper.setattr(node_id, mode, size, mtime_ns, atime_ns, uid, gid)
        return self._files.setattr(node_id, mode, size, mtime_ns, atime_ns, uid, gid)

    def base_entry(self, node_id: int) -> Entry | None:
        """The base version's entry for an unchanged file (serve it with the mount's chunk reader and
        `base_packs`); None once the file has its own data."""
        if self._upper.below(node_id):
            return None
        return self._files.base_entry(node_id)

    def read(self, node_id: int, offset: int, size: int) -> bytes:
        if self._upper.below(node_id):
            return self._upper.read(node_id, offset, size)
        return self._files.read(node_id, offset, size)

    def write(self, node_id: int, offset: int, data: bytes | memoryview) -> int:
        """pwrite into the file (copying a base file up first). Returns bytes written."""
        if self._upper.below(node_id):
            return self._upper.write(node_id, offset, data)
        return self._files.write(node_id, offset, data)

    def truncate(self, node_id: int, size: int) -> None:
        if self._upper.below(node_id):
            return self._upper.truncate(node_id, size)
        self._files.truncate(node_id, size)

    def fsync(self, node_id: int) -> None:
        if self._upper.below(node_id):
            return self._upper.fsync(node_id)
        self._files.fsync(node_id)
