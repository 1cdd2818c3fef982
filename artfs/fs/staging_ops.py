"""FUSE operations inside staging directories, mapped onto the artifact's StagingArea. The core does the
work; this module maps inodes (areas.py), handles and errnos, and picks where a read is served from.

- **Timeouts are short** (1 s; a version's are a day): a staging tree changes. Every change made through
  the mount is seen by the kernel anyway; what it cannot see (a seal, discard or refresh replacing the
  whole tree) is invalidated explicitly by areas.py.
- **The kernel's writeback cache** (on unless the mount says `-o no_writeback_cache`): writes land in
  the page cache and reach `write` here in big batches, later; the kernel owns a file's size and mtime
  meanwhile, and writes every dirty page back before close() returns (and before RELEASE, so a seal that
  waits for writers sees every byte). Durable against a daemon crash: what fsync() or close() returned
  for; a failed write-back (ENOSPC) shows at fsync/close. An open keeps the page cache: a node id is
  never reused and nothing changes a live node's bytes behind the kernel. Without the writeback cache,
  every write is in the area's data file when write() returns, and an open drops the page cache.
- **Unchanged base files are read through the mount's Reader** (lazy, chunk-cached, prefetched) from
  the base version's chunks. The first write or truncate of such a node switches its open handles to
  the area (the core copies it up), before the write is answered.
- **Nothing here blocks the loop for long**: cheap requests run on the loop when the area's lock is free
  (areas.peek, StagingArea.quick): reads (getattr, lookup, readlink, open without O_TRUNC) and small
  changes — create, mkdir, symlink, link, chmod/chown/utimens (one SQLite commit into the WAL, no
  fsync; a create links a data file a thread made ahead, core/staging/spare.py; a chmod or chown to
  what the file has commits nothing) and writes up to QUICK_WRITE (a pwrite into the page cache; should
  the kernel throttle it — the daemon is not an IO flusher where PR_SET_IO_FLUSHER is refused — one slow
  quick call sends the next second's calls to threads, StagingArea.quick). What may take long runs in a worker thread
  (areas.run): big writes, truncates and copy-ups (they may fetch chunks), unlink, rmdir, rename,
  listings, fsync; so does any request that finds the lock taken, or needs a directory materialized. A
  `cp -r` of small files then costs no thread hop at all.
- During a seal the core answers every change with EBUSY; reads go on.
- **Errors become errnos once**: Ops wraps every handler it calls here in errnos.handler_errors, but
  write, fsync and a read (whose version part read_version maps): those are wrapped here instead.
"""

from __future__ import annotations

import errno
import os
import stat
from functools import partial
from typing import Any

import pyfuse3
import trio
from pyfuse3 import FUSEError

from artfs.core.content import FileLayout
from artfs.core.manifest import FILE, LINK
from artfs.core.records import VersionRecord
from artfs.core.staging import StagedNode, StagingArea
from artfs.core.staging.layout import ROOT_ID
from artfs.fs.areas import Area, Areas
from artfs.fs.errnos import handler_errors, read_version
from artfs.fs.reader import OpenFile, Reader
from artfs.fs.run_capture import Capture
from artfs.fs.tree import DIR_SIZE, ArtifactNode, Tree

TIMEOUT = 1.0
STAGING_BLKSIZE = 1 << 20  # st_blksize of staging: cp and friends write in 1 MiB requests, a quarter of the round trips
FIRST_FH = 1 << 48  # handles of staging files and directories; the read-only ones count up from 1
QUICK_WRITE = 128 << 10  # a write up to this size may be served on the loop (areas.peek); bigger ones: a thread


class _File:
    __slots__ = ("a", "area", "node", "base", "written", "sealed_attrs")

    def __init__(self, a: Area, area: StagingArea, node: int) -> None:
        self.a = a
        self.area = area
        self.node = node
        self.base: OpenFile | None = None  # reading an unchanged base file through the Reader
        self.written = False  # the node's content changed since this handle was opened
        self.sealed_attrs: pyfuse3.EntryAttributes | None = None  # its node sealed and gone: as in the version


class _Dir:
    __slots__ = ("a", "area", "node", "entries")

    def __init__(self, a: Area, area: StagingArea, node: int) -> None:
        self.a = a
        self.area = area
        self.node = node
        self.entries: list[tuple[bytes, pyfuse3.EntryAttributes, bool]] | None = None


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _owner(ctx: pyfuse3.RequestContext) -> tuple[int, int]:
    """Who made a new node: the caller, as on any filesystem (under allow_other, another user)."""
    return ctx.uid, ctx.gid


def _prepare_open(area: StagingArea, node_id: int, truncate: bool) -> Any:
    """Worker thread: check it is a file, truncate (O_TRUNC), say whether it reads from the base."""
    node = area.getattr(node_id)
    if node.is_dir:
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    if node.kind == LINK:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    if truncate:
        area.truncate(node_id, 0)
        return None, False
    entry = area.base_entry(node_id)
    return entry, entry is not None and area.is_reference(node_id)


def _unlink(area: StagingArea, parent: int, name: str, open_files: dict[int, int]) -> None:
    """Worker thread: unlink, and drop the node's row and data at once when no handle has it open (an
    open in progress counts): the kernel's later FORGET then finds nothing to delete, a cheap read."""
    node = area.lookup(parent, name)
    area.unlink(parent, name)
    if node is not None and node.nlink <= 1 and not open_files.get(node.id):  # its last name: nothing holds it
        area.forget(node.id)


def _listing(area: StagingArea, node_id: int) -> tuple[StagedNode, StagedNode | None, list[tuple[str, StagedNode]]]:
    """Worker thread: a directory, its parent (None for the staging root) and its entries."""
    node = area.getattr(node_id)
    if not node.is_dir:
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    parent = None if node_id == ROOT_ID else area.lookup(node_id, "..")
    return node, parent, area.listdir(node_id)


def _closed(a: Area, node_id: int) -> None:
    left = a.open_files.get(node_id, 0) - 1
    if left > 0:
        a.open_files[node_id] = left
    else:
        a.open_files.pop(node_id, None)


def _unlist(a: Area, node_id: int, fh: int) -> None:
    """`fh` no longer reads `node_id` from the base."""
    readers = a.base_readers.get(node_id)
    if readers is not None:
        readers.discard(fh)
        if not readers:
            del a.base_readers[node_id]


class StagingOps:
    """The handlers Ops delegates to for staging inodes and handles (see the module docstring)."""

    def __init__(self, areas: Areas, tree: Tree, reader: Reader, writeback_cache: bool = False) -> None:
        self.areas = areas
        self.keep_cache = writeback_cache  # see the module docstring
        self.tree = tree
        self.reader = reader
        self.deadline = reader.deadline
        self._files: dict[int, _File] = {}
        self._dirs: dict[int, _Dir] = {}
        self._next_fh = FIRST_FH
        self.capture: Capture | None = None  # set by the mount: reads of unchanged files are run inputs
        areas.sealed = self._sealed

    async def _sealed(self, a: Area, open_paths: dict[int, str], record: VersionRecord) -> None:
        """A seal published `record`: handles still open on staged files read on from it (the same bytes,
        now in the version), so no reader sees ENOENT because a seal happened."""
        repo = self.areas.repo
        header = await trio.to_thread.run_sync(repo.ensure_index, record)
        for f in list(self._files.values()):
            path = open_paths.get(f.node)
            if f.a is not a or path is None:
                continue  # another area, or an unlinked file
            entry = await trio.to_thread.run_sync(repo.index.lookup, record.manifest, path)
            if entry is not None and entry.kind == FILE:
                if f.base is None:  # else already reading a version's chunks (the same bytes)
                    f.base = self.reader.open(f"{record.ref}/{path}", record.manifest, header.packs, entry)
                f.sealed_attrs = self._sealed_attrs(a.ino(f.node), entry.mode, entry.size, entry.mtime_ns)

    def _sealed_attrs(self, ino: int, mode: int, size: int, mtime_ns: int) -> pyfuse3.EntryAttributes:
        """What fstat() on a handle open across a seal shows once its node is gone: the file as sealed
        (a reader's `read()` stats first, and the kernel asks again once its cached attributes expire)."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = e.attr_timeout = TIMEOUT
        e.st_mode = stat.S_IFREG | (mode & 0o7777)
        e.st_nlink = 0  # no name in staging any more
        e.st_uid, e.st_gid = self.tree.uid, self.tree.gid
        e.st_size = size
        e.st_blksize = STAGING_BLKSIZE
        e.st_blocks = (size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = mtime_ns
        return e

    def _what(self, op: str, args: tuple[Any, ...]) -> str:
        name = self.areas.name_of(args[0]) if args and isinstance(args[0], int) else None
        return f"{op} in {name or '?'}/staging"

    def _fh(self) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        return fh

    def attrs(self, a: Area, node: StagedNode) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino(node.id)
        e.entry_timeout = e.attr_timeout = TIMEOUT
        e.st_mode = node.st_mode
        e.st_nlink = node.nlink
        e.st_uid = self.tree.uid if node.uid is None else node.uid  # None: a base entry (versions keep no owner)
        e.st_gid = self.tree.gid if node.gid is None else node.gid
        e.st_size = DIR_SIZE if node.is_dir else node.size
        e.st_blksize = STAGING_BLKSIZE
        e.st_blocks = 0 if node.kind == LINK else (e.st_size + 511) // 512
        e.st_atime_ns = node.atime_ns
        e.st_mtime_ns = node.mtime_ns
        e.st_ctime_ns = node.ctime_ns
        return e

    def root_placeholder(self, name: str) -> pyfuse3.EntryAttributes:
        """`staging` in an artifact's listing, without opening the area: timeout 0, so the kernel looks
        it up (and the area opens) only when someone goes in."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = self.areas.of(name).root_ino
        e.st_mode = stat.S_IFDIR | 0o755
        e.st_nlink = 1
        e.st_uid, e.st_gid = self.tree.uid, self.tree.gid
        e.st_size = DIR_SIZE
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self.tree.started_ns
        return e

    def _entry(self, a: Area, parent: int, name: str, node: StagedNode) -> pyfuse3.EntryAttributes:
        """A node handed to the kernel by name: counted, and remembered if it sits under the root."""
        if parent == ROOT_ID:
            a.root_names.add(name)
        self.areas.remember(a.ino(node.id))
        return self.attrs(a, node)

    def _written(self, a: Area, node_id: int) -> None:
        """Content changed: handles that read the base version's chunks (or are being opened) now read
        the area."""
        for fh in a.base_readers.pop(node_id, ()):
            f = self._files.get(fh)
            if f is not None:
                f.base = None
                f.written = True

    # --- names and attributes ----------------------------------------------------------------------

    async def lookup_root(self, art: ArtifactNode) -> pyfuse3.EntryAttributes:
        a = self.areas.of(art.name)
        area = await self.areas.open(a)
        node = await self.areas.peek(area, area.getattr, ROOT_ID)
        self.areas.remember(a.root_ino)
        return self.attrs(a, node)

    async def lookup(self, parent: int, raw: bytes) -> pyfuse3.EntryAttributes:
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        name = _name(raw)
        if pid == ROOT_ID and name == "..":
            return self.tree.attrs(self.tree.artifact_node(a.name))
        while True:
            gen = area.generation
            node = await self.areas.peek(area, area.lookup, pid, name)
            if area.generation == gen or pid != ROOT_ID:
                break  # else a seal replaced the tree meanwhile: the answer must be of the new one
        if node is None:
            raise FUSEError(errno.ENOENT)
        if name in (".", ".."):
            self.areas.remember(a.ino(node.id))
            return self.attrs(a, node)
        return self._entry(a, pid, name, node)

    async def getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        a, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        try:
            return self.attrs(a, await self.areas.peek(area, area.getattr, node_id))
        except FUSEError as e:
            if e.errno == errno.ENOENT:
                for f in self._files.values():
                    if f.a is a and f.node == node_id and f.sealed_attrs is not None:
                        return f.sealed_attrs
            raise

    async def setattr(self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """chmod, chown, truncate, utimens. Owners are kept while staged (versions record none). With
        default_permissions the kernel has checked who may chown to what; giving a file to another owner
        is EPERM here too for anyone but root, whatever the mount options."""
        a, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        if uid is not None and ctx.uid != 0:
            owner = (await self.areas.peek(area, area.getattr, node_id)).uid
            if uid != (self.tree.uid if owner is None else owner):
                raise FUSEError(errno.EPERM)
        size = attr.st_size if fields.update_size else None
        call = partial(area.setattr, node_id, mode=attr.st_mode & 0o7777 if fields.update_mode else None, size=size,
                       mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                       atime_ns=attr.st_atime_ns if fields.update_atime else None, uid=uid, gid=gid)
        if size is None:  # chmod, chown, utimens: one small transaction, or none (the writeback cache's mtime)
            return self.attrs(a, await self.areas.peek(area, call))
        node = await self.areas.run(call)  # a truncate: it may copy a base file up
        self._written(a, node_id)
        return self.attrs(a, node)

    async def readlink(self, ino: int) -> bytes:
        _, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        return (await self.areas.peek(area, area.readlink, node_id)).encode("utf-8", "surrogateescape")

    # --- directories -------------------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        a, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        node = await self.areas.peek(area, area.getattr, node_id)
        if not node.is_dir:
            raise FUSEError(errno.ENOTDIR)
        fh = self._fh()
        self._dirs[fh] = _Dir(a, area, node_id)
        return fh

    async def readdir(self, fh: int, start: int, token: pyfuse3.ReaddirToken) -> None:
        d = self._dirs.get(fh)
        if d is None:
            raise FUSEError(errno.EBADF)
        if start == 0 or d.entries is None:  # (re)read at the start: rewinddir sees changes
            while True:
                gen = d.area.generation
                node, parent, children = await self.areas.run(_listing, d.area, d.node)
                if d.area.generation == gen or d.node != ROOT_ID:
                    break
            up = self.attrs(d.a, parent) if parent else self.tree.attrs(self.tree.artifact_node(d.a.name))
            d.entries = [(b".", self.attrs(d.a, node), False), (b"..", up, False)]
            d.entries += [(n.encode("utf-8", "surrogateescape"), self.attrs(d.a, c), True) for n, c in children]
        for i in range(start, len(d.entries)):
            raw, attrs, counted = d.entries[i]
            if not pyfuse3.readdir_reply(token, raw, attrs, i + 1):
                break
            if counted:  # readdirplus: the kernel counts a lookup for every entry but . and ..
                if d.node == ROOT_ID:
                    d.a.root_names.add(_name(raw))
                self.areas.remember(attrs.st_ino)

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files -------------------------------------------------------------------------------------

    def _register(self, a: Area, area: StagingArea, node_id: int) -> tuple[int, _File]:
        """A handle, counted open and listed as a base reader before any await: an unlink meanwhile
        keeps the node (see _unlink), a write meanwhile marks it `written` (see _written)."""
        f = _File(a, area, node_id)
        fh = self._fh()
        self._files[fh] = f
        a.open_files[node_id] = a.open_files.get(node_id, 0) + 1
        a.base_readers.setdefault(node_id, set()).add(fh)
        return fh, f

    async def open(self, ino: int, flags: int, pid: int = 0) -> pyfuse3.FileInfo:
        a, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing and a.draining:
            raise FUSEError(errno.EBUSY)  # a seal is waiting for the writers it has to finish
        truncate = bool(flags & os.O_TRUNC) and writing
        run = self.areas.run if truncate else partial(self.areas.peek, area)
        fh, f = self._register(a, area, node_id)
        if writing:
            a.writers[fh] = node_id
        try:
            entry, staged_ref = await run(_prepare_open, area, node_id, truncate)
        except BaseException:
            self.release(fh)
            raise
        if truncate:
            self._written(a, node_id)
        mid = area.base_manifest  # set whenever there is a base entry
        if entry is not None and staged_ref and not f.written:  # `artfs ref add`: its source, not the base
            f.base = OpenFile(f"{entry.path} (staged reference in {a.name})",
                              FileLayout.of_entry(entry, area.base_packs))
        elif entry is not None and mid is not None and not f.written:
            f.base = self.reader.open(f"{a.name}:v{area.base}/{entry.path} (staging)", mid, area.base_packs, entry)
            if self.capture is not None and area.base is not None and flags & os.O_ACCMODE != os.O_WRONLY:
                self.capture.opened(pid, a.name, area.base, entry.path, entry.size)  # read from the base version
        else:
            _unlist(a, node_id, fh)
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.keep_cache)

    async def create(self, parent: int, raw: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        if a.draining:
            raise FUSEError(errno.EBUSY)
        name = _name(raw)
        node = await self.areas.peek(area, area.create, pid, name, mode, _owner(ctx))
        attrs = self._entry(a, pid, name, node)
        fh, _ = self._register(a, area, node.id)
        a.writers[fh] = node.id
        _unlist(a, node.id, fh)  # a new file has no base to read
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.keep_cache), attrs

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        f = self._files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        if f.base is None:
            try:
                return await self._read_area(f, off, size)
            except FUSEError as e:
                if e.errno != errno.ENOENT or f.base is None:
                    raise
                # A seal replaced the tree while this read waited for the area, and re-pointed the handle
                # at the version it published (the same bytes): read them there.
        return await read_version(self.reader, f.base, off, size)

    @handler_errors
    async def _read_area(self, f: _File, off: int, size: int) -> bytes:
        return await self.areas.run(f.area.read, f.node, off, size)

    @handler_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self._files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        if len(buf) <= QUICK_WRITE:
            n = await self.areas.peek(f.area, f.area.write, f.node, off, buf)
        else:
            n = await self.areas.run(f.area.write, f.node, off, buf)
        self._written(f.a, f.node)
        return n

    @handler_errors
    async def fsync(self, fh: int) -> None:
        f = self._files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        await self.areas.run(f.area.fsync, f.node)

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            _closed(f.a, f.node)
            _unlist(f.a, f.node, fh)
            f.a.writer_closed(fh)

    # --- changing names ----------------------------------------------------------------------------

    async def mknod(self, parent: int, raw: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """A regular file (what mknod(2) without a type makes); FIFOs, sockets, devices: EPERM."""
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        node = await self.areas.peek(area, area.create, pid, _name(raw), mode, _owner(ctx))
        return self._entry(a, pid, _name(raw), node)

    async def mkdir(self, parent: int, raw: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        node = await self.areas.peek(area, area.mkdir, pid, _name(raw), mode & 0o7777, _owner(ctx))
        return self._entry(a, pid, _name(raw), node)

    async def symlink(self, parent: int, raw: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        node = await self.areas.peek(area, area.symlink, pid, _name(raw), _name(target), _owner(ctx))
        return self._entry(a, pid, _name(raw), node)

    async def unlink(self, parent: int, raw: bytes) -> None:
        a, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        await self.areas.run(_unlink, area, pid, _name(raw), a.open_files)

    async def rmdir(self, parent: int, raw: bytes) -> None:
        _, area, pid = self.areas.located(parent) or await self.areas.locate(parent)
        await self.areas.run(area.rmdir, pid, _name(raw))

    async def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int) -> None:
        """Within one staging directory; between two (or from a version) it is EXDEV, so `mv` copies."""
        a, area, op = self.areas.located(old_parent) or await self.areas.locate(old_parent)
        b, _, np = self.areas.located(new_parent) or await self.areas.locate(new_parent)
        if a is not b:
            raise FUSEError(errno.EXDEV)
        await self.areas.run(area.rename, op, _name(old), np, _name(new), flags)
        if np == ROOT_ID:
            a.root_names.add(_name(new))
        if op == ROOT_ID and flags & 2:  # RENAME_EXCHANGE puts a node under the old name too
            a.root_names.add(_name(old))

    async def link(self, ino: int, new_parent: int, raw: bytes) -> pyfuse3.EntryAttributes:
        """A hard link within one staging directory (sealed as separate entries sharing chunks); between
        two it is EXDEV, as across filesystems. The kernel refuses directories (EPERM) before asking."""
        a, area, node_id = self.areas.located(ino) or await self.areas.locate(ino)
        b, _, np = self.areas.located(new_parent) or await self.areas.locate(new_parent)
        if a is not b:
            raise FUSEError(errno.EXDEV)
        name = _name(raw)
        node = await self.areas.peek(area, area.link, node_id, np, name)
        return self._entry(a, np, name, node)

    # --- extended attributes -----------------------------------------------------------------------

    async def xattrs(self, ino: int) -> dict[str, bytes]:
        """Only the staging root has some: the control socket (see artfs/staging_client.py)."""
        a, _, node_id = await self.areas.locate(ino)
        return self.areas.xattrs(a) if node_id == ROOT_ID else {}

    async def forget(self, pairs: list[tuple[int, int]]) -> None:
        await self.areas.forget(pairs)
