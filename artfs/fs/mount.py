"""The mount daemon's life: check, mount, serve, poll, unmount — in the foreground or as a daemon.

    serve(config, ready)   mount and serve until unmounted or SIGINT/SIGTERM (then unmount cleanly)
    spawn(args, log_path)  `--daemon`: start `artfs mount` detached, return its pid once the mount works

One trio loop runs pyfuse3's workers and the mount's own tasks: fetches (reader.py), the catalog poll,
access-stamp flushes of the chunk cache, the control socket of the staging directories (control_server.py:
seal, status, discard), and the writer of runs' observed inputs (run_capture.py). Blocking work (store
calls, LMDB writes, staging areas, kernel invalidations, which may wait on requests in progress) runs in
worker threads.

The mount is "ready" only once a stat of its root has gone through the kernel and back, so a caller of
`artfs mount --daemon` can use it as soon as the command returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import trio

from artfs.core.catalog import scan
from artfs.core.repo import Repo
from artfs.errors import ArtfsError
from artfs.fs import control_server as control
from artfs.fs import mountpoint
from artfs.fs.areas import Areas
from artfs.fs.chunks import MEMORY_BYTES, ChunkSource
from artfs.fs.notify import invalidate
from artfs.fs.ops import Ops
from artfs.fs.reader import Reader
from artfs.fs.run_capture import Capture, mount_source
from artfs.fs.staging_ops import StagingOps
from artfs.fs.tree import Tree
from artfs.settings import Settings
from artfs.storage.breaker import CircuitBreaker
from artfs.storage.open import open_store
from artfs.storage.store import Store

log = logging.getLogger(__name__)

READ_DEADLINE_CAP = 28.0  # an uncached read fails with EIO within 30 s, even if a connection hangs
READY_TIMEOUT = 120.0
# pyfuse3 starts another request task whenever none is idle, so one idle task is enough; more cost CPU in
# every request (cp -r into staging: 6-10% less daemon CPU, 25-30% more files/s with 1; cold stream and
# random preads: the same CPU per GB and ops/s, measured side by side)
MIN_TASKS, MAX_TASKS = 1, 99


@dataclass
class MountConfig:
    """What a mount serves and how: the command line's choices over the settings (artfs/settings.py)."""

    mountpoint: str
    settings: Settings
    store_uri: str
    endpoint_url: str | None = None
    cache_size: int | None = None
    poll: float = 10.0  # seconds; 0 disables polling
    allow_other: bool = False
    writeback_cache: bool = True  # staging writes gather in the kernel's page cache (see _become_io_flusher)
    force: bool = False


class _InterruptedReplies(logging.Filter):
    """pyfuse3 logs an ERROR when a reply finds its request gone (ENOENT: the caller was interrupted,
    e.g. Ctrl-C on a reader). Nothing failed: keep it as DEBUG, so ERROR lines stay real errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "fuse_reply_* failed with" in record.getMessage() \
                and os.strerror(errno.ENOENT) in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def setup_logging(log_path: str, to_stderr: bool, level: str = "INFO") -> None:
    """`level` (the settings' ARTFS_LOG_LEVEL) to the log file, and to stderr in the foreground."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.FileHandler(log_path)]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pyfuse_log = logging.getLogger("pyfuse3")
    pyfuse_log.addFilter(_InterruptedReplies())
    if level != "DEBUG":
        pyfuse_log.setLevel(logging.INFO)


def _read_deadline(store: Store) -> float:
    """A read waits for the store a little longer than the store's own retry deadline, capped."""
    return min(READ_DEADLINE_CAP, float(getattr(store, "deadline", 25.0)) + 3.0)


def _options(allow_other: bool) -> set[str]:
    # Not "ro": a writable staging/ directory will live in this mount; writes get EROFS from Ops instead.
    # Never max_read: the mount fails with it (libfuse already negotiates 1 MiB requests).
    options = set(pyfuse3.default_options) | {"fsname=artfs", "subtype=artfs", "default_permissions"}
    if allow_other:
        options.add("allow_other")
    return options


class _Daemon:
    """The trio side of one mount: pyfuse3's loop plus the mount's periodic tasks."""

    def __init__(self, config: MountConfig, repo: Repo, tree: Tree, chunks: ChunkSource, ops: Ops,
                 areas: Areas, capture: Capture) -> None:
        self.capture = capture
        self.config = config
        self.repo = repo
        self.tree = tree
        self.chunks = chunks
        self.ops = ops
        self.areas = areas
        self.signalled = False
        self._poll_failing = False
        self._scanning = trio.Lock()  # one catalog scan applied at a time, in order
        areas.rescan = self.rescan

    async def main(self, ready: Callable[[], None]) -> None:
        async with trio.open_nursery() as nursery:
            self.chunks.bind(nursery)
            nursery.start_soon(self._signals)
            nursery.start_soon(self._flush_access)
            if self.config.poll > 0:
                nursery.start_soon(self._poll)
            await nursery.start(self.capture.serve)
            await nursery.start(control.serve, self.areas.control_path, self.areas,
                                self.config.settings.test_seal_gate, self.capture.run_of)
            await nursery.start(self.ops.next_listings.run)
            nursery.start_soon(self._announce, ready)
            await pyfuse3.main(min_tasks=MIN_TASKS, max_tasks=MAX_TASKS)
            with trio.move_on_after(10):
                await self.chunks.drain()
            nursery.cancel_scope.cancel()

    async def _announce(self, ready: Callable[[], None]) -> None:
        await trio.to_thread.run_sync(os.stat, self.config.mountpoint)  # a round trip through the kernel
        # Only now: FUSE's INIT (answered by then) lowers the bdi readahead to what INIT negotiated.
        mountpoint.raise_readahead(self.config.mountpoint, self.config.settings.read_ahead_kb)
        log.info("mounted %s at %s (pid %d)", self.repo.store.uri, self.config.mountpoint, os.getpid())
        ready()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("%s: unmounting %s", signal.Signals(signum).name, self.config.mountpoint)
                self.signalled = True
                pyfuse3.terminate()
                return

    async def _flush_access(self) -> None:
        cache = self.repo.cache
        while True:
            await trio.sleep(1.0)
            if cache.pending_access_due():
                try:
                    await trio.to_thread.run_sync(cache.flush_access)
                except Exception as e:  # noqa: BLE001 - stamps only steer eviction: never fatal
                    log.warning("cannot write cache access times: %s", e)

    async def _poll(self) -> None:
        """New versions and alias moves appear within `poll` seconds; the kernel forgets stale entries."""
        while True:
            await trio.sleep(self.config.poll)
            try:
                await self.rescan()
            except ArtfsError as e:
                if not self._poll_failing:
                    log.warning("cannot poll %s for new versions (will keep trying): %s", self.repo.store.uri, e)
                self._poll_failing = True
                continue
            except Exception:
                log.exception("poll of %s failed", self.repo.store.uri)
                continue
            if self._poll_failing:
                log.info("store %s reachable again", self.repo.store.uri)
                self._poll_failing = False

    async def rescan(self) -> None:
        """Read the catalog now (the poll, and a seal that published); untouched stagings follow latest."""
        async with self._scanning:
            catalog = await trio.to_thread.run_sync(scan, self.repo, self.tree.catalog)
            before = self.tree.catalog
            stale, changes = self.tree.apply(catalog)
            for line in changes:
                log.info("%s", line)
            if stale:
                await trio.to_thread.run_sync(invalidate, stale)
            moved = {name for name in before.keys() | catalog.keys() if before.get(name) != catalog.get(name)}
            if moved:
                await self.areas.catalog_changed(moved)
            await self.areas.renew_leases()


def serve(config: MountConfig, ready: Callable[[], None] = lambda: None) -> None:
    """Mount and serve until unmounted (`artfs unmount`, fusermount3 -u) or signalled. Blocks."""
    if config.writeback_cache:
        _become_io_flusher()  # first: the threads started later inherit it
    _raise_open_files_limit()
    path = mountpoint.prepare(config.mountpoint, config.force)
    config.mountpoint = path
    settings = config.settings
    store: Store = CircuitBreaker(open_store(config.store_uri, endpoint_url=config.endpoint_url,
                                             retries=settings.store_retries, deadline=settings.store_deadline,
                                             scratch=settings.places.client_data()))
    repo = Repo(store, settings.places, cache_size=config.cache_size)
    try:
        try:
            if os.path.abspath(config.store_uri) != settings.places.default_store():
                store.check()  # a mistyped store must not mount as an empty one
            catalog = scan(repo)
        except ArtfsError as e:
            raise ArtfsError(f"cannot read the store {store.uri}: {e}") from None
        deadline = _read_deadline(store)
        tree = Tree(repo, catalog, deadline=deadline)
        memory = MEMORY_BYTES if settings.memory_cache is None else settings.memory_cache
        chunks = ChunkSource(store, repo.cache, memory_bytes=memory, damage=repo.damage)
        reader = Reader(chunks, repo.index, deadline, whole_limit=repo.cache.max_bytes // 4)
        areas = Areas(tree, settings.places.control_socket(path))
        areas.load_local()
        capture = Capture(repo, settings.places, mount_source(path))
        staging = StagingOps(areas, tree, reader, writeback_cache=config.writeback_cache)
        staging.capture = capture
        ops = Ops(tree, reader, staging, capture)
        ops.enable_writeback_cache = config.writeback_cache  # pyfuse3 reads it from the instance at init
        daemon = _Daemon(config, repo, tree, chunks, ops, areas, capture)
        try:
            pyfuse3.init(ops, path, _options(config.allow_other))
        except RuntimeError as e:
            raise ArtfsError(f"cannot mount at {path}: {e} (see the messages above or in the log)") from None
        unmount = True
        try:
            log.info("serving %s: %d artifacts, cache %s, poll %s", store.uri, len(catalog), repo.cache_dir,
                     f"{config.poll:g} s" if config.poll > 0 else "off")
            # Background threads (an index build, fetches) hold the GIL up to the switch interval whenever
            # the loop wants it back: 5 ms by default, paid several times by every cold request.
            sys.setswitchinterval(SWITCH_INTERVAL)
            trio.run(daemon.main, ready)
            unmount = daemon.signalled  # otherwise the kernel ended the session: nothing left to unmount
        finally:
            pyfuse3.close(unmount=unmount)
            _wait_fetches(chunks)
            areas.close()
            log.info("unmounted %s; %s", path, ops.stats_line())
    finally:
        repo.close()


SWITCH_INTERVAL = 0.0005  # seconds; see serve()
PR_SET_IO_FLUSHER = 57  # linux/prctl.h (Linux 5.6)
OPEN_FILES = 65536  # the soft open-files limit the daemon asks for (see _raise_open_files_limit)


def _become_io_flusher() -> None:
    """With the writeback cache, writers' dirty pages of this mount wait in the kernel until this daemon
    takes them and writes them to the staging disk. Throttled like any writer, the daemon could end up
    waiting for dirty pages that only it can clean; an IO flusher is throttled on its own device's limits
    only. Needs CAP_SYS_RESOURCE: without it the mount still works, as every user-space filesystem does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        log.info("not an IO flusher (prctl: %s): the kernel may throttle this daemon's writes like any "
                 "writer's", os.strerror(ctypes.get_errno()))


def _raise_open_files_limit(want: int = OPEN_FILES) -> None:
    """The daemon holds descriptors per staging area (open data files, files made ahead) and per fetch:
    raise the soft limit toward the hard one (1,024 by default on many systems, which a few busy areas
    would reach: EMFILE on a create). Never lowers it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.info("cannot raise the open-files limit from %d: %s", soft, e)


def _wait_fetches(chunks: ChunkSource, timeout: float = 10.0) -> None:
    """Abandoned store fetches may still be writing to the cache: give them a moment before closing it."""
    deadline = time.monotonic() + timeout
    while chunks.busy_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    if chunks.busy_threads:
        log.warning("%d store fetches still running at exit", chunks.busy_threads)


# --- --daemon ----------------------------------------------------------------------------------------


def spawn(args: list[str], log_path: str, timeout: float = READY_TIMEOUT) -> int:
    """Start `artfs mount ARGS` detached (own session, cwd /, output to the log); its pid once ready.

    The child reports on a pipe: `ready`, or `error <message>`; EOF means it died first.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    r, w = os.pipe()
    entry = "import sys; sys.argv[0] = 'artfs'; from artfs.cli import main; main()"
    cmd = [sys.executable, "-c", entry, "mount", *args, "--log", log_path, "--ready-fd", str(w)]
    try:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(w,),
                                    start_new_session=True, cwd="/")
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], timeout)
        line = pipe.readline().decode(errors="replace").strip() if ready else None
    if line == "ready":
        proc.returncode = 0  # detached on purpose: no ResourceWarning for a child we never wait for
        return proc.pid
    if line is None:
        mountpoint.kill_daemon(proc.pid)
        raise ArtfsError(f"the mount was not ready after {timeout:.0f} s; see {log_path}")
    if line.startswith("error "):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        raise ArtfsError(line[len("error ") :])
    code = proc.wait(timeout=10)
    raise ArtfsError(f"the mount daemon exited (status {code}) before the mount was ready; see {log_path}")
