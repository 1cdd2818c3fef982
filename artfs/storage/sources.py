"""External objects a version refers to (s3://, https://, http://, file://): listed, pinned, read by range.

A reference is only worth having if it means the same bytes forever, so every object is described by a
**Pin** — the strongest identity its source offers — and every read is conditional on it: S3 reads name
the VersionId (versioned buckets) or carry `If-Match` on the ETag; HTTP reads carry `If-Match` on the ETag,
or `If-Range` on Last-Modified (a 200 with the whole body instead of a 206 means the object changed);
files are pread between two fstat checks of size and mtime. A changed or vanished object is
`SourceChanged` (an IntegrityError: EIO in the mount, never bytes), naming the URI and the pin.

One `Objects` implementation per scheme, chosen by `objects_for(uri)`; this module knows nothing about
manifests or chunks (core/references.py does). The clients are thread-safe: the mount reads from workers.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import os
import re
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from typing import IO, Protocol

import msgspec

from artfs.errors import ArtfsError, IntegrityError, InvalidName, StoreUnavailable

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


# --- file:// --------------------------------------------------------------------------------------


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


# --- s3:// ----------------------------------------------------------------------------------------


def parse_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key); the key may be empty (the whole bucket) or end in '/' (a prefix)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or "/" in bucket:
        raise InvalidName(f"{uri!r}: no bucket (use s3://bucket/key)")
    return bucket, key


class S3Objects(Objects):
    """Objects in any bucket the AWS configuration chain may read (AWS_ENDPOINT_URL[_S3] for S3-compatible
    servers: botocore reads them itself)."""

    page_size = 1000  # keys per LIST request (S3's maximum)

    def __init__(self) -> None:
        import boto3
        import botocore.exceptions as bx
        from botocore.config import Config

        self._bx = bx
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(max_pool_connections=32, connect_timeout=CONNECT_TIMEOUT, read_timeout=TIMEOUT,
                        retries={"total_max_attempts": 2, "mode": "standard"},
                        s3={"addressing_style": "path"} if endpoint else None)
        try:
            self._client = boto3.session.Session().client("s3", config=config)
        except (ValueError, bx.BotoCoreError) as e:
            raise StoreUnavailable(f"cannot open an S3 client: {e}") from None

    @contextlib.contextmanager
    def _errors(self, uri: str, pin: Pin | None = None) -> Iterator[None]:
        bx = self._bx
        try:
            yield
        except bx.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if pin is not None and (code in ("PreconditionFailed", "NoSuchKey", "NoSuchVersion", "404", "412",
                                             "InvalidRange") or status in (404, 412, 416)):
                gone = status == 404 or code in ("NoSuchKey", "NoSuchVersion", "404")
                raise changed(pin, "is gone" if gone else "changed") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtfsError(f"{uri} does not exist") from None
            if code == "NoSuchBucket":
                raise ArtfsError(f"{uri}: bucket {parse_s3(uri)[0]!r} does not exist") from None
            if status == 403 or code == "AccessDenied":
                raise StoreUnavailable(f"access to {uri} denied ({code or status})") from None
            raise StoreUnavailable(f"S3 error on {uri} ({code or status}): {e}") from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as e:
            raise StoreUnavailable(f"no AWS credentials to read {uri}: {e}") from None
        except (bx.BotoCoreError, OSError) as e:
            raise StoreUnavailable(f"cannot reach S3 for {uri}: {e}") from None

    def _versioned(self, bucket: str, uri: str) -> bool:
        with self._errors(uri):
            try:
                return self._client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
            except self._bx.ClientError as e:
                if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 403:
                    return False  # may not ask: the ETag pins the object (and HEAD still gives a VersionId)
                raise

    def find(self, uri: str, max_objects: int) -> list[Listed]:
        bucket, key = parse_s3(uri)
        if key and not key.endswith("/"):
            with self._errors(uri):
                try:
                    head = self._client.head_object(Bucket=bucket, Key=key)
                except self._bx.ClientError as e:
                    if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                        raise
                    head = None
            if head is not None:
                return [Listed("", self._pin(bucket, key, head.get("ContentLength", 0), head.get("ETag", ""),
                                             head.get("VersionId", "")), _ns(head.get("LastModified")))]
            key += "/"  # no such object: a prefix named without its slash, whole segments
        out = self._list_prefix(bucket, key, uri, max_objects)
        if not out:
            raise ArtfsError(f"{uri}: no such object, and no objects under it")
        return out

    def _list_prefix(self, bucket: str, key: str, uri: str, max_objects: int) -> list[Listed]:
        """One LIST per 1,000 objects (versions too, in a versioned bucket), no request per object."""
        versioned = self._versioned(bucket, uri)
        out: list[Listed] = []
        count = 0
        with self._errors(uri):
            paging = {"PageSize": self.page_size}
            if versioned:
                pages = self._client.get_paginator("list_object_versions").paginate(
                    Bucket=bucket, Prefix=key, PaginationConfig=paging)
                items = (v for page in pages for v in page.get("Versions", ()) if v.get("IsLatest"))
            else:
                pages = self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=key, PaginationConfig=paging)
                items = (o for page in pages for o in page.get("Contents", ()))
            for obj in items:
                rel = obj["Key"][len(key):]
                if not rel or rel.endswith("/"):
                    continue  # a "folder" marker, not a file
                count += 1
                if count <= max_objects:
                    pin = self._pin(bucket, obj["Key"], obj.get("Size", 0), obj.get("ETag", ""),
                                    obj.get("VersionId", "") if versioned else "")
                    out.append(Listed(rel, pin, _ns(obj.get("LastModified"))))
        if count > max_objects:
            raise too_many(uri, count, max_objects)
        return out

    @staticmethod
    def _pin(bucket: str, key: str, size: int, etag: str, version_id: str | None) -> Pin:
        return Pin(f"s3://{bucket}/{key}", int(size), etag=etag or "",
                   version_id="" if version_id in (None, "", "null") else str(version_id))

    def _condition(self, pin: Pin) -> dict[str, str]:
        bucket, key = parse_s3(pin.uri)
        args = {"Bucket": bucket, "Key": key}
        if pin.version_id:
            args["VersionId"] = pin.version_id
        if pin.etag:
            args["IfMatch"] = pin.etag
        return args

    def open(self, pin: Pin) -> Stream:
        with self._errors(pin.uri, pin):
            resp = self._client.get_object(**self._condition(pin))
        if int(resp.get("ContentLength", -1)) != pin.size:
            resp["Body"].close()
            raise changed(pin, f"changed (now {resp.get('ContentLength')} bytes)")
        return _S3Body(resp["Body"], self, pin)

    def read(self, pin: Pin, offset: int, length: int) -> bytes:
        with self._errors(pin.uri, pin):
            resp = self._client.get_object(Range=f"bytes={offset}-{offset + length - 1}", **self._condition(pin))
            with contextlib.closing(resp["Body"]) as body:
                data = body.read()
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        if total != str(pin.size):
            raise changed(pin, f"changed (now {total or '?'} bytes)")
        if len(data) != length:
            raise StoreUnavailable(f"short read of {pin.uri}: {len(data)} of {length} bytes arrived")
        return data

    def check(self, pin: Pin) -> str | None:
        args = self._condition(pin)
        try:
            with self._errors(pin.uri, pin):
                head = self._client.head_object(**args)
        except SourceChanged as e:
            return str(e)
        if int(head.get("ContentLength", -1)) != pin.size:
            return str(changed(pin, f"changed (now {head.get('ContentLength')} bytes)"))
        return None


class _S3Body:
    """A GetObject body read whole at add time, errors translated."""

    def __init__(self, body: object, objects: S3Objects, pin: Pin) -> None:
        self.body, self.objects, self.pin = body, objects, pin

    def read(self, n: int = -1) -> bytes:
        with self.objects._errors(self.pin.uri, self.pin):
            return self.body.read(n if n >= 0 else None)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.body.close()  # type: ignore[attr-defined]


def _ns(when: object) -> int:
    ts = getattr(when, "timestamp", None)
    return int(ts() * 1e9) if ts is not None else 0


# --- https:// and http:// -------------------------------------------------------------------------


class HttpObjects(Objects):
    """Single objects on HTTP servers that give Content-Length and honour Range (checked at add time).
    One connection per thread and host, reused (the mount reads from several worker threads)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _request(self, uri: str, method: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        parsed = urllib.parse.urlsplit(uri)
        if not parsed.hostname:
            raise InvalidName(f"{uri!r}: no host")
        try:
            port = parsed.port
        except ValueError:
            raise InvalidName(f"{uri!r}: bad port") from None
        where = (parsed.scheme, parsed.hostname, port)
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        conns: dict = self._local.__dict__.setdefault("conns", {})
        for attempt in (0, 1):  # a kept-alive connection the server closed: one fresh try
            conn = conns.get(where)
            fresh = conn is None
            if conn is None:
                cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
                conn = conns[where] = cls(parsed.hostname, port, timeout=CONNECT_TIMEOUT)
            try:
                if fresh:  # connect within seconds; then allow TIMEOUT between bytes
                    conn.connect()
                    assert conn.sock is not None
                    conn.sock.settimeout(TIMEOUT)
                conn.request(method, path, headers=headers)
                return conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                del conns[where]
                if fresh or attempt:
                    raise StoreUnavailable(f"cannot reach {parsed.scheme}://{parsed.netloc}: {e}") from None
        raise AssertionError("unreachable")

    def _drop(self, uri: str) -> None:
        parsed = urllib.parse.urlsplit(uri)
        conns: dict = self._local.__dict__.setdefault("conns", {})
        conn = conns.pop((parsed.scheme, parsed.hostname, parsed.port), None)
        if conn is not None:
            conn.close()

    def find(self, uri: str, max_objects: int) -> list[Listed]:
        if uri.endswith("/"):
            raise ArtfsError(f"{uri}: an HTTP URL names one object; HTTP has no listing to expand a prefix with")
        resp = self._request(uri, "HEAD", {})
        resp.read()
        if resp.status != 200:
            raise ArtfsError(f"cannot refer to {uri}: HEAD answered {resp.status} {resp.reason}")
        length = resp.getheader("Content-Length")
        if length is None or not length.isdigit():
            raise ArtfsError(f"cannot refer to {uri}: the server gives no Content-Length")
        etag = resp.getheader("ETag") or ""
        if etag.startswith("W/"):
            etag = ""  # a weak ETag cannot guard bytes (If-Match compares strongly)
        modified = resp.getheader("Last-Modified") or ""
        if not etag and not modified:
            raise ArtfsError(f"cannot refer to {uri}: the server gives neither an ETag nor Last-Modified to pin it")
        pin = Pin(uri, int(length), etag=etag, last_modified="" if etag else modified)
        if pin.size:  # Range support is what lets the mount read lazily: refuse a server without it now
            probe = self._ranged(pin, 0, 1)
            data = probe.read()
            if probe.status != 206:
                raise ArtfsError(f"cannot refer to {uri}: the server does not honour Range requests "
                                 f"(answered {probe.status} to one)")
            del data
        mtime = email.utils.parsedate_to_datetime(modified).timestamp() if modified else 0.0
        return [Listed("", pin, int(mtime * 1e9))]

    def _conditions(self, pin: Pin) -> dict[str, str]:
        return {"If-Match": pin.etag} if pin.etag else {"If-Range": pin.last_modified}

    def _ranged(self, pin: Pin, offset: int, length: int) -> http.client.HTTPResponse:
        return self._request(pin.uri, "GET", {"Range": f"bytes={offset}-{offset + length - 1}",
                                              "Accept-Encoding": "identity", **self._conditions(pin)})

    def _check_response(self, pin: Pin, resp: http.client.HTTPResponse) -> None:
        if resp.status == 206:
            total = (resp.getheader("Content-Range") or "").rpartition("/")[2]
            etag = resp.getheader("ETag")
            if total != str(pin.size) or (pin.etag and etag and etag != pin.etag):
                raise changed(pin, f"changed (now {total or '?'} bytes, ETag {etag or 'none'})")
            return
        self._drop(pin.uri)  # the body may be the whole (new) object: not read, not reused
        if resp.status == 200:
            raise changed(pin, "changed (the server sent the whole object, not the pinned range)")
        if resp.status == 412:
            raise changed(pin, "changed (If-Match failed)")
        if resp.status in (404, 410):
            raise changed(pin, "is gone")
        if resp.status == 416:
            raise changed(pin, "is shorter than pinned")
        raise StoreUnavailable(f"reading {pin.uri}: the server answered {resp.status} {resp.reason}")

    def read(self, pin: Pin, offset: int, length: int) -> bytes:
        resp = self._ranged(pin, offset, length)
        self._check_response(pin, resp)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop(pin.uri)
            raise StoreUnavailable(f"reading {pin.uri}: {e}") from None
        if len(data) != length:
            self._drop(pin.uri)
            raise StoreUnavailable(f"short read of {pin.uri}: {len(data)} of {length} bytes arrived")
        return data

    def open(self, pin: Pin) -> Stream:
        return _RangeStream(self, pin)  # pinned 16 MiB ranges: a plain GET could not be made conditional

    def check(self, pin: Pin) -> str | None:
        if not pin.size:
            resp = self._request(pin.uri, "HEAD", {})
            resp.read()
            if resp.status != 200:
                return str(changed(pin, f"is gone ({resp.status})"))
            length = resp.getheader("Content-Length")
            return None if length == "0" else str(changed(pin, f"changed (now {length} bytes)"))
        try:
            resp = self._ranged(pin, 0, 1)
            self._check_response(pin, resp)
            resp.read()
        except SourceChanged as e:
            return str(e)
        return None


class _RangeStream:
    """A pinned object read front to back in ranges, each checked against the pin."""

    STEP = 16 << 20

    def __init__(self, objects: Objects, pin: Pin) -> None:
        self.objects, self.pin, self.pos = objects, pin, 0
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        want = self.pin.size - self.pos if n < 0 else n
        while len(self.buf) < want and self.pos < self.pin.size:
            step = min(self.STEP, self.pin.size - self.pos)
            self.buf += self.objects.read(self.pin, self.pos, step)
            self.pos += step
        out, self.buf = self.buf[:want], self.buf[want:]
        return out

    def close(self) -> None:
        self.buf = b""


# --- choosing ---------------------------------------------------------------------------------------

_clients: dict[str, Objects] = {}
_lock = threading.Lock()


def objects_for(uri: str) -> Objects:
    """The (shared, thread-safe) client for `uri`'s scheme; InvalidName for anything else."""
    scheme = scheme_of(uri)
    kind = "http" if scheme in ("http", "https") else scheme
    with _lock:
        client = _clients.get(kind)
        if client is None:
            client = _clients[kind] = {"s3": S3Objects, "http": HttpObjects, "file": FileObjects}[kind]()
        return client


def reset_clients() -> None:
    """Forget the clients (tests change AWS_* settings between servers)."""
    with _lock:
        _clients.clear()
