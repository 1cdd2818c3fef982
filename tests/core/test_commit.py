"""put → get round trips, dedup, unchanged trees, corruption: the core without FUSE, on both stores."""

import os
import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.errors import ArtfsError, IntegrityError
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree


def test_round_trip_small_tree(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello", "sub/deep/b.bin": os.urandom(3000), "empty": b""},
               dirs=["emptydir/inner"], links={"link": "sub/deep/b.bin"})
    os.chmod(src / "a.txt", 0o755)
    res = commit_tree(repo, str(src), "animals", message="first", metadata={"k": "v"}, aliases=["best"])
    assert res.record.ref == "animals:v0"
    assert res.files == 3 and res.bytes == 3005
    assert repo.aliases("animals") == {"best": 0}
    export_version(repo, repo.resolve("animals:best"), str(tmp_path / "out"))
    assert snapshot(str(src), mtimes=True) == snapshot(str(tmp_path / "out"), mtimes=True)


name_chars = st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",))
names = st.text(name_chars, min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))


@st.composite
def trees(draw):
    files = {}
    dirs = set()
    for _ in range(draw(st.integers(0, 8))):
        parts = draw(st.lists(names, min_size=1, max_size=4))
        path = "/".join(parts)
        if any(path.startswith(p + "/") or p.startswith(path + "/") for p in list(files) + list(dirs)):
            continue
        if draw(st.booleans()) or len(files) > 5:
            dirs.add(path)
        else:
            size = draw(st.sampled_from([0, 1, 100, 70_000, 300_000]))
            files[path] = random.Random(draw(st.integers(0, 1000))).randbytes(size)
    files = {p: d for p, d in files.items() if not any(q.startswith(p + "/") for q in dirs)}
    dirs = {d for d in dirs if not any(d == p or d.startswith(p + "/") for p in files)}
    return files, sorted(dirs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees())
def test_round_trip_arbitrary_trees(repo, tmp_path_factory, tree):
    files, dirs = tree
    base = tmp_path_factory.mktemp("rt")
    src = base / "src"
    os.makedirs(src)
    try:
        write_tree(src, files, dirs)
    except OSError:  # a name the local filesystem refuses (too long in bytes)
        return
    name = f"prop-{base.name}"  # one artifact per example: an equal earlier tree would dedup to its version
    res = commit_tree(repo, str(src), name)
    export_version(repo, res.record, str(base / "out"))
    assert snapshot(str(src), mtimes=True) == snapshot(str(base / "out"), mtimes=True)
    shutil.rmtree(base)


def test_many_chunk_file_and_deep_paths(repo, tmp_path):
    src = tmp_path / "src"
    deep = "/".join(f"d{i}" for i in range(40)) + "/file"
    write_tree(src, {"big.bin": random.Random(1).randbytes(9 * 1024 * 1024 + 17), deep: b"deep"})
    res = commit_tree(repo, str(src), "big")
    assert res.new_chunks >= 3
    export_version(repo, res.record, str(tmp_path / "out"))
    assert snapshot(str(src), mtimes=True) == snapshot(str(tmp_path / "out"), mtimes=True)


def test_identical_tree_makes_no_version(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a": b"1", "b/c": b"2"})
    first = commit_tree(repo, str(src), "same")
    os.utime(src / "a", (1, 1))  # mtimes are not content
    again = commit_tree(repo, str(src), "same")
    assert again.record is None and again.digest == first.digest
    assert repo.version_numbers("same") == [0]
    # A copy elsewhere has the same digest.
    shutil.copytree(src, tmp_path / "copy")
    assert commit_tree(repo, str(tmp_path / "copy"), "same").record is None


def test_dedup_one_byte_change_in_64mib(repo, tmp_path, store_uri):
    src = tmp_path / "src"
    data = bytearray(random.Random(7).randbytes(64 * 1024 * 1024))
    write_tree(src, {"big.bin": bytes(data)})
    first = commit_tree(repo, str(src), "dedup")
    assert first.uploaded_bytes >= 64 * 1024 * 1024
    data[32 * 1024 * 1024] ^= 0xFF
    write_tree(src, {"big.bin": bytes(data)})
    # A second machine (fresh cache and index) must dedup against the store's latest version too.
    other = fresh_repo(store_uri, tmp_path / "other-cache")
    try:
        second = commit_tree(other, str(src), "dedup")
    finally:
        other.close()
    assert second.record.version == 1
    assert second.uploaded_bytes < 4 * 1024 * 1024


def test_dedup_across_files_and_artifacts(repo, tmp_path):
    blob = random.Random(3).randbytes(2 * 1024 * 1024)
    src = tmp_path / "src"
    write_tree(src, {"a": blob, "b": blob})
    res = commit_tree(repo, str(src), "one")
    assert res.uploaded_bytes < 2.2 * 1024 * 1024
    res2 = commit_tree(repo, str(src), "two")
    assert res2.uploaded_bytes < 64 * 1024  # only the manifest-free pack overhead, if any


def test_compressible_data_is_compressed(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"zeros": b"\0" * (8 * 1024 * 1024), "text": b"hello world " * 100000})
    res = commit_tree(repo, str(src), "zip")
    assert res.uploaded_bytes < 1024 * 1024
    export_version(repo, res.record, str(tmp_path / "out"))
    assert snapshot(str(src), mtimes=True) == snapshot(str(tmp_path / "out"), mtimes=True)


def test_small_files_share_packs(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {f"f/{i:04d}": os.urandom(2000) for i in range(500)})
    commit_tree(repo, str(src), "small")
    packs = list(repo.store.list("packs/"))
    assert 1 <= len(packs) <= 2


def test_corrupt_pack_is_an_error_naming_the_chunk(repo, tmp_path, store_uri):
    src = tmp_path / "src"
    write_tree(src, {"data.bin": random.Random(5).randbytes(3 * 1024 * 1024)})
    res = commit_tree(repo, str(src), "corrupt")
    (key,) = list(repo.store.list("packs/"))
    blob = bytearray(repo.store.get(key))
    blob[len(blob) // 2] ^= 0x01
    repo.store.put(key, bytes(blob))
    other = fresh_repo(store_uri, tmp_path / "other-cache")  # nothing cached
    try:
        with pytest.raises(IntegrityError, match=r"chunk [0-9a-f]{32} in pack [0-9a-f]{32} is corrupt"):
            export_version(other, res.record, str(tmp_path / "out"))
    finally:
        other.close()
    assert not os.path.exists(tmp_path / "out")
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_missing_pack_is_an_error(repo, tmp_path, store_uri):
    src = tmp_path / "src"
    write_tree(src, {"x": b"x" * 5000})
    res = commit_tree(repo, str(src), "gone")
    for key in list(repo.store.list("packs/")):
        repo.store.delete(key)
    other = fresh_repo(store_uri, tmp_path / "c2")
    try:
        with pytest.raises(IntegrityError, match="missing"):
            export_version(other, res.record, str(tmp_path / "out"))
    finally:
        other.close()


def test_export_refuses_non_empty_dest(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a": b"1"})
    res = commit_tree(repo, str(src), "dest")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    with pytest.raises(ArtfsError, match="not empty"):
        export_version(repo, res.record, str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep").read_text() == "mine"
    (tmp_path / "emptydest").mkdir()
    export_version(repo, res.record, str(tmp_path / "emptydest"))
    assert (tmp_path / "emptydest" / "a").read_bytes() == b"1"


def test_uncommittable_inputs(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a": b"1"})
    os.symlink("/etc/passwd", src / "abs")
    with pytest.raises(ArtfsError, match="outside the tree"):
        commit_tree(repo, str(src), "bad")
    os.unlink(src / "abs")
    os.mkfifo(src / "fifo")
    with pytest.raises(ArtfsError, match="not a regular file"):
        commit_tree(repo, str(src), "bad")
    os.unlink(src / "fifo")
    with open(os.path.join(bytes(src), b"bad-\xff-name"), "wb") as f:
        f.write(b"x")
    with pytest.raises(ArtfsError, match="not valid UTF-8"):
        commit_tree(repo, str(src), "bad")
    assert repo.version_numbers("bad") == []
    with pytest.raises(ArtfsError, match="not a directory"):
        commit_tree(repo, str(tmp_path / "nope"), "bad")


def test_exec_bit_is_a_change(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"run.sh": b"#!/bin/sh\n"})
    commit_tree(repo, str(src), "bits")
    os.chmod(src / "run.sh", 0o755)
    assert commit_tree(repo, str(src), "bits").record.version == 1


def test_unchanged_put_still_sets_aliases(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"a": b"1"})
    commit_tree(repo, str(src), "al")
    assert commit_tree(repo, str(src), "al", aliases=["best"]).record is None
    assert repo.aliases("al") == {"best": 0}


def test_type_must_match(repo, tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"w": b"weights"})
    commit_tree(repo, str(src), "net", type_="model")
    write_tree(src, {"w": b"weights2"})
    with pytest.raises(ArtfsError, match="is a model"):
        commit_tree(repo, str(src), "net", type_="dataset")
    assert commit_tree(repo, str(src), "net").record.type == "model"
