"""A damaged store: bad copies are found, quarantined for every machine, and re-putting the intact data
repairs the artifact — dedup never adopts a copy that failed verification or a pack that is gone, and a
damaged latest or record does not block the rest. On both stores, without FUSE."""

from __future__ import annotations

import json
import random

import pytest

from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.core.store_keys import QUARANTINE, manifest_key, version_key
from artfs.errors import IntegrityError
from tests.support.cli import run_artfs
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20


def _source(tmp_path, seed: int = 5):
    src = tmp_path / "src"
    write_tree(src, {"data.bin": random.Random(seed).randbytes(3 * MiB), "small.txt": b"hello"})
    return src


def _damage(store, key: str, how: str) -> None:
    if how == "delete":
        store.delete(key)
        return
    blob = bytearray(store.get(key))
    if how == "flip":
        blob[len(blob) // 3] ^= 0x01
    else:  # truncate
        del blob[len(blob) // 2 :]
    store.put(key, bytes(blob))


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_re_put_repairs_a_damaged_pack(repo, tmp_path, store_uri, how: str) -> None:
    src = _source(tmp_path)
    rec = commit_tree(repo, str(src), "animals").record
    assert rec is not None
    (pack,) = list(repo.store.list("packs/"))
    _damage(repo.store, pack, how)
    reader = fresh_repo(store_uri, tmp_path / "reader")  # another machine: nothing cached
    try:
        with pytest.raises(IntegrityError):
            export_version(reader, rec, str(tmp_path / "broken"))
    finally:
        reader.close()
    if how != "delete":  # a bad copy that was read is quarantined for every machine
        assert list(repo.store.list(QUARANTINE))
    # The writer's machine still knows the old locations; re-putting the intact data must not reuse them.
    res = commit_tree(repo, str(src), "animals", message="again")
    assert res.record is not None and res.record.version == 1, "the same tree, but its stored copy was bad"
    assert res.uploaded_bytes > 0
    other = fresh_repo(store_uri, tmp_path / "other")
    try:
        export_version(other, other.resolve("animals:latest"), str(tmp_path / "out"))
        # the writer's machine dedups the same content into another artifact against the good copy now
        again = commit_tree(repo, str(src), "zebras")
        assert again.uploaded_bytes < MiB
        export_version(other, again.record, str(tmp_path / "out2"))
    finally:
        other.close()
    assert snapshot(tmp_path / "out") == snapshot(src) == snapshot(tmp_path / "out2")


def test_a_damaged_latest_does_not_block_puts(repo, tmp_path, store_uri) -> None:
    src = _source(tmp_path)
    rec = commit_tree(repo, str(src), "animals").record
    assert rec is not None
    data = bytearray(repo.store.get(manifest_key(rec.manifest)))
    data[len(data) // 2] ^= 0xFF
    repo.store.put(manifest_key(rec.manifest), bytes(data))
    (src / "new.txt").write_bytes(b"new")
    other = fresh_repo(store_uri, tmp_path / "other")  # must read latest's manifest to dedup: it cannot
    try:
        res = commit_tree(other, str(src), "animals")
        assert res.record is not None and res.record.version == 1
        export_version(other, res.record, str(tmp_path / "out"))
    finally:
        other.close()
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_a_malformed_version_record_does_not_hide_the_rest(repo, tmp_path) -> None:
    src = _source(tmp_path)
    commit_tree(repo, str(src), "animals")
    commit_tree(repo, str(src), "zebras")
    repo.store.put(version_key("zebras", 1), b"{not json")
    for args in (("ls",), ("ls", "zebras")):
        res = run_artfs(*args, "--store", repo.store.uri, "--json", env={"ARTFS_CACHE": str(tmp_path / "c")})
        listed = json.loads(res.stdout)
        assert [r.get("name", r.get("ref")) for r in listed] == (["animals", "zebras"] if args == ("ls",)
                                                                  else ["zebras:v0"])
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith("warning: zebras:v1 is unreadable: ")
