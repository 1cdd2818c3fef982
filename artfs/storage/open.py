"""Which store a URI names: `open_store(uri)` picks the implementation and wraps it with retries.

Apart from store.py (the interface) so that the implementations, which import the interface, are not
imported back by it. botocore is imported only when an S3 store is opened: `artfs ls` on a directory store
starts without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypedDict

from artfs.errors import InvalidName
from artfs.storage.local import LocalStore
from artfs.storage.retry import RetryingStore
from artfs.storage.store import Store


class _Policy(TypedDict, total=False):
    """RetryingStore's settings a caller chose (the others keep their defaults)."""

    attempts: int
    deadline: float


def open_store(uri: str, *, endpoint_url: str | None = None, retries: int | None = None,
               deadline: float | None = None, on_retry: Callable[[str, float], None] | None = None,
               scratch: str | None = None) -> Store:
    """A store from a URI: `s3://bucket/prefix`, `file:///path`, or a plain path. Wrapped with retries
    (`retries` attempts within `deadline` seconds; None: the policy's defaults). `scratch`: a disposable
    directory an S3 store may keep start-up data in (storage/s3.py)."""
    policy = _Policy()
    if retries is not None:
        policy["attempts"] = retries
    if deadline is not None:
        policy["deadline"] = deadline
    if uri.startswith("s3://"):
        from artfs.storage.s3 import S3Store

        # a silent server costs one attempt a third of the deadline, so there is time to retry (and to say
        # so) within it; ~8 s between bytes of an answer by default is already a server that has stalled
        timeout = max(1.0, min(20.0, (25.0 if deadline is None else deadline) / 3))
        s3 = S3Store(uri, endpoint_url=endpoint_url, timeout=timeout, scratch=scratch)
        return RetryingStore(s3, on_retry=on_retry, **policy)
    if uri.startswith("file://"):
        path = uri[len("file://") :]
    elif "://" in uri:
        raise InvalidName(f"unsupported store URI {uri!r} (use s3://bucket/prefix, file:///path or a path)")
    else:
        path = uri
    return RetryingStore(LocalStore(os.path.abspath(os.path.expanduser(path))), on_retry=on_retry, **policy)
