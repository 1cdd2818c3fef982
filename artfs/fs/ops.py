"""pyfuse3 Operations: FUSE requests mapped onto the tree (inodes) and the reader (bytes), and, for
inodes and handles of staging directories, onto StagingOps. Nothing else.

Every handler turns failures into an errno (errnos.py): pyfuse3 lets any other exception escape its main
loop and take the mount down. Writes are EROFS everywhere but in `staging/` directories, and at the
root, where `mkdir NAME` creates a new artifact (and `rmdir` forgets one never sealed).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import pyfuse3
import trio
from pyfuse3 import FUSEError

from artfs.fs.areas import STAGING, is_staging
from artfs.fs.errnos import handler_errors as _errors
from artfs.fs.errnos import read_version
from artfs.fs.reader import OpenFile, Reader
from artfs.fs.run_capture import Capture
from artfs.fs.staging_ops import FIRST_FH, StagingOps
from artfs.fs.tree import ArtifactNode, EntryNode, Node, RootNode, Row, RowAttrs, Tree, VersionNode, is_dir

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READDIR_PAGE = 512
# rows of the next directory listed ahead (_NextListings): what the kernel's first READDIRPLUS of a directory
# takes (128 KiB: ~800 entries), so that its reply needs nothing listed (measured: 512 -> 1,024 rows, a cold
# `find` of 200,000 files 0.83-0.88 -> 0.79-0.83 s)
PREPARED_ROWS = 1024


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class _Listing:
    """One open directory: positions for readdir's `start_id`, read from the index a page at a time."""

    def __init__(self, tree: Tree, node: Node, extra: Sequence[tuple[str, pyfuse3.EntryAttributes]] = ()) -> None:
        self.tree = tree
        self.node = node
        dots: list[tuple[str, Node]] = [(".", node), ("..", tree.parent_of(node))]
        small: list[tuple[str, Node | pyfuse3.EntryAttributes]] | None = None
        if isinstance(node, (RootNode, ArtifactNode)):
            small = [*dots, *tree.list_small(node), *extra]
        self.small = small
        self.dots = dots
        self.page: list[Row] = []  # rows, not nodes: nothing is kept per entry (tree.list_page)
        self.page_start = 0  # position (not counting the dots) of page[0]
        self.at_end = False  # `page` holds the last rows
        self.next_prepared = False  # the directory a walk enters next was listed ahead (_NextListings)
        if small is None:
            prepared = tree.take_prepared(node.ino)
            if prepared is not None:
                self.page, self.at_end = prepared, len(prepared) < PREPARED_ROWS
        self.rows: RowAttrs | None = None

    def reply(self, pos: int, token: pyfuse3.ReaddirToken) -> None:
        """Send the entries from position `pos` on (positions count the dots) until the kernel's buffer
        is full. A version's entries go out of one loop with one attributes object refilled per entry
        (tree.RowAttrs; `readdir_reply` copies it at once): no generator, no object per entry — this loop
        is most of a `find`."""
        send = pyfuse3.readdir_reply
        if self.small is not None:
            for i in range(pos, len(self.small)):
                name, what = self.small[i]
                attrs = what if isinstance(what, pyfuse3.EntryAttributes) else self.tree.attrs(what)
                if not send(token, _encode(name), attrs, i + 1):
                    return
            return
        for i in range(pos, 2):
            name, node = self.dots[i]
            if not send(token, _encode(name), self.tree.attrs(node), i + 1):
                return
        idx = max(pos - 2, 0)
        if not self.page_start <= idx <= self.page_start + len(self.page):
            self.page_start, self.page, self.at_end = 0, [], False  # a seek back: rescan from the start
        if self.rows is None:
            self.rows = self.tree.row_attrs(self.node)
        fill = self.rows.fill
        while True:
            page = self.page
            for off in range(idx - self.page_start, len(page)):
                row = page[off]
                idx += 1
                if not send(token, row[0], fill(row), idx + 2):
                    return
            if self.at_end:
                return
            after = _name(page[-1][0]) if page else None
            if after is None and self.page_start:
                return
            page = self.tree.list_page(self.node, after, READDIR_PAGE)
            self.at_end = len(page) < READDIR_PAGE  # a short page is the last
            if not page:
                return
            self.page_start += len(self.page)
            self.page = page


class _NextListings:
    """Lists ahead the first page of the directory a walk enters next (Tree.prepare_next), once a listing
    has all its rows: a `find` waits for each READDIRPLUS reply, and then the kernel makes an inode of
    every entry in it (in `find`'s context, on another CPU) while the daemon would wait. Run on the loop
    after the reply went out, one directory at a time; a request arriving meanwhile waits for one page."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._waiting: list[Node] = []
        self._wake = trio.Event()

    def want(self, listing: _Listing) -> None:
        if listing.at_end and not listing.next_prepared and listing.small is None:
            listing.next_prepared = True
            self._waiting.append(listing.node)
            self._wake.set()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._waiting:
                node = self._waiting.pop(0)
                try:
                    self.tree.prepare_next(node, PREPARED_ROWS)
                except Exception as e:  # noqa: BLE001 - a guess: the kernel's own request meets it, and says so
                    log.debug("listing ahead after %s: %s", self.tree.label(node), e)
                await trio.lowlevel.checkpoint()


class Ops(pyfuse3.Operations):
    """The filesystem: versions read lazily (EROFS on every write), staging directories read-write."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, tree: Tree, reader: Reader, staging: StagingOps, capture: Capture | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.reader = reader
        self.staging = staging
        self.capture = capture  # opens by processes of a run become its inputs (run_capture.py)
        self.deadline = tree.deadline
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, _Listing] = {}
        self.next_listings = _NextListings(tree)  # run by the mount (mount.py)
        self._next_fh = 1
        self.pid = os.getpid()

    def _what(self, op: str, args: tuple[Any, ...]) -> str:
        """`lookup of animals:v1` — a request as a log line names it."""
        if args and isinstance(args[0], int) and is_staging(args[0]):
            return self.staging._what(op, args)
        try:
            node = self.tree.node(args[0]) if args and isinstance(args[0], int) else None
        except FUSEError:
            node = None
        where = self.tree.label(node) if node is not None else "?"
        if len(args) > 1 and isinstance(args[1], bytes):
            where = f"{where}/{_name(args[1])}".lstrip("/")
        return f"{op} of {where}"

    def _fh(self) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        return fh

    # --- names and attributes ----------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(parent_inode):
            return await self.staging.lookup(parent_inode, name)
        parent = self.tree.node(parent_inode)
        if isinstance(parent, ArtifactNode) and name == STAGING.encode() and self.staging.areas.exists(parent.name):
            return await self.staging.lookup_root(parent)
        node = await self.tree.lookup(parent, _name(name))
        if node is None:
            negative = self.tree.negative(parent)
            if negative is None:
                raise FUSEError(errno.ENOENT)
            return negative
        return self.tree.attrs(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """The tree needs no lookup counts (an entry's inode is its code, found again from the manifest:
        tree.py); staging counts them."""
        staged = [(ino, n) for ino, n in inode_list if is_staging(ino)]
        if staged:
            await self.staging.forget(staged)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(inode):
            return await self.staging.getattr(inode)
        node = self.tree.node(inode)
        if isinstance(node, VersionNode) and node.record is None:
            await self.tree.load_record(node)
        return self.tree.attrs(node)

    @_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(inode):
            return await self.staging.setattr(inode, attr, fields, ctx)
        raise FUSEError(errno.EROFS)

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        if is_staging(inode):
            return await self.staging.readlink(inode)
        return self.tree.readlink(self.tree.node(inode))

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """FUSE names no inode here: the space shown is the local disk staged data is written to."""
        disk = self.staging.areas.repo.places.data
        while not os.path.exists(disk):  # nothing staged yet: the disk it will go to
            disk = os.path.dirname(disk)
        st = os.statvfs(disk)
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = st.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
        s.f_files = len(self.tree) + st.f_files
        s.f_ffree = s.f_favail = st.f_ffree
        s.f_namemax = 255
        return s

    # --- directories -------------------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if is_staging(inode):
            return await self.staging.opendir(inode)
        node = self.tree.node(inode)
        if not is_dir(node):
            raise FUSEError(errno.ENOTDIR)
        if isinstance(node, VersionNode):
            await self.tree.load(node)
        extra = []
        if isinstance(node, ArtifactNode) and self.staging.areas.exists(node.name):
            extra = [(STAGING, self.staging.root_placeholder(node.name))]
        fh = self._fh()
        self._dirs[fh] = _Listing(self.tree, node, extra)
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh >= FIRST_FH:
            return await self.staging.readdir(fh, start_id, token)
        listing = self._dirs[fh]
        listing.reply(start_id, token)
        self.next_listings.want(listing)

    async def releasedir(self, fh: int) -> None:
        if fh >= FIRST_FH:
            self.staging.releasedir(fh)
        self._dirs.pop(fh, None)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(parent_inode):
            return await self.staging.mkdir(parent_inode, name, mode, ctx)
        if parent_inode != pyfuse3.ROOT_INODE:
            raise FUSEError(errno.EROFS)
        await self.staging.areas.create_artifact(_name(name))
        return self.tree.attrs(self.tree.artifact_node(_name(name)))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if is_staging(parent_inode):
            return await self.staging.rmdir(parent_inode, name)
        if parent_inode != pyfuse3.ROOT_INODE:
            raise FUSEError(errno.EROFS)
        await self.staging.areas.remove_artifact(_name(name))

    # --- files -------------------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if is_staging(inode):
            return await self.staging.open(inode, flags, ctx.pid)
        if flags & _WRITE_FLAGS:
            raise FUSEError(errno.EROFS)
        node = self.tree.node(inode)
        if not isinstance(node, EntryNode):
            raise FUSEError(errno.EISDIR if is_dir(node) else errno.EINVAL)
        entry = self.tree.entry_of(node)
        version = node.version
        assert version.header is not None and version.record is not None
        f = self.reader.open(node.label, version.mid, version.header.packs, entry, inode)
        if self.capture is not None:  # attributed at open: the page cache hides re-reads
            self.capture.opened(ctx.pid, version.artifact, version.number, entry.path, entry.size, version.record)
        fh = self._fh()
        self._files[fh] = f
        # Versions are immutable: the page cache stays valid across opens (re-reads at native speed).
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    # pyfuse3 replies with any buffer (PyObject_GetBuffer); its stub says bytes. A memoryview saves a copy.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        if fh >= FIRST_FH:
            return await self.staging.read(fh, off, size)
        f = self._files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        return await read_version(self.reader, f, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if fh >= FIRST_FH:
            return await self.staging.write(fh, off, buf)
        raise FUSEError(errno.EBADF)  # never: version files only open read-only

    async def release(self, fh: int) -> None:
        if fh >= FIRST_FH:
            self.staging.release(fh)
        self._files.pop(fh, None)

    async def flush(self, fh: int) -> None:
        """ENOSYS once, and the kernel stops sending FLUSH on every close(): a round trip per file saved.
        Staging needs none either: the kernel writes a file's dirty pages back before it would send
        FLUSH (and reports a failed write-back from close()), and without the writeback cache a write is
        in the area's data file when it is answered."""
        raise FUSEError(errno.ENOSYS)

    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh >= FIRST_FH:
            await self.staging.fsync(fh)

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if is_staging(parent_inode):
            return await self.staging.create(parent_inode, name, mode, flags, ctx)
        raise FUSEError(errno.EROFS)

    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(parent_inode):
            return await self.staging.mknod(parent_inode, name, mode, ctx)
        raise FUSEError(errno.EROFS)

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_staging(parent_inode):
            return await self.staging.symlink(parent_inode, name, target, ctx)
        raise FUSEError(errno.EROFS)

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if is_staging(parent_inode):
            return await self.staging.unlink(parent_inode, name)
        raise FUSEError(errno.EROFS)

    @_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        if is_staging(parent_inode_old) and is_staging(parent_inode_new):
            return await self.staging.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
        # from a version into staging: EXDEV, so `mv` copies (and then fails to delete the source: EROFS)
        raise FUSEError(errno.EXDEV if is_staging(parent_inode_new) else errno.EROFS)

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """Within one staging directory; between staging and anything else EXDEV (what Linux says across
        filesystems), within the read-only versions EROFS."""
        if is_staging(new_parent_inode) and is_staging(inode):
            return await self.staging.link(inode, new_parent_inode, new_name)
        raise FUSEError(errno.EXDEV if is_staging(new_parent_inode) or is_staging(inode) else errno.EROFS)

    # --- extended attributes -----------------------------------------------------------------------

    async def _xattrs(self, inode: int) -> dict[str, bytes]:
        if is_staging(inode):
            return await self.staging.xattrs(inode)
        return self.tree.xattrs(self.tree.node(inode))

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        key = _name(name)
        if inode == pyfuse3.ROOT_INODE and key == "user.artfs.pid":
            return str(self.pid).encode()  # lets `artfs unmount` wait for this daemon to exit
        if inode == pyfuse3.ROOT_INODE and key == "user.artfs.stats":
            return self._stats().encode()
        if not key.startswith("user."):  # the kernel asks for security.capability on every write
            raise FUSEError(pyfuse3.ENOATTR)
        value = (await self._xattrs(inode)).get(key)
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [k.encode() for k in await self._xattrs(inode)]

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        """Versions keep no extended attributes: ENOTSUP in staging (cp -a and rsync -X go on), else EROFS."""
        raise FUSEError(errno.ENOTSUP if is_staging(inode) else errno.EROFS)

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise FUSEError(pyfuse3.ENOATTR if is_staging(inode) else errno.EROFS)

    def _stats(self) -> str:
        chunks = self.reader.chunks
        return json.dumps({**chunks.stats, "store_requests": chunks.fetcher.requests,
                           "store_bytes": chunks.fetcher.fetched_bytes, "inodes": len(self.tree),
                           "memory_bytes": chunks.memory.bytes}, sort_keys=True)

    def stats_line(self) -> str:
        """Counters as JSON (reads, hits, store requests…), for the log and `user.artfs.stats`."""
        return self._stats()
