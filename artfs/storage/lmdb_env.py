"""Opening LMDB environments: one per path per process, never carried across fork(). The chunk cache and
the per-store index both open theirs here.

The rule, and why:

- **One environment per path per process.** LMDB forbids opening its files twice in a process (closing
  one copy drops the locks the other relies on), so `acquire` hands every opener of a path the same
  `SharedEnv`, counting its users; the last `release` closes it. An opener that needs a bigger map remaps it.
- **Set up front.** The map is address space, not disk, and LMDB's 10 MiB default is far too small; the
  reader table (`max_readers`) is sized by the first process to open the files, so every opener asks for
  the same 512. Slots of crashed processes are freed at open (`reader_check`): they pin old pages and make
  the file grow.
- **Short transactions, counted.** Each call uses its own transaction and copies the value out before it
  ends: a long-lived reader would pin old pages and make the file grow. The transactions of this process
  in flight are counted (the "gate"), so closing, remapping and `fork()` can wait for them to end.
- **Never across fork.** Before a fork, every environment of the process is quiesced (no transaction in
  flight, none starting); the forked child then closes the inherited environments (safe only with no
  transaction in flight) and reopens them on first use. No read transaction is cached for reuse
  (`max_spare_txns=0`): a cached one keeps a reader slot that a forked child would clobber.
- **In use or not, asked of LMDB's own lock.** Every process with an environment open holds a shared lock on
  its lock file; `in_use` probes it, and `remove_unused` deletes an environment only while holding it
  exclusively (`artfs cache clear`: files nobody has mapped can go whole; LMDB files never shrink).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import lmdb

from artfs.errors import ArtfsError

MAX_READERS = 512  # the first opener's value wins across processes: every artfs environment asks for this


class Handles(Protocol):
    """An open environment and its named databases, replaced together (after fork)."""

    @property
    def env(self) -> lmdb.Environment: ...


H = TypeVar("H", bound=Handles)


@dataclass(frozen=True, slots=True)
class Options:
    """How a kind of environment is opened (fixed at open). Both kinds are rebuildable, hence no syncs."""

    what: str  # for errors: "the chunk cache"
    max_dbs: int
    readahead: bool


class SharedEnv(Generic[H]):
    """The one LMDB environment of a path in this process, and the gate: a count of this process's
    transactions in flight, so remapping, closing and forking can wait until there are none.

    Readers take no lock: `enter` appends to `inflight` and then reads `handles`; `_quiesce` clears
    `handles` and then waits for `inflight` to empty. Under the GIL one of the two always sees the other.
    """

    def __init__(self, path: str, map_size: int, options: Options,
                 databases: Callable[[lmdb.Environment], H]) -> None:
        self.path = path
        self.map_size = map_size
        self.requested_map = map_size  # what the last remap asked for (LMDB may keep more: the file's extent)
        self.options = options
        self._databases = databases
        self.users = 0
        self.closed = False
        self.handles: H | None = None
        self._held: H | None = None  # hidden while the process forks
        self._reset_locks()
        self.handles = self._open()

    def _reset_locks(self) -> None:
        """Fresh at open and in a forked child, where threads of the parent may have held the old ones."""
        self.inflight: list[None] = []
        self.open_lock = threading.Lock()  # (re)opening, remapping, closing
        self.write_lock = threading.Lock()  # one write txn per process; taken before the gate, never inside

    def _open(self) -> H:
        what = self.options.what
        try:
            env = lmdb.open(
                self.path,
                subdir=True,
                mode=0o700,
                map_size=self.map_size,
                max_dbs=self.options.max_dbs,
                max_readers=MAX_READERS,
                max_spare_txns=0,  # a cached read txn keeps a reader slot that a forked child would clobber
                sync=False,
                metasync=False,
                readahead=self.options.readahead,
                lock=True,
            )
        except lmdb.Error as e:
            raise ArtfsError(f"cannot open {what} at {self.path}: {e}") from None
        try:
            env.reader_check()  # free slots of crashed processes: they pin old pages and grow the file
            return self._databases(env)
        except lmdb.Error as e:
            env.close()
            raise ArtfsError(f"cannot open {what} at {self.path}: {e}") from None

    def enter(self) -> H:
        """Count a transaction in flight and return the handles to run it on; pair with `exit`."""
        while True:
            self.inflight.append(None)
            handles = self.handles
            if handles is not None:
                return handles
            self.inflight.pop()
            self._wait_for_handles()

    def exit(self) -> None:
        self.inflight.pop()

    @contextmanager
    def transaction(self, write: bool = False, buffers: bool = False) -> Iterator[tuple[lmdb.Transaction, H]]:
        """A transaction inside the gate, with the handles it runs on; committed unless the body raises.
        Buffers (`buffers=True`) die with it. Hot paths use `enter`/`exit` directly."""
        if write:
            with self.write_lock:
                yield from self._transaction(True, buffers)
        else:
            yield from self._transaction(False, buffers)

    def get(self, key: bytes, db: Callable[[H], Any]) -> bytes | None:
        """One value, copied out, from the database `db` picks: the common read, in its own transaction,
        without the cost of a context manager (a third of a lookup in the store index)."""
        h = self.enter()
        try:
            txn = h.env.begin(db=db(h))
            try:
                return txn.get(key)
            finally:
                txn.abort()
        finally:
            self.exit()

    def _transaction(self, write: bool, buffers: bool) -> Iterator[tuple[lmdb.Transaction, H]]:
        h = self.enter()
        try:
            with h.env.begin(write=write, buffers=True) if buffers else h.env.begin(write=write) as txn:
                yield txn, h
        except (lmdb.DiskError, lmdb.MapFullError) as e:  # a full disk: one clear line, not a traceback
            raise ArtfsError(
                f"cannot write {self.options.what} at {self.path} ({e}): free space on that disk, or point "
                "ARTFS_CACHE elsewhere (the cache is disposable)"
            ) from None
        finally:
            self.exit()

    def _wait_for_handles(self) -> None:
        """Slow path of `enter`: wait out a remap, or reopen after fork."""
        with self.open_lock:
            if self.handles is not None:
                return
            if self.closed:
                raise ValueError(f"{self.options.what} is closed")
            self.handles = self._open()

    def _quiesce(self) -> H | None:
        """Hide the handles from new callers and wait until no transaction is in flight. Call with
        `open_lock` held and outside the gate; then publish the handles again, or close them."""
        handles, self.handles = self.handles, None
        while self.inflight:  # read txns last microseconds; a writer may take longer
            time.sleep(0.0002)
        return handles

    def remap(self, size: int = 0) -> None:
        """Remap to `size`, or with 0 to the size recorded in the file, which another process may have
        grown (MapResizedError, MapFullError). Remapping under a live transaction would pull pages from
        under it, hence the quiesce."""
        with self.open_lock:
            handles = self._quiesce()
            if handles is not None:
                handles.env.set_mapsize(size)
                self.map_size = handles.env.info()["map_size"]
                self.requested_map = size
                self.handles = handles

    def close(self) -> None:
        with self.write_lock, self.open_lock:
            self.closed = True
            handles = self._quiesce()
            if handles is not None:
                handles.env.close()

    def hold_for_fork(self) -> None:
        """Before fork: wait until no transaction is in flight, and start none until after it."""
        self.open_lock.acquire()
        self._held = self._quiesce()

    def resume_after_fork(self) -> None:
        self.handles, self._held = self._held, None
        self.open_lock.release()

    def drop_after_fork(self) -> None:
        """In the child, right after fork (one thread): close the parent's environment, to reopen on first
        use, and renew the locks, which the parent's other threads may have held.

        Closing is safe only because `hold_for_fork` left no transaction in flight: mdb_env_close clears
        just the reader slots of the calling pid, and fcntl locks are not inherited; but ending an inherited
        transaction would clear the parent's reader slot, which lives in shared memory.
        """
        handles, self._held = self._held, None
        self._reset_locks()
        if handles is not None:
            handles.env.close()


_REGISTRY_LOCK = threading.Lock()
OPEN: dict[str, SharedEnv[Any]] = {}  # realpath of the environment -> its one environment in this process


def acquire(path: str, map_size: int, options: Options, databases: Callable[[lmdb.Environment], H]) -> SharedEnv[H]:
    """The environment at `path` (a real path), opened with at least `map_size`; pair with `release`."""
    with _REGISTRY_LOCK:
        shared = OPEN.get(path)
        if shared is None:
            shared = OPEN[path] = SharedEnv(path, map_size, options, databases)
        elif shared.map_size < map_size:
            shared.remap(map_size)
        shared.users += 1
        return shared


def release(shared: SharedEnv[Any]) -> None:
    with _REGISTRY_LOCK:  # held while closing, so nobody reopens the files before they are closed
        shared.users -= 1
        if shared.users == 0:
            del OPEN[shared.path]
            shared.close()


def in_use(path: str) -> bool:
    """Whether any process (this one included) has the environment at `path` open.

    LMDB holds a shared fcntl lock on byte 0 of `lock.mdb` for as long as a process has the environment
    open; a probe for an exclusive lock conflicts with it. This process's own environments are known from
    `OPEN` (fcntl locks never conflict within a process, and closing the probe would drop ours).
    """
    real = os.path.realpath(path)
    if real in OPEN:
        return True
    with _exclusive(real) as got:
        return not got


def remove_unused(path: str) -> bool:
    """Delete the environment at `path` if no process has it open; False (nothing done) if one has.

    The exclusive lock is held while the directory is renamed away: no process has the files mapped while
    they go. One that starts opening them in that very instant waits for the lock, then fails to open (one
    error; run again, it makes fresh files): it never sees half of the old ones."""
    real = os.path.realpath(path)
    if real in OPEN or not os.path.isdir(real):
        return False
    with _exclusive(real) as got:
        if not got:
            return False
        doomed = f"{real}.removing-{os.getpid()}"
        os.rename(real, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return True


@contextmanager
def _exclusive(real: str) -> Iterator[bool]:
    """Try to take the lock every opener of the environment holds shared; yields whether it was taken
    (True also when there is no lock file: nobody has the environment open)."""
    try:
        fd = os.open(os.path.join(real, "lock.mdb"), os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _before_fork() -> None:
    _REGISTRY_LOCK.acquire()
    for shared in OPEN.values():
        shared.hold_for_fork()


def _after_fork_in_parent() -> None:
    for shared in OPEN.values():
        shared.resume_after_fork()
    _REGISTRY_LOCK.release()


def _after_fork_in_child() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for shared in OPEN.values():
        shared.drop_after_fork()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
