"""New inodes made ahead of need, so that creating a staged file's data file costs a link, not an inode.

Making a file on the staging disk costs the kernel far more than naming one: measured on this kind of
machine (ext4 without a journal, which skips every recently deleted inode while looking for a free one),
200-900 µs of CPU per open(O_CREAT) once other work has deleted many files, against ~20 µs for a link
or rename in the same state. `cp -r` and `tar x` into staging make one data file per file, on the
request path (on the event loop, StagingArea.quick). A thread of its own makes them here instead, as
unnamed files (O_TMPFILE: no directory lock is held while the inode is found, so the loop's own names
in the directory never wait behind it), and `take` gives one its name with a link, its descriptor
still open.

Nothing depends on a spare being there: with none ready (a burst, a full disk, a filesystem without
O_TMPFILE) the caller makes its file itself, as before. An unnamed file vanishes with the process, so a
daemon crash leaves nothing behind (a power cut may leave a few empty inodes to the filesystem's orphan
cleanup, or to fsck where it has no journal).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import threading

log = logging.getLogger(__name__)

# Files kept ready, each an open descriptor (beside DataFiles' 128 per area): a burst of creates this long
# never waits for the disk; the thread refills from half, so at ~1,000 creates/s it keeps up or runs dry.
SPARES = 32
MODE = 0o600
OWN_FDS = "/proc/self/fd"  # linkat names an open file through it; where /proc is not mounted, no spares


class SpareFiles:
    """Up to `size` unnamed empty files on the filesystem of directory `root`, kept ready by a thread
    that starts with the first `take` (an area only read never makes any)."""

    def __init__(self, root: str, size: int = SPARES) -> None:
        self.root = root
        self._size = size
        self._ready: collections.deque[int] = collections.deque()  # descriptors; appends and pops are atomic
        self._wake = threading.Event()
        self._lock = threading.Lock()  # `close` against the thread's last append
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dir_fd = -1  # `root`, for linkat: os.link follows the /proc link only given a directory fd

    def take(self, path: str) -> int | None:
        """An empty file linked at `path`, open read-write; None if none is ready (make it yourself)."""
        try:
            fd = self._ready.popleft()
        except IndexError:
            self._start()
            return None
        try:
            os.link(f"{OWN_FDS}/{fd}", path, dst_dir_fd=self._dir_fd)  # linkat(AT_SYMLINK_FOLLOW): the file
        except OSError:
            os.close(fd)
            return None
        if len(self._ready) <= self._size // 2:
            self._wake.set()
        return fd

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._fill, name="artfs-spare-files", daemon=True)
            self._thread.start()
        self._wake.set()

    def _fill(self) -> None:
        if not os.path.isdir(OWN_FDS):  # no file made here could ever be linked (a chroot, a bare container)
            log.debug("no spare files in %s: %s is not there", self.root, OWN_FDS)
            self._closed = True
            return
        try:
            self._dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            log.debug("no spare files in %s: %s", self.root, e)
            self._closed = True
            return
        while not self._closed:
            while len(self._ready) < self._size and not self._closed:
                try:
                    fd = self._make()
                except OSError as e:  # a full disk, no O_TMPFILE there: creates make their own files
                    log.debug("no spare file in %s: %s", self.root, e)
                    if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                        self._closed = True  # for good: this filesystem cannot
                    break
                with self._lock:
                    if self._closed:
                        os.close(fd)
                        return
                    self._ready.append(fd)
            self._wake.wait()
            self._wake.clear()

    def _make(self) -> int:
        return os.open(".", os.O_TMPFILE | os.O_RDWR, MODE, dir_fd=self._dir_fd)

    def close(self) -> None:
        """Stop the thread and drop the spares (unnamed: closing them frees them)."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while self._ready:
            with contextlib.suppress(OSError):
                os.close(self._ready.popleft())
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
