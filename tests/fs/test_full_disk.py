"""Disks that fill up: the cache's disk (put fails with one clear line, works again once there is room) and
the staging disk (writes get ENOSPC, not EIO; the area keeps working and takes writes again once there is
room). Small tmpfs mounts stand in for full disks (root only, as the FUSE tests are)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_artfs
from tests.support.trees import write_tree

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 16 MiB filesystem, unmounted afterwards."""
    path = tmp_path / "small-disk"
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last block; returns the filler to delete for room."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * MiB)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_put_with_a_full_cache_disk_says_so_then_works(small_disk, tmp_path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.bin": os.urandom(2 * MiB), "b.txt": b"b"})
    env = {"ARTFS_CACHE": str(small_disk / "cache")}
    store = str(tmp_path / "store")
    filler = _fill(small_disk)
    res = run_artfs("put", str(src), "animals", "--store", store, env=env, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "space" in res.stderr.lower(), res.stderr
    filler.unlink()
    run_artfs("put", str(src), "animals", "--store", store, env=env)
    run_artfs("get", "animals", str(tmp_path / "out"), "--store", store, env=env)
    assert (tmp_path / "out" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()


def test_staging_on_a_full_disk_gives_enospc_and_recovers(mount_artfs, small_store, small_disk) -> None:
    store, _ = small_store
    m = mount_artfs(store, env={"ARTFS_DATA": str(small_disk / "data")})
    st = m.path / "animals" / "staging"
    with pytest.raises(OSError) as info, open(st / "huge.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
            f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC, info.value
    status = run_artfs("status", str(st))
    assert "huge.bin" in status.stdout  # the area still answers
    (st / "huge.bin").unlink()
    (st / "small.txt").write_text("fits now")
    assert (st / "small.txt").read_text() == "fits now"
    assert "small.txt" in run_artfs("status", str(st)).stdout


def test_a_new_directory_on_a_full_disk_gives_enospc_and_loses_nothing(mount_artfs, small_store,
                                                                         small_disk) -> None:
    """A directory made in staging is a directory on the staging disk: its writes get ENOSPC too, and a
    rename out of it (the directory becomes rows first, which need room) moves the file or says ENOSPC,
    never loses it."""
    store, _ = small_store
    m = mount_artfs(store, env={"ARTFS_DATA": str(small_disk / "data")})
    st = m.path / "animals" / "staging"
    (st / "new" / "sub").mkdir(parents=True)
    (st / "new" / "sub" / "keep.txt").write_text("kept")
    with pytest.raises(OSError) as info, open(st / "new" / "huge.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
            f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC, info.value
    filler = _fill(small_disk)  # to the last block (the tmpfs may have had a few pages left)
    try:
        os.rename(st / "new" / "sub" / "keep.txt", st / "keep.txt")
        kept = st / "keep.txt"
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
        kept = st / "new" / "sub" / "keep.txt"
    assert kept.read_text() == "kept"
    filler.unlink()
    (st / "new" / "huge.bin").unlink()
    (st / "new" / "sub" / "more.txt").write_text("fits now")
    run_artfs("seal", str(st))
    v1 = m.path / "animals" / "v1"
    assert (v1 / kept.relative_to(st)).read_text() == "kept"
    assert (v1 / "new" / "sub" / "more.txt").read_text() == "fits now"
    assert not (v1 / "new" / "huge.bin").exists()
