"""A real moto S3 server in a child process, for tests and benchmarks (no pytest needed).

A separate process rather than moto's in-process mock, because artfs talks to S3 from several processes
(the CLI, the FUSE daemon): all of them must see one server, over real HTTP.

    with S3Server() as s3:
        s3.create_bucket("demo")
        env = s3_env(s3.endpoint)      # for subprocesses (drop FOREIGN_AWS_VARS from theirs)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
MAIN = Path(__file__).with_name("s3server_main.py")


# Settings a developer's shell may hold that would send boto3 elsewhere than the test server.
FOREIGN_AWS_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION")


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment variables that point boto3 (in any process) at the test server with dummy creds."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class S3Server:
    """Start with `start()` (or `with`); `endpoint` is its URL; `stop()` ends it by PID."""

    def __init__(self, *, stock: bool = False, python: str | None = None, log_path: str | None = None) -> None:
        self.stock = stock
        self.python = python or sys.executable
        self.log_path = log_path
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._own_log = False

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("S3Server is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("S3Server is not started")
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> S3Server:
        """Launch on a free port and wait until it answers HTTP; retried if the port was taken meanwhile."""
        if self._proc is not None:
            return self
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="artfs-s3server-", suffix=".log")
            os.close(fd)
            self._own_log = True
        deadline = time.monotonic() + timeout
        for _ in range(3):
            self.port = _free_port()
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            args = [self.python, str(MAIN), "-H", HOST, "-p", str(self.port)]
            if self.stock:
                args.append("--stock")
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_ready(deadline):
                return self
            if self._proc.poll() is None:  # alive but silent until the deadline: give up
                break
            self._reap()
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"moto S3 server did not start within {timeout:.0f}s; log:\n{tail}")

    def _wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
                return True
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return "(no log)"

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers. A log file we created ourselves is removed."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._reap()
        if self._own_log and self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path, self._own_log = None, False

    def client(self):
        """A boto3 S3 client for this server with dummy credentials (for setup, not for code under test)."""
        import boto3
        from botocore.config import Config

        env = s3_env(self.endpoint)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
