"""The staging directories of a mount: one StagingArea per artifact, opened on first use, their nodes
placed in the mount's inode space, and what the kernel must forget when an area's tree is replaced.

    MOUNT/animals/staging/...    node n of the area in slot k is inode (k << SLOT_BITS) | n

Slots are handed out per artifact name for the mount's life, and the staging core never reuses a node
id (not even across seals), so an inode names one node for good; the tree's own inodes stay far below
2**SLOT_BITS. A seal, discard or refresh replaces an area's whole tree (a new generation): the old ids
are gone (ENOENT), and `_replaced` makes the kernel drop every name it was told about under that
staging root, and the root's attributes. Only names directly under the root need dropping: the kernel
prunes what hangs below them.

Calls into a StagingArea may block (the local disk, chunk fetches of a copy-up, a lock held by another
call), so they run in worker threads (`run`, through handoff.py: cheaper than trio.to_thread). Even so a
hop costs 5-10x a point read of the area's database, and more than a small change (one SQLite commit into
the WAL, a small pwrite), so cheap calls that find the area's lock free run on the loop (`peek`, see
StagingArea.quick); the loop never waits on that lock.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from pyfuse3 import FUSEError

from artfs.core.commit import CommitResult
from artfs.core.manifest import FILE
from artfs.core.names import check_alias, check_name
from artfs.core.records import VersionRecord
from artfs.core.references import expand, staged_reference
from artfs.core.staging import StagingArea, WouldBlock
from artfs.core.staging.area import AreasClaim
from artfs.core.staging.layout import ROOT_ID
from artfs.errors import ArtfsError, InvalidName
from artfs.fs.errnos import as_fuse_error, core_errors
from artfs.fs.handoff import Handoff
from artfs.fs.notify import invalidate
from artfs.fs.tree import Tree

log = logging.getLogger(__name__)

T = TypeVar("T")
SLOT_BITS = 40
NODE_MASK = (1 << SLOT_BITS) - 1
STAGING = "staging"


def is_staging(ino: int) -> bool:
    return ino > NODE_MASK


WRITERS_WAIT = 30.0  # seconds a seal waits for files open for writing to be closed (seal --wait)


class SealProgress:
    """A seal's progress: the staged tree's bytes, and bytes through the committer so far (the seal's
    thread writes both; the control server reads them)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n


def _measure_and_seal(area: StagingArea, progress: SealProgress | None, message: str, aliases: list[str],
                      type_: str | None, metadata: dict[str, str], force: bool, run: str | None = None,
                      ttl: float | None = None) -> CommitResult:
    """Worker thread: measure the tree for the progress bar, then seal."""
    if progress is not None:
        progress.total = sum(e.size for e, _ in area.walk() if e.kind == FILE)
    return area.seal(message, aliases, type_, metadata, force, progress=progress, run=run, ttl=ttl)


class Area:
    """One artifact's staging directory as the mount sees it."""

    __slots__ = ("name", "slot", "area", "opening", "gen", "root_names", "base_readers", "open_files", "writers",
                 "draining", "writers_closed")

    def __init__(self, name: str, slot: int) -> None:
        self.name = name
        self.slot = slot
        self.area: StagingArea | None = None
        self.opening = trio.Lock()
        self.gen = -1
        self.root_names: set[str] = set()  # names the kernel got under the root in this generation
        self.base_readers: dict[int, set[int]] = {}  # node id → open handles reading it from the base
        self.open_files: dict[int, int] = {}  # node id → open handles (and opens in progress)
        self.writers: dict[int, int] = {}  # handle → node id, for handles open for writing
        self.draining = False  # a seal waits for writers to close: new opens for writing get EBUSY
        self.writers_closed = trio.Event()  # set (and replaced) whenever a writer closes

    def writer_closed(self, fh: int) -> None:
        if self.writers.pop(fh, None) is not None:
            self.writers_closed.set()
            self.writers_closed = trio.Event()

    def ino(self, node_id: int) -> int:
        return (self.slot << SLOT_BITS) | node_id

    @property
    def root_ino(self) -> int:
        return self.ino(ROOT_ID)


class Areas:
    """The staging areas of one mount (see the module docstring)."""

    def __init__(self, tree: Tree, control_path: str) -> None:
        self.tree = tree
        self.repo = tree.repo
        self.control_path = control_path
        self.rescan: Callable[[], Awaitable[None]] | None = None  # the daemon's catalog refresh
        # after a seal published: re-point open handles of staged files (node → path) at the new version
        self.sealed: Callable[[Area, dict[int, str], VersionRecord], Awaitable[None]] | None = None
        self._by_name: dict[str, Area] = {}
        self._by_slot: dict[int, Area] = {}
        self._next_slot = 1
        self._lookups: dict[int, int] = {}  # staging inode → the kernel's lookup count
        self._claim: AreasClaim | None = None
        self._handoff = Handoff()  # the worker threads of `run`

    def load_local(self) -> None:
        """Claim the store's staging areas for this mount, and show every artifact that has one here (a
        new one lives only here until sealed). Blocking: call before the loop starts."""
        self._claim = AreasClaim(self.repo)
        self.tree.local.update(StagingArea.existing(self.repo))

    def exists(self, name: str) -> bool:
        return name in self.tree.catalog or name in self.tree.local

    def of(self, name: str) -> Area:
        a = self._by_name.get(name)
        if a is None:
            a = self._by_name[name] = self._by_slot[self._next_slot] = Area(name, self._next_slot)
            self._next_slot += 1
        return a

    async def locate(self, ino: int) -> tuple[Area, StagingArea, int]:
        """(area, its StagingArea, node id) of a staging inode. The area opens here if need be: the kernel
        may use an inode from a listing of the artifact directory without looking it up first."""
        return self.located(ino) or await self._locate(ino)

    def located(self, ino: int) -> tuple[Area, StagingArea, int] | None:
        """`locate` without awaiting, for an area already open (every request but a first one): None
        otherwise. Every staging request starts here: no coroutine is made for it."""
        a = self._by_slot.get(ino >> SLOT_BITS)
        if a is None or a.area is None or self._by_name.get(a.name) is not a:
            return None
        return a, a.area, ino & NODE_MASK

    async def _locate(self, ino: int) -> tuple[Area, StagingArea, int]:
        a = self._by_slot.get(ino >> SLOT_BITS)
        if a is None or self._by_name.get(a.name) is not a:
            raise FUSEError(errno.ENOENT)  # an area removed
        return a, await self.open(a), ino & NODE_MASK

    def name_of(self, ino: int) -> str | None:
        a = self._by_slot.get(ino >> SLOT_BITS)
        return a.name if a else None

    async def open(self, a: Area) -> StagingArea:
        """The area, opened on first use (in a thread: a new one fetches latest's manifest)."""
        if a.area is None:
            async with a.opening:
                if a.area is None:
                    area = await trio.to_thread.run_sync(StagingArea.open, self.repo, a.name)
                    a.gen = area.generation
                    a.area = area
                    log.info("staging of %s opened (%s)", a.name, _base_label(area))
        return a.area

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking call into an area, in a worker thread; its OSError(errno) is the FUSE answer."""
        with core_errors():
            return await self._handoff.run(fn, *args)

    async def peek(self, area: StagingArea, fn: Callable[..., T], *args: Any) -> T:
        """A cheap call (getattr, lookup, readlink, open; create, mkdir, a small write, chmod...): on the
        loop when the area lets it — its lock is free, nothing needs materializing, copying up or deleting,
        and no recent quick call was slow (StagingArea.quick: tens of µs, measured) — else in a thread."""
        try:
            return area.quick(fn, *args)
        except WouldBlock:
            pass
        except OSError as e:  # core_errors' rule, without a context manager on the hottest path
            raise as_fuse_error(e) from None
        return await self.run(fn, *args)

    def close(self) -> None:
        """At unmount: release every area (its lock, its database), then the claim on them all."""
        for a in self._by_name.values():
            if a.area is not None:
                try:
                    a.area.close()
                except Exception:
                    log.exception("closing the staging of %s", a.name)
                a.area = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    # --- kernel bookkeeping ------------------------------------------------------------------------

    def remember(self, ino: int) -> None:
        """The kernel got this inode (a lookup, a create, a readdirplus entry): count it."""
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    async def forget(self, pairs: list[tuple[int, int]]) -> None:
        """The kernel dropped inodes: an unlinked node it no longer knows loses its row and data."""
        gone: dict[int, list[int]] = {}
        for ino, n in pairs:
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
                continue
            self._lookups.pop(ino, None)
            a = self._by_slot.get(ino >> SLOT_BITS)
            if a is not None and a.area is not None and ino & NODE_MASK != ROOT_ID:
                gone.setdefault(a.slot, []).append(ino & NODE_MASK)
        for slot, ids in gone.items():
            area = self._by_slot[slot].area
            if area is not None:
                try:
                    await self.peek(area, _forget_all, area, ids)
                except Exception:  # forget must never raise: the next open drops unlinked rows anyway
                    log.exception("forgetting staging nodes of %s", self._by_slot[slot].name)

    async def _replaced(self, a: Area) -> None:
        """After a new generation: the kernel forgets the old tree (in a thread: this may wait for
        requests in progress on the root, which the loop must keep serving)."""
        assert a.area is not None
        a.gen = a.area.generation
        names, a.root_names = a.root_names, set()
        stale = [("entry", a.root_ino, n) for n in sorted(names)] + [("inode", a.root_ino, "")]
        await trio.to_thread.run_sync(invalidate, stale)

    async def catalog_changed(self, names: set[str]) -> None:
        """Latest moved: an untouched staging follows it (it "starts as latest")."""
        for name in sorted(names):
            a = self._by_name.get(name)
            if a is None or a.area is None or a.area.dirty:
                continue
            try:
                moved = await trio.to_thread.run_sync(a.area.refresh)
            except (ArtfsError, OSError) as e:
                log.warning("staging of %s cannot follow latest yet: %s", name, e)
                continue
            if moved:
                log.info("staging of %s now shows %s", name, _base_label(a.area))
                await self._replaced(a)

    async def renew_leases(self) -> None:
        """Keep every open area's lease on its base version's chunks fresh (core/gc_guard.py: garbage
        collection on any machine keeps them while the area exists); no request unless one is due."""
        for a in list(self._by_name.values()):
            if a.area is not None:
                await trio.to_thread.run_sync(a.area.renew_lease)

    # --- artifacts that exist only here ------------------------------------------------------------

    async def create_artifact(self, name: str) -> None:
        """`mkdir MOUNT/NAME`: a new artifact, with an empty staging, published at its first seal."""
        try:
            check_name(name)
        except InvalidName as e:
            log.warning("mkdir %s refused: %s", name, e)
            raise FUSEError(errno.EINVAL) from None
        if self.exists(name):
            raise FUSEError(errno.EEXIST)
        await self.open(self.of(name))
        self.tree.local.add(name)
        log.info("new artifact %s: staged here until its first seal", name)

    async def remove_artifact(self, name: str) -> None:
        """`rmdir MOUNT/NAME` of an artifact never sealed whose staging is empty: forget it."""
        if name in self.tree.catalog:
            raise FUSEError(errno.EROFS)
        if name not in self.tree.local:
            raise FUSEError(errno.ENOENT)
        a = self.of(name)
        area = await self.open(a)
        if await self.run(area.listdir, ROOT_ID):
            raise FUSEError(errno.ENOTEMPTY)
        await self.run(area.destroy)
        a.area = None
        del self._by_name[name]  # a new artifact of that name gets a new slot: no inode is reused
        self.tree.local.discard(name)
        log.info("artifact %s removed (it was never sealed)", name)

    # --- the control requests (seal, status, discard) ----------------------------------------------

    async def _named(self, name: str) -> tuple[Area, StagingArea]:
        if not isinstance(name, str) or not self.exists(name):
            raise ArtfsError(f"no artifact {name!r} in this mount")
        a = self.of(name)
        return a, await self.open(a)

    async def seal(self, name: str, message: str = "", aliases: list[str] | None = None,
                   type_: str | None = None, metadata: dict[str, str] | None = None, force: bool = False,
                   progress: SealProgress | None = None, wait: float = WRITERS_WAIT, run: str | None = None,
                   ttl: float | None = None) -> dict:
        """Publish `name`'s staging (in a thread; writes get EBUSY meanwhile), then show the result:
        the new version in the tree, a fresh staging in the kernel. `run`: the run that asked (the version
        is its output; control_server.py finds it from the requesting process).

        A file is sealed whole or not at all: the seal first waits up to `wait` seconds for every handle
        open for writing to close (new opens for writing get EBUSY meanwhile), and refuses, naming the
        files and publishing nothing, if some stay open. Their writers keep working either way."""
        aliases = list(aliases or [])
        for alias in aliases:
            check_alias(alias)
        if type_ is not None:
            check_name(type_, "type")
        a, area = await self._named(name)
        a.draining = True
        try:
            await self._wait_for_writers(a, area, wait)
            open_paths = await self._open_paths(a, area)
            result = await trio.to_thread.run_sync(
                _measure_and_seal, area, progress, message, aliases, type_, metadata or {}, force, run, ttl)
            if result.record is not None and self.sealed is not None and open_paths:
                await self.sealed(a, open_paths, result.record)
        except OSError as e:
            raise ArtfsError(_busy(name) if e.errno == errno.EBUSY else f"seal of {name} failed: {e}") from None
        finally:
            a.draining = False
            if a.area is area and a.gen != area.generation:
                await self._replaced(a)
        if result.record is not None:
            log.info("sealed %s (%d files, %d bytes uploaded)", result.ref, result.files, result.uploaded_bytes)
            if self.rescan is not None:
                await self.rescan()
        return {**result.as_json(), "artifact": name}

    async def _open_paths(self, a: Area, area: StagingArea) -> dict[int, str]:
        """Where the files open in this area are (node → path), before a seal replaces the nodes."""
        out = {}
        for node in list(a.open_files):
            try:
                out[node] = await self.run(area.path_of, node)
            except OSError:
                pass  # unlinked while open: not in the version
        return out

    async def _wait_for_writers(self, a: Area, area: StagingArea, wait: float) -> None:
        with trio.move_on_after(wait):
            while a.writers:
                await a.writers_closed.wait()
        if a.writers:
            nodes = sorted(set(a.writers.values()))
            paths = []
            for node in nodes[:10]:
                try:
                    paths.append(await self.run(area.path_of, node))
                except OSError:  # unlinked while open: it will not be sealed anyway
                    paths.append(f"(deleted file {node})")
            more = f" and {len(nodes) - 10} more" if len(nodes) > 10 else ""
            raise ArtfsError(
                f"not sealed: {len(nodes)} file(s) in {a.name}/staging still open for writing after {wait:g} s: "
                f"{', '.join(paths)}{more} (close them, or seal with a longer --wait); nothing was published"
            )

    async def status(self, name: str) -> dict:
        _, area = await self._named(name)
        changes = await trio.to_thread.run_sync(area.status)
        return {"artifact": name, "base": _base_ref(name, area.base),
                "changes": [{"change": c, "path": p} for c, p in changes]}

    async def discard(self, name: str) -> dict:
        a, area = await self._named(name)
        try:
            await trio.to_thread.run_sync(area.discard)
        except OSError as e:
            raise ArtfsError(_busy(name) if e.errno == errno.EBUSY else f"discard of {name} failed: {e}") from None
        finally:
            if a.area is area and a.gen != area.generation:
                await self._replaced(a)
        log.info("staging of %s discarded (%s)", name, _base_label(area))
        return {"artifact": name, "base": _base_ref(name, area.base)}

    async def add_reference(self, name: str, path: Any, uri: Any, checksum: bool = True,
                            max_objects: Any = None) -> dict:
        """`artfs ref add`: the object at `uri` (or every object under it, a prefix) staged at `path` (a
        prefix: as a directory), pinned now and, with `checksum`, read and chunked now — in a thread: the
        network — then added all at once; read through the mount like base files, sealed as references."""
        if not isinstance(path, str) or not isinstance(uri, str):
            raise ArtfsError("ref add needs a path and a URI")
        if max_objects is not None and (not isinstance(max_objects, int) or isinstance(max_objects, bool)):
            raise ArtfsError("max_objects must be a whole number")
        a, area = await self._named(name)
        rel = path.strip("/")

        def resolve() -> list[tuple[str, str, bytes, int, int]]:
            found = expand(uri, rel or None, bool(checksum), max_objects)
            if any(not p for p, _, _ in found):
                raise ArtfsError(f"{uri} names one object: give its file's path in staging, not the staging "
                                 "directory itself")
            # a taken path fails before any object is read (checked again when adding, atomically)
            area.add_references([(p, "", b"", 0, 0) for p, _, _ in found], check_only=True)
            return [(p, *staged_reference(source), source.pin.size, mtime_ns) for p, source, mtime_ns in found]

        try:
            items = await trio.to_thread.run_sync(resolve)
            made = await trio.to_thread.run_sync(area.add_references, items)
        except OSError as e:
            words = {errno.EEXIST: "already exists", errno.ENOTDIR: "is a file, not a directory",
                     errno.EBUSY: "cannot change now: staging is being sealed or discarded"}
            what = words.get(e.errno or 0) or e.strerror or str(e)
            raise ArtfsError(f"{a.name}/staging/{e.filename or rel}: {what}; nothing was added") from None
        stale = [inv for parent, n in made for inv in (("entry", a.ino(parent), n), ("inode", a.ino(parent), ""))]
        await trio.to_thread.run_sync(invalidate, stale)
        log.info("staged %d reference(s) to %s in %s", len(items), uri, a.name)
        return {"artifact": name, "uri": uri, "files": [{"path": p, "size": size} for p, _, _, size, _ in items],
                "bytes": sum(size for *_, size, _ in items)}

    def xattrs(self, a: Area) -> dict[str, bytes]:
        """On a staging directory: where its daemon listens (artfs seal/status/discard use it)."""
        out = {"user.artfs.control": self.control_path.encode(), "user.artfs.artifact": a.name.encode()}
        if a.area is not None and a.area.base is not None:
            out["user.artfs.base"] = f"{a.name}:v{a.area.base}".encode()
        return out


def _forget_all(area: StagingArea, ids: list[int]) -> None:
    for node_id in ids:
        area.forget(node_id)


def _busy(name: str) -> str:
    return f"staging of {name} is being sealed or discarded; try again when that is done"


def _base_ref(name: str, base: int | None) -> str | None:
    return None if base is None else f"{name}:v{base}"


def _base_label(area: StagingArea) -> str:
    return f"a view of {area.name}:v{area.base}" if area.base is not None else "empty: a new artifact"

