"""A small HTTP file server in a child process, for reference tests: a real server on 127.0.0.1 serving one
directory with Range, ETag, Last-Modified, If-Match and If-Range — the parts of HTTP artfs pins objects with.

    with HttpServer(root) as http:          # `python -m tests.support.http_server ROOT PORT [--no-etag] [--no-range]`
        url = f"{http.url}/data/file.bin"

--no-etag serves Last-Modified only (the weaker pin); --no-range ignores Range (a server artfs must refuse).
The ETag is derived from size and mtime_ns, as common servers do, so rewriting a file changes it.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

HOST = "127.0.0.1"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: artfs reuses connections
    root = "."
    etags = True
    ranges = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _file(self) -> tuple[str, os.stat_result] | None:
        path = os.path.join(self.root, urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/"))
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (path, st) if os.path.isfile(path) else None

    def _fail(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        found = self._file()
        if found is None:
            return self._fail(404)
        path, st = found
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        if_match = self.headers.get("If-Match")
        if self.etags and if_match is not None and if_match != "*" and etag not in [
                t.strip() for t in if_match.split(",")]:
            return self._fail(412)
        start, end = 0, st.st_size - 1
        status = 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if match and self.ranges and (if_range is None or if_range in (etag, modified)):
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else st.st_size - 1, st.st_size - 1)
            if start >= st.st_size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.send_header("Last-Modified", modified)
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if self.etags:
            self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
        self.end_headers()
        if body and end >= start:
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class HttpServer:
    """Serves `root` in a child process; `url` is its base URL; `stop()` ends it by PID."""

    def __init__(self, root: str | os.PathLike, *, etags: bool = True, ranges: bool = True) -> None:
        self.root, self.etags, self.ranges = os.fspath(root), etags, ranges
        self.port = _free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> HttpServer:
        args = [sys.executable, "-m", "tests.support.http_server", self.root, str(self.port)]
        args += [] if self.etags else ["--no-etag"]
        args += [] if self.ranges else ["--no-range"]
        self._proc = subprocess.Popen(args, cwd=Path(__file__).parents[2], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the HTTP test server did not start on port {self.port}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    root, port = argv[0], int(argv[1])
    handler = type("Handler", (_Handler,), {"root": root, "etags": "--no-etag" not in argv,
                                            "ranges": "--no-range" not in argv})
    server = http.server.ThreadingHTTPServer((HOST, port), handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
