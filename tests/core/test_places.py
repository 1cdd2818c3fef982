"""Local places: staged data lives outside the disposable cache, and staged data in the old place (inside
the cache, before this layout) is moved on first use, not lost.

The old layout is made by moving a staging area to where earlier versions kept it
(`<cache>/stores/<store tag>/staging/<artifact>/`): the area's own format did not change, only its place.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

import pytest

from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.core.places import Places, store_tag
from artfs.core.repo import Repo
from artfs.core.staging import StagingArea
from artfs.errors import ArtfsError
from artfs.storage.open import open_store
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20
ROOT = 1


def _stage_in_old_place(tmp_path, places: Places) -> tuple[str, dict]:
    """Commit v0, stage changes (a 3 MiB new file, a modified file, a deletion), then put the staging area
    where the old layout kept it. Returns the store URI and the tree the next seal must publish."""
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    write_tree(src, {"readme.txt": b"hello", "images/dog.png": b"dog" * 1000, "images/cat.png": b"cat" * 500})
    repo = Repo(open_store(store), places)
    try:
        commit_tree(repo, str(src), "animals")
        area = StagingArea.open(repo, "animals")
        big = os.urandom(3 * MiB)
        images = area.lookup(ROOT, "images")
        area.write(area.create(images.id, "bird.png").id, 0, big)
        area.write(area.lookup(ROOT, "readme.txt").id, 5, b" world")
        area.unlink(images.id, "dog.png")
        area.close()
        uri = repo.store.uri
    finally:
        repo.close()
    expected_src = tmp_path / "expected"
    write_tree(expected_src, {"readme.txt": b"hello world", "images/cat.png": b"cat" * 500,
                              "images/bird.png": big})
    new = os.path.join(places.data, "staging")
    old = os.path.join(places.store_cache(uri), "staging")
    os.makedirs(os.path.dirname(old), exist_ok=True)
    os.rename(os.path.join(new, os.listdir(new)[0]), old)
    assert not os.listdir(new)
    return uri, snapshot(expected_src)


@pytest.mark.parametrize("how", ["rename", "copy"])
def test_staged_data_in_the_cache_moves_out_and_seals(tmp_path, monkeypatch, how: str) -> None:
    places = Places.under(str(tmp_path / "machine"))
    uri, expected = _stage_in_old_place(tmp_path, places)
    old = os.path.join(places.store_cache(uri), "staging")
    if how == "copy":  # the data directory on another filesystem than the cache: rename fails with EXDEV
        real_rename = os.rename

        def rename(src, dst):
            if str(src).startswith(old):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
            return real_rename(src, dst)

        monkeypatch.setattr("artfs.core.places.os.rename", rename)
    repo = Repo(open_store(uri), places)
    try:
        area = StagingArea.open(repo, "animals")  # the new code's first start: the area moves
        assert not os.path.exists(old)
        assert os.listdir(places.staging_root(uri)) == ["animals"]
        assert sorted(p for _, p in area.status()) == ["images/bird.png", "images/dog.png", "readme.txt"]
        area.close()
    finally:
        repo.close()
    shutil.rmtree(places.cache)  # what users do to a cache: staged data must not care
    repo = Repo(open_store(uri), places)
    try:
        area = StagingArea.open(repo, "animals")
        res = area.seal("moved out of the cache")
        area.close()
        assert res.record is not None and res.record.version == 1
        dest = tmp_path / "v1"
        export_version(repo, res.record, str(dest))
        assert snapshot(dest) == expected
    finally:
        repo.close()


def test_an_area_in_use_in_the_old_place_is_not_moved(tmp_path) -> None:
    """An older artfs still owning the area (its lock held) must not have it moved from under it."""
    places = Places.under(str(tmp_path / "machine"))
    uri, _ = _stage_in_old_place(tmp_path, places)
    old_area = os.path.join(places.store_cache(uri), "staging", "animals")
    fd = os.open(os.path.join(old_area, "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ArtfsError, match="in use by another process") as exc:
            places.staging_root(uri)
        assert "\n" not in str(exc.value)
        assert os.path.isdir(old_area)
        assert not os.path.exists(os.path.join(places.data, "staging", store_tag(uri), "animals"))
    finally:
        os.close(fd)
    assert os.path.isdir(os.path.join(places.staging_root(uri), "animals"))  # released: it moves


def test_disposable_and_kept_places_do_not_overlap(tmp_path) -> None:
    places = Places.under(str(tmp_path))
    uri = "s3://bucket/prefix"
    kept = [places.staging_root(uri), places.default_store()]
    disposable = [places.store_index(uri), places.manifests(uri)]
    for k in kept:
        for d in disposable:
            assert not k.startswith(places.cache) and not d.startswith(places.data)
    assert places.mount_log("/mnt/art").startswith(places.state)
    assert places.control_socket("/mnt/art").endswith(".sock")
