"""The system calls the staging tests make that Python does not wrap, and how they read a failure."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: str | os.PathLike, dst: str | os.PathLike, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))


def errno_of(fn: Callable[[], object]) -> int | None:
    """The errno `fn()` fails with, or None if it succeeds."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None
