"""Versions are immutable: every kind of write is EROFS (staging/ is tests/fs/test_staging_*.py); missing
names are ENOENT."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _open(path: Path, mode: str) -> None:
    with open(path, mode):
        pass


def _erofs(fn: Callable[[], object]) -> None:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno == errno.EROFS, info.value


def test_every_write_is_erofs(mount_artfs, animals):
    store, _ = animals
    m = mount_artfs(store)
    art = m.path / "animals"
    v = art / "v0"
    f = v / "README.md"
    writes: dict[str, Callable[[], object]] = {
        "open r+": lambda: _open(f, "r+b"),
        "open w (truncate)": lambda: _open(f, "wb"),
        "open a": lambda: _open(f, "ab"),
        "os.open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
        "create": lambda: _open(v / "new.txt", "wb"),
        "create in a subdir": lambda: _open(v / "data" / "new.bin", "xb"),
        "mkdir": lambda: os.mkdir(v / "newdir"),
        "mkdir in an artifact": lambda: os.mkdir(art / "v7"),
        "rename into a version": lambda: os.rename(art / "staging" / "README.md", v / "moved.md"),
        "symlink in an artifact": lambda: os.symlink("v0", art / "v0-link"),
        "rename": lambda: os.rename(f, v / "renamed.md"),
        "rename a directory": lambda: os.rename(v / "data", v / "data2"),
        "rename a version": lambda: os.rename(v, art / "v9"),
        "chmod": lambda: os.chmod(f, 0o600),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (0, 0)),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "unlink a symlink": lambda: os.unlink(v / "link-to-big"),
        "unlink an alias": lambda: os.unlink(art / "latest"),
        "rmdir": lambda: os.rmdir(v / "nested" / "a" / "b" / "c"),
        "rmdir a version": lambda: os.rmdir(v),
        "symlink": lambda: os.symlink("README.md", v / "newlink"),
        "alias by symlink": lambda: os.symlink("v0", art / "best"),
        "hard link": lambda: os.link(f, v / "hardlink"),
        "mkfifo": lambda: os.mkfifo(v / "fifo"),
        "setxattr": lambda: os.setxattr(f, "user.note", b"x"),
        "setxattr on a version": lambda: os.setxattr(v, "user.artfs.ref", b"animals:v9"),
        "removexattr": lambda: os.removexattr(f, "user.artfs.ref"),
    }
    for what, fn in writes.items():
        try:
            _erofs(fn)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    assert f.read_bytes().startswith(b"# animals")  # and nothing changed


def test_missing_names_are_enoent(mount_artfs, animals):
    store, _ = animals
    m = mount_artfs(store)
    art = m.path / "animals"
    for missing in [m.path / "nothing", art / "v1", art / "v99", art / "best", art / "vx",
                    art / "v0" / "nothing.txt", art / "v0" / "data" / "nothing", art / "v0" / "nope" / "deeper"]:
        with pytest.raises(FileNotFoundError):
            os.stat(missing)
        assert not missing.exists()
    with pytest.raises(NotADirectoryError):
        os.stat(art / "v0" / "README.md" / "x")
    with pytest.raises(IsADirectoryError):
        _open(art / "v0" / "data", "rb")
    with pytest.raises(OSError) as info:
        os.getxattr(art / "v0" / "README.md", "user.nothing")
    assert info.value.errno == errno.ENODATA
    # a negative lookup inside a version is cached (immutable), and still answers correctly
    assert not (art / "v0" / "nothing.txt").exists()
    assert Path(art / "v0" / "README.md").exists()
