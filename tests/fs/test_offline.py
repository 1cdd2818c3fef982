"""The store goes away under a running mount: cached data stays readable, uncached reads fail fast."""

from __future__ import annotations

import errno
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.support.repos import commit
from tests.support.s3server import S3Server, s3_env


def _drop_page_cache(path: Path) -> None:
    """Forget the kernel's copy of a file, so the next read asks the daemon (which has its chunk cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_offline_cached_reads_work_uncached_fail_fast(mount_artfs, dataset, tmp_path, monkeypatch):
    server = S3Server(log_path=str(tmp_path / "own-moto.log")).start()  # our own: this test stops it
    try:
        env = s3_env(server.endpoint)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        store = f"s3://{server.create_bucket(f'offline-{uuid.uuid4().hex[:8]}')}/p"
        commit(store, dataset, "animals", tmp_path / "writer-cache")
        (dataset / "README.md").write_text("second\n")
        commit(store, dataset, "animals", tmp_path / "writer-cache")  # v1: never looked at before the outage
        # a small memory LRU, so cached reads come from the LMDB chunk cache
        m = mount_artfs(store, env={"ARTFS_STORE_DEADLINE": "2", "ARTFS_MEMORY_CACHE": "2M"}, poll="1s")
        m.expected_errors = [r"read of animals:v0/data/zeros\.bin at \d+ failed: store .* unreachable",
                             r"(lookup|getattr|opendir) of animals\S* failed: store .* unreachable"]
        v = m.path / "animals" / "v0"
        big = (dataset / "data" / "big.bin").read_bytes()
        assert (v / "data" / "big.bin").read_bytes() == big
        assert sorted(os.listdir(v / "images"))[:2] == ["img_000.bin", "img_001.bin"]
        server.stop()

        _drop_page_cache(v / "data" / "big.bin")
        hits = m.stats().get("cache_loads", 0) + m.stats().get("cache_hits", 0)
        assert (v / "data" / "big.bin").read_bytes() == big  # from the chunk cache
        assert m.stats().get("cache_loads", 0) + m.stats().get("cache_hits", 0) > hits
        assert len(os.listdir(v / "images")) == 120  # metadata is local too
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            (v / "data" / "zeros.bin").read_bytes()
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 15
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            os.listdir(m.path / "animals" / "v1")
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 15
        time.sleep(1.5)  # let a poll fail: a warning, not an error
        log = m.log_text()
        assert "read of animals:v0/data/zeros.bin" in log and "unreachable" in log
        assert "cannot poll" in log
    finally:
        server.stop()
