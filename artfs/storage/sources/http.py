"""https:// and http:// objects: single objects pinned by a strong ETag (If-Match) or Last-Modified
(If-Range), read by Range."""

from __future__ import annotations

import email.utils
import http.client
import threading
import urllib.parse

from artfs.errors import ArtfsError, InvalidName, StoreUnavailable
from artfs.storage.sources.common import CONNECT_TIMEOUT, TIMEOUT, Listed, Objects, Pin, SourceChanged, Stream, changed


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
