"""An HTTP proxy between artfs and the S3 server that breaks things on the wire, the way networks and busy
servers do: connections reset mid-body, 503 SlowDown, 500 after the write was applied, stalls, and bodies
cut short with or without a Content-Length that matches the cut.

    with FaultProxy(s3.endpoint, rate=0.1, seed=1) as proxy:
        env = s3_env(proxy.endpoint)       # artfs in any process now talks to S3 through the proxy

It forwards each request to the server over a fresh connection and decides per request, from its seeded
random generator, whether to inject one of `faults` (only where `applies(method, path, headers)` says so).
Runs in a thread of the test process; `stop()` (or leaving the `with`) shuts it down.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.support.s3server import s3_env

ALL_FAULTS = ("reset", "slowdown", "error_after_apply", "truncate", "truncate_declared", "stall")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}  # the proxy answers 100-continue itself and forwards the whole body
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")


def ranged_gets(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "GET" and "range" in headers


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, faults: tuple[str, ...] = ALL_FAULTS, seed: int = 0,
                 applies: Callable[[str, str, dict[str, str]], bool] = lambda m, p, h: True,
                 stall: float = 1.0, first: int = 0) -> None:
        """`rate`: the chance a request that `applies` gets a fault; `first`: the first N such requests get
        one for sure (then `rate` rules)."""
        unknown = set(faults) - set(ALL_FAULTS)
        assert not unknown, unknown
        url = urlsplit(upstream)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self.rate, self.faults, self.applies, self.stall = rate, faults, applies, stall
        self.first = first
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _choose(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        if not self.applies(method, path, headers):
            return None
        with self._lock:
            if self.first > 0:
                self.first -= 1
            elif self._rng.random() >= self.rate:
                return None
            allowed = [f for f in self.faults if method == "GET" or not f.startswith("truncate")]
            fault = self._rng.choice(allowed) if allowed else None
            if fault:
                self.counts[fault] += 1
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                """Drop the connection with a TCP reset, as a failing middlebox does."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, declared: int) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _proxy(self) -> None:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                fault = proxy._choose(self.command, self.path, headers)
                if fault == "slowdown":
                    self._reply(503, [("Content-Type", "application/xml")], SLOWDOWN, len(SLOWDOWN))
                    return
                if fault == "stall":
                    time.sleep(proxy.stall)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    fwd = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    fwd["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST")
                                 else None, headers=fwd)
                    resp = conn.getresponse()
                    data = resp.read()
                    status, resp_headers = resp.status, resp.getheaders()
                finally:
                    conn.close()
                if fault == "error_after_apply":
                    self._reply(500, [("Content-Type", "application/xml")], INTERNAL, len(INTERNAL))
                elif fault == "reset":
                    if data and self.command == "GET":  # mid-body: headers and half the body, then a reset
                        self.send_response(status)
                        for k, v in resp_headers:
                            if k.lower() not in HOP_BY_HOP:
                                self.send_header(k, v)
                        self.end_headers()
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                    self._reset()
                elif fault == "truncate" and len(data) > 1:  # a cut body whose Content-Length matches the cut
                    cut = data[: len(data) // 2]
                    self._reply(status, resp_headers, cut, len(cut))
                elif fault == "truncate_declared" and len(data) > 1:  # the length says more than arrives
                    self._reply(status, resp_headers, data[: len(data) // 2], len(data))
                    self.wfile.flush()
                    self._reset()
                else:
                    self._reply(status, resp_headers, data, len(data))

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _proxy

        return Handler


def mount_through(proxy: FaultProxy, mount_artfs, store_uri: str, artifact: str):
    """A mount of `store_uri` that reaches S3 through `proxy` (a 10 s store deadline), expecting the ERRORs
    a misbehaving wire causes on reads of `artifact`'s v0: each such read fails with EIO, and says so."""
    m = mount_artfs(store_uri, env={**s3_env(proxy.endpoint), "ARTFS_STORE_DEADLINE": "10"})
    m.expected_errors = [rf"read of {artifact}:v0/\S+ at \d+ failed: store .* unreachable",
                         rf"(lookup|getattr|opendir|readdir) of {artifact}\S* failed: store .* unreachable"]
    return m
