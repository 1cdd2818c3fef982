"""pyfuse3 Operations: FUSE requests mapped onto the tree (inodes) and the reader (bytes). Nothing else.

Every handler turns failures into an errno: pyfuse3 lets any other exception escape its main loop and
take the mount down. Expected failures (a missing name, an unreachable store) become ENOENT/EIO with one
log line; anything else is a bug, logged with its traceback, and still only EIO for the caller.
Every write of any kind is EROFS (a later staging/ directory will be the writable exception).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from artfs.errors import ArtfsError, IntegrityError, NotFound
from artfs.fs.reader import OpenFile, Reader
from artfs.fs.tree import ArtifactNode, EntryNode, Node, RootNode, Tree, VersionNode, is_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READDIR_PAGE = 512


class _Limiter:
    """Says an identical complaint once per `period` seconds, so an outage does not flood the log."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}

    def __call__(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.period:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


_say = _Limiter()


def _errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Map every exception of a handler to a FUSEError (see the module docstring)."""

    @functools.wraps(fn)
    async def handler(self: Ops, *args: Any) -> T:
        try:
            return await fn(self, *args)
        except FUSEError:
            raise
        except NotFound:
            raise FUSEError(errno.ENOENT) from None
        except trio.TooSlowError:
            if _say(f"{fn.__name__}:slow"):
                log.error("%s failed: no answer from the store within %.0f s", self._what(fn.__name__, args),
                          self.tree.deadline)
            raise FUSEError(errno.EIO) from None
        except ArtfsError as e:
            if _say(f"{fn.__name__}:{e}"):
                log.error("%s failed: %s", self._what(fn.__name__, args), e)
            raise FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[:2])
            raise FUSEError(errno.EIO) from None

    return handler


def _erofs(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def handler(self: Ops, *args: Any) -> Any:
        raise FUSEError(errno.EROFS)

    return handler


class _Listing:
    """One open directory: positions for readdir's `start_id`, read from the index a page at a time."""

    def __init__(self, tree: Tree, node: Node) -> None:
        self.tree = tree
        self.node = node
        dots: list[tuple[str, Node]] = [(".", node), ("..", tree.parent_of(node))]
        self.small = dots + tree.list_small(node) if isinstance(node, (RootNode, ArtifactNode)) else None
        self.dots = dots
        self.page: list[tuple[str, Node]] = []
        self.page_start = 0  # position (not counting the dots) of page[0]

    def entries(self, pos: int) -> Iterator[tuple[int, str, Node]]:
        """(next position, name, node) from position `pos` on."""
        if self.small is not None:
            for i in range(pos, len(self.small)):
                yield i + 1, *self.small[i]
            return
        for i in range(pos, 2):
            yield i + 1, *self.dots[i]
        idx = max(pos - 2, 0)
        if not self.page_start <= idx <= self.page_start + len(self.page):
            self.page_start, self.page = 0, []  # a seek back: rescan from the start
        while True:
            off = idx - self.page_start
            if off < len(self.page):
                yield idx + 3, *self.page[off]
                idx += 1
                continue
            after = self.page[-1][0] if self.page else None
            if after is None and self.page_start:
                return
            page = self.tree.list_page(self.node, after, READDIR_PAGE)
            if not page:
                return
            self.page_start += len(self.page)
            self.page = page


class Ops(pyfuse3.Operations):
    """The read-only filesystem: a version's files read lazily; EROFS on every write."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, tree: Tree, reader: Reader) -> None:
        super().__init__()
        self.tree = tree
        self.reader = reader
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, _Listing] = {}
        self._next_fh = 1
        self.pid = os.getpid()

    def _what(self, op: str, args: tuple[Any, ...]) -> str:
        """`lookup of animals:v1` — a request as a log line names it."""
        try:
            node = self.tree.node(args[0]) if args and isinstance(args[0], int) else None
        except FUSEError:
            node = None
        where = self.tree.label(node) if node is not None else "?"
        if len(args) > 1 and isinstance(args[1], bytes):
            where = f"{where}/{args[1].decode('utf-8', 'replace')}".lstrip("/")
        return f"{op} of {where}"

    def _fh(self) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        return fh

    # --- names and attributes ----------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.tree.node(parent_inode)
        node = await self.tree.lookup(parent, name.decode("utf-8", "surrogateescape"))
        if node is None:
            negative = self.tree.negative(parent)
            if negative is None:
                raise FUSEError(errno.ENOENT)
            return negative
        return self.tree.attrs(node)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        """Nodes are kept for the mount's life: that is what keeps inode numbers stable."""

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.node(inode)
        if isinstance(node, VersionNode) and node.record is None:
            await self.tree.load_record(node)
        return self.tree.attrs(node)

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.tree.readlink(self.tree.node(inode))

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.tree)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # --- directories -------------------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.tree.node(inode)
        if not is_dir(node):
            raise FUSEError(errno.ENOTDIR)
        if isinstance(node, VersionNode):
            await self.tree.load(node)
        fh = self._fh()
        self._dirs[fh] = _Listing(self.tree, node)
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs[fh]
        for next_id, name, node in listing.entries(start_id):
            attrs = self.tree.attrs(node)
            if not pyfuse3.readdir_reply(token, name.encode("utf-8", "surrogateescape"), attrs, next_id):
                break

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files -------------------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise FUSEError(errno.EROFS)
        node = self.tree.node(inode)
        if not isinstance(node, EntryNode):
            raise FUSEError(errno.EISDIR if is_dir(node) else errno.EINVAL)
        entry = self.tree.entry_of(node)
        version = node.version
        assert version.header is not None and version.record is not None
        f = self.reader.open(node.label, version.mid, version.header.packs, entry)
        fh = self._fh()
        self._files[fh] = f
        # Versions are immutable: the page cache stays valid across opens (re-reads at native speed).
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        f = self._files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        try:
            return await self.reader.read(f, off, size)
        except trio.TooSlowError:
            if _say(f"slow:{f.label}"):
                log.error("read of %s at %d failed: no answer from the store within %.0f s",
                          f.label, off, self.reader.deadline)
        except IntegrityError as e:
            if _say(f"corrupt:{f.label}"):
                log.error("read of %s at %d failed: %s", f.label, off, e)
        except ArtfsError as e:
            if _say(f"read:{f.label}:{type(e).__name__}"):
                log.error("read of %s at %d failed: %s", f.label, off, e)
        except Exception:
            log.exception("unexpected error reading %s at %d", f.label, off)
        raise FUSEError(errno.EIO)

    async def release(self, fh: int) -> None:
        self._files.pop(fh, None)

    async def flush(self, fh: int) -> None:
        """ENOSYS once, and the kernel stops sending FLUSH on every close(): a round trip per file saved."""
        raise FUSEError(errno.ENOSYS)

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    # --- extended attributes -----------------------------------------------------------------------

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.tree.node(inode)
        key = name.decode("utf-8", "surrogateescape")
        if key == "user.artfs.pid" and isinstance(node, RootNode):
            return str(self.pid).encode()  # lets `artfs unmount` wait for this daemon to exit
        if key == "user.artfs.stats" and isinstance(node, RootNode):
            return self._stats().encode()
        value = self.tree.xattrs(node).get(key)
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [k.encode() for k in self.tree.xattrs(self.tree.node(inode))]

    def _stats(self) -> str:
        chunks = self.reader.chunks
        return json.dumps({**chunks.stats, "store_requests": chunks.fetcher.requests,
                           "store_bytes": chunks.fetcher.fetched_bytes, "inodes": len(self.tree),
                           "memory_bytes": chunks.memory.bytes}, sort_keys=True)

    def stats_line(self) -> str:
        """Counters as JSON (reads, hits, store requests…), for the log and `user.artfs.stats`."""
        return self._stats()

    # --- every write: EROFS ------------------------------------------------------------------------

    @_erofs
    async def setattr(self, *args: Any) -> None: ...

    @_erofs
    async def setxattr(self, *args: Any) -> None: ...

    @_erofs
    async def removexattr(self, *args: Any) -> None: ...

    @_erofs
    async def mknod(self, *args: Any) -> None: ...

    @_erofs
    async def mkdir(self, *args: Any) -> None: ...

    @_erofs
    async def unlink(self, *args: Any) -> None: ...

    @_erofs
    async def rmdir(self, *args: Any) -> None: ...

    @_erofs
    async def symlink(self, *args: Any) -> None: ...

    @_erofs
    async def rename(self, *args: Any) -> None: ...

    @_erofs
    async def link(self, *args: Any) -> None: ...

    @_erofs
    async def create(self, *args: Any) -> None: ...

    @_erofs
    async def write(self, *args: Any) -> None: ...
