"""file:// objects: pinned by size + mtime, read with pread between two fstat checks."""

from __future__ import annotations

import os
import stat
import urllib.parse
from typing import IO

from artfs.errors import ArtfsError, InvalidName
from artfs.storage.sources.common import Listed, Objects, Pin, SourceChanged, Stream, changed, too_many


def file_path(uri: str) -> str:
    parsed = urllib.parse.urlsplit(uri)
    if parsed.netloc not in ("", "localhost"):
        raise InvalidName(f"{uri!r}: file:// URIs name a local path (file:///abs/path)")
    path = urllib.parse.unquote(parsed.path)
    if not path.startswith("/"):
        raise InvalidName(f"{uri!r}: file:// URIs need an absolute path (file:///abs/path)")
    return path


def _file_uri(path: str) -> str:
    return "file://" + urllib.parse.quote(path, safe="/")


class FileObjects(Objects):
    def find(self, uri: str, max_objects: int) -> list[Listed]:
        path = file_path(uri)
        try:
            st = os.stat(path)
        except OSError as e:
            raise ArtfsError(f"cannot refer to {uri}: {e.strerror}") from None
        if stat.S_ISREG(st.st_mode):
            if uri.endswith("/"):
                raise ArtfsError(f"cannot refer to {uri}: not a directory")
            return [Listed("", self._pin(path, st), st.st_mtime_ns)]
        if not stat.S_ISDIR(st.st_mode):
            raise ArtfsError(f"cannot refer to {uri}: not a regular file or directory")
        out: list[Listed] = []
        root = path.rstrip("/") or "/"
        count = 0
        for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    fst = os.stat(full)
                except OSError as e:
                    raise ArtfsError(f"cannot refer to {_file_uri(full)}: {e.strerror}") from None
                if not stat.S_ISREG(fst.st_mode):
                    continue
                count += 1
                if count <= max_objects:
                    out.append(Listed(os.path.relpath(full, root), self._pin(full, fst), fst.st_mtime_ns))
        if count > max_objects:
            raise too_many(uri, count, max_objects)
        return out

    @staticmethod
    def _pin(path: str, st: os.stat_result) -> Pin:
        if not os.access(path, os.R_OK):
            raise ArtfsError(f"cannot refer to {_file_uri(path)}: permission denied")
        return Pin(_file_uri(path), st.st_size, mtime_ns=st.st_mtime_ns)

    def _open_checked(self, pin: Pin) -> int:
        try:
            fd = os.open(file_path(pin.uri), os.O_RDONLY)
        except FileNotFoundError:
            raise changed(pin, "is gone") from None
        except OSError as e:
            raise changed(pin, f"cannot be read: {e.strerror}") from None
        try:
            self._same(fd, pin)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _same(fd: int, pin: Pin) -> None:
        st = os.fstat(fd)
        if st.st_size != pin.size or st.st_mtime_ns != pin.mtime_ns:
            raise changed(pin, f"changed (now size {st.st_size}, mtime_ns {st.st_mtime_ns})")

    def open(self, pin: Pin) -> Stream:
        return _CheckedFile(os.fdopen(self._open_checked(pin), "rb"), pin)

    def read(self, pin: Pin, offset: int, length: int) -> bytes:
        fd = self._open_checked(pin)
        try:
            data = os.pread(fd, length, offset)
            self._same(fd, pin)  # written under us while we read (same size, new mtime): not these bytes
        finally:
            os.close(fd)
        if len(data) != length:
            raise changed(pin, f"is shorter than pinned ({offset + len(data)} bytes)")
        return data

    def check(self, pin: Pin) -> str | None:
        try:
            os.close(self._open_checked(pin))
        except SourceChanged as e:
            return str(e)
        return None


class _CheckedFile:
    """A file read whole at add time: when it reaches its end, it must still be the pinned state."""

    def __init__(self, f: IO[bytes], pin: Pin) -> None:
        self.f, self.pin, self.got = f, pin, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.got += len(data)
        if not data or self.got >= self.pin.size:
            st = os.fstat(self.f.fileno())
            if self.got > self.pin.size or st.st_size != self.pin.size or st.st_mtime_ns != self.pin.mtime_ns:
                raise changed(self.pin, "changed while it was being read")
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.f.close()


def _raise_walk(e: OSError) -> None:
    raise ArtfsError(f"cannot list {e.filename}: {e.strerror}")
