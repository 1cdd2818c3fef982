"""A minimal in-memory pyfuse3 + trio filesystem: the FUSE floor that artfs's figures are set against.

    python -m bench.null_fs MOUNTPOINT [--writeback] [--keep-cache] [--discard] [--files N] [--big-mib M]
                                       [--disk DIR] [--xattrs]

It does the least work a request allows (a dict lookup, a bytearray slice) and never awaits, so what it
costs is what pyfuse3, trio and the kernel cost: anything artfs spends beyond it is artfs's own. Enough
operations for `cp -r`, `tar x`, `cat`, `find`, `dd` and `rm -r`; no links, symlinks or xattrs (ENOSYS;
but see `--xattrs`).

- `--writeback`: the kernel's writeback cache (`Operations.enable_writeback_cache`).
- `--keep-cache`: `FileInfo(keep_cache=True)` on open, so a re-read is served from the page cache.
- `--discard`: written bytes are dropped (only the size is kept; reads give zeros), like Mountpoint's
  build flag that replaces reads with zeros: the cost of FUSE alone. Without it, keeping the bytes costs
  more than FUSE itself on this VM (fresh anonymous pages fault in at ~2 GB/s of CPU).
- `--files N`: N empty files in MNT/many/dNNN/ folders of 1,000 (for a `find` over a big tree).
- `--big-mib M`: one file MNT/big.bin of M MiB (for page-cache-hot re-reads).
- `--xattrs`: answer getxattr with "no such attribute" (ENODATA) and listxattr with none, as a filesystem
  that has extended attributes must, rather than ENOSYS. With ENOSYS the kernel stops asking; with
  xattrs it asks for `security.capability` before every write(), chown and chmod (the kernel keeps no
  answer unless the filesystem handles FUSE_HANDLE_KILLPRIV_V2, which pyfuse3 3.5 cannot negotiate).
  artfs has xattrs (its `user.artfs.*` attributes): this is the floor of a filesystem that does.
- `--disk DIR`: what is made through the mount is kept as real files and directories under DIR (bytes
  written with pwrite, names made with open/mkdir, nothing synced), like libfuse's passthrough example:
  the floor of a filesystem that, like artfs's staging, must still have a file after its daemon dies.

The tree is made before the mount, so a first `find` is cold in the kernel's caches. It runs in the
foreground; SIGTERM/SIGINT (or `fusermount3 -u`) unmounts and ends it.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence

import pyfuse3
import trio

MiB = 1 << 20
PER_DIR = 1000


class Node:
    __slots__ = ("mode", "uid", "gid", "nlink", "data", "size", "children", "atime", "mtime", "ctime", "lookups")

    def __init__(self, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.mode, self.uid, self.gid = mode, uid, gid
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.data = bytearray()
        self.size = 0  # == len(data), except under --discard
        self.children: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None
        self.atime = self.mtime = self.ctime = now
        self.lookups = 0


class NullFs(pyfuse3.Operations):
    """Inodes in a dict, file bytes in bytearrays; file handles are the inode numbers themselves."""

    def __init__(self, writeback: bool, keep_cache: bool, discard: bool = False) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback
        self.keep_cache = keep_cache
        if discard:
            self.write = self._write_discard  # type: ignore[method-assign]
            self.read = self._read_discard  # type: ignore[method-assign]
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: Node(stat.S_IFDIR | 0o755, os.getuid(), os.getgid())}
        self.parents: dict[int, int] = {pyfuse3.ROOT_INODE: pyfuse3.ROOT_INODE}  # of directories only
        self.listings: dict[int, list[tuple[bytes, int]]] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.next_dh = 1

    # --- the tree -------------------------------------------------------------------------------------

    def add(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> int:
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.nodes[ino] = Node(mode, uid, gid)
        dir_ = self.nodes[parent]
        assert dir_.children is not None
        dir_.children[name] = ino
        if stat.S_ISDIR(mode):
            self.parents[ino] = parent
            dir_.nlink += 1
        return ino

    def populate(self, files: int, big_mib: int) -> None:
        uid, gid = os.getuid(), os.getgid()
        if files:
            many = self.add(pyfuse3.ROOT_INODE, b"many", stat.S_IFDIR | 0o755, uid, gid)
            folder = 0
            for i in range(files):
                if i % PER_DIR == 0:
                    folder = self.add(many, f"d{i // PER_DIR:03d}".encode(), stat.S_IFDIR | 0o755, uid, gid)
                self.add(folder, f"f{i:06d}.txt".encode(), stat.S_IFREG | 0o644, uid, gid)
        if big_mib:
            ino = self.add(pyfuse3.ROOT_INODE, b"big.bin", stat.S_IFREG | 0o644, uid, gid)
            n = self.nodes[ino]
            n.data = bytearray(os.urandom(MiB)) * big_mib
            n.size = len(n.data)

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _dir(self, ino: int) -> dict[bytes, int]:
        children = self._node(ino).children
        if children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return children

    def _attr(self, ino: int, n: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = n.mode
        a.st_nlink = n.nlink
        a.st_uid = n.uid
        a.st_gid = n.gid
        a.st_size = n.size
        a.st_blksize = 4096
        a.st_blocks = (n.size + 511) // 512
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = n.atime, n.mtime, n.ctime
        return a

    def _entry(self, ino: int) -> pyfuse3.EntryAttributes:
        n = self.nodes[ino]
        n.lookups += 1
        return self._attr(ino, n)

    def _drop(self, ino: int) -> None:
        n = self.nodes.get(ino)
        if n is not None and n.nlink == 0 and n.lookups <= 0:
            del self.nodes[ino]
            self.parents.pop(ino, None)

    def _unlink(self, parent: int, name: bytes, *, is_dir: bool) -> None:
        children = self._dir(parent)
        ino = children.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        n = self.nodes[ino]
        if is_dir:
            if n.children is None:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if n.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self.nodes[parent].nlink -= 1
            n.nlink = 0
        else:
            if n.children is not None:
                raise pyfuse3.FUSEError(errno.EISDIR)
            n.nlink -= 1
        del children[name]
        n.ctime = self.nodes[parent].mtime = time.time_ns()
        self._drop(ino)

    # --- requests -------------------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            ino = parent_inode
        elif name == b"..":
            ino = self.parents.get(parent_inode, pyfuse3.ROOT_INODE)
        else:
            found = self._dir(parent_inode).get(name)
            if found is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            ino = found
        return self._entry(ino)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            n = self.nodes.get(ino)
            if n is not None:
                n.lookups -= count
                self._drop(ino)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode, self._node(inode))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        n = self._node(inode)
        if fields.update_size:
            if n.children is not None:
                raise pyfuse3.FUSEError(errno.EISDIR)
            size = attr.st_size
            if size < len(n.data):
                del n.data[size:]
            elif n.size == len(n.data):  # not under --discard
                n.data.extend(bytes(size - len(n.data)))
            n.size = size
            n.mtime = time.time_ns()
        if fields.update_mode:
            n.mode = stat.S_IFMT(n.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            n.uid = attr.st_uid
        if fields.update_gid:
            n.gid = attr.st_gid
        if fields.update_atime:
            n.atime = attr.st_atime_ns
        if fields.update_mtime:
            n.mtime = attr.st_mtime_ns
        n.ctime = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
        return self._attr(inode, n)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name in self._dir(parent_inode):
            raise pyfuse3.FUSEError(errno.EEXIST)
        ino = self.add(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx.uid, ctx.gid)
        return self._entry(ino)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if name in self._dir(parent_inode):
            raise pyfuse3.FUSEError(errno.EEXIST)
        ino = self.add(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=ino, keep_cache=self.keep_cache), self._entry(ino)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        n = self._node(inode)
        if n.children is not None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and n.size:
            n.data = bytearray()
            n.size = 0
            n.mtime = time.time_ns()
        return pyfuse3.FileInfo(fh=inode, keep_cache=self.keep_cache)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        # Any buffer will do (pyfuse3 copies it into the reply before it lets go): no copy of our own.
        return memoryview(self.nodes[fh].data)[off:off + size]  # type: ignore[return-value]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        n = self.nodes[fh]
        data = n.data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off:off + len(buf)] = buf
        n.size = len(data)
        return len(buf)

    async def _read_discard(self, fh: int, off: int, size: int) -> bytes:
        n = self.nodes[fh]
        if off < len(n.data):  # a pre-populated file
            return memoryview(n.data)[off:off + size]  # type: ignore[return-value]
        return bytes(max(0, min(size, n.size - off)))

    async def _write_discard(self, fh: int, off: int, buf: bytes) -> int:
        n = self.nodes[fh]
        n.size = max(n.size, off + len(buf))
        return len(buf)

    # No flush, fsync or fsyncdir: pyfuse3's ENOSYS makes the kernel stop sending them (a round trip per
    # close and per fsync saved, as artfs does for flush), and nothing here could lose data anyway.

    async def release(self, fh: int) -> None:
        pass

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        dh, self.next_dh = self.next_dh, self.next_dh + 1
        self.listings[dh] = list(self._dir(inode).items())  # a snapshot: changes during the listing are safe
        return dh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.listings[fh]
        for i in range(start_id, len(listing)):
            name, ino = listing[i]
            n = self.nodes.get(ino)
            if n is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(ino, n), i + 1):
                return
            n.lookups += 1  # readdirplus counts as a lookup of each entry it returns

    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._unlink(parent_inode, name, is_dir=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._unlink(parent_inode, name, is_dir=True)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old, new = self._dir(parent_inode_old), self._dir(parent_inode_new)
        ino = old.get(name_old)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        moving_dir = self.nodes[ino].children is not None
        target = new.get(name_new)
        if target == ino:
            return
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            target_is_dir = self.nodes[target].children is not None
            if moving_dir and not target_is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if target_is_dir and not moving_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            self._unlink(parent_inode_new, name_new, is_dir=target_is_dir)
        del old[name_old]
        new[name_new] = ino
        if moving_dir and parent_inode_old != parent_inode_new:
            self.parents[ino] = parent_inode_new
            self.nodes[parent_inode_old].nlink -= 1
            self.nodes[parent_inode_new].nlink += 1
        now = time.time_ns()
        self.nodes[ino].ctime = self.nodes[parent_inode_old].mtime = self.nodes[parent_inode_new].mtime = now

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s


async def serve() -> None:
    """pyfuse3's loop until SIGTERM/SIGINT or an unmount from outside."""
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


class DiskFs(NullFs):
    """NullFs whose files and directories made through the mount are also real ones under `root`: the
    names and sizes answered from memory as NullFs does, the bytes read and written on disk."""

    def __init__(self, root: str, writeback: bool, keep_cache: bool) -> None:
        super().__init__(writeback, keep_cache)
        self.paths: dict[int, bytes] = {pyfuse3.ROOT_INODE: os.fsencode(root)}
        self.fds: dict[int, list[int]] = {}  # inode -> [descriptor, open handles]

    def _path(self, parent: int, name: bytes) -> bytes:
        try:
            return os.path.join(self.paths[parent], name)
        except KeyError:  # a pre-populated directory: not on disk
            raise pyfuse3.FUSEError(errno.EROFS) from None

    def _fd(self, ino: int) -> int:
        held = self.fds.get(ino)
        if held is None:
            held = self.fds[ino] = [os.open(self.paths[ino], os.O_RDWR), 0]
        return held[0]

    def _hold(self, ino: int) -> None:
        self._fd(ino)
        self.fds[ino][1] += 1

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._path(parent_inode, name)
        entry = await super().mkdir(parent_inode, name, mode, ctx)
        os.mkdir(path, 0o700)
        self.paths[entry.st_ino] = path
        return entry

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._path(parent_inode, name)
        info, entry = await super().create(parent_inode, name, mode, flags, ctx)
        self.paths[entry.st_ino] = path
        self.fds[entry.st_ino] = [os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), 1]
        return info, entry

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode not in self.paths:
            return await super().open(inode, flags, ctx)
        info = await super().open(inode, flags & ~os.O_TRUNC, ctx)
        self._hold(inode)
        if flags & os.O_TRUNC:
            os.ftruncate(self._fd(inode), 0)
            self.nodes[inode].size = 0
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh not in self.paths:
            return await super().read(fh, off, size)
        return os.pread(self._fd(fh), size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if fh not in self.paths:
            return await super().write(fh, off, buf)
        n = os.pwrite(self._fd(fh), buf, off)
        node = self.nodes[fh]
        node.size = max(node.size, off + n)
        return n

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if fields.update_size and inode in self.paths:
            os.truncate(self.paths[inode], attr.st_size)
            self.nodes[inode].size = -1  # NullFs then only records the new size, as under --discard
        return await super().setattr(inode, attr, fields, fh, ctx)

    async def release(self, fh: int) -> None:
        held = self.fds.get(fh)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                os.close(self.fds.pop(fh)[0])

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._path(parent_inode, name)
        ino = self._dir(parent_inode).get(name)
        await super().unlink(parent_inode, name, ctx)
        os.unlink(path)
        assert ino is not None  # else NullFs raised ENOENT
        self.paths.pop(ino, None)  # an open handle keeps its descriptor; the name may be made again

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._path(parent_inode, name)
        await super().rmdir(parent_inode, name, ctx)
        os.rmdir(path)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        old, new = self._path(parent_inode_old, name_old), self._path(parent_inode_new, name_new)
        ino, replaced = self._dir(parent_inode_old).get(name_old), self._dir(parent_inode_new).get(name_new)
        await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)
        os.rename(old, new)
        assert ino is not None  # else NullFs raised ENOENT
        if replaced is not None and replaced != ino:
            self.paths.pop(replaced, None)
        self.paths[ino] = new
        if ino in self.parents:  # a directory: the paths of everything under it move too
            prefix = old + b"/"
            for other, path in list(self.paths.items()):
                if path.startswith(prefix):
                    self.paths[other] = new + path[len(old):]


def init_mount(fs: pyfuse3.Operations, mountpoint: str, name: str) -> bool:
    """pyfuse3.init with the default options under fsname/subtype `name`; False (said why) if it fails."""
    options = set(pyfuse3.default_options) | {f"fsname={name}", f"subtype={name}"}
    try:
        pyfuse3.init(fs, mountpoint, options)
    except RuntimeError as e:
        print(f"{name}: cannot mount {mountpoint}: {e}", file=sys.stderr)
        return False
    return True


async def _no_such_xattr(inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
    raise pyfuse3.FUSEError(pyfuse3.ENOATTR)


async def _no_xattrs(inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
    return []


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.null_fs", description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint")
    p.add_argument("--writeback", action="store_true", help="use the kernel's writeback cache")
    p.add_argument("--keep-cache", action="store_true", help="keep the page cache across opens")
    p.add_argument("--discard", action="store_true", help="drop written bytes (keep sizes): FUSE alone")
    p.add_argument("--files", type=int, default=0, help="N empty files in MNT/many/, folders of 1,000")
    p.add_argument("--big-mib", type=int, default=0, help="one file MNT/big.bin of this many MiB")
    p.add_argument("--disk", metavar="DIR", help="keep what is made through the mount as files under DIR")
    p.add_argument("--xattrs", action="store_true", help="have (no) extended attributes rather than ENOSYS")
    args = p.parse_args(argv)
    if args.files < 0 or args.big_mib < 0:
        p.error("--files and --big-mib must not be negative")
    if not os.path.isdir(args.mountpoint):
        print(f"null_fs: {args.mountpoint}: not a directory", file=sys.stderr)
        return 1
    if args.disk is not None and (args.discard or not os.path.isdir(args.disk)):
        p.error("--disk needs an existing directory and no --discard")
    fs = (DiskFs(args.disk, args.writeback, args.keep_cache) if args.disk is not None
          else NullFs(args.writeback, args.keep_cache, args.discard))
    if args.xattrs:
        fs.getxattr = _no_such_xattr  # type: ignore[method-assign]
        fs.listxattr = _no_xattrs  # type: ignore[method-assign]
    fs.populate(args.files, args.big_mib)
    if not init_mount(fs, args.mountpoint, "nullfs"):
        return 1
    print(f"mounted {args.mountpoint} (pid {os.getpid()})", flush=True)
    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
