"""`artfs get` (core/export.py): into a new directory or an existing empty one (filled in place), never
half-written, holes kept, errors that name the user's paths."""

from __future__ import annotations

import os
import random
import stat

import pytest

from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.errors import ArtfsError, IntegrityError
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20


@pytest.fixture
def version(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a/b.bin": random.Random(1).randbytes(3 * MiB), "c.txt": b"c"}, links={"l": "c.txt"})
    rec = commit_tree(repo, str(src), "animals").record
    assert rec is not None
    return src, rec


def test_an_existing_empty_directory_is_filled_in_place(repo, tmp_path, version) -> None:
    src, rec = version
    dest = tmp_path / "dest"
    dest.mkdir(mode=0o750)
    before = os.stat(dest)
    export_version(repo, rec, str(dest))
    after = os.stat(dest)
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o750)  # the same directory
    assert snapshot(dest) == snapshot(src)
    assert not [n for n in os.listdir(dest) if "partial" in n]


def test_a_failed_export_leaves_an_empty_destination_as_it_was(repo, tmp_path, store_uri, version) -> None:
    src, rec = version
    (pack,) = list(repo.store.list("packs/"))
    blob = bytearray(repo.store.get(pack))
    blob[len(blob) // 2] ^= 1
    repo.store.put(pack, bytes(blob))
    reader = fresh_repo(store_uri, tmp_path / "reader")
    try:
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(IntegrityError):
            export_version(reader, rec, str(dest))
        assert dest.is_dir() and os.listdir(dest) == []
        with pytest.raises(IntegrityError):
            export_version(reader, rec, str(tmp_path / "new"))
        assert not (tmp_path / "new").exists() and not [n for n in os.listdir(tmp_path) if "partial" in n]
    finally:
        reader.close()


def test_destinations_that_cannot_be_are_said_truthfully(repo, tmp_path, version) -> None:
    _, rec = version
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "link")
    cases = [(tmp_path / "file", "exists and is not a directory"), (tmp_path / "link", "is a symlink"),
             (tmp_path / "file" / "sub", "is not a directory"), (tmp_path / "none" / "sub", "does not exist")]
    for dest, why in cases:
        with pytest.raises(ArtfsError, match=why):
            export_version(repo, rec, str(dest))


def test_holes_come_back_as_holes(repo, tmp_path) -> None:
    src = tmp_path / "sparse-src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.write(b"head")
        f.seek(64 * MiB)
        f.write(b"tail")
    rec = commit_tree(repo, str(src), "sparse").record
    assert rec is not None
    dest = tmp_path / "out"
    export_version(repo, rec, str(dest))
    got = dest / "sparse.bin"
    assert got.read_bytes() == (src / "sparse.bin").read_bytes()
    assert os.stat(got).st_blocks * 512 < 16 * MiB  # not 64 MiB of written zeros
