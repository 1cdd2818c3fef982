"""What every kind of external object shares: the pin, the listing, the reader interface, URI schemes.

A pin is the strongest identity a source offers; every read names it, and a changed or vanished object is
`SourceChanged` (never other bytes). The scheme modules (file.py, s3.py, http.py) implement `Objects`.
"""

from __future__ import annotations

import re
from typing import Protocol

import msgspec

from artfs.errors import ArtfsError, IntegrityError, InvalidName

SCHEMES = ("s3", "https", "http", "file")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
TIMEOUT = 20.0  # seconds between bytes of an answer, per request
CONNECT_TIMEOUT = 5.0  # an unreachable endpoint fails in seconds


class Stream(Protocol):
    """What `Objects.open` returns: read(n) until b"" (pyfastcdc's cut_stream reads it), then close()."""

    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Pin(msgspec.Struct, frozen=True, omit_defaults=True):
    """What identifies one state of an external object. Empty fields are ones the source does not offer."""

    uri: str
    size: int
    etag: str = ""  # S3, HTTP (strong ETags only)
    version_id: str = ""  # S3, versioned buckets
    last_modified: str = ""  # HTTP, when there is no ETag (one-second resolution)
    mtime_ns: int = 0  # file://, with size

    def describe(self) -> str:
        """The pin as users read it: `VersionId …, ETag …`, `ETag …`, `Last-Modified …`, `size …, mtime …`."""
        parts = []
        if self.version_id:
            parts.append(f"VersionId {self.version_id}")
        if self.etag:
            parts.append(f"ETag {self.etag}")
        if self.last_modified:
            parts.append(f"Last-Modified {self.last_modified}")
        if self.mtime_ns:
            parts.append(f"mtime_ns {self.mtime_ns}")
        return ", ".join([*parts, f"size {self.size}"])

    def strength(self) -> str:
        """How far the pin alone (without chunk digests) guarantees the bytes, for `artfs files` and docs."""
        if self.version_id:
            return "immutable object version"
        if self.etag:
            return "ETag (a rewrite with the same ETag would go unnoticed)"
        if self.last_modified:
            return "Last-Modified (1 s resolution: a rewrite within the same second goes unnoticed)"
        return "size + mtime (a rewrite that restores both goes unnoticed)"


class Listed(msgspec.Struct, frozen=True):
    """One object found under a URI: its path relative to the prefix ('' for a single object), its pin,
    and its modification time (the entry's mtime)."""

    rel: str
    pin: Pin
    mtime_ns: int


class SourceChanged(IntegrityError):
    """The pinned object changed or vanished: its bytes are no longer the ones the version means."""


def scheme_of(uri: str) -> str:
    """The URI's scheme (lower case), or InvalidName: a malformed URI or a scheme artfs cannot read."""
    m = _SCHEME.match(uri)
    if m is None:
        raise InvalidName(f"{uri!r} is not a URI (use s3://bucket/key, https://host/path or file:///path)")
    scheme = m.group(1).lower()
    if scheme not in SCHEMES:
        raise InvalidName(f"{uri!r}: scheme {scheme}:// is not supported (use s3://, https://, http:// or file://)")
    return scheme


def has_scheme(text: str) -> bool:
    return _SCHEME.match(text) is not None


def changed(pin: Pin, why: str) -> SourceChanged:
    return SourceChanged(f"referenced object {pin.uri} {why} (pinned: {pin.describe()})")


class Objects:
    """The external objects of one scheme."""

    def find(self, uri: str, max_objects: int) -> list[Listed]:
        """The object at `uri`, or every object under it as a prefix (whole path segments), pinned; more
        than `max_objects` is an error with the count, never a truncated list."""
        raise NotImplementedError

    def open(self, pin: Pin) -> Stream:
        """The whole pinned object as a stream (for chunking at add time); the read fails if it changed."""
        raise NotImplementedError

    def read(self, pin: Pin, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the pinned object (within its size), or SourceChanged."""
        raise NotImplementedError

    def check(self, pin: Pin) -> str | None:
        """Why the object no longer matches its pin (HEAD or stat), or None."""
        raise NotImplementedError


def too_many(uri: str, count: int, max_objects: int) -> ArtfsError:
    return ArtfsError(f"{uri} holds {count:,} objects, more than max_objects={max_objects:,}: "
                      "raise the limit or refer to a narrower prefix (nothing was added)")
