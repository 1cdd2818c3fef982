"""Shared fixtures: the isolated artfs directories, the stores, real mounts. Their pieces live in tests/support."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.http_server import HttpServer
from tests.support.mounts import MountFactory, MountSet
from tests.support.s3server import FOREIGN_AWS_VARS, S3Server, s3_env


@pytest.fixture(scope="session", autouse=True)
def _isolated_artfs_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test may touch ~/.cache or ~/.local: the cache, staged data, logs and the default store live in
    tmp dirs."""
    base = tmp_path_factory.mktemp("artfs-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTFS_CACHE", str(base / "cache"))
        mp.setenv("ARTFS_DATA", str(base / "data"))
        mp.setenv("ARTFS_STORE", str(base / "store"))
        mp.setenv("XDG_STATE_HOME", str(base / "state"))
        yield


# --- stores ---


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server per session; its AWS_* settings go into os.environ so subprocesses inherit them."""
    log = tmp_path_factory.mktemp("s3server") / "moto.log"
    with S3Server(log_path=str(log)) as server, pytest.MonkeyPatch.context() as mp:
        for name in FOREIGN_AWS_VARS:
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


@pytest.fixture
def http_server() -> Iterator[Callable[..., HttpServer]]:
    """`http_server(root, etags=True, ranges=True)` → a running HttpServer serving `root` (a real process on
    127.0.0.1, tests/support/http_server.py), stopped by PID after the test."""
    servers: list[HttpServer] = []

    def serve(root: os.PathLike | str, etags: bool = True, ranges: bool = True) -> HttpServer:
        servers.append(HttpServer(root, etags=etags, ranges=ranges).start())
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


# --- mounts ---


@pytest.fixture
def mount_artfs(tmp_path: Path) -> Iterator[MountFactory]:
    """`mount_artfs(store_uri, *args, env=, cache_dir=, poll="1s", path=)` → a ready Mount, unmounted after;
    the test fails if a daemon logged an ERROR it did not declare in `Mount.expected_errors`."""
    mounts = MountSet(tmp_path)
    yield mounts.mount
    problems = mounts.close()
    if problems:
        pytest.fail("\n".join(problems))

