#!/usr/bin/env python3
"""Run moto's S3 server with two fixes that make it behave like S3 where our tests and benchmarks look.

1. Ranged GETs read only the bytes asked for. Stock moto 5.x builds each GET from `FakeKey.value`,
   which copies the whole object, so a 4 KiB range of a 512 MiB pack costs a 512 MiB read: moto's cost,
   not ours, and it would swamp any benchmark. While moto answers a plain object GET, `value` is a
   `_LazyObject` instead: slicing it (what the Range handling does) reads just that slice, and
   iterating it (a whole-object GET) streams the object in 1 MiB pieces.
2. `If-None-Match: *` on PUT is atomic. Stock moto checks for the key and then stores it, unlocked, in a
   threaded server, so two racing conditional PUTs can both succeed. Real S3 lets exactly one win, and
   artfs claims version numbers with it, so conditional PUTs are serialized here.

Usage: s3server_main.py [--stock] -H 127.0.0.1 -p PORT   (`--stock` runs moto unpatched)

For the test of that atomicity (tests/core/test_gc.py), ARTFS_TEST_S3_CREATE_DELAY=SECONDS makes every
conditional PUT wait that long between moto's check and its store, in either mode: the race stock moto
loses becomes certain to show, and the lock must still let exactly one writer win.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator

PIECE = 1 << 20


class _LazyObject:
    """Stands in for a key's bytes during a GET: `len`, slices read on demand, iteration streams."""

    def __init__(self, key) -> None:
        self._key = key

    def __len__(self) -> int:
        return self._key.contentsize

    def _read(self, offset: int, size: int) -> bytes:
        with self._key.lock:  # the buffer's file position is shared with other readers
            buf = self._key._value_buffer
            buf.seek(offset)
            return buf.read(size)

    def __getitem__(self, item: slice) -> bytes:
        if not isinstance(item, slice):
            raise TypeError("only slices of a lazy object are supported")
        start, stop, step = item.indices(len(self))
        if step != 1:
            raise TypeError("stepped slices of a lazy object are not supported")
        return self._read(start, max(0, stop - start))

    def __iter__(self) -> Iterator[bytes]:
        offset, end = 0, len(self)
        while offset < end:
            piece = self._read(offset, min(PIECE, end - offset))
            if not piece:
                return
            offset += len(piece)
            yield piece


def patch_moto() -> None:
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    serving_get = threading.local()
    eager_value = FakeKey.value

    def value(key):
        return _LazyObject(key) if getattr(serving_get, "on", False) else eager_value.fget(key)

    FakeKey.value = property(value, eager_value.fset)

    stock_get_object = S3Response.get_object

    def get_object(self):
        serving_get.on = True
        try:
            return stock_get_object(self)
        finally:
            serving_get.on = False

    S3Response.get_object = get_object

    stock_put_object = S3Response.put_object
    create_lock = threading.Lock()

    def put_object(self):
        if self.headers.get("If-None-Match") == "*":
            with create_lock:  # check-then-store must be one step, as on S3
                return stock_put_object(self)
        return stock_put_object(self)

    S3Response.put_object = put_object


def widen_create_race(seconds: float) -> None:
    """Sleep between a conditional PUT's check and its store (see the module docstring)."""
    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    conditional = threading.local()
    stock_store = S3Backend.put_object
    stock_put_object = S3Response.put_object

    def store(self, *args, **kwargs):
        if getattr(conditional, "on", False):
            time.sleep(seconds)
        return stock_store(self, *args, **kwargs)

    def put_object(self):
        conditional.on = self.headers.get("If-None-Match") == "*"
        try:
            return stock_put_object(self)
        finally:
            conditional.on = False

    S3Backend.put_object = store
    S3Response.put_object = put_object


def main(argv: list[str]) -> None:
    import logging

    from moto.server import main as moto_main

    delay = os.environ.get("ARTFS_TEST_S3_CREATE_DELAY")
    if delay:
        widen_create_race(float(delay))  # first, so that the lock below wraps it
    if "--stock" in argv:
        argv = [a for a in argv if a != "--stock"]
    else:
        patch_moto()
    logging.getLogger("werkzeug").setLevel(logging.INFO)  # one log line per request, to count them
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
