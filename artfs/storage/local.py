"""LocalStore: a store in a directory, one file per key.

Atomicity comes from the filesystem, not from locks, so several processes may share one store:
- `put` writes a hidden temp file in the key's own directory, fsyncs it, then `os.replace`s it over the
  key, so a reader sees the old object or the new one, never a part.
- `create_if_absent` writes and fsyncs a temp file, then `os.link`s it to the key: `link()` fails if the
  name exists, atomically, which is what makes claiming a version number safe between processes.
Temp files start with `.tmp-`; no key may, and `list` never shows them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

from artfs.errors import InvalidName, StoreError, StoreNotFound, StoreUnavailable
from artfs.storage.store import ObjectInfo, Store

TMP_PREFIX = ".tmp-"

# Errors that mean "this store cannot be used as it is", as opposed to "this object is missing".
_UNAVAILABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _process_umask() -> int:
    """The umask, read without changing it (os.umask sets while it reads, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_UMASK = _process_umask()


def _check_key(key: str) -> None:
    """Keys are relative '/'-separated names; anything else could escape the root or hit a temp file."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(TMP_PREFIX) or "\0" in p for p in parts):
        raise InvalidName(f"invalid store key {key!r}")


class LocalStore(Store):
    """A directory store. The root is created on the first write."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise StoreUnavailable(f"store path {self.root} exists but is not a directory")

    def _path(self, key: str) -> str:
        _check_key(key)
        return os.path.join(self.root, *key.split("/"))

    def _error(self, e: OSError, key: str, writing: bool) -> StoreError:
        """The store error for an OSError, decided in one place."""
        if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and not writing:
            return StoreNotFound(f"{key!r} not found in store {self.root}")
        if e.errno in _UNAVAILABLE:
            what = "writable" if writing else "readable"
            return StoreUnavailable(f"store directory {self.root} is not {what} ({key!r}: {e.strerror})")
        if isinstance(e, (FileExistsError, NotADirectoryError, IsADirectoryError)):
            return StoreError(f"cannot write {key!r} in store {self.root}: a file or directory is in the way")
        return StoreError(f"store {self.root} failed on {key!r}: {e.strerror or e}")

    @contextlib.contextmanager
    def _errors(self, key: str, writing: bool = False) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise self._error(e, key, writing) from e

    def _prepare_dir(self, path: str) -> str:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise StoreUnavailable(f"store path {self.root} exists but is not a directory")
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        return parent

    @contextlib.contextmanager
    def _temp(self, path: str) -> Iterator[tuple[int, str]]:
        """A temp file beside `path` (same filesystem, so replace/link are atomic), removed on the way out."""
        parent = self._prepare_dir(path)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # as any new file: a store shared by a group stays readable to it
            yield fd, tmp
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    @staticmethod
    def _fsync_dir(path: str) -> None:
        """Make a new directory entry durable (a claimed version must survive a crash)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def check(self) -> None:
        if not os.path.isdir(self.root):
            what = "is not a directory" if os.path.exists(self.root) else "does not exist"
            raise StoreUnavailable(f"store {self.root} {what}")

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors(key), open(path, "rb") as f:
            return f.read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Like pread: a range past the end of the object comes back short."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        path = self._path(key)
        with self._errors(key):
            fd = os.open(path, os.O_RDONLY)
            try:
                chunks = []
                while length > 0:
                    chunk = os.pread(fd, length, offset)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    offset += len(chunk)
                    length -= len(chunk)
            finally:
                os.close(fd)
        return b"".join(chunks)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._errors(key, writing=True), self._temp(path) as (fd, tmp):
            self._write_all(fd, data)
            os.replace(tmp, path)

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        dest = self._path(key)
        os.stat(path)  # a missing source is the caller's error, not a missing key: let it raise as is
        with self._errors(key, writing=True), self._temp(dest) as (fd, tmp):
            shutil.copyfile(path, tmp)
            os.fsync(fd)  # same inode as `tmp`: copyfile truncated and wrote it in place
            os.replace(tmp, dest)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with self._errors(key, writing=True), self._temp(path) as (fd, tmp):
            self._write_all(fd, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise StoreUnavailable(
                        f"store directory {self.root} does not support hard links, which atomic "
                        f"create needs: {e.strerror}"
                    ) from e
                raise
            self._fsync_dir(os.path.dirname(path))
            return True

    def list(self, prefix: str) -> Iterator[str]:
        """Walk only the directories the prefix can reach; the last component may be a partial name."""
        head, _, partial = prefix.rpartition("/")
        if head:
            _check_key(head)
        base = os.path.join(self.root, *head.split("/")) if head else self.root
        key_base = head + "/" if head else ""
        return self._walk(base, key_base, partial)

    def _walk(self, directory: str, key_base: str, partial: str = "") -> Iterator[str]:
        """Yield keys in lexicographic order: a directory `d` sorts as `d/`, since its keys start so."""
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir() else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._error(e, key_base + partial, writing=False) from e
        entries.sort(key=lambda pair: pair[0])
        for sort_name, entry in entries:
            if entry.name.startswith(TMP_PREFIX) or not entry.name.startswith(partial):
                continue
            if sort_name.endswith("/"):
                yield from self._walk(entry.path, key_base + sort_name)
            else:
                yield key_base + entry.name

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        """`list`, and a stat of each key (a key deleted between the two is skipped)."""
        for key in self.list(prefix):
            try:
                st = os.stat(self._path(key))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise self._error(e, key, writing=False) from e
            yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(key, writing=True), contextlib.suppress(FileNotFoundError):
            os.unlink(path)
