"""`artfs verify`: missing and (--deep) damaged copies are found and listed with the versions and paths they
break; --repair makes those versions readable again from a good copy elsewhere in the store or in this
machine's cache, through relocation records that readers follow. On both stores."""

from __future__ import annotations

import json
import random

from artfs.core.commit import commit_tree
from artfs.core.content import ChunkReader, FileLayout
from artfs.core.export import export_version
from artfs.core.verify import verify
from tests.support.cli import run_artfs
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20


def _versions_of(tmp_path, repo):
    src = tmp_path / "src"
    write_tree(src, {"data.bin": random.Random(9).randbytes(3 * MiB), "ok.txt": b"fine"})
    rec = commit_tree(repo, str(src), "animals").record
    assert rec is not None
    return src, rec


def _flip(store, key):
    blob = bytearray(store.get(key))
    blob[len(blob) // 3] ^= 0x01
    store.put(key, bytes(blob))


def _verify(store_uri, tmp_path, *args):
    res = run_artfs("verify", *args, "--store", store_uri, "--json", check=False,
                    env={"ARTFS_CACHE": str(tmp_path / "verify-cache")})
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_a_sound_store_verifies(repo, tmp_path, store_uri) -> None:
    _versions_of(tmp_path, repo)
    code, report = _verify(store_uri, tmp_path, "--all", "--deep")
    assert code == 0 and report["broken"] == [] and report["bad_locations"] == 0
    assert report["checked_bytes"] >= 3 * MiB


def test_deep_finds_a_flipped_byte_and_repair_uses_the_re_put_copy(repo, tmp_path, store_uri) -> None:
    src, rec = _versions_of(tmp_path, repo)
    (pack,) = list(repo.store.list("packs/"))
    _flip(repo.store, pack)
    code, report = _verify(store_uri, tmp_path, "animals")
    assert code == 0, "a shallow check cannot see a flipped byte: only that every pack is there"
    code, report = _verify(store_uri, tmp_path, "animals", "--deep")
    assert code == 1 and report["broken"] == [
        {"ref": "animals:v0", "broken_files": 1, "paths": ["data.bin"], "problem": ""}]
    res = commit_tree(repo, str(src), "animals")  # the same content again: uploaded afresh (quarantined)
    assert res.record is not None and res.record.version == 1
    code, report = _verify(store_uri, tmp_path, "animals", "--repair")
    assert code == 0 and report["repaired"] >= 1
    reader = fresh_repo(store_uri, tmp_path / "reader")
    try:
        export_version(reader, reader.resolve("animals:v0"), str(tmp_path / "v0"))  # follows the relocation
    finally:
        reader.close()
    assert snapshot(tmp_path / "v0") == snapshot(src)
    code, report = _verify(store_uri, tmp_path, "animals:v0", "--deep")
    assert code == 0, report


def test_a_missing_pack_is_repaired_from_a_machines_cache(repo, tmp_path, store_uri) -> None:
    src, rec = _versions_of(tmp_path, repo)
    machine = fresh_repo(store_uri, tmp_path / "machine")  # read it through its cache, as a mount does
    try:
        header, entries = machine.entries(machine.resolve("animals:v0"))
        reader = ChunkReader(machine.store, machine.cache)
        for e in entries:
            if e.size:
                reader.read(FileLayout.of_entry(e, header.packs), 0, e.size)
        for key in list(machine.store.list("packs/")):
            machine.store.delete(key)
        code, report = _verify(store_uri, tmp_path, "--all")
        assert code == 1 and report["broken"][0]["paths"] == ["data.bin", "ok.txt"]
        report = verify(machine, [machine.resolve("animals:v0")], repair=True)
        assert report.broken == [] and report.repaired >= 2
    finally:
        machine.close()
    other = fresh_repo(store_uri, tmp_path / "other")
    try:
        export_version(other, other.resolve("animals:v0"), str(tmp_path / "out"))
    finally:
        other.close()
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_bad_arguments_are_one_line(tmp_path) -> None:
    store = str(tmp_path / "store")
    for args in ((), ("--all", "animals"), ("zebras",)):
        res = run_artfs("verify", *args, "--store", store, check=False)
        assert res.returncode != 0 and res.stderr.strip().count("\n") == 0, res.stderr
