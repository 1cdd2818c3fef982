"""The read path of open files: chunk offsets bisected per read, and prefetch ahead of the reader.

- **Prefetch** (per open file, after Mountpoint for S3): a read near the end of the previous one (1 MiB
  back, 2 MiB forward, or anywhere already being prefetched: the kernel's readahead arrives out of order)
  is sequential and doubles the window of chunks fetched ahead (2 MiB up to 64 MiB), in parts of up to
  16 MiB (one ranged GET each, four in flight at the full window; Mountpoint for S3 uses 8 MiB, but the
  per-request CPU, ours and the server's, made 8 MiB parts 10-25% slower here); a far seek resets it.
  A file bigger than the cache can keep is streamed without writing what readahead fetches to LMDB: it
  would evict its own head before any re-read, and everything else the cache holds on the way.
  Chunks a sequential reader left `RELEASE_BEHIND` behind are dropped from the daemon's memory (the
  kernel's page cache has them; see ChunkSource.release): a stream then holds about its window, not every
  GET buffer it passed (daemon memory after a 512 MiB stream: 134 MB before, 5-10 MB).
- **Random access.** A file read at scattered offsets (`RANDOM_SEEKS` far seeks) that fits a quarter of the
  cache is fetched whole in the background, in parallel `WHOLE_PART` GETs, so that later reads are cache
  hits (what makes s3fs and rclone fast here): one request per chunk is what random reads cost otherwise.
  The first reads are served as before; later ones wait for the part that holds their chunk, started at
  once if it was still queued (chunks.py). Each part, as it lands, is also pushed into the kernel's page
  cache (`notify_store`; a version's bytes never change), for files up to `push_limit`, before its GET slot
  takes the next part (pushes keep pace with the landing): a read of it then never reaches the daemon.
  Measured on 2,000 random 4 KiB preads of a 512 MiB file (moto, loaded 2-core machine), a read answered by
  the daemon from the cache took 0.15-0.4 ms, one from the page cache a few µs (s3fs, in C, answers in
  ~0.03 ms). Only whole pages are pushed; a page across two chunks is assembled (a few KiB copied per
  chunk), one across two parts is left to a read. Chunks already in the cache when the whole fetch starts
  are copied out of it and pushed too.
- **Directory order.** Small files opened in name order in one directory (a dataset loader) prefetch the
  next files' chunks, whole spans of the packs that hold them: commits pack files in path order, so
  thousands of small files cost a handful of ranged GETs.
- A file's layout (chunk offsets, bisect, assembling a read) is core/content.py's; where its chunks come
  from (memory, cache, store; single flight) is chunks.py's.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from functools import partial

import trio

from artfs.core.content import Chunk, FileLayout
from artfs.core.index import StoreIndex
from artfs.core.manifest import FILE, Entry
from artfs.core.packs import ChunkRef
from artfs.fs.chunks import ChunkSource, MiB, physical_ram

FIRST_WINDOW = 2 * MiB
MAX_WINDOW = 64 * MiB
PART = 16 * MiB  # prefetch unit: one ranged GET (see the module docstring); ≤ content.MAX_SPAN
SEQ_BACK = 1 * MiB
SEQ_FORWARD = 2 * MiB  # beyond the end of the last read, or anywhere already being prefetched
RELEASE_BEHIND = 4 * MiB  # chunks ending this far before a sequential read leave memory (kernel readahead
# arrives a little out of order, so not right behind the reader)
SLICE_MAX = 128 * 1024  # a read this small of a cached chunk not in memory copies only its bytes (chunks.py)
RANDOM_SEEKS = 3  # far seeks before a file counts as randomly read (a stray read ahead and back is two) ...
SEQUENTIAL_RUN = 8  # ... with fewer than this many sequential reads between them: concurrent readers' kernel
# readahead arrives out of order, and a stream must not count as random for a few stray reads
WHOLE_PART = 16 * MiB  # the background fetch of a randomly read file, in parts of this (fewer requests:
# moto's CPU per request, and ours, paced it; see chunks.WHOLE_SLOTS)
PAGE = 4096
PUSH_RAM_SHARE = 8  # files fetched whole are pushed into the page cache up to 1/8 of the RAM in size
DIR_FIRST = 2 * MiB  # lookahead of the first cold open in a directory; doubles while opens go in name order
DIR_RANDOM = 1 * MiB  # an open out of name order still takes its neighbours from the same GET
DIR_MAX = 32 * MiB
DIR_SMALL = 8 * MiB  # files up to this size start their fetch at open, with their neighbours
DIR_PAGE = 256
DIR_SCANS = 256


log = logging.getLogger(__name__)

Store = Callable[[int, int, Chunk], None]  # (inode, offset, bytes): pyfuse3.notify_store


class OpenFile:
    """One open file: its layout (bisected on read) and its readahead state."""

    __slots__ = ("label", "layout", "inode", "last_end", "window", "scheduled", "seeks", "run", "whole",
                 "released", "repeats")

    def __init__(self, label: str, layout: FileLayout, inode: int = 0) -> None:
        self.label = label
        self.layout = layout
        self.inode = inode  # the kernel's inode (0: unknown, nothing is pushed into its page cache)
        self.last_end = 0
        self.window = 0
        self.scheduled = 0
        self.seeks = 0
        self.run = 0  # sequential reads since the last far seek
        self.whole = False  # fetched whole in the background (random access)
        self.released = 0  # chunks before this one were released from memory (sequential reading)
        self.repeats: set[bytes] | None = None  # digests that occur more than once in the file (kept)

    @property
    def size(self) -> int:
        return self.layout.size


class _DirScan:
    """Opens in one directory: where the run of name-ordered opens is, and what is fetched ahead."""

    __slots__ = ("start", "last", "budget", "ahead", "ahead_bytes", "horizon")

    def __init__(self, name: str) -> None:
        self.start = name
        self.last = name
        self.budget = DIR_FIRST
        self.ahead: deque[tuple[str, int]] = deque()
        self.ahead_bytes = 0
        self.horizon: str | None = None


class Reader:
    """Serves `read` for open files of versions, over a ChunkSource and the manifest index."""

    def __init__(self, chunks: ChunkSource, index: StoreIndex, deadline: float, whole_limit: int = 0,
                 push_limit: int | None = None, store_pages: Store | None = None) -> None:
        """`whole_limit`: the largest file fetched whole when read at random (0: never; see the docstring);
        `push_limit`: the largest such file also pushed into the page cache (default: the smaller of
        `whole_limit` and an eighth of the RAM), by `store_pages` (default: pyfuse3.notify_store)."""
        self.chunks = chunks
        self.whole_limit = whole_limit
        self.push_limit = min(whole_limit, physical_ram() // PUSH_RAM_SHARE) if push_limit is None else push_limit
        self._store_pages = store_pages
        self._pushing = trio.Lock()  # one push at a time: each is a burst of kernel copies
        self.index = index
        self.deadline = deadline
        self._scans: OrderedDict[tuple[str, str], _DirScan] = OrderedDict()
        self._scratch = bytearray(MiB)

    def open(self, label: str, mid: str, packs: list[str], entry: Entry, inode: int = 0) -> OpenFile:
        """Prepare a file for reading; a cold small file starts fetching now, with its next neighbours.
        `inode`: the kernel's, for pushing a randomly read file into its page cache (0: never)."""
        layout = FileLayout.of_entry(entry, packs)
        if layout.refs and entry.size <= DIR_SMALL:
            self._directory_order(mid, packs, entry, layout.refs)
        return OpenFile(label, layout, inode)

    async def read(self, f: OpenFile, off: int, size: int) -> bytes | memoryview:
        """Bytes [off, off+size) of the file (short at the end). Raises trio.TooSlowError at the deadline.

        A read within one chunk is a view of that chunk. A read across chunks is assembled in one scratch
        buffer, reused by the next such read: a fresh megabyte per read costs more than the copy (its
        pages fault in). That is safe because it is filled after this method's last await, and pyfuse3
        copies the reply into the kernel before control returns to trio; other callers copy at once.
        """
        layout = f.layout
        end = layout.clip(off, size)
        if off >= end:
            return b""
        refs = layout.refs
        first, last = layout.covering(off, end)
        now = self.chunks.now
        got = [now(refs[k]) for k in range(first, last)]
        self._readahead(f, off, end)
        if got[0] is None and last - first == 1 and end - off <= SLICE_MAX:
            base = layout.starts[first]
            piece = self.chunks.slice_now(refs[first], off - base, end - base)
            if piece is not None:
                self.chunks.stats["reads"] += 1
                self.chunks.stats["read_bytes"] += end - off
                return piece
        if None in got:
            missing = [refs[k] for k, data in zip(range(first, last), got, strict=True) if data is None]
            self.chunks.stats["misses"] += len(missing)
            with trio.fail_after(self.deadline):
                fetched = await self.chunks.get(missing)
            got = [data if data is not None else fetched[refs[k].digest]
                   for k, data in zip(range(first, last), got, strict=True)]
        self.chunks.stats["reads"] += 1
        self.chunks.stats["read_bytes"] += end - off
        if last - first > 1 and len(self._scratch) < end - off:
            self._scratch = bytearray(end - off)
        return layout.assemble(first, got, off, end, self._scratch)  # type: ignore[arg-type]

    def _readahead(self, f: OpenFile, off: int, end: int) -> None:
        """Grow the window on sequential reads and keep chunks up to `last_end + window` fetched or coming,
        in parts of up to PART bytes: per-request cost dominates object stores, so no tiny GETs."""
        if f.last_end - SEQ_BACK <= off <= max(f.last_end + SEQ_FORWARD, f.scheduled):
            f.window = min(MAX_WINDOW, max(FIRST_WINDOW, f.window * 2))
            f.last_end = max(f.last_end, end)
            f.run += 1
            if f.run >= SEQUENTIAL_RUN:
                f.seeks = 0  # sequential after all: earlier far seeks were stray reads
            self._release_behind(f, off)
        else:  # a far seek: random access until a sequential run shows again
            f.window = 0
            f.last_end = f.scheduled = end
            f.released = bisect_right(f.layout.starts, off) - 1
            f.seeks += 1
            f.run = 0
            if f.seeks >= RANDOM_SEEKS and not f.whole and f.size <= self.whole_limit:
                f.whole = True
                self.chunks.stats["whole_files"] += 1
                push = f.inode and f.size <= self.push_limit
                self.chunks.fetch_whole(f.layout.refs, WHOLE_PART, partial(self._landed, f) if push else None)
            return
        refs, starts = f.layout.refs, f.layout.starts
        target = min(f.size, f.last_end + f.window)
        f.scheduled = max(f.scheduled, f.last_end)
        while f.scheduled < target and (target - f.scheduled >= min(PART, f.window // 2) or target == f.size):
            lo = bisect_right(starts, f.scheduled) - 1
            hi = lo + 1
            while hi < len(refs) and starts[hi] < target and starts[hi + 1] - starts[lo] <= PART:
                hi += 1
            self.chunks.prefetch(refs[lo:hi], load_cached=True, cache=f.size <= self.chunks.cache.capacity())
            f.scheduled = starts[hi]

    async def _landed(self, f: OpenFile, data: dict[bytes, Chunk]) -> None:
        """Chunks of a file fetched whole have landed: push them into the page cache (see the docstring)."""
        starts = f.layout.starts
        pieces = [(starts[k], data[r.digest]) for k, r in enumerate(f.layout.refs) if r.digest in data]
        if pieces:
            await self._push(f.inode, f.size, pieces)

    async def _push(self, inode: int, size: int, pieces: list[tuple[int, Chunk]]) -> None:
        async with self._pushing:
            try:
                pushed = await trio.to_thread.run_sync(push_pages, self._store_pages or _notify_store, inode, size,
                                                       pieces, abandon_on_cancel=True)
            except OSError as e:  # the kernel forgot the inode (closed and evicted), or refuses: reads still work
                log.debug("cannot push %d chunks of inode %d into the page cache: %s", len(pieces), inode, e)
                self.chunks.stats["push_failed"] += 1
            else:
                self.chunks.stats["pushed_bytes"] += pushed

    def _release_behind(self, f: OpenFile, off: int) -> None:
        """Release the chunks that end RELEASE_BEHIND or more before `off` (see the module docstring),
        except those the file holds more than once: a later part of it needs them again."""
        starts = f.layout.starts
        behind = bisect_right(starts, off - RELEASE_BEHIND) - 1
        if behind <= f.released:
            return
        refs = f.layout.refs
        if f.repeats is None:
            counts = Counter(r.digest for r in refs)
            f.repeats = {d for d, n in counts.items() if n > 1}
        self.chunks.release([r for r in refs[f.released:behind] if r.digest not in f.repeats])
        f.released = behind

    def _directory_order(self, mid: str, packs: list[str], entry: Entry, refs: list[ChunkRef]) -> None:
        """Small files opened in name order: keep the next files' chunks coming (about `budget` bytes)."""
        parent, _, name = entry.path.rpartition("/")
        key = (mid, parent)
        scan = self._scans.get(key)
        if scan is None:
            scan = self._scans[key] = _DirScan(name)
            while len(self._scans) > DIR_SCANS:
                self._scans.popitem(last=False)
        else:
            self._scans.move_to_end(key)
            in_run = scan.start <= name <= (scan.horizon or scan.last)
            if name > scan.last or in_run:
                if name > scan.last:
                    scan.budget = min(DIR_MAX, scan.budget * 2)
                    scan.last = name
            else:
                scan.start = scan.last = name
                scan.budget = DIR_RANDOM
                scan.ahead.clear()
                scan.ahead_bytes = 0
                scan.horizon = None
        while scan.ahead and scan.ahead[0][0] <= scan.last:
            scan.ahead_bytes -= scan.ahead.popleft()[1]
        cold = not self.chunks.present(refs[0].digest) or not self.chunks.present(refs[-1].digest)
        if not cold and scan.ahead_bytes >= scan.budget // 2:
            return
        after = scan.horizon if scan.horizon is not None and scan.horizon > name else name
        extra: list[ChunkRef] = []
        while scan.ahead_bytes < scan.budget:
            page = self.index.listdir(mid, parent, after=after, limit=DIR_PAGE)
            for e in page:
                after = e.name
                if e.kind != FILE or not e.size or e.size > DIR_SMALL:
                    continue  # a big file is a sequential stream of its own: its reads prefetch it
                extra += e.refs(packs)
                scan.ahead.append((e.name, e.size))
                scan.ahead_bytes += e.size
                scan.horizon = e.name
                if scan.ahead_bytes >= scan.budget:
                    break
            if len(page) < DIR_PAGE:
                if scan.horizon is None or scan.horizon < after:
                    scan.horizon = after  # the directory's end: nothing further to fetch
                break
        self.chunks.start(refs if cold else (), extra)


def push_pages(store: Store, inode: int, size: int, pieces: Sequence[tuple[int, Chunk]]) -> int:
    """Push the whole pages of `pieces` ((file offset, bytes), by offset, not overlapping) into `inode`'s page
    cache; a page across two adjacent pieces is assembled from both. Returns the bytes pushed. Blocking: the
    kernel may wait for a read in progress on the same page, which only the trio loop answers."""
    runs: list[list[tuple[int, Chunk]]] = []
    for off, data in pieces:
        if runs and runs[-1][-1][0] + len(runs[-1][-1][1]) == off:
            runs[-1].append((off, data))
        else:
            runs.append([(off, data)])
    pushed = 0
    for run in runs:
        start, end = run[0][0], run[-1][0] + len(run[-1][1])
        for off, data in run:
            stop = off + len(data)
            lo = -(-off // PAGE) * PAGE
            hi = stop if stop == size else stop // PAGE * PAGE
            if hi > lo:
                store(inode, lo, memoryview(data)[lo - off : hi - off])
                pushed += hi - lo
            page = stop // PAGE * PAGE  # the page across this piece's end, if it starts in this piece
            page_end = min(page + PAGE, size)
            if stop % PAGE and stop != size and page >= max(off, start) and page_end <= end:
                store(inode, page, _gather(run, page, page_end))
                pushed += page_end - page
    return pushed


def _gather(run: list[tuple[int, Chunk]], lo: int, hi: int) -> bytes:
    """Bytes [lo, hi) of a run of adjacent pieces."""
    out = bytearray()
    for off, data in run:
        if off < hi and off + len(data) > lo:
            out += memoryview(data)[max(lo, off) - off : min(hi, off + len(data)) - off]
    return bytes(out)


def _notify_store(inode: int, offset: int, data: Chunk) -> None:
    import pyfuse3  # only a mount pushes; tests of the reader pass their own `store_pages`

    pyfuse3.notify_store(inode, offset, data)  # type: ignore[arg-type]  # any buffer (PyObject_GetBuffer)

