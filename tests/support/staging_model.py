"""The reference model of staging, shared by the test without FUSE (tests/core/test_staging.py) and the test
through a real mount (tests/fs/test_staging_model.py): a plain directory that every random operation also
runs on, so that staging must agree with it on trees, contents and errnos.

Here: the vocabulary both draw their operations from, the tree both start from, how a path is picked so
operations meet entries, and the errno comparison. Each test keeps its own rules, because it applies an
operation differently (StagingArea calls, or system calls on the mount: renameat2 is in syscalls.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import random
import shutil
import stat
from collections.abc import Callable, Iterable

from hypothesis import strategies as st

from tests.support.syscalls import errno_of
from tests.support.trees import write_tree

MiB = 1 << 20

NAMES = ["a", "b", "c"]
LINK_NAMES = ["l1", "l2"]  # symlinks only ever live under these names, so no path ever walks through one
PATHS = ["/".join(t) for d in (1, 2, 3) for t in itertools.product(NAMES, repeat=d)]
LINK_PATHS = [f"{p}/{ln}" if p else ln for p in ["", *[p for p in PATHS if p.count("/") < 2]] for ln in LINK_NAMES]
TARGETS = ["a", "b/c", "nowhere", "./c"]  # relative, never '..': no rename makes them escape the tree
OFFSETS = [0, 1, 100, 4096, 300_000, 3 * MiB - 7]
SIZES = [0, 1, 50, 5000, MiB]
READ_SIZES = [1, 10, 5000, MiB]
MODES = [0o644, 0o600, 0o755, 0o700]
MTIMES = [0, 10**9, 1_700_000_000_123_456_789]
OWNERS = [(0, 0), (1000, 1000), (4242, 7)]  # what a chown (by root: the tests run as root) picks from
ATIMES = [1, 10**9 + 5, 1_600_000_000_000_000_007]
DATA = st.one_of(st.binary(max_size=100), st.integers(1, 3).map(lambda k: bytes([k]) * 70_000 * k))


def initial_tree(root: str | os.PathLike) -> None:
    """A file of several chunks, small and empty ones, an executable, nested dirs, two symlinks."""
    write_tree(root, {"a": random.Random(1).randbytes(5000), "b/c": random.Random(2).randbytes(3 * MiB),
                      "b/b/a": b"small", "b/a": b""}, dirs=["c", "b/b/c"], links={"b/l1": "c", "l2": "nowhere"})
    os.chmod(os.path.join(root, "b/a"), 0o755)


def pick_path(d: st.DataObject, model: str | os.PathLike, pool: list[str], new: bool = False,
         dirs_only: bool = False) -> str:
    """A path from `pool`, biased so that operations meet entries of the `model` directory: mostly an
    existing one, or with `new` mostly a free name in an existing directory; sometimes anything (for the
    errnos)."""
    live, dirs = set(), {""}
    for dirpath, dirnames, filenames in os.walk(model):
        rel = os.path.relpath(dirpath, model)
        rel = "" if rel == "." else rel + "/"
        live.update(rel + n for n in dirnames + filenames)
        dirs.update(rel + n for n in dirnames)
    how = d.draw(st.integers(0, 5))
    if how == 0:
        choices = pool
    elif new != (how == 1):
        choices = [p for p in pool if p not in live and p.rpartition("/")[0] in dirs]
    else:
        choices = [p for p in pool if p in (dirs if dirs_only else live)]
    return d.draw(st.sampled_from(choices or pool))


def assert_same_errno(real: Callable[[], object], staged: Callable[[], object]) -> None:
    """The operation in the plain directory and in staging: the same errno (or none) from both."""
    e_real, e_staged = errno_of(real), errno_of(staged)
    assert e_real == e_staged, \
        f"errno {e_real and errno.errorcode[e_real]} in a directory, {e_staged and errno.errorcode[e_staged]} " \
        "in staging"


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_UTIME_OMIT = (1 << 30) - 2
_libc = ctypes.CDLL(None, use_errno=True)


def set_atime(path: str | os.PathLike, ns: int) -> None:
    """utimensat(2) of atime alone, mtime left as it is (what `touch -a` does)."""
    times = (_Timespec * 2)(_Timespec(ns // 10**9, ns % 10**9), _Timespec(0, _UTIME_OMIT))
    if _libc.utimensat(-100, os.fsencode(path), times, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))


def posix_view(entries: Iterable[tuple[str, bool, int, int, int, int]]) -> dict[str, tuple]:
    """(path, is dir, inode, nlink, uid, gid) of every entry → path → (the first path, in sorted order,
    naming the same inode; nlink (None for a directory: staging says 1, a disk counts subdirectories);
    uid; gid). Inode numbers differ between two trees; which names share one must not."""
    first: dict[int, str] = {}
    out = {}
    for path, is_dir, ino, nlink, uid, gid in sorted(entries):
        out[path] = (first.setdefault(ino, path), None if is_dir else nlink, uid, gid)
    return out


def disk_posix(root: str | os.PathLike, paths: Iterable[str] | None = None) -> dict[str, tuple]:
    """posix_view of a real directory (the model, or staging through the mount): of `paths` below it (say,
    the keys of a snapshot just taken, whose attributes the kernel still has), else of everything."""
    if paths is None:
        paths = [os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files]

    def entries() -> Iterable[tuple[str, bool, int, int, int, int]]:
        for path in paths:
            st = os.lstat(os.path.join(root, path))
            yield path, stat.S_ISDIR(st.st_mode), st.st_ino, st.st_nlink, st.st_uid, st.st_gid
    return posix_view(entries())


def forget_posix(root: str | os.PathLike) -> None:
    """What a seal keeps of the model: no hard links (each name its own file), every owner the mount's
    user (the tests run the mount as themselves)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                shutil.copy2(full, full + ".split")
                os.replace(full + ".split", full)
            elif stat.S_ISLNK(st.st_mode) and st.st_nlink > 1:
                os.symlink(os.readlink(full), full + ".split")
                os.replace(full + ".split", full)
            os.lchown(full, os.getuid(), os.getgid())


class Times:
    """The atimes and mtimes a model test set itself, by the model's inode: only those can be compared (a
    tree made at another moment has other times). A write forgets an mtime, never an atime (noatime)."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[int | None, int | None]] = {}

    def set(self, model_path: str, atime: int | None, mtime: int | None) -> None:
        """After a utimensat that succeeded on a file (a directory's mtime moves with its entries)."""
        st = os.lstat(model_path)
        if stat.S_ISDIR(st.st_mode):
            return
        ino = st.st_ino
        old_a, old_m = self.known.get(ino, (None, None))
        self.known[ino] = (old_a if atime is None else atime, old_m if mtime is None else mtime)

    def written(self, model_path: str) -> None:
        """Content changed (write, truncate): its mtime moved to a moment of its own."""
        try:
            ino = os.lstat(model_path).st_ino
        except OSError:
            return
        if ino in self.known:
            self.known[ino] = (self.known[ino][0], None)

    def created(self, model_path: str) -> None:
        """A new inode (create, mkdir, symlink): it may reuse a number of one deleted."""
        with contextlib.suppress(OSError):
            self.known.pop(os.lstat(model_path).st_ino, None)

    def expected(self, model: str | os.PathLike) -> dict[str, tuple[int | None, int | None]]:
        """path → (atime, mtime) set (None: not known) of every model path whose times were set."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(model):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                got = self.known.get(os.lstat(full).st_ino)
                if got is not None:
                    out[os.path.relpath(full, model)] = got
        return out
