"""Shared fixtures. Each group sits under its own section comment; add new groups as new sections."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.s3server import S3Server, s3_env


@pytest.fixture(scope="session", autouse=True)
def _isolated_artfs_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test may touch ~/.cache or ~/.local: the cache and the default store live in tmp dirs."""
    base = tmp_path_factory.mktemp("artfs-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTFS_CACHE", str(base / "cache"))
        mp.setenv("ARTFS_STORE", str(base / "store"))
        yield


# --- stores ---


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server per session; its AWS_* settings go into os.environ so subprocesses inherit them."""
    log = tmp_path_factory.mktemp("s3server") / "moto.log"
    with S3Server(log_path=str(log)) as server, pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            mp.delenv(name, raising=False)
        for name, value in s3_env(server.endpoint).items():
            mp.setenv(name, value)
        yield server


@pytest.fixture
def s3_store_uri(s3_server: S3Server) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    bucket = s3_server.create_bucket(f"bucket-{uuid.uuid4().hex[:12]}")
    return f"s3://{bucket}/prefix"


@pytest.fixture
def local_store_uri(tmp_path: os.PathLike) -> str:
    return os.path.join(tmp_path, "store")


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest) -> str:
    """Runs a test once per store kind; the S3 server only starts if an s3 case runs."""
    return request.getfixturevalue(f"{request.param}_store_uri")


# --- end stores ---


# --- mounts ---
# Real mounts (tests/fs): `artfs mount --daemon` in a subprocess, waited for, unmounted in teardown (killed
# by PID if it will not go), and a test fails when its daemon logged an ERROR it did not declare.

import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

_ARTFS_MAIN = "import sys; sys.argv[0] = 'artfs'; from artfs.cli import main; main()"


def artfs_cmd(*args: str) -> list[str]:
    """argv that runs the `artfs` CLI of this checkout with this interpreter."""
    return [sys.executable, "-c", _ARTFS_MAIN, *args]


def run_artfs(*args: str, env: dict[str, str] | None = None, check: bool = True,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    res = subprocess.run(artfs_cmd(*args), capture_output=True, text=True, env=full_env, timeout=timeout,
                         check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"artfs {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _in_mount_table(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@dataclass
class Mount:
    """A running `artfs mount --daemon`: its mount point, log, pid, and the ERRORs the test expects."""

    path: Path
    store: str
    log: Path
    pid: int
    cache_dir: Path
    expected_errors: list[str] = field(default_factory=list)
    closed: bool = False

    def stats(self) -> dict:
        """The daemon's counters (store requests, cache hits, …) from the root's `user.artfs.stats`."""
        return json.loads(os.getxattr(self.path, "user.artfs.stats"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def unexpected_errors(self) -> list[str]:
        bad = []
        for line in self.log_text().splitlines():
            alarming = " ERROR " in line or line.startswith("Traceback")
            if alarming and not any(re.search(p, line) for p in self.expected_errors):
                bad.append(line)
        return bad

    def close(self) -> None:
        """Unmount (lazily if busy), wait for the daemon, kill it by PID if it lingers."""
        if self.closed:
            return
        self.closed = True
        path = str(self.path)
        if _in_mount_table(path):
            res = run_artfs("unmount", path, check=False, timeout=60)
            if res.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
        deadline = time.monotonic() + 20
        while _pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(self.pid):
            from artfs.fs.mountpoint import kill_daemon

            kill_daemon(self.pid)
        if _in_mount_table(path):
            subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount_artfs(tmp_path: Path) -> Iterator[MountFactory]:
    """`mount_artfs(store_uri, *args, env=, cache_dir=, poll="1s", path=)` → a ready Mount, cleaned up after."""
    mounts: list[Mount] = []

    def mount(store_uri: str, *args: str, env: dict[str, str] | None = None, cache_dir: Path | None = None,
              poll: str = "1s", path: Path | None = None) -> Mount:
        n = len(mounts)
        if path is None:
            path = tmp_path / f"mnt{n}"
            path.mkdir()
        log = tmp_path / f"mount{n}.log"
        cache = cache_dir or tmp_path / f"mount-cache{n}"
        res = run_artfs("mount", str(path), "--store", store_uri, "--daemon", "--log", str(log),
                        "--cache-dir", str(cache), "--poll", poll, *args, env=env)
        match = re.search(r"\(pid (\d+)\)", res.stdout)
        assert match, f"no pid in: {res.stdout!r}"
        m = Mount(path, store_uri, log, int(match.group(1)), cache)
        mounts.append(m)
        return m

    yield mount
    problems = []
    for m in mounts:
        m.close()
        bad = m.unexpected_errors()
        if bad:
            problems.append(f"unexpected errors in {m.log}:\n" + "\n".join(bad[:20]))
    if problems:
        pytest.fail("\n".join(problems))


# --- end mounts ---
