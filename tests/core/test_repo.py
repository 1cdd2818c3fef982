"""Versions, aliases and the publish protocol (concurrent writers, crash safety, hostile records)."""

import os
import subprocess
import sys

import pytest

from artfs.core.commit import Committer, commit_tree
from artfs.core.repo import VersionTaken
from artfs.core.store_keys import version_key
from artfs.errors import IntegrityError, InvalidName, NotFound
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree


def _put(repo, tmp_path, name, files, **kw):
    src = tmp_path / f"src-{name}-{len(os.listdir(tmp_path))}"
    write_tree(src, files)
    return commit_tree(repo, str(src), name, **kw)


def test_versions_latest_and_aliases(repo, tmp_path):
    for i in range(3):
        _put(repo, tmp_path, "animals", {"f": str(i).encode()})
    assert repo.version_numbers("animals") == [0, 1, 2]
    assert repo.resolve("animals").version == 2
    assert repo.resolve("animals:latest").version == 2
    assert repo.resolve("animals:v1").version == 1
    repo.set_alias("animals", "best", 1)
    repo.set_alias("animals", "prod", 0)
    repo.set_alias("animals", "best", 2)  # aliases move
    assert repo.aliases("animals") == {"best": 2, "prod": 0}
    repo.delete_alias("animals", "prod")
    assert repo.aliases("animals") == {"best": 2}
    log = repo.alias_log("animals")
    assert [(e.alias, e.version) for e in log] == [("best", 1), ("prod", 0), ("best", 2), ("prod", None)]
    assert all("@" in e.creator and e.time > 0 for e in log)


def test_resolve_errors(repo, tmp_path):
    _put(repo, tmp_path, "animals", {"f": b"x"})
    with pytest.raises(NotFound, match="does not exist"):
        repo.resolve("nothing")
    with pytest.raises(NotFound, match="v7"):
        repo.resolve("animals:v7")
    with pytest.raises(NotFound, match="no alias"):
        repo.resolve("animals:best")
    with pytest.raises(InvalidName):
        repo.set_alias("animals", "v2", 0)
    with pytest.raises(InvalidName):
        repo.set_alias("animals", "latest", 0)
    with pytest.raises(NotFound):
        repo.set_alias("animals", "best", 5)
    with pytest.raises(NotFound):
        repo.delete_alias("animals", "best")


def test_records_carry_metadata(repo, tmp_path):
    res = _put(repo, tmp_path, "m", {"f": b"x"}, message="hello", metadata={"lr": "0.1"})
    rec = repo.resolve("m")
    assert rec == res.record
    assert rec.message == "hello" and rec.metadata == {"lr": "0.1"} and "@" in rec.creator
    assert rec.files == 1 and rec.bytes == 1 and len(rec.digest) == 32


def test_claim_exact_number_raises_when_taken(repo, tmp_path):
    _put(repo, tmp_path, "race", {"f": b"0"})
    src = tmp_path / "other"
    write_tree(src, {"f": b"1"})
    c = Committer(repo, "race")
    c.add_file("f", str(src / "f"), 0o644, 0, 1)
    path, header = c.build()
    c.close()
    _put(repo, tmp_path, "race", {"f": b"2"})  # someone else takes v1
    with pytest.raises(VersionTaken):
        repo.publish("race", "dataset", path, header, number=1)


def test_crash_before_claim_leaves_no_version(repo, tmp_path):
    """Packs and manifest uploaded, then the writer dies before claiming: nothing is visible."""
    src = tmp_path / "src"
    write_tree(src, {"f": b"data" * 1000})
    c = Committer(repo, "crash")
    c.add_file("f", str(src / "f"), 0o644, 0, 4000)
    path, header = c.build()
    c.close()
    repo.upload_manifest(path)
    assert repo.version_numbers("crash") == []
    assert "crash" not in repo.artifacts()


def test_hostile_version_record_rejected(repo, tmp_path):
    _put(repo, tmp_path, "evil", {"f": b"x"})
    repo.store.create_if_absent(version_key("evil", 1), b'{"artifact": "other", "version": 9}')
    with pytest.raises(IntegrityError, match="rejected"):
        repo.resolve("evil")


_WRITER = """
import sys
from artfs.core.commit import commit_tree
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.storage.open import open_store
uri, src, cache = sys.argv[1:4]
repo = Repo(open_store(uri), Places.under(cache))
print(commit_tree(repo, src, "shared").record.version)
"""


def test_four_concurrent_writers_get_distinct_versions(s3_store_uri, tmp_path):
    procs = []
    for i in range(4):
        src = tmp_path / f"w{i}"
        write_tree(src, {"who": f"writer {i}".encode(), "blob": os.urandom(300_000)})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _WRITER, s3_store_uri, str(src), str(tmp_path / f"cache{i}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(int(out.strip()))
    assert sorted(results) == [0, 1, 2, 3]
    from artfs.core.places import Places
    from artfs.core.repo import Repo
    from artfs.storage.open import open_store

    reader = Repo(open_store(s3_store_uri), Places.under(str(tmp_path / "reader")))
    try:
        whos = set()
        for n in range(4):
            rec = reader.version("shared", n)
            _, entries = reader.entries(rec)
            entry = next(e for e in entries if e.path == "who")
            ref = entry.refs(reader.ensure_index(rec).packs)[0]
            from artfs.core.content import ChunkReader

            whos.add(ChunkReader(reader.store).read_chunk(ref))
        assert whos == {f"writer {i}".encode() for i in range(4)}
    finally:
        reader.close()


def test_index_lookup_and_listdir(repo, tmp_path):
    files = {f"d/{i:03d}": b"x" for i in range(50)}
    files["top"] = b"t"
    res = _put(repo, tmp_path, "idx", files)
    header = repo.ensure_index(res.record)
    mid = res.record.manifest
    assert header.files == 51
    assert repo.index.lookup(mid, "d/007").size == 1
    assert repo.index.lookup(mid, "d/nope") is None
    assert [e.name for e in repo.index.listdir(mid, "")] == ["d", "top"]
    names = [e.name for e in repo.index.listdir(mid, "d")]
    assert names == [f"{i:03d}" for i in range(50)]
    assert [e.name for e in repo.index.listdir(mid, "d", after="010", limit=3)] == ["011", "012", "013"]


def test_background_index_answers_before_it_is_built(repo, tmp_path, monkeypatch):
    import threading

    files = {f"d{d}/{i:03d}": str(i).encode() for d in range(3) for i in range(300)}
    res = _put(repo, tmp_path, "bg", files)
    fresh = fresh_repo(repo.store.uri, tmp_path / "fresh-cache")
    release = threading.Event()
    real_build = fresh.index.build

    def slow_build(mid, path):
        release.wait(30)
        return real_build(mid, path)

    monkeypatch.setattr(fresh.index, "build", slow_build)
    try:
        header = fresh.ensure_index(res.record, background=True)
        assert header.files == 900
        mid = res.record.manifest
        assert fresh.index.lookup(mid, "d1/042").size == 2
        assert fresh.index.lookup(mid, "d1/nope") is None
        assert [e.name for e in fresh.index.listdir(mid, "")] == ["d0", "d1", "d2"]
        assert [e.name for e in fresh.index.listdir(mid, "d2", after="297")] == ["298", "299"]
        release.set()
        for _ in range(300):
            if fresh.index._building.get(mid) is None:
                break
            import time

            time.sleep(0.05)
        assert fresh.index.lookup(mid, "d1/042").size == 2
        assert len(fresh.index.listdir(mid, "d0")) == 300
    finally:
        release.set()
        fresh.close()
