"""How failures become errnos, for every FUSE handler of the mount (ops.py, staging_ops.py).

pyfuse3 lets any exception other than FUSEError escape its main loop and take the mount down, so every
handler goes through `handler_errors`: expected failures (a missing name, an unreachable store) become
ENOENT/EIO with one log line; anything else is a bug, logged with its traceback, and still only EIO for the
caller. The staging core reports what a caller should see as OSError(errno): `core_errors` passes those on.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import trio
from pyfuse3 import FUSEError

from artfs.errors import ArtfsError, IntegrityError, NotFound

if TYPE_CHECKING:
    from artfs.fs.reader import OpenFile, Reader

log = logging.getLogger("artfs.fs.ops")

T = TypeVar("T")
P = ParamSpec("P")


class Limiter:
    """Says an identical complaint once per `period` seconds, so an outage does not flood the log."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}

    def __call__(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.period:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


say = Limiter()


class _Handlers(Protocol):
    deadline: float

    def _what(self, op: str, args: tuple[Any, ...]) -> str: ...


H = TypeVar("H", bound=_Handlers)


def handler_errors(fn: Callable[Concatenate[H, P], Coroutine[Any, Any, T]]
                   ) -> Callable[Concatenate[H, P], Coroutine[Any, Any, T]]:
    """Map every exception of a handler to a FUSEError (see the module docstring)."""

    @functools.wraps(fn)
    async def handler(self: H, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(self, *args, **kwargs)
        except FUSEError:
            raise
        except NotFound:
            raise FUSEError(errno.ENOENT) from None
        except trio.TooSlowError:
            if say(f"{fn.__name__}:slow"):
                log.error("%s failed: no answer from the store within %.0f s", self._what(fn.__name__, args),
                          self.deadline)
            raise FUSEError(errno.EIO) from None
        except ArtfsError as e:
            if say(f"{fn.__name__}:{e}"):
                log.error("%s failed: %s", self._what(fn.__name__, args), e)
            raise FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[:2])
            raise FUSEError(errno.EIO) from None

    return handler


def as_fuse_error(e: OSError) -> BaseException:
    """The staging core's OSError(errno) as the FUSE answer; one without an errno stays what it is."""
    return e if e.errno is None else FUSEError(e.errno)


@contextlib.contextmanager
def core_errors() -> Iterator[None]:
    """Inside a call into the staging core: its OSError(errno) is the caller's answer."""
    try:
        yield
    except OSError as e:
        raise as_fuse_error(e) from None


async def read_version(reader: Reader, f: OpenFile, off: int, size: int) -> bytes | memoryview:
    """A read of version data (through the Reader): every failure is EIO, with one log line per kind
    and file."""
    try:
        return await reader.read(f, off, size)
    except trio.TooSlowError:
        if say(f"slow:{f.label}"):
            log.error("read of %s at %d failed: no answer from the store within %.0f s", f.label, off,
                      reader.deadline)
    except IntegrityError as e:
        if say(f"corrupt:{f.label}"):
            log.error("read of %s at %d failed: %s", f.label, off, e)
    except ArtfsError as e:
        if say(f"read:{f.label}:{type(e).__name__}"):
            log.error("read of %s at %d failed: %s", f.label, off, e)
    except Exception:
        log.exception("unexpected error reading %s at %d", f.label, off)
    raise FUSEError(errno.EIO)
