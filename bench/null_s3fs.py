"""The floor for a cold stream from S3 through FUSE: one S3 object as a file, with nothing else done.

    python -m bench.null_s3fs MOUNTPOINT s3://BUCKET/KEY [--part-mib 16] [--ahead 4] [--keep FILE | --keep-lmdb DIR]

What a cold sequential read through pyfuse3 + trio + botocore can reach on this machine at all, to set
artfs's cold stream against (issue 13): MNT/big.bin is the object, read ahead in ranged GETs of
`--part-mib` with `--ahead` of them in flight (artfs's own part size and parallelism), each GET in a
worker thread through one botocore client (artfs's client settings), answered from the GET buffers by a
slice. None of artfs's work: no chunk layout, no digest check, no cache writes, no index, no memory
bound beyond the window; the kernel's readahead is raised to 1 MiB and the GIL switch interval lowered,
as artfs does. Anything artfs spends beyond this on a stream is artfs's own; what this cannot reach,
pyfuse3, the kernel, botocore and the S3 server (moto, on the same two cores) do not allow.

`--keep FILE`: each part is also written into FILE at its offset (a pwrite in a worker thread once
the part is served and its GET slot free, as artfs writes its cache off the serving path): the local
copy every caching filesystem keeps of what it streamed (rclone's vfs cache file, artfs's chunk cache),
in new page cache, which the plain floor never fills.

`--keep-lmdb DIR`: what artfs's design asks of its cache beyond that, and nothing else: each part is cut
into 1 MiB pieces (artfs's average chunk) whose xxh3-128 digests are computed before the part is served
(artfs checks every chunk before serving it), and the pieces are put under their digests into an LMDB
environment in DIR (one write transaction a part, sync off, as artfs's cache), off the serving path.
No content-defined cuts, no digests to compare with, no index, no eviction.

Runs in the foreground; SIGTERM/SIGINT (or `fusermount3 -u`) unmounts and ends it. Credentials and the
endpoint come from the environment (AWS_ENDPOINT_URL, as artfs reads them).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import time

import lmdb
import pyfuse3
import trio
import xxhash

from artfs.fs.mountpoint import raise_readahead
from artfs.storage.s3 import S3Store, parse_s3_uri
from bench.null_fs import init_mount, serve

MiB = 1 << 20
PIECE = MiB  # --keep-lmdb: artfs's average chunk
FILE_INODE = pyfuse3.ROOT_INODE + 1
NAME = b"big.bin"


class StreamFs(pyfuse3.Operations):
    """Root holds one file; reads are served from parts fetched ahead of the reader, in order."""

    def __init__(self, store: S3Store, key: str, size: int, part: int, ahead: int, keep_fd: int = -1,
                 keep_env: lmdb.Environment | None = None) -> None:
        super().__init__()
        self.store, self.key, self.size, self.part, self.ahead = store, key, size, part, ahead
        self.keep_fd = keep_fd  # --keep: the local copy, or -1
        self.keep_env = keep_env  # --keep-lmdb: the copy as digest-addressed pieces in LMDB, or None
        self.digests: dict[int, list[bytes]] = {}  # --keep-lmdb: part offset → its pieces' digests
        self.parts: dict[int, tuple[trio.Event, list[bytes]]] = {}
        self.slots = trio.CapacityLimiter(ahead)
        self.nursery: trio.Nursery | None = None
        self.now = time.time_ns()

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_mode = (stat.S_IFDIR | 0o555) if inode == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o444)
        a.st_nlink = 2 if inode == pyfuse3.ROOT_INODE else 1
        a.st_size = 0 if inode == pyfuse3.ROOT_INODE else self.size
        a.st_blksize = 1 << 17
        a.st_blocks = (a.st_size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.now
        a.attr_timeout = a.entry_timeout = 3600
        return a

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode not in (pyfuse3.ROOT_INODE, FILE_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, self._attr(FILE_INODE), 1)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        if off >= end:
            return b""
        first, last = off // self.part, (end - 1) // self.part
        for k in range(first, min(last + self.ahead, (self.size - 1) // self.part) + 1):
            self._start(k)
        for k in [k for k in self.parts if k < first - 1]:  # behind the reader: the page cache has it
            del self.parts[k]
        pieces = []
        for k in range(first, last + 1):
            done, box = self.parts[k]
            await done.wait()
            if not box:
                raise pyfuse3.FUSEError(errno.EIO)
            base = k * self.part
            pieces.append(memoryview(box[0])[max(off, base) - base : min(end, base + self.part) - base])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)  # type: ignore[return-value]

    def _start(self, k: int) -> None:
        if k in self.parts:
            return
        done, box = trio.Event(), list[bytes]()
        self.parts[k] = (done, box)
        assert self.nursery is not None
        self.nursery.start_soon(self._fetch, k, done, box)

    async def _fetch(self, k: int, done: trio.Event, box: list[bytes]) -> None:
        off = k * self.part
        async with self.slots:
            try:
                n = min(self.part, self.size - off)
                box.append(await trio.to_thread.run_sync(self._get, off, n))
            except Exception as e:  # noqa: BLE001 - the waiting read answers EIO
                print(f"null_s3fs: GET of part {k} failed: {e}", file=sys.stderr, flush=True)
            finally:
                done.set()
        if self.keep_fd >= 0 and box:  # --keep: off the serving path (readers have the part) and its slot
            await trio.to_thread.run_sync(os.pwrite, self.keep_fd, box[0], off)
        if self.keep_env is not None and box:
            await trio.to_thread.run_sync(self._keep_pieces, box[0], self.digests.pop(off))

    def _get(self, off: int, n: int) -> bytes:
        """A part; with --keep-lmdb its pieces' digests too (in the GET's thread, before it is served)."""
        data = self.store.get_range(self.key, off, n)
        if self.keep_env is not None:
            view = memoryview(data)
            self.digests[off] = [xxhash.xxh3_128_digest(view[i : i + PIECE]) for i in range(0, len(data), PIECE)]
        return data

    def _keep_pieces(self, data: bytes, digests: list[bytes]) -> None:
        assert self.keep_env is not None
        view = memoryview(data)
        with self.keep_env.begin(write=True) as txn:
            for i, d in enumerate(digests):
                txn.put(d, view[i * PIECE : (i + 1) * PIECE])


async def _main(fs: StreamFs, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        fs.nursery = nursery
        nursery.start_soon(_announce, mountpoint)
        await serve()
        nursery.cancel_scope.cancel()


async def _announce(mountpoint: str) -> None:
    """Once INIT is answered (it sets the mount's readahead to what it negotiated), raise the readahead
    as artfs does, then say so: a reader waits for this line."""
    await trio.to_thread.run_sync(os.stat, mountpoint)
    raise_readahead(mountpoint, 1024)
    print(f"mounted {mountpoint} (pid {os.getpid()})", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.null_s3fs", description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint")
    p.add_argument("object", help="s3://BUCKET/KEY")
    p.add_argument("--part-mib", type=int, default=16)
    p.add_argument("--ahead", type=int, default=4)
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", metavar="FILE", help="also write what is streamed into FILE (a local copy)")
    keep.add_argument("--keep-lmdb", metavar="DIR", help="also put what is streamed, as digest-addressed "
                      "1 MiB pieces, into an LMDB environment in DIR")
    args = p.parse_args(argv)
    bucket, key = parse_s3_uri(args.object)
    key = key.rstrip("/")
    store = S3Store(f"s3://{bucket}")
    size = store._client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    keep_fd = os.open(args.keep, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if args.keep else -1
    keep_env = None
    if args.keep_lmdb:  # as artfs opens its cache (storage/lmdb_env.py): no syncs, room for the object
        keep_env = lmdb.open(args.keep_lmdb, map_size=2 * size + (1 << 30), sync=False, metasync=False,
                             readahead=True, max_spare_txns=0)
    fs = StreamFs(store, key, size, args.part_mib * MiB, args.ahead, keep_fd, keep_env)
    if not init_mount(fs, args.mountpoint, "nulls3fs"):
        return 1
    sys.setswitchinterval(0.0005)
    try:
        trio.run(_main, fs, args.mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
