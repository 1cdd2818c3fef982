"""`artfs cache info|prune|clear`: what the cache holds, dropping it beside a running mount, bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from artfs.core.index import StoreIndex
from artfs.core.places import Places
from artfs.storage.cache import ChunkCache
from tests.support.cli import run_artfs
from tests.support.polling import eventually
from tests.support.repos import commit

MiB = 1 << 20


def cache_cmd(cache: Path, *args: str, check: bool = True):
    return run_artfs("cache", *args, "--cache-dir", str(cache), check=check)


def cache_json(cache: Path, *args: str) -> dict:
    return json.loads(cache_cmd(cache, *args, "--json").stdout)


def drop_page_cache(path: Path) -> None:
    """Forget the kernel's copy of a file, so the next read asks the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def animals(local_store_uri: str, tmp_path: Path) -> tuple[str, Path]:
    """`animals:v0` in a local store: a 6 MiB file (several chunks) and a small one."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(7).randbytes(6 * MiB))
    (src / "small.txt").write_text("cat\n")
    commit(local_store_uri, src, "animals", tmp_path / "writer-cache")
    return local_store_uri, src


def test_info_of_an_empty_cache_creates_nothing(tmp_path):
    cache = tmp_path / "cache"
    out = cache_cmd(cache, "info").stdout
    assert f"cache      {cache}" in out and "bound      20.0 GiB" in out and "0 B in 0 chunks" in out
    report = cache_json(cache, "info")
    assert report["location"] == str(cache) and report["bound"] == 20 << 30
    assert report["chunks"]["chunks"] == 0 and report["stores"] == []
    assert not (cache / "chunks.lmdb").exists()


def test_info_shows_the_recorded_bound_and_the_footprint(tmp_path):
    cache = tmp_path / "cache"
    with ChunkCache(str(cache), max_bytes=8 * MiB) as c:
        c.put_many((bytes([i]) * 16, os.urandom(100_000)) for i in range(5))
    places = Places(str(cache), str(tmp_path / "data"), str(tmp_path / "state"))
    StoreIndex(places.store_index("s3://b/p"), "s3://b/p").close()
    os.makedirs(places.manifests("s3://b/p"))
    Path(places.manifests("s3://b/p"), "ab" * 16).write_bytes(b"m" * 5000)
    report = cache_json(cache, "info")
    assert report["bound"] == 8 * MiB
    ch = report["chunks"]
    assert (ch["bytes"], ch["chunks"]) == (500_000, 5)
    assert 500_000 <= ch["used_bytes"] <= ch["file_bytes"] <= 8 * MiB and not ch["in_use"]
    [store] = report["stores"]
    assert store["store"] == "s3://b/p" and store["manifests"] == 1 and store["manifest_bytes"] >= 5000
    assert store["index_bytes"] > 0 and not store["index_in_use"]
    assert report["total_bytes"] >= ch["disk_bytes"] + store["index_bytes"]
    text = cache_cmd(cache, "info").stdout
    assert "bound      8.0 MiB" in text and "488.3 KiB in 5 chunks" in text and "store      s3://b/p" in text


def test_clear_of_an_idle_cache_removes_the_files_and_keeps_the_bound(tmp_path):
    cache = tmp_path / "cache"
    with ChunkCache(str(cache), max_bytes=8 * MiB) as c:
        c.put_many((bytes([i]) * 16, os.urandom(200_000)) for i in range(10))
    places = Places(str(cache), str(tmp_path / "data"), str(tmp_path / "state"))
    StoreIndex(places.store_index("s3://b/p"), "s3://b/p").close()
    staged = tmp_path / "data" / "staging" / "x" / "animals" / "file"  # staged data: never touched
    staged.parent.mkdir(parents=True)
    staged.write_text("unsealed work\n")
    report = cache_json(cache, "clear")
    assert report["chunks"]["removed_files"] and report["chunks"]["evicted"] == 10
    assert [ix["removed"] for ix in report["indexes"]] == [True]
    assert not os.path.exists(places.store_index("s3://b/p"))
    assert staged.read_text() == "unsealed work\n"
    after = cache_json(cache, "info")
    assert after["bound"] == 8 * MiB and after["chunks"]["chunks"] == 0
    assert after["chunks"]["file_bytes"] < 2_000_000 / 2


@pytest.mark.parametrize("bad", ["lots", "-1", "12X"])
def test_bad_size_is_one_line(tmp_path, bad):
    res = cache_cmd(tmp_path / "cache", "prune", "--to", bad, check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid size" in lines[0], res.stderr


def test_prune_and_clear_beside_a_mount_reading_a_file(animals, mount_artfs, tmp_path):
    store, src = animals
    cache = tmp_path / "mount-cache"
    want = (src / "big.bin").read_bytes()
    # a small memory LRU, so the daemon's reads go through the LMDB chunk cache
    m = mount_artfs(store, "--cache-size", "64M", cache_dir=cache, env={"ARTFS_MEMORY_CACHE": "1M"})
    path = m.path / "animals" / "v0" / "big.bin"
    assert path.read_bytes() == want
    # per artifact counts what this machine's index knows: the mount builds a version's index in the
    # background once lookups go quiet (core/index.py), so wait for that
    def indexed() -> bool:
        rows = cache_json(cache, "info", "--by-artifact")["artifacts"]
        return bool(rows) and rows[0]["indexed_manifests"] == 1

    eventually(indexed, timeout=30, what="the version's index built", interval=0.2)

    report = cache_json(cache, "info", "--by-artifact")
    ch = report["chunks"]
    assert report["bound"] == 64 * MiB and ch["in_use"] and ch["bytes"] >= 6 * MiB
    [store_info] = report["stores"]
    assert store_info["store"] == store and store_info["index_in_use"] and store_info["manifests"] == 1
    [row] = report["artifacts"]
    assert (row["artifact"], row["versions"], row["bytes"]) == ("animals", 1, ch["bytes"])
    assert "animals" in cache_cmd(cache, "info", "--by-artifact").stdout

    pruned = cache_json(cache, "prune", "--to", "2M")
    assert pruned["chunks"]["evicted"] > 0 and pruned["chunks"]["left"] <= 2 * MiB
    assert pruned["manifests"]["removed"] == 1
    drop_page_cache(path)
    assert path.read_bytes() == want  # the mount fetches again what was pruned

    with open(path, "rb") as f:  # a reader in the middle of the file when the cache is cleared
        head = f.read(3 * MiB)
        fetched = m.stats()["store_bytes"]
        cleared = cache_json(cache, "clear")
        drop_page_cache(path)
        rest = f.read()
    assert head + rest == want
    assert not cleared["chunks"]["removed_files"] and cleared["chunks"]["evicted"] > 0
    [ix] = cleared["indexes"]
    assert ix["in_use"] and not ix["removed"] and ix["dropped"] >= 1
    assert cache_json(cache, "info")["chunks"]["chunks"] > 0  # refilled by the reads after the clear
    drop_page_cache(path)
    assert path.read_bytes() == want
    assert m.stats()["store_bytes"] > fetched  # what was cleared came from the store again
    assert (m.path / "animals" / "v0" / "small.txt").read_text() == "cat\n"  # lookups still work

    text = cache_cmd(cache, "clear").stdout
    assert "in use by another process" in text and "the cache is in use" in text
